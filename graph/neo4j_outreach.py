"""`Neo4jOutreach`: the `OutreachStore` half of `Neo4jStore` (the graph model is drawn in `graph.outreach_cypher`).

The outbox is where concurrent workers meet. `claim_message` and `finish_message` are each one managed write
transaction that locks the message node first (`LOCK_MESSAGE`) and reads its status, lease and due time in a
later statement: Neo4j reads are read-committed, so a state read before the lock could be one another worker
is changing; read after it, it is the state no one else can change until this transaction ends. The decision
itself is made in Python (`_claimed`, `_finished`), so the driver may retry the whole function after a
transient error.

Times travel as integer microseconds and are stored as `DATETIME`s, as in the rest of the store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from neo4j import ManagedTransaction

from graph import outreach_cypher as q
from graph.errors import InvalidInput, NotFound
from graph.model import ContactChannel, _utc
from graph.neo4j_program import from_us, to_us
from graph.outbox import check_outcome, claimable, claimed, finished
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

T = TypeVar("T")

_CHUNK: Final = 10_000
"""Messages per `UNWIND` statement inside the one transaction of `enqueue_messages`."""
_MESSAGE_TIMES: Final = ("not_before", "lease_until", "created_at", "updated_at", "sent_at")


# --- rows in and out -------------------------------------------------------------------------------------------
def _times(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {**row, **{name: from_us(row[name]) for name in names}}


def _template_from(row: dict[str, Any]) -> Template:
    return Template.model_validate(_times(row, "updated_at"))


def _message_from(row: dict[str, Any]) -> OutboxMessage:
    return OutboxMessage.model_validate(_times(row, *_MESSAGE_TIMES))


def _suppression_from(row: dict[str, Any]) -> Suppression:
    return Suppression.model_validate(_times(row, "at"))


def _message_row(message: OutboxMessage) -> dict[str, Any]:
    row = message.model_dump(mode="json", exclude=set(_MESSAGE_TIMES))
    row.update({f"{name}_us": to_us(getattr(message, name)) for name in _MESSAGE_TIMES})
    return row


def _one(tx: ManagedTransaction, query: str, **params: Any) -> dict[str, Any] | None:
    record = tx.run(query, params).single()
    return None if record is None else dict(record["row"])


def _rows(tx: ManagedTransaction, query: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(record["row"]) for record in tx.run(query, params)]


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidInput(f"limit must be zero or more, not {limit}")


class Neo4jOutreach:
    """Templates, outreach plans, the outbox and suppressions in Neo4j; mixed into `Neo4jStore`."""

    if TYPE_CHECKING:

        def _write(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T: ...

        def _read(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T: ...

    # --- templates -----------------------------------------------------------------------------------------
    def save_template(self, template: Template) -> None:
        params = {
            **template.model_dump(mode="json", exclude={"updated_at"}),
            "updated_at_us": to_us(template.updated_at),
        }
        self._write("save the template", lambda tx: tx.run(q.MERGE_TEMPLATE, params).consume())

    def get_template(self, template_id: str) -> Template:
        row = self._read("read the template", lambda tx: _one(tx, q.GET_TEMPLATE, id=template_id))
        if row is None:
            raise NotFound(f"no template {template_id!r}")
        return _template_from(row)

    def list_templates(self, purpose: TemplatePurpose | None = None) -> list[Template]:
        wanted = None if purpose is None else TemplatePurpose(purpose).value
        rows = self._read("list templates", lambda tx: _rows(tx, q.LIST_TEMPLATES, purpose=wanted))
        return [_template_from(row) for row in rows]

    def delete_template(self, template_id: str) -> None:
        def work(tx: ManagedTransaction) -> None:
            if not tx.run(q.DELETE_TEMPLATE, id=template_id).single(strict=True)["n"]:
                raise NotFound(f"no template {template_id!r}")

        self._write("delete the template", work)

    # --- outreach plans ------------------------------------------------------------------------------------
    def save_outreach(self, outreach: Outreach) -> None:
        params = {
            "id": outreach.id,
            "name": outreach.name,
            "campaign_id": outreach.campaign_id,
            "status": outreach.status.value,
            "created_at_us": to_us(outreach.created_at),
            "started_at_us": to_us(outreach.started_at),
            "json": outreach.model_dump_json(),
        }

        def work(tx: ManagedTransaction) -> None:
            if tx.run(q.MERGE_OUTREACH, params).single() is None:
                raise NotFound(f"no campaign {outreach.campaign_id!r} for outreach {outreach.id!r}")

        self._write("save the outreach", work)

    def get_outreach(self, outreach_id: str) -> Outreach:
        def work(tx: ManagedTransaction) -> str | None:
            record = tx.run(q.GET_OUTREACH, id=outreach_id).single()
            return None if record is None else str(record["json"])

        found = self._read("read the outreach", work)
        if found is None:
            raise NotFound(f"no outreach {outreach_id!r}")
        return Outreach.model_validate_json(found)

    def list_outreach(self) -> list[Outreach]:
        def work(tx: ManagedTransaction) -> list[str]:
            return [record["json"] for record in tx.run(q.LIST_OUTREACH)]

        return [Outreach.model_validate_json(found) for found in self._read("list outreach", work)]

    # --- the outbox ----------------------------------------------------------------------------------------
    def enqueue_messages(self, messages: Sequence[OutboxMessage]) -> int:
        """Of several messages with one key in the batch the first wins, as it would had they come one by one."""
        first: dict[str, OutboxMessage] = {}
        for message in messages:
            first.setdefault(message.key, message)
        rows = [_message_row(message) for message in first.values()]
        if not rows:
            return 0

        def work(tx: ManagedTransaction) -> int:
            results = [tx.run(q.ENQUEUE_MESSAGES, rows=chunk) for chunk in _chunks(rows)]
            return sum(int(result.single(strict=True)["created"]) for result in results)

        return self._write("enqueue messages", work)

    def get_message(self, key: str) -> OutboxMessage:
        row = self._read("read the message", lambda tx: _one(tx, q.GET_MESSAGE, key=key))
        if row is None:
            raise NotFound(f"no message {key!r}")
        return _message_from(row)

    def claim_message(self, key: str, *, at: datetime, lease_s: float) -> OutboxMessage | None:
        if not lease_s > 0:
            raise InvalidInput(f"a lease lasts more than zero seconds, not {lease_s}")
        lease, at = timedelta(seconds=lease_s), _utc(at)

        def work(tx: ManagedTransaction) -> OutboxMessage | None:
            current = self._locked_message(tx, key)
            if current is None or not claimable(current, at):
                return None
            return self._store_state(tx, claimed(current, at, lease))

        return self._write("claim the message", work)

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
        status = MessageStatus(status)
        check_outcome(status, reason, not_before)

        def work(tx: ManagedTransaction) -> OutboxMessage:
            current = self._locked_message(tx, key)
            if current is None:
                raise NotFound(f"no message {key!r}")
            outcome = finished(
                current,
                status,
                at=at,
                reason=reason,
                detail=detail,
                provider_id=provider_id,
                not_before=not_before,
            )
            return self._store_state(tx, outcome)

        return self._write("finish the message", work)

    @staticmethod
    def _locked_message(tx: ManagedTransaction, key: str) -> OutboxMessage | None:
        if not tx.run(q.LOCK_MESSAGE, key=key).single(strict=True)["n"]:
            return None
        return _message_from(dict(tx.run(q.GET_MESSAGE, key=key).single(strict=True)["row"]))

    @staticmethod
    def _store_state(tx: ManagedTransaction, message: OutboxMessage) -> OutboxMessage:
        row = _message_row(message)
        params = {
            name: row[name]
            for name in (
                "key",
                "status",
                "reason",
                "detail",
                "not_before_us",
                "attempts",
                "lease_until_us",
                "updated_at_us",
                "sent_at_us",
                "provider_id",
                "to_address",
            )
        }
        return _message_from(dict(tx.run(q.SET_MESSAGE_STATE, params).single(strict=True)["row"]))

    def due_messages(self, *, now: datetime, limit: int = 1000, outreach_id: str | None = None) -> list[OutboxMessage]:
        _check_limit(limit)
        params = {"now_us": to_us(now), "limit": limit, "outreach_id": outreach_id}
        return [
            _message_from(row)
            for row in self._read("find due messages", lambda tx: _rows(tx, q.DUE_MESSAGES, **params))
        ]

    def list_messages(
        self,
        outreach_id: str,
        *,
        status: MessageStatus | None = None,
        reason: HoldReason | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[OutboxMessage]:
        _check_limit(limit)
        params = {
            "outreach_id": outreach_id,
            "status": None if status is None else MessageStatus(status).value,
            "reason": None if reason is None else HoldReason(reason).value,
            "limit": limit,
            "after": after or "",
        }
        rows = self._read("list messages", lambda tx: _rows(tx, q.LIST_MESSAGES, **params))
        return [_message_from(row) for row in rows]

    def outbox_counts(self, outreach_id: str) -> OutboxCounts:
        def work(tx: ManagedTransaction) -> list[tuple[str, str | None, str, int]]:
            return [
                (record["status"], record["reason"], record["variant"], int(record["n"]))
                for record in tx.run(q.OUTBOX_COUNTS, outreach_id=outreach_id)
            ]

        by_status: dict[MessageStatus, int] = dict.fromkeys(MessageStatus, 0)
        held_by_reason: dict[HoldReason, int] = dict.fromkeys(HoldReason, 0)
        by_variant: dict[str, dict[MessageStatus, int]] = {}
        for status_value, reason_value, variant, n in self._read("count the outbox", work):
            status = MessageStatus(status_value)
            by_status[status] += n
            if status is MessageStatus.HELD and reason_value is not None:
                held_by_reason[HoldReason(reason_value)] += n
            counts = by_variant.setdefault(variant, dict.fromkeys(MessageStatus, 0))
            counts[status] += n
        return OutboxCounts(
            outreach_id=outreach_id,
            by_status=by_status,
            held_by_reason=held_by_reason,
            by_variant=dict(sorted(by_variant.items())),
        )

    # --- suppressions --------------------------------------------------------------------------------------
    def suppress(self, suppression: Suppression) -> None:
        channel = None if suppression.channel is None else suppression.channel.value
        params = {
            "person_key": suppression.person_key,
            "channel_key": q.ALL_CHANNELS if channel is None else channel,
            "channel": channel,
            "reason": suppression.reason.value,
            "at_us": to_us(suppression.at),
        }
        self._write("record the suppression", lambda tx: tx.run(q.SUPPRESS, params).consume())

    def suppressions(self, person_keys: Iterable[str]) -> dict[str, list[Suppression]]:
        keys = list(dict.fromkeys(person_keys))
        if not keys:
            return {}
        found: dict[str, list[Suppression]] = {}
        for row in self._read("read suppressions", lambda tx: _rows(tx, q.SUPPRESSIONS, keys=keys)):
            suppression = _suppression_from(row)
            found.setdefault(suppression.person_key, []).append(suppression)
        return found

    def lift_suppressions(self, person_key: str, channels: Collection[ContactChannel] | None, *, at: datetime) -> int:
        named = None if channels is None else sorted({ContactChannel(channel).value for channel in channels})
        if named == []:
            return 0
        params = {"person_key": person_key, "channels": named, "at_us": to_us(at)}

        def work(tx: ManagedTransaction) -> int:
            lifted: int = tx.run(q.LIFT_SUPPRESSIONS, params).single(strict=True)["n"]
            return lifted

        return self._write("lift suppressions", work)


def _chunks(rows: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
