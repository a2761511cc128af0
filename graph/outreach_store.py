"""The `OutreachStore` protocol: templates, outreach plans, the outbox and suppressions, beside the graph.

Both stores implement it and pass `tests/contract/test_outreach_*.py`. The outbox is what makes dispatch safe
to retry: `enqueue_messages` inserts each key once, `claim_message` hands a message to one worker at a time (a
lease, so a killed worker's message is claimed again once the lease runs out), and `finish_message` records the
outcome once. Sending happens between claim and finish, outside the store.

Erasure (`GraphStore.erase_customer`) removes the person's outbox messages (`customer:<id>` person key, and
invitations sent on their behalf lose their `customer_id`) and their `customer:<id>` suppressions; suppressions
of `email:<hash>` keys stay, since they exist to honour a refusal.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from graph.model import ContactChannel
from graph.outreach import (
    HoldReason,
    MessageStatus,
    OutboxCounts,
    OutboxMessage,
    Outreach,
    Suppression,
    Template,
    TemplatePurpose,
)


@runtime_checkable
class OutreachStore(Protocol):
    # --- templates -----------------------------------------------------------------------------------------
    def save_template(self, template: Template) -> None:
        """Create or replace a template by id."""

    def get_template(self, template_id: str) -> Template:
        """Raise `NotFound` for an unknown id."""

    def list_templates(self, purpose: TemplatePurpose | None = None) -> list[Template]:
        """Ordered by id."""

    def delete_template(self, template_id: str) -> None:
        """Raise `NotFound` for an unknown id."""

    # --- outreach plans ------------------------------------------------------------------------------------
    def save_outreach(self, outreach: Outreach) -> None:
        """Create or replace an outreach plan by id. `NotFound` if its referral campaign is unknown."""

    def get_outreach(self, outreach_id: str) -> Outreach:
        """Raise `NotFound` for an unknown id."""

    def list_outreach(self) -> list[Outreach]:
        """By creation time, oldest first."""

    # --- the outbox ----------------------------------------------------------------------------------------
    def enqueue_messages(self, messages: Sequence[OutboxMessage]) -> int:
        """Insert messages whose key is new, in one transaction; keys already there are left as they are.
        Returns how many were inserted."""

    def get_message(self, key: str) -> OutboxMessage:
        """Raise `NotFound` for an unknown key."""

    def claim_message(self, key: str, *, at: datetime, lease_s: float) -> OutboxMessage | None:
        """Hand the message to the caller, atomically, or return None when it is not theirs to send.

        Claimable: `queued` with `not_before <= at`, or `sending` whose `lease_until` has passed (its worker
        died). The claim sets `sending`, `attempts + 1`, `lease_until = at + lease_s`, `updated_at = at`.
        Anything else (terminal, leased to another worker, not yet due, unknown key) returns None.
        """

    def finish_message(
        self,
        key: str,
        status: MessageStatus,
        *,
        at: datetime,
        reason: HoldReason | None = None,
        detail: str = "",
        provider_id: str | None = None,
        not_before: datetime | None = None,
    ) -> OutboxMessage:
        """Record the outcome of a claimed (`sending`) message; `LedgerConflict` if it is not `sending`.

        `sent` sets `sent_at = at`; `held` needs a `reason`; `queued` puts it back for later (`not_before`
        required, e.g. after quiet hours), keeping `reason`/`detail` as the note of why. A terminal status clears
        `lease_until` and `to_address`.
        """

    def due_messages(self, *, now: datetime, limit: int = 1000, outreach_id: str | None = None) -> list[OutboxMessage]:
        """Messages a worker could claim now (see `claim_message`), by `not_before` then key."""

    def list_messages(
        self,
        outreach_id: str,
        *,
        status: MessageStatus | None = None,
        reason: HoldReason | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[OutboxMessage]:
        """Ordered by key; `after` is the last key of the previous page."""

    def outbox_counts(self, outreach_id: str) -> OutboxCounts:
        """Messages by status, held ones by reason, and status per variant."""

    # --- suppressions --------------------------------------------------------------------------------------
    def suppress(self, suppression: Suppression) -> None:
        """Record that a person may not be contacted (per channel, or all channels when `channel` is None).
        Idempotent per (person key, channel): the earliest record is kept."""

    def suppressions(self, person_keys: Iterable[str]) -> dict[str, list[Suppression]]:
        """The suppressions of each given person key that has any."""

    def lift_suppressions(self, person_key: str, channels: Collection[ContactChannel] | None, *, at: datetime) -> int:
        """Remove the person's suppressions of `channels` (None: every one, that of all channels included), in one
        transaction; returns how many went.

        Naming channels lifts their own suppressions only: the suppression of every channel goes with None alone.
        Only records at or before `at` are lifted, so a refusal recorded after the request that lifts stands. The
        store lifts any person key; who may ask for it (the customer themself, never for an `email:<hash>` key)
        is the engine's rule (`engine.preferences`).
        """
