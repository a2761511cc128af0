"""`Neo4jProgram`: the `ProgramStore` half of `Neo4jStore` (the graph model is drawn in `graph.program_cypher`).

Where money moves, a method is one managed write transaction that locks before it reads: a `LOCK_*` statement
writes to the node it is about to decide on (the conversion, then the people in it in id order, then their
rewards), and only a later statement reads the state the decision depends on. Neo4j reads are read-committed,
so a state read before the lock could already be stale; read after it, no other writer can change it until
this transaction ends. Deadlocks between lockers are detected by the server and the driver retries the whole
transaction function, which is why the `plan` of `settle_conversion` must be pure.

Times travel as integer microseconds and are stored as `DATETIME`s, as in the rest of the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from neo4j import READ_ACCESS, Driver, ManagedTransaction

from graph import cypher
from graph import program_cypher as q
from graph.errors import InvalidInput, LedgerConflict, NotFound
from graph.link_cache import CachedLinks
from graph.program import (
    LIVE_REWARD_STATES,
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
    FraudVerdict,
    LedgerEntry,
    Order,
    ProgramCounts,
    ReferralCode,
    ReferralLink,
    Refund,
    Reward,
    RewardGrant,
    RewardHistory,
    RewardState,
    Settlement,
    Signal,
    SignalKind,
    Signup,
    Touch,
    TouchKind,
    balances_from_entries,
    check_transition,
    ledger_entry_id,
)
from graph.program_store import Plan

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

T = TypeVar("T")

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_STATE_ORDER: Final = {state: position for position, state in enumerate(RewardState)}
_LIVE_CONVERSIONS: Final = frozenset({ConversionStatus.ATTRIBUTED, ConversionStatus.HELD})
_DEADLINE_REVIEWER: Final = "deadline"
_MAX_REASON: Final = 500
"""`LedgerEntry.reason`'s limit: reasons composed from refund ids and texts are cut to it."""
_MAX_NEIGHBOURHOOD_EDGES: Final = 5_000
"""Stop widening a fraud neighbourhood past this many edges: a ring is small, a hub's network is not."""
_EMPTY_HISTORY: Final = RewardHistory(successful_referrals=0, referrer_rewards=(), friend_rewards=())


def to_us(value: datetime | None) -> int | None:
    """Microseconds since the epoch, the form times travel in (see `graph.cypher._datetime`)."""
    if value is None:
        return None
    if value.tzinfo is None:  # rows built without validation: naive means UTC, as in graph.model
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _MICROSECOND


def from_us(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def _times(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {**row, **{name: from_us(row[name]) for name in names}}


def _code_from(row: dict[str, Any]) -> ReferralCode:
    return ReferralCode.model_validate(_times(row, "created_at", "expires_at", "status_at"))


def _click_params(click: Click) -> dict[str, Any]:
    return {
        "id": click.id,
        "code": click.code,
        "at_us": to_us(click.at),
        "visitor": click.visitor,
        "ip_hash": click.ip_hash,
        "source": click.source,
        "customer_id": click.customer_id,
    }


def _click_from(row: dict[str, Any]) -> Click:
    return Click.model_validate(_times(row, "at"))


def _reward_from(row: dict[str, Any]) -> Reward:
    return Reward.model_validate(_times(row, "created_at", "updated_at", "approve_after", "review_deadline"))


def _entry_from(row: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry.model_validate(_times(row, "at"))


def _entry_order(entry: LedgerEntry) -> tuple[datetime, int, str]:
    return entry.at, _STATE_ORDER[entry.to_state], entry.id


def _signals_json(signals: Sequence[Signal]) -> str:
    return json.dumps([signal.model_dump(mode="json") for signal in signals], separators=(",", ":"))


def _signal_rows(signals: Sequence[Signal]) -> list[dict[str, str]]:
    return [{"kind": signal.kind.value, "value": signal.value} for signal in signals]


def _conversion_from(row: dict[str, Any]) -> Conversion:
    order = Order(
        id=row["order_id"],
        customer_id=row["customer_id"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        at=from_us(row["at"]),
        code=row["code"],
        click_id=row["click_id"],
        signals=tuple(Signal.model_validate(s) for s in json.loads(row["signals_json"])),
    )
    attribution = None
    if row["campaign_id"] is not None:
        attribution = Attribution(
            referrer_id=row["referrer_id"],
            campaign_id=row["campaign_id"],
            code=row["attributed_code"],
            method=row["method"],
            touched_at=from_us(row["touched_at"]),
        )
    verdict = None if row["verdict_json"] is None else FraudVerdict.model_validate_json(row["verdict_json"])
    return Conversion(
        order=order,
        status=row["status"],
        attribution=attribution,
        verdict=verdict,
        settled_at=from_us(row["settled_at"]),
        refunded_minor=row["refunded_minor"],
        reviewed_by=row["reviewed_by"],
        review_note=row["review_note"],
        reward_ids=tuple(row["reward_ids"]),
        notes=tuple(row["notes"] or ()),
    )


def _rows(tx: ManagedTransaction, query: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(record["row"]) for record in tx.run(query, params)]


def _one(tx: ManagedTransaction, query: str, **params: Any) -> dict[str, Any] | None:
    record = tx.run(query, params).single()
    return None if record is None else dict(record["row"])


def _found(tx: ManagedTransaction, query: str, **params: Any) -> dict[str, Any]:
    """The one row of a node this transaction has locked or written, so it must be there."""
    return dict(tx.run(query, params).single(strict=True)["row"])


def _stored_conversion(tx: ManagedTransaction, order_id: str) -> Conversion:
    return _conversion_from(_found(tx, q.GET_CONVERSION, order_id=order_id))


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidInput(f"limit must be zero or more, not {limit}")


def _move_row(
    reward: Reward, to_state: RewardState, *, at: datetime, reason: str, approve_after: datetime | None = None
) -> dict[str, Any]:
    check_transition(reward.id, reward.state, to_state)
    return {
        "id": reward.id,
        "entry_id": ledger_entry_id(reward.id, to_state),
        "from_state": reward.state.value,
        "to_state": to_state.value,
        "at_us": to_us(at),
        "approve_after_us": to_us(approve_after),
        "reason": reason[:_MAX_REASON],
    }


class Neo4jProgram(CachedLinks):
    """The referral programme's records in Neo4j; mixed into `Neo4jStore`, whose plumbing it uses."""

    if TYPE_CHECKING:
        _driver: Driver
        _database: str

        def _write(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T: ...

        def _read(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T: ...

        def _errors(self, doing: str) -> AbstractContextManager[None]: ...

        def _check_open(self) -> None: ...

    # --- campaigns -------------------------------------------------------------------------------------------
    def save_campaign(self, campaign: Campaign) -> None:
        params = {
            "id": campaign.id,
            "name": campaign.name,
            "status": campaign.status.value,
            "created_at_us": to_us(campaign.created_at),
            "json": campaign.model_dump_json(),
        }
        try:
            self._write("save the campaign", lambda tx: tx.run(q.MERGE_CAMPAIGN, params).consume())
        finally:
            self.links.forget_campaign(campaign.id)

    def get_campaign(self, campaign_id: str) -> Campaign:
        def work(tx: ManagedTransaction) -> str | None:
            record = tx.run(q.GET_CAMPAIGN, id=campaign_id).single()
            return None if record is None else str(record["json"])

        found = self._read("read the campaign", work)
        if found is None:
            raise NotFound(f"no campaign {campaign_id!r}")
        return Campaign.model_validate_json(found)

    def list_campaigns(self) -> list[Campaign]:
        def work(tx: ManagedTransaction) -> list[str]:
            return [record["json"] for record in tx.run(q.LIST_CAMPAIGNS)]

        return [Campaign.model_validate_json(found) for found in self._read("list campaigns", work)]

    # --- codes and clicks ------------------------------------------------------------------------------------
    def create_code(self, code: ReferralCode) -> ReferralCode:
        params = {
            "code": code.code,
            "customer_id": code.customer_id,
            "campaign_id": code.campaign_id,
            "status": code.status.value,
            "vanity": code.vanity,
            "created_at_us": to_us(code.created_at),
            "expires_at_us": to_us(code.expires_at),
            "status_at_us": to_us(code.status_at),
            "replaced_by": code.replaced_by,
        }

        def work(tx: ManagedTransaction) -> ReferralCode:
            record = tx.run(q.CREATE_CODE, params).single()
            if record is None:
                found = tx.run(q.OWNER_AND_CAMPAIGN, params).single(strict=True)
                if not found["customer"]:
                    raise NotFound(f"no customer {code.customer_id!r} to own code {code.code!r}")
                raise NotFound(f"no campaign {code.campaign_id!r} for code {code.code!r}")
            if not record["created"]:
                raise LedgerConflict(f"the code {code.code!r} exists already")
            return _code_from(_found(tx, q.GET_CODE, code=code.code))

        try:
            return self._write("create the code", work)
        finally:
            self.links.forget_code(code.code)

    def get_code(self, code: str) -> ReferralCode:
        row = self._read("read the code", lambda tx: _one(tx, q.GET_CODE, code=code))
        if row is None:
            raise NotFound(f"no code {code!r}")
        return _code_from(row)

    def list_codes(self, *, customer_id: str | None = None, campaign_id: str | None = None) -> list[ReferralCode]:
        if customer_id is not None:
            query = q.LIST_CODES_OF_CUSTOMER
        elif campaign_id is not None:
            query = q.LIST_CODES_IN_CAMPAIGN
        else:
            query = q.LIST_CODES
        params = {"customer_id": customer_id, "campaign_id": campaign_id}
        return [_code_from(row) for row in self._read("list codes", lambda tx: _rows(tx, query, **params))]

    def set_code_status(
        self, code: str, status: CodeStatus, *, at: datetime, replaced_by: str | None = None
    ) -> ReferralCode:
        def work(tx: ManagedTransaction) -> ReferralCode:
            if not tx.run(q.LOCK_CODE, code=code).single(strict=True)["n"]:
                raise NotFound(f"no code {code!r}")
            current = _code_from(_found(tx, q.GET_CODE, code=code))
            if current.status is status:
                return current
            params = {"code": code, "status": status.value, "status_at_us": to_us(at), "replaced_by": replaced_by}
            return _code_from(_found(tx, q.SET_CODE_STATUS, **params))

        try:
            return self._write("change the code's status", work)
        finally:
            self.links.forget_code(code)

    def record_click(self, click: Click) -> None:
        params = _click_params(click)

        def work(tx: ManagedTransaction) -> None:
            if not tx.run(q.RECORD_CLICK, params).single(strict=True)["found"]:
                raise NotFound(f"no code {click.code!r} for click {click.id!r}")

        self._write("record the click", work)

    def record_clicks(self, clicks: Sequence[Click]) -> None:
        rows = [_click_params(click) for click in clicks]
        if rows:
            self._write("record clicks", lambda tx: tx.run(q.RECORD_CLICKS, rows=rows).consume())

    def get_click(self, click_id: str) -> Click | None:
        row = self._read("read the click", lambda tx: _one(tx, q.GET_CLICK, id=click_id))
        return None if row is None else _click_from(row)

    # --- signups and attribution -----------------------------------------------------------------------------
    def record_signup(self, signup: Signup, attribution: Attribution | None) -> None:
        friend = signup.customer_id
        referrer = attribution.referrer_id if attribution is not None else None

        def work(tx: ManagedTransaction) -> None:
            locked = self._lock_customers(tx, [friend] if referrer is None else [friend, referrer])
            for person in (friend, referrer):
                if person is not None and person not in locked:
                    raise NotFound(f"no customer {person!r}")
            tx.run(
                q.MERGE_SIGNUP,
                customer_id=friend,
                at_us=to_us(signup.at),
                code=signup.code,
                click_id=signup.click_id,
            ).consume()
            if signup.signals:
                tx.run(q.MERGE_SIGNALS, customer_id=friend, signals=_signal_rows(signup.signals)).consume()
            if attribution is not None and attribution.referrer_id != friend:
                tx.run(
                    q.SIGN_UP_REFERRAL,
                    referrer_id=attribution.referrer_id,
                    friend_id=friend,
                    code=attribution.code,
                    at_us=to_us(attribution.touched_at),
                    status_at_us=to_us(signup.at),
                ).consume()

        self._write("record the signup", work)

    def touches_for(self, customer_id: str, *, click_ids: Sequence[str], since: datetime) -> list[Touch]:
        params = {"customer_id": customer_id, "click_ids": list(click_ids), "since_us": to_us(since)}

        def work(tx: ManagedTransaction) -> list[Touch]:
            touches = []
            for record in tx.run(q.TOUCH_CLICKS, params):
                click, code = _click_from(dict(record["click"])), _code_from(dict(record["code"]))
                touches.append(self._touch(TouchKind.CLICK, code, click.at, click.id))
            for record in tx.run(q.SIGNUP_CODE, params):
                at = from_us(record["at"]) or EPOCH
                touches.append(self._touch(TouchKind.SIGNUP_CODE, _code_from(dict(record["code"])), at, None))
            return touches

        touches = self._read("find the touches", work)
        return sorted(touches, key=lambda t: (t.at, t.kind.value, t.click_id or "", t.code))

    @staticmethod
    def _touch(kind: TouchKind, code: ReferralCode, at: datetime, click_id: str | None) -> Touch:
        return Touch(
            kind=kind,
            code=code.code,
            referrer_id=code.customer_id,
            campaign_id=code.campaign_id,
            at=at,
            usable=code.usable_at(at),
            click_id=click_id,
        )

    # --- conversions -----------------------------------------------------------------------------------------
    def record_order(self, order: Order) -> Conversion:
        params = {
            "order_id": order.id,
            "customer_id": order.customer_id,
            "amount_minor": order.amount_minor,
            "currency": order.currency,
            "at_us": to_us(order.at),
            "code": order.code,
            "click_id": order.click_id,
            "signals_json": _signals_json(order.signals),
        }

        def same_terms(stored: Conversion) -> Conversion:
            terms = ("customer_id", "amount_minor", "currency")
            if any(getattr(stored.order, name) != getattr(order, name) for name in terms):
                raise LedgerConflict(f"order {order.id!r} was delivered before with another buyer, amount or currency")
            return stored

        def work(tx: ManagedTransaction) -> Conversion:
            known = _one(tx, q.GET_CONVERSION, order_id=order.id)
            if known is not None:
                return same_terms(_conversion_from(known))
            if order.customer_id not in self._lock_customers(tx, [order.customer_id]):
                raise NotFound(f"no customer {order.customer_id!r} placed order {order.id!r}")
            record = tx.run(q.CREATE_CONVERSION, params).single(strict=True)
            stored = _conversion_from(dict(record["row"]))
            if not record["created"]:  # another delivery of the same order won the race
                return same_terms(stored)
            if order.signals:
                tx.run(q.MERGE_SIGNALS, customer_id=order.customer_id, signals=_signal_rows(order.signals)).consume()
            return stored

        return self._write("record the order", work)

    def get_conversion(self, order_id: str) -> Conversion:
        row = self._read("read the conversion", lambda tx: _one(tx, q.GET_CONVERSION, order_id=order_id))
        if row is None:
            raise NotFound(f"no order {order_id!r}")
        return _conversion_from(row)

    def list_conversions(
        self,
        *,
        status: ConversionStatus | None = None,
        campaign_id: str | None = None,
        customer_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Conversion]:
        _check_limit(limit)
        params = {
            "status": None if status is None else ConversionStatus(status).value,
            "campaign_id": campaign_id,
            "customer_id": customer_id,
            "limit": limit,
            "after": after or "",
        }
        rows = self._read("list conversions", lambda tx: _rows(tx, q.LIST_CONVERSIONS, **params))
        return [_conversion_from(row) for row in rows]

    def fraud_context(self, order: Order, attribution: Attribution, settings: FraudSettings) -> FraudContext:
        friend, referrer = order.customer_id, attribution.referrer_id
        window = timedelta(hours=settings.velocity_window_hours)

        def work(tx: ManagedTransaction) -> FraudContext:
            referrer_signals = self._signals_of(tx, referrer)
            friend_signals = list(dict.fromkeys([*self._signals_of(tx, friend), *order.signals]))
            keys = [f"{s.kind.value}:{s.value}" for s in friend_signals]
            shared: dict[SignalKind, set[str]] = {}
            for record in tx.run(q.SHARED_SIGNALS, keys=keys, customer_id=friend):
                shared.setdefault(SignalKind(record["kind"]), set()).update(record["ids"])
            in_window = tx.run(
                q.CODE_CONVERSIONS_IN_WINDOW,
                code=attribution.code,
                order_id=order.id,
                from_us=to_us(order.at - window),
                to_us=to_us(order.at),
            ).single(strict=True)["n"]
            links = self._neighbourhood(tx, [referrer, friend], settings.ring_max_hops)
            people = sorted({link.referrer_id for link in links} | {link.friend_id for link in links})
            created = {r["id"]: from_us(r["created_at"]) for r in tx.run(q.CREATED_AT, ids=[*people, friend])}
            return FraudContext(
                order=order,
                attribution=attribution,
                referrer_signals=tuple(referrer_signals),
                friend_signals=tuple(friend_signals),
                shared_signals={kind: tuple(sorted(ids)) for kind, ids in shared.items()},
                friend_created_at=created.get(friend),
                code_conversions_in_window=int(in_window),
                neighbourhood=tuple(links),
                customer_created_at={person: created.get(person) for person in people},
            )

        return self._read("read the fraud context", work)

    @staticmethod
    def _signals_of(tx: ManagedTransaction, customer_id: str) -> list[Signal]:
        return [
            Signal(kind=record["kind"], value=record["value"])
            for record in tx.run(q.SIGNALS_OF, customer_id=customer_id)
        ]

    @staticmethod
    def _neighbourhood(tx: ManagedTransaction, start: list[str], hops: int) -> list[ReferralLink]:
        """Live `REFERRED` edges within `hops` undirected steps of `start`, breadth first, at most
        `_MAX_NEIGHBOURHOOD_EDGES` of them."""
        seen, frontier = set(start), sorted(set(start))
        links: dict[tuple[str, str], ReferralLink] = {}
        for _ in range(hops):
            room = _MAX_NEIGHBOURHOOD_EDGES - len(links)
            if not frontier or room <= 0:
                break
            reached: set[str] = set()
            for r in tx.run(q.LIVE_REFERRALS_AROUND, ids=frontier, limit=room):
                key = (r["referrer_id"], r["friend_id"])
                links.setdefault(key, ReferralLink(referrer_id=key[0], friend_id=key[1], at=from_us(r["at"]) or EPOCH))
                reached.update(key)
            frontier = sorted(reached - seen)
            seen |= reached
        return [links[key] for key in sorted(links)]

    # --- settling, refunding, reviewing ----------------------------------------------------------------------
    @staticmethod
    def _lock_customers(tx: ManagedTransaction, ids: Sequence[str]) -> set[str]:
        """Lock the customers in id order (so two lockers never wait on each other crosswise); returns those
        that exist."""
        return {record["id"] for record in tx.run(q.LOCK_CUSTOMERS, ids=sorted(set(ids)))}

    @staticmethod
    def _locked_conversion(tx: ManagedTransaction, order_id: str) -> Conversion:
        if not tx.run(q.LOCK_CONVERSION, order_id=order_id).single(strict=True)["n"]:
            raise NotFound(f"no order {order_id!r}")
        return _stored_conversion(tx, order_id)

    @staticmethod
    def _locked_rewards(tx: ManagedTransaction, ids: Sequence[str]) -> list[Reward]:
        wanted = sorted(set(ids))
        tx.run(q.LOCK_REWARDS, ids=wanted).consume()
        return sorted((_reward_from(row) for row in _rows(tx, q.GET_REWARDS, ids=wanted)), key=lambda r: r.id)

    @staticmethod
    def _move(tx: ManagedTransaction, rows: list[dict[str, Any]]) -> list[Reward]:
        return [_reward_from(row) for row in _rows(tx, q.MOVE_REWARDS, rows=rows)] if rows else []

    @staticmethod
    def _history(tx: ManagedTransaction, attribution: Attribution, friend: str) -> RewardHistory:
        campaign = attribution.campaign_id
        successes = tx.run(
            q.SUCCESSFUL_REFERRALS, referrer_id=attribution.referrer_id, campaign_id=campaign, friend_id=friend
        ).single(strict=True)["n"]
        side_rows = {
            side: _rows(tx, q.REWARDS_OF_SIDE, customer_id=customer, campaign_id=campaign, side=side)
            for side, customer in (("referrer", attribution.referrer_id), ("friend", friend))
        }
        return RewardHistory(
            successful_referrals=int(successes),
            referrer_rewards=tuple(_reward_from(row) for row in side_rows["referrer"]),
            friend_rewards=tuple(_reward_from(row) for row in side_rows["friend"]),
        )

    @staticmethod
    def _reverse_referral(tx: ManagedTransaction, conversion: Conversion, at: datetime) -> None:
        """Reverse the conversion's `REFERRED` edge unless the friend has another live conversion through it."""
        attribution = conversion.attribution
        if attribution is None or attribution.referrer_id == conversion.order.customer_id:
            return
        tx.run(
            q.REVERSE_REFERRAL,
            referrer_id=attribution.referrer_id,
            friend_id=conversion.order.customer_id,
            order_id=conversion.id,
            status_at_us=to_us(at),
        ).consume()

    @staticmethod
    def _people(conversion: Conversion) -> list[str]:
        people = [conversion.order.customer_id]
        if conversion.attribution is not None:
            people.append(conversion.attribution.referrer_id)
        return people

    def settle_conversion(
        self, order_id: str, attribution: Attribution | None, plan: Plan, *, at: datetime
    ) -> Conversion:
        def work(tx: ManagedTransaction) -> Conversion:
            current = self._locked_conversion(tx, order_id)
            if current.status is not ConversionStatus.PENDING:
                return current
            friend = current.order.customer_id
            history = _EMPTY_HISTORY
            if attribution is not None:
                self._lock_customers(tx, [friend, attribution.referrer_id])
                history = self._history(tx, attribution, friend)
            settlement = plan(history)
            self._write_settlement(tx, current, settlement, planned_with=attribution, at=at)
            return _stored_conversion(tx, order_id)

        return self._write("settle the conversion", work)

    def _write_settlement(
        self,
        tx: ManagedTransaction,
        conversion: Conversion,
        settlement: Settlement,
        *,
        planned_with: Attribution | None,
        at: datetime,
    ) -> None:
        friend = conversion.order.customer_id
        chosen = settlement.attribution
        first_grants: dict[str, RewardGrant] = {}  # the first of several grants with one id wins, as in a replay
        for grant in settlement.grants:
            check_transition(grant.id, None, grant.state)
            first_grants.setdefault(grant.id, grant)
        if chosen is not None and chosen != planned_with:  # the plan attributed elsewhere: lock whom it names
            self._lock_customers(tx, [friend, chosen.referrer_id])
        tx.run(
            q.SETTLE_CONVERSION,
            order_id=conversion.id,
            status=settlement.status.value,
            referrer_id=None if chosen is None else chosen.referrer_id,
            campaign_id=None if chosen is None else chosen.campaign_id,
            attributed_code=None if chosen is None else chosen.code,
            method=None if chosen is None else chosen.method.value,
            touched_at_us=None if chosen is None else to_us(chosen.touched_at),
            verdict_json=None if settlement.verdict is None else settlement.verdict.model_dump_json(),
            settled_at_us=to_us(at),
            reward_ids=[grant.id for grant in settlement.grants],
            notes=list(settlement.notes),
        ).consume()
        rows = [
            {
                "id": grant.id,
                "entry_id": ledger_entry_id(grant.id, grant.state),
                "customer_id": grant.customer_id,
                "campaign_id": grant.campaign_id,
                "rule_id": grant.rule_id,
                "side": grant.side.value,
                "kind": grant.kind.value,
                "amount_minor": grant.amount_minor,
                "currency": grant.currency,
                "description": grant.description,
                "conversion_id": grant.conversion_id,
                "state": grant.state.value,
                "at_us": to_us(at),
                "approve_after_us": to_us(grant.approve_after),
                "review_deadline_us": to_us(grant.review_deadline),
                "reason": f"issued for conversion {grant.conversion_id}"[:_MAX_REASON],
            }
            for grant in first_grants.values()
        ]
        if rows:
            tx.run(q.ISSUE_REWARDS, rows=rows).consume()
        edge = chosen
        if edge is None or edge.referrer_id == friend:
            return
        if settlement.status in _LIVE_CONVERSIONS:
            tx.run(
                q.CONVERT_REFERRAL,
                referrer_id=edge.referrer_id,
                friend_id=friend,
                code=edge.code,
                at_us=to_us(edge.touched_at),
                status_at_us=to_us(at),
            ).consume()
        elif settlement.status is ConversionStatus.REJECTED:
            tx.run(
                q.REVERSE_REFERRAL,
                referrer_id=edge.referrer_id,
                friend_id=friend,
                order_id=conversion.id,
                status_at_us=to_us(at),
            ).consume()

    def record_refund(self, refund: Refund, *, at: datetime) -> Conversion:
        def work(tx: ManagedTransaction) -> Conversion:
            current = self._locked_conversion(tx, refund.order_id)
            if tx.run(q.REFUND_SEEN, id=refund.id).single(strict=True)["seen"]:
                return current
            refunded = current.refunded_minor + refund.amount_minor
            reverses = refunded >= current.order.amount_minor and current.status is not ConversionStatus.REVERSED
            if reverses:
                self._lock_customers(tx, self._people(current))
            tx.run(
                q.RECORD_REFUND,
                id=refund.id,
                order_id=refund.order_id,
                amount_minor=refund.amount_minor,
                at_us=to_us(refund.at),
                reason=refund.reason,
            ).consume()
            if reverses:
                tx.run(
                    q.SET_CONVERSION_STATUS,
                    order_id=current.id,
                    status=ConversionStatus.REVERSED.value,
                    reviewed_by=None,
                    review_note=None,
                ).consume()
                self._move(tx, self._reversals(tx, current, refund, at))
                self._reverse_referral(tx, current, at)
            return _stored_conversion(tx, current.id)

        return self._write("record the refund", work)

    def _reversals(
        self, tx: ManagedTransaction, conversion: Conversion, refund: Refund, at: datetime
    ) -> list[dict[str, Any]]:
        """Each live reward of a refunded conversion is reversed (a clawback when it was fulfilled); a held one
        cannot be reversed, and never counted, so it is rejected."""
        reason = f"refund {refund.id}: {refund.reason}"
        return [
            _move_row(
                reward,
                RewardState.REJECTED if reward.state is RewardState.HELD else RewardState.REVERSED,
                at=at,
                reason=reason,
            )
            for reward in self._locked_rewards(tx, self._reward_ids_of(tx, conversion))
            if reward.state in LIVE_REWARD_STATES
        ]

    @staticmethod
    def _reward_ids_of(tx: ManagedTransaction, conversion: Conversion) -> list[str]:
        """The rewards issued for this conversion (not a grant id of its settlement that named an older reward)."""
        return [record["id"] for record in tx.run(q.REWARD_IDS_OF_CONVERSION, conversion_id=conversion.id)]

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
        def work(tx: ManagedTransaction) -> Conversion:
            current = self._locked_conversion(tx, order_id)
            if current.status is not ConversionStatus.HELD:
                raise LedgerConflict(f"order {order_id!r} is {current.status.value}, not held for review")
            self._lock_customers(tx, self._people(current))
            status = ConversionStatus.ATTRIBUTED if approve else ConversionStatus.REJECTED
            tx.run(
                q.SET_CONVERSION_STATUS, order_id=order_id, status=status.value, reviewed_by=reviewer, review_note=note
            ).consume()
            target = RewardState.PENDING if approve else RewardState.REJECTED
            reason = f"{'approved' if approve else 'rejected'} by {reviewer}"
            rows = [
                _move_row(reward, target, at=at, reason=reason, approve_after=approve_after if approve else None)
                for reward in self._locked_rewards(tx, self._reward_ids_of(tx, current))
                if reward.state is RewardState.HELD
            ]
            self._move(tx, rows)
            if not approve:
                self._reverse_referral(tx, current, at)
            return _stored_conversion(tx, order_id)

        return self._write("review the conversion", work)

    # --- rewards and the ledger ------------------------------------------------------------------------------
    def advance_rewards(self, now: datetime, *, limit: int = 1000) -> list[Reward]:
        """Approvals first, in one transaction; then each overdue held conversion in its own, with all of its held
        rewards (a conversion is never left half rejected, so one that no longer fits waits for the next call)."""
        _check_limit(limit)
        now_us = to_us(now)

        def candidates(tx: ManagedTransaction) -> tuple[list[str], list[tuple[str, str]]]:
            approvals = [r["id"] for r in tx.run(q.DUE_APPROVALS, now_us=now_us, limit=limit)]
            rejections = [(r["id"], r["conversion_id"]) for r in tx.run(q.DUE_REJECTIONS, now_us=now_us, limit=limit)]
            return approvals, rejections

        approvals, rejections = self._read("find rewards due", candidates) if limit else ([], [])
        moved: list[Reward] = []
        if approvals:
            moved = self._write("approve rewards", lambda tx: self._approve_due(tx, approvals, now))
        for reward_id, conversion_id in rejections:
            if len(moved) >= limit:
                break
            if any(done.id == reward_id for done in moved):
                continue
            room = limit - len(moved) if moved else None
            rejected = self._write("reject unreviewed rewards", self._rejecting(reward_id, conversion_id, now, room))
            if rejected is None:
                break
            moved.extend(rejected)
        return moved

    def _approve_due(self, tx: ManagedTransaction, ids: list[str], now: datetime) -> list[Reward]:
        rows = [
            _move_row(reward, RewardState.APPROVED, at=now, reason="hold period over")
            for reward in self._locked_rewards(tx, ids)
            if reward.state is RewardState.PENDING and reward.approve_after <= now
        ]
        return self._move(tx, rows)

    def _rejecting(
        self, reward_id: str, conversion_id: str, now: datetime, room: int | None
    ) -> Callable[[ManagedTransaction], list[Reward] | None]:
        return lambda tx: self._reject_unreviewed(tx, reward_id, conversion_id, now, room)

    def _reject_unreviewed(
        self, tx: ManagedTransaction, reward_id: str, conversion_id: str, now: datetime, room: int | None
    ) -> list[Reward] | None:
        """Reject an overdue held reward with its conversion and the conversion's other held rewards, or return
        `None` when they are more than `room` (no limit for the first group of a call). Locks in the order every
        writer uses: conversion, people, rewards."""
        conversion = None
        if tx.run(q.LOCK_CONVERSION, order_id=conversion_id).single(strict=True)["n"]:
            conversion = _stored_conversion(tx, conversion_id)
        if conversion is None or conversion.status is not ConversionStatus.HELD:
            found = self._locked_rewards(tx, [reward_id])
            if not found or found[0].state is not RewardState.HELD:
                return []
            due = found[0].review_deadline is not None and found[0].review_deadline <= now
            rows = [_move_row(found[0], RewardState.REJECTED, at=now, reason="review deadline passed")] if due else []
            return self._move(tx, rows)
        self._lock_customers(tx, self._people(conversion))
        together = [
            r for r in self._locked_rewards(tx, self._reward_ids_of(tx, conversion)) if r.state is RewardState.HELD
        ]
        if room is not None and len(together) > room:
            return None
        tx.run(
            q.SET_CONVERSION_STATUS,
            order_id=conversion.id,
            status=ConversionStatus.REJECTED.value,
            reviewed_by=_DEADLINE_REVIEWER,
            review_note="not reviewed in time",
        ).consume()
        self._reverse_referral(tx, conversion, now)
        reason = f"rejected by {_DEADLINE_REVIEWER}"
        return self._move(tx, [_move_row(reward, RewardState.REJECTED, at=now, reason=reason) for reward in together])

    def transition_reward(self, reward_id: str, to_state: RewardState, *, at: datetime, reason: str) -> Reward:
        if len(reason) > _MAX_REASON:
            raise InvalidInput(f"a ledger reason is at most {_MAX_REASON} characters")

        def work(tx: ManagedTransaction) -> Reward:
            found = self._locked_rewards(tx, [reward_id])
            if not found:
                raise NotFound(f"no reward {reward_id!r}")
            [reward] = found
            if reward.state is to_state:
                return reward
            [moved] = self._move(tx, [_move_row(reward, RewardState(to_state), at=at, reason=reason)])
            return moved

        return self._write("move the reward", work)

    def get_reward(self, reward_id: str) -> Reward:
        found = self._read("read the reward", lambda tx: _rows(tx, q.GET_REWARDS, ids=[reward_id]))
        if not found:
            raise NotFound(f"no reward {reward_id!r}")
        return _reward_from(found[0])

    def list_rewards(
        self,
        *,
        customer_id: str | None = None,
        campaign_id: str | None = None,
        state: RewardState | None = None,
        conversion_id: str | None = None,
        limit: int = 1000,
    ) -> list[Reward]:
        _check_limit(limit)
        params = {
            "customer_id": customer_id,
            "campaign_id": campaign_id,
            "state": None if state is None else RewardState(state).value,
            "conversion_id": conversion_id,
            "limit": limit,
        }
        return [_reward_from(row) for row in self._read("list rewards", lambda tx: _rows(tx, q.LIST_REWARDS, **params))]

    def ledger_entries(self, *, customer_id: str | None = None, reward_id: str | None = None) -> list[LedgerEntry]:
        params = {"customer_id": customer_id, "reward_id": reward_id}
        rows = self._read("read the ledger", lambda tx: _rows(tx, q.LEDGER_ENTRIES, **params))
        return sorted((_entry_from(row) for row in rows), key=_entry_order)

    def balances(self, customer_id: str) -> list[Balance]:
        return balances_from_entries(self.ledger_entries(customer_id=customer_id))

    # --- fraud scanning and metrics --------------------------------------------------------------------------
    def code_activity(self, code: str, *, since: datetime) -> CodeActivity:
        found = self._activities([code], since)
        if not found:
            raise NotFound(f"no code {code!r}")
        return found[0]

    def iter_code_activity(self, *, since: datetime, min_clicks: int = 1) -> Iterator[CodeActivity]:
        def work(tx: ManagedTransaction) -> list[str]:
            if min_clicks <= 0:
                return [record["code"] for record in tx.run(q.ALL_CODES)]
            return [
                record["code"] for record in tx.run(q.CODES_WITH_CLICKS, since_us=to_us(since), min_clicks=min_clicks)
            ]

        codes = self._read("find active codes", work)
        for start in range(0, len(codes), 500):
            yield from self._activities(codes[start : start + 500], since)

    def _activities(self, codes: list[str], since: datetime) -> list[CodeActivity]:
        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            return _rows(tx, q.CODE_ACTIVITY, codes=codes, since_us=to_us(since))

        activities = []
        for row in self._read("read code activity", work):
            sources: dict[str, int] = {}
            for source in row.pop("sources"):
                sources[source] = sources.get(source, 0) + 1
            activities.append(CodeActivity.model_validate({**row, "sources": dict(sorted(sources.items()))}))
        return activities

    def program_counts(self, campaign_id: str | None = None) -> ProgramCounts:
        def work(tx: ManagedTransaction) -> ProgramCounts:
            clicks = tx.run(q.CLICK_COUNTS, campaign_id=campaign_id).single(strict=True)
            conversions = dict.fromkeys(ConversionStatus, 0)
            for record in tx.run(q.CONVERSION_COUNTS, campaign_id=campaign_id):
                conversions[ConversionStatus(record["status"])] = int(record["n"])
            costs: dict[str, dict[RewardState, int]] = {}
            for record in tx.run(q.REWARD_COSTS, campaign_id=campaign_id):
                costs.setdefault(record["currency"], dict.fromkeys(RewardState, 0))[RewardState(record["state"])] = int(
                    record["total"]
                )
            return ProgramCounts(
                campaign_id=campaign_id,
                customers=int(tx.run(cypher.COUNT_CUSTOMERS).single(strict=True)["n"]),
                advocates_with_code=int(
                    tx.run(q.ADVOCATES_WITH_CODE, campaign_id=campaign_id).single(strict=True)["n"]
                ),
                advocates_sharing=int(clicks["sharing"]),
                clicks=int(clicks["clicks"]),
                distinct_visitors=int(clicks["visitors"]),
                signups=int(tx.run(q.SIGNUP_COUNT, campaign_id=campaign_id).single(strict=True)["n"]),
                conversions=conversions,
                reward_cost_minor=costs,
            )

        return self._read("count the programme", work)

    def iter_conversions(self, campaign_id: str | None = None) -> Iterator[Conversion]:
        """Streamed from one explicit read transaction (a managed one could be retried after rows were yielded)."""
        self._check_open()
        return self._stream_conversions(campaign_id)

    def _stream_conversions(self, campaign_id: str | None) -> Iterator[Conversion]:
        with (
            self._errors("read conversions"),
            self._driver.session(database=self._database, default_access_mode=READ_ACCESS) as session,
            session.begin_transaction() as tx,
        ):
            for record in tx.run(q.ITER_CONVERSIONS, campaign_id=campaign_id):
                yield _conversion_from(dict(record["row"]))
