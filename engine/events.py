"""A customer's events as the merchant reports them: recorded once per id, read newest first a page at a time.

The store keeps the first event stored under an id and ignores later ones (`GraphStore.add_events`), so delivery
is idempotent; what the store does not say is whether an id was new. `record_event` finds out by reading the id
(`GraphStore.get_event`, one key lookup) before and after writing: the same event again is a redelivery, the same
id with other content (or already naming another customer's event) is a conflict, never silently dropped.

Paging walks `GraphStore.events_of` (newest first, then by id) with a window that grows until it passes the cursor:
a page costs reads in proportion to how deep it is, which suits one customer's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from engine.views import decode_cursor, encode_cursor
from graph.errors import InvalidInput, LedgerConflict
from graph.model import Event, EventKind
from graph.store import GraphStore

MAX_PAGE: Final = 500
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Recorded:
    """The event as stored, and whether this delivery stored it (False: it was there already)."""

    event: Event
    created: bool


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[Event]
    next: str | None


def _conflict(event: Event) -> LedgerConflict:
    return LedgerConflict(
        f"event id {event.id!r} is already used by another event (other content, kind or customer); "
        "give each event its own id"
    )


def record_event(store: GraphStore, event: Event) -> Recorded:
    """Store a customer's event once: the same event again answers the stored one, with `created` False.

    Raises `NotFound` for an unknown customer and `LedgerConflict` when the id already names a different event.
    """
    store.get_customer(event.customer_id)
    before = store.get_event(event.id)
    if before is None:
        store.add_events([event])
    stored = before if before is not None else store.get_event(event.id)
    if stored is None or stored != event:
        raise _conflict(event)
    return Recorded(stored, created=before is None)


def _position(event: Event) -> tuple[int, str]:
    return (event.at - _EPOCH) // _MICROSECOND, event.id


def _follows(event: Event, position: tuple[int, str]) -> bool:
    """Whether `event` comes after `position` in the store's order: newest first, then by id."""
    at, event_id = _position(event)
    return at < position[0] or (at == position[0] and event_id > position[1])


def _encode(event: Event) -> str:
    at, event_id = _position(event)
    return encode_cursor(f"{at}:{event_id}")


def _decode(cursor: str) -> tuple[int, str]:
    at, _, event_id = decode_cursor(cursor).partition(":")
    if not event_id or not at.lstrip("-").isdigit():
        raise InvalidInput("the cursor is not one this API returned; start again without it")
    return int(at), event_id


def page_events(
    store: GraphStore,
    customer_id: str,
    *,
    kind: EventKind | None = None,
    limit: int = 50,
    after: str | None = None,
) -> EventPage:
    """One page of a customer's events (of one kind), newest first; `NotFound` for an unknown customer."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    position = _decode(after) if after else None
    store.get_customer(customer_id)
    window = limit + 1
    while True:
        rows = store.events_of(customer_id, kind=kind, limit=window)
        following = [e for e in rows if position is None or _follows(e, position)]
        if len(following) > limit or len(rows) < window:
            break
        window *= 4
    items = following[:limit]
    return EventPage(items, _encode(items[-1]) if len(following) > limit else None)
