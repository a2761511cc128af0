"""The `ProgramStore` protocol: the referral programme's records, kept beside the customer graph.

Both stores implement it (`SqliteStore`, `Neo4jStore`) and pass `tests/contract/test_program_*.py`. Where money
moves, a method is one transaction that first locks what it changes (SQLite: `BEGIN IMMEDIATE`; Neo4j: a write
to the node before reading it), so two workers handling the same event serialise and the second sees the first's
result. Rules stay out of the store: `settle_conversion` takes the pure `plan` as a callable and calls it inside
the transaction with what it read under the locks. `plan` must be pure, since Neo4j may retry a transaction.

Erasure (`GraphStore.erase_customer`) covers this data too: the person's codes and the clicks on them, their
signals, signups and orders as a buyer go; rewards and ledger entries stay for the accounts with `customer_id`
set to the tombstone `ERASED`, and attributions naming them as referrer are rewritten the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

from graph.access_store import AccessStore
from graph.link_cache import LinkCache
from graph.model import Customer, CustomerScores, EdgeRecord, Event
from graph.outreach import Template
from graph.outreach_store import OutreachStore
from graph.program import (
    Attribution,
    Balance,
    Campaign,
    Click,
    CodeActivity,
    CodeStatus,
    Conversion,
    ConversionStatus,
    FraudContext,
    FraudSettings,
    LedgerEntry,
    Order,
    ProgramCounts,
    ReferralCode,
    Refund,
    Reward,
    RewardHistory,
    RewardState,
    Settlement,
    Signup,
    Touch,
)
from graph.store import GraphStore

ERASED: Final = "erased"
"""What `customer_id` (and `referrer_id`) become on records kept for accounting after their person is erased."""

Plan = Callable[[RewardHistory], Settlement]


@runtime_checkable
class ProgramStore(Protocol):
    links: LinkCache
    """What `link_code` and `link_campaign` keep; replaceable (a test gives it a clock)."""

    # --- campaigns -----------------------------------------------------------------------------------------
    def save_campaign(self, campaign: Campaign) -> None:
        """Create or replace a campaign by id."""

    def get_campaign(self, campaign_id: str) -> Campaign:
        """Raise `NotFound` for an unknown id."""

    def link_campaign(self, campaign_id: str) -> Campaign:
        """`get_campaign` for a referral link: may be a copy up to `graph.link_cache.LINK_CACHE_S` old when
        another process changed it; this store's own writes show at once."""

    def list_campaigns(self) -> list[Campaign]:
        """By creation time, oldest first."""

    # --- codes and clicks ----------------------------------------------------------------------------------
    def create_code(self, code: ReferralCode) -> ReferralCode:
        """Store a new code. `LedgerConflict` when the code exists (whoever owns it, in any campaign);
        `NotFound` when the customer or the campaign is unknown."""

    def get_code(self, code: str) -> ReferralCode:
        """`code` is already normalised. Raise `NotFound` for an unknown code."""

    def link_code(self, code: str) -> ReferralCode:
        """`get_code` for a referral link, kept like `link_campaign`; an unknown code is never kept."""

    def list_codes(self, *, customer_id: str | None = None, campaign_id: str | None = None) -> list[ReferralCode]:
        """By creation time, oldest first."""

    def set_code_status(
        self, code: str, status: CodeStatus, *, at: datetime, replaced_by: str | None = None
    ) -> ReferralCode:
        """Change a code's status (recording `status_at=at`, and `replaced_by` when given); `NotFound` if unknown.
        Setting the status it already has changes nothing and returns it."""

    def record_click(self, click: Click) -> None:
        """Store a click; a click id seen before changes nothing. `NotFound` if the code is unknown."""

    def record_clicks(self, clicks: Sequence[Click]) -> None:
        """Store many clicks in one transaction: ids seen before change nothing, a click whose code has gone
        (erased since its redirect) is dropped rather than failing the others."""

    def get_click(self, click_id: str) -> Click | None: ...

    # --- signups and attribution ---------------------------------------------------------------------------
    def record_signup(self, signup: Signup, attribution: Attribution | None) -> None:
        """Store the signup and the friend's signals (one transaction; repeating it changes nothing).

        With an attribution, the `REFERRED` edge referrer -> friend is created at status `signed_up` (code and
        `at` from the attribution, `status_at` = signup time); an existing edge only moves forward
        (clicked -> signed_up), never back from converted or reversed. `NotFound` if the customer is unknown.
        """

    def touches_for(self, customer_id: str, *, click_ids: Sequence[str], since: datetime) -> list[Touch]:
        """The stored touches that may attribute an order of `customer_id`, oldest first, each at or after `since`:

        - a `click` touch for each click in `click_ids` and each click recorded with this `customer_id`;
        - the touch of the customer's signup: its click (`click`) or its code (`signup_code`, at the signup time).

        Referrer and campaign come from the code's owner; `usable` is `ReferralCode.usable_at(touch.at)`.
        A click id that is unknown is ignored.
        """

    # --- conversions ---------------------------------------------------------------------------------------
    def record_order(self, order: Order) -> Conversion:
        """Store an order as a `pending` conversion and its signals against the buyer, or return the stored
        conversion unchanged when the order id is known (a redelivery). An order id redelivered with a different
        buyer, amount or currency raises `LedgerConflict`; an unknown buyer raises `NotFound`."""

    def get_conversion(self, order_id: str) -> Conversion:
        """Raise `NotFound` for an unknown order id."""

    def list_conversions(
        self,
        *,
        status: ConversionStatus | None = None,
        campaign_id: str | None = None,
        customer_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Conversion]:
        """Ordered by order id; `after` is the last order id of the previous page. `customer_id` matches the
        buyer or the referrer; `campaign_id` matches the attribution's campaign."""

    def fraud_context(self, order: Order, attribution: Attribution, settings: FraudSettings) -> FraudContext:
        """Read what `engine.fraud.assess` needs about this order (see `FraudContext`); no locks needed."""

    def settle_conversion(
        self, order_id: str, attribution: Attribution | None, plan: Plan, *, at: datetime
    ) -> Conversion:
        """Decide a pending conversion once, in one transaction.

        Lock the conversion (`NotFound` if unknown). If it is no longer `pending`, return it unchanged: another
        worker or an earlier delivery settled it. Otherwise lock the referrer and the friend, read their
        `RewardHistory` in `attribution.campaign_id` (empty without attribution), call `plan(history)` and write
        the `Settlement`: status, attribution, verdict, `settled_at=at` and `reward_ids`; each grant whose id is
        new becomes a `Reward` (created_at = updated_at = at) with its first `LedgerEntry` (None -> grant.state),
        and a grant whose id exists is left alone. For `attributed` and `held` the `REFERRED` edge
        referrer -> friend becomes `converted` (created if absent, with the attribution's code and touch time);
        for `rejected` an existing edge becomes `reversed` unless the friend has another live (attributed or held)
        conversion through the same referrer; a referrer equal to the friend never gets an edge.
        """

    def record_refund(self, refund: Refund, *, at: datetime) -> Conversion:
        """Apply a refund in one transaction (`NotFound` for an unknown order; a refund id seen before changes
        nothing). Refunds add up in `refunded_minor`; when they reach the order amount the conversion becomes
        `reversed`, each of its live rewards moves to `reversed` with an entry (a clawback when it was already
        fulfilled), and the `REFERRED` edge becomes `reversed` unless the friend has another live conversion
        through the same referrer."""

    def review_conversion(
        self,
        order_id: str,
        *,
        approve: bool,
        reviewer: str,
        note: str,
        at: datetime,
        approve_after: datetime,
    ) -> Conversion:
        """Decide a `held` conversion (`LedgerConflict` if it is not held, `NotFound` if unknown).

        Approve: the conversion becomes `attributed` and its held rewards `pending` with `approve_after`.
        Reject: it becomes `rejected`, its held rewards `rejected`, and its `REFERRED` edge `reversed` unless the
        friend has another live conversion through the same referrer.
        """

    # --- rewards and the ledger ----------------------------------------------------------------------------
    def advance_rewards(self, now: datetime, *, limit: int = 1000) -> list[Reward]:
        """Time moves rewards on: `pending` ones whose `approve_after` has passed become `approved`; `held` ones
        whose `review_deadline` has passed become `rejected`, and so do their conversions (reviewer `deadline`).
        Returns the rewards moved (at most `limit`), each after its move."""

    def transition_reward(self, reward_id: str, to_state: RewardState, *, at: datetime, reason: str) -> Reward:
        """Move one reward along `REWARD_TRANSITIONS` with one entry. Moving to the state it is in returns it
        unchanged; any other move not allowed from its current state raises `LedgerConflict`."""

    def get_reward(self, reward_id: str) -> Reward:
        """Raise `NotFound` for an unknown id."""

    def list_rewards(
        self,
        *,
        customer_id: str | None = None,
        campaign_id: str | None = None,
        state: RewardState | None = None,
        conversion_id: str | None = None,
        limit: int = 1000,
    ) -> list[Reward]:
        """Ordered by creation time, then id."""

    def ledger_entries(self, *, customer_id: str | None = None, reward_id: str | None = None) -> list[LedgerEntry]:
        """Ordered by `at`, then by the position of `to_state` in `RewardState` (held, pending, approved,
        fulfilled, reversed, rejected), then by id: the order they were written, in both stores."""

    def balances(self, customer_id: str) -> list[Balance]:
        """`graph.program.balances_from_entries` over the customer's entries."""

    # --- fraud scanning and metrics ------------------------------------------------------------------------
    def code_activity(self, code: str, *, since: datetime) -> CodeActivity:
        """Clicks, visitors, sources, signups and conversions through one code since `since`."""

    def iter_code_activity(self, *, since: datetime, min_clicks: int = 1) -> Iterator[CodeActivity]:
        """`code_activity` for every code with at least `min_clicks` clicks since `since`."""

    def program_counts(self, campaign_id: str | None = None) -> ProgramCounts:
        """Aggregates for metrics, for one campaign or overall."""

    def iter_conversions(self, campaign_id: str | None = None) -> Iterator[Conversion]:
        """Every conversion (of one campaign), ordered by order time."""


@dataclass(frozen=True, slots=True)
class KitReads:
    """Everything a customer's kit is made of, read together (`Store.kit_reads`)."""

    customer: Customer
    scores: CustomerScores | None
    codes: tuple[ReferralCode, ...]
    """Their codes in the campaign, oldest first (`list_codes`)."""
    referrals: tuple[EdgeRecord, ...]
    """`referrals_from`: the friends they brought, and how far each got."""
    purchases: tuple[Event, ...]
    """Their latest purchase events, newest first (`events_of(kind=PURCHASE)`)."""
    share_templates: tuple[Template, ...]
    """The marketer's share templates (`list_templates(SHARE)`), from which each channel's text is chosen."""

    @property
    def active_code(self) -> ReferralCode | None:
        return newest_active(self.codes)


def newest_active(codes: Sequence[ReferralCode]) -> ReferralCode | None:
    """The newest of a customer's codes (oldest first, as `list_codes` gives them) that still works: the one a
    kit links to."""
    return next((code for code in reversed(codes) if code.status is CodeStatus.ACTIVE), None)


@runtime_checkable
class Store(GraphStore, ProgramStore, OutreachStore, AccessStore, Protocol):
    """What the engine's services take: the customer graph, the programme and the outreach, in one store."""

    def kit_reads(self, customer_id: str, campaign_id: str, *, purchases: int = 20) -> KitReads:
        """What `get_customer`, `get_scores`, `list_codes`, `referrals_from`, `events_of(kind=PURCHASE,
        limit=purchases)` and `list_templates(SHARE)` give, in one read transaction: one snapshot, and on Neo4j
        one statement, where each transaction costs several round trips (a kit made of six reads spent 17 ms in
        them). `NotFound` for an unknown customer."""
