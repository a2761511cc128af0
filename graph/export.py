"""Stream a `GraphStore` into the NetworkX graphs that `graph.scores` analyses.

Two directed graphs come out, built straight from the store's iterators with no intermediate list of models:

* the **influence graph**: every customer is a node, whether or not they have an edge. Each ordered pair
  ``(source, target)`` with one or more ``INFLUENCES`` edges becomes one edge whose ``weight`` is the *sum* of the
  weights of all its kinds (``follows`` 1.0 + ``co_purchase`` 0.5 gives 1.5): several kinds of tie between the same
  two people are read as a stronger tie. Node attributes carry consent and the event summaries (below).
* the **referral graph**: only customers that sent or received a referral are nodes; each ``REFERRED`` edge
  (referrer -> friend) keeps its ``status`` (``clicked``, ``signed_up``, ``converted``, ``reversed``).

Node attributes of the influence graph (absent means zero, to keep a million nodes small):

``consent``
    ``True`` when the customer gave consent on at least one contact channel.
``<kind>_count``, ``<kind>_total``
    For each event kind the customer has (``purchase_count``, ``rating_total`` ...): how many, and the summed
    ``value`` (NPS points for ``rating``, amounts for ``purchase`` and ``refund``).
``<kind>_last``
    Latest time, kept only for ``complaint``, ``refund`` and ``rating`` (used in explanations).

Self-loops cannot be stored through `graph.model`, but a store filled by other means might hold one: they are
dropped and counted (`CustomerGraphs.self_loops_dropped`). An edge or event naming a customer that
``iter_customers`` did not yield is kept, and its customer added as a node without consent
(`CustomerGraphs.unknown_customers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

from graph.model import EdgeType, EventKind
from graph.store import GraphStore

ProgressFn = Callable[[str, int, int], None]
"""``progress(step, done, total)``; ``total`` is 0 when it is not known in advance."""

LAST_AT_KINDS: frozenset[EventKind] = frozenset({EventKind.COMPLAINT, EventKind.REFUND, EventKind.RATING})

_REPORT_EVERY = 250_000


@dataclass(slots=True)
class CustomerGraphs:
    """The graphs of one export, and what the export had to repair on the way."""

    influence: nx.DiGraph
    referrals: nx.DiGraph
    self_loops_dropped: int = 0
    unknown_customers: int = 0

    @property
    def customers(self) -> int:
        return int(self.influence.number_of_nodes())


def export_graphs(
    store: GraphStore, *, referrals: bool = True, events: bool = True, progress: ProgressFn | None = None
) -> CustomerGraphs:
    """Build the influence and referral graphs (see the module docstring) from `store`, streamed.

    Parameters
    ----------
    store : GraphStore
        Any store; only its ``iter_*`` methods are used.
    referrals, events : bool
        Skip the referral graph (left empty) or the event attributes when the caller does not need them.
    progress : callable, optional
        Called as ``progress(step, done, total)`` while rows stream in.

    Returns
    -------
    CustomerGraphs
    """
    influence = nx.DiGraph()
    # One string object per id: edge rows arrive with fresh strings, and a graph keeps whatever key object it is
    # given, so without this the ids of ten million edges would be held twice over.
    canon: dict[str, str] = {}
    stats = CustomerGraphs(influence=influence, referrals=nx.DiGraph())

    stats_step = "export customers"
    for i, customer in enumerate(store.iter_customers(), start=1):
        cid = customer.id
        canon[cid] = cid
        if any(customer.consent.values()):
            influence.add_node(cid, consent=True)
        else:
            influence.add_node(cid)
        if progress is not None and i % _REPORT_EVERY == 0:
            progress(stats_step, i, 0)

    def known(cid: str) -> str:
        found = canon.get(cid)
        if found is None:
            canon[cid] = cid
            influence.add_node(cid)
            stats.unknown_customers += 1
            return cid
        return found

    # Both endpoints are nodes by now, so an edge is two dict entries sharing one attribute dict, exactly what
    # `add_edge` would store, without its per-call checks (a third of the export time at ten million edges).
    succ, pred = influence._succ, influence._pred
    for i, edge in enumerate(store.iter_edges(EdgeType.INFLUENCES), start=1):
        source, target = known(edge.source), known(edge.target)
        if source == target:
            stats.self_loops_dropped += 1
            continue
        out = succ[source]
        data = out.get(target)
        if data is None:
            out[target] = pred[target][source] = {"weight": float(edge.weight)}
        else:
            data["weight"] += float(edge.weight)
        if progress is not None and i % _REPORT_EVERY == 0:
            progress("export influence edges", i, 0)

    if referrals:
        _add_referrals(store, stats, known, progress)
    if events:
        _add_events(store, influence, known)
    return stats


def _add_referrals(
    store: GraphStore, stats: CustomerGraphs, known: Callable[[str], str], progress: ProgressFn | None
) -> None:
    referrals = stats.referrals
    for i, edge in enumerate(store.iter_edges(EdgeType.REFERRED), start=1):
        source, target = known(edge.source), known(edge.target)
        if source == target:
            stats.self_loops_dropped += 1
            continue
        referrals.add_edge(source, target, status=str(edge.label))
        if progress is not None and i % _REPORT_EVERY == 0:
            progress("export referrals", i, 0)


def _add_events(store: GraphStore, influence: nx.DiGraph, known: Callable[[str], str]) -> None:
    nodes = influence.nodes
    keys = {kind.value: (f"{kind.value}_count", f"{kind.value}_total", f"{kind.value}_last") for kind in EventKind}
    with_last = {kind.value for kind in LAST_AT_KINDS}
    for summary in store.iter_event_summaries():
        attrs = nodes[known(summary.customer_id)]
        kind = str(summary.kind.value if isinstance(summary.kind, EventKind) else summary.kind)
        count_key, total_key, last_key = keys[kind]
        attrs[count_key] = attrs.get(count_key, 0) + int(summary.count)
        attrs[total_key] = attrs.get(total_key, 0.0) + float(summary.total or 0.0)
        if kind in with_last and summary.last_at is not None:
            previous = attrs.get(last_key)
            if previous is None or summary.last_at > previous:
                attrs[last_key] = summary.last_at
