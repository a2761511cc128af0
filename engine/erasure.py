"""Erasing a customer everywhere the engine keeps them: the store, and the contact limiter's counts.

The store removes the person, their data and their `customer:<id>` suppressions (`GraphStore.erase_customer`);
the limiter keeps, outside the store, when each message reached them (`ContactLimiter.forget`). The store goes
first, so a customer is never left in the store with their counts gone (caps and back-off would start afresh for
someone still being contacted). The counts are forgotten after the store answers, and also when it answers
`NotFound`: a retry of an erasure whose forgetting failed (Redis down) then completes it, while still answering
that the customer is gone. A friend's `email:<hash>` counts stay, as their refusals do: they are not this
customer's data, and name nobody without the key.
"""

from __future__ import annotations

from engine.limits import ContactLimiter
from graph.errors import NotFound
from graph.model import ErasureReport
from graph.outreach import customer_key
from graph.store import GraphStore


def erase_customer(store: GraphStore, limiter: ContactLimiter, customer_id: str) -> ErasureReport:
    """Erase the customer from `store` and forget their contact counts; `NotFound` for an unknown (or already
    erased) id, after forgetting any counts left under it."""
    try:
        report = store.erase_customer(customer_id)
    except NotFound:
        limiter.forget(customer_key(customer_id))
        raise
    limiter.forget(customer_key(customer_id))
    return report
