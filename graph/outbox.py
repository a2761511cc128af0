"""The outbox's state machine, pure: when a message may be claimed, and what a claim or an outcome makes of it.

Both stores call these inside their transactions, after locking the message, so they decide alike.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from graph.errors import InvalidInput, LedgerConflict
from graph.outreach import TERMINAL_STATUSES, HoldReason, MessageStatus, OutboxMessage


def _validated(message: OutboxMessage, changes: dict[str, Any]) -> OutboxMessage:
    """`message` with `changes`, checked as a whole (`model_copy` alone would not validate them)."""
    try:
        return OutboxMessage.model_validate({**message.model_dump(), **changes})
    except ValidationError as exc:
        raise InvalidInput(f"message {message.key!r} cannot take these values: {exc}") from exc


def claimable(message: OutboxMessage, at: datetime) -> bool:
    """Due and queued, or sending on a lease that ran out at or before `at` (its worker died)."""
    if message.status is MessageStatus.QUEUED:
        return message.not_before <= at
    return message.status is MessageStatus.SENDING and message.lease_until is not None and message.lease_until <= at


def claimed(message: OutboxMessage, at: datetime, lease: timedelta) -> OutboxMessage:
    return _validated(
        message,
        {
            "status": MessageStatus.SENDING,
            "attempts": message.attempts + 1,
            "lease_until": at + lease,
            "updated_at": at,
        },
    )


def finished(
    message: OutboxMessage,
    status: MessageStatus,
    *,
    at: datetime,
    reason: HoldReason | None,
    detail: str,
    provider_id: str | None,
    not_before: datetime | None,
) -> OutboxMessage:
    """The outcome replaces the note (`reason`, `detail`, `provider_id`) and ends the lease; only a message put
    back in the queue keeps the friend's address, to send to later."""
    if message.status is not MessageStatus.SENDING:
        raise LedgerConflict(
            f"message {message.key!r} is {message.status.value}, not sending: it was not claimed, "
            "or its outcome is already recorded"
        )
    requeued = status is MessageStatus.QUEUED
    return _validated(
        message,
        {
            "status": status,
            "reason": reason,
            "detail": detail,
            "provider_id": provider_id,
            "not_before": not_before if requeued and not_before is not None else message.not_before,
            "sent_at": at if status is MessageStatus.SENT else message.sent_at,
            "lease_until": None,
            "to_address": message.to_address if requeued else None,
            "updated_at": at,
        },
    )


def check_outcome(status: MessageStatus, reason: HoldReason | None, not_before: datetime | None) -> None:
    if status not in TERMINAL_STATUSES and status is not MessageStatus.QUEUED:
        raise InvalidInput(f"a message is finished as sent, held, failed or queued, not {status.value}")
    if status is MessageStatus.HELD and reason is None:
        raise InvalidInput("a held message needs a reason")
    if status is MessageStatus.QUEUED and not_before is None:
        raise InvalidInput("a message put back in the queue needs a not_before")
