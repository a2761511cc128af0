"""A customer's relationships one page at a time, and batches of new referrals and influences.

Reading: one customer's edges, in and out, come from `GraphStore.edges_of` (an index lookup in either store,
never a pass over the graph) and are sorted and paged here; one customer's relationships fit in memory.

Writing: a batch is checked the way `engine.ingest` checks an import file (every natural key once, every customer
it names stored) and written with one `write_batch`, so it lands whole or not at all; the stores upsert on the
natural keys, so sending a batch again changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from engine.views import decode_cursor, encode_cursor
from graph.errors import InvalidInput, RowError
from graph.importer import Record, RecordKind, describe_key, record_key, referenced_customers
from graph.model import EdgeRecord, EdgeType, GraphBatch, Influence, Referral
from graph.store import GraphStore

MAX_PAGE: Final = 500
_SEPARATOR: Final = "\x1f"
"""Joins the parts of a relationship's sort key inside a cursor; no id, status or kind contains it."""


class Direction(StrEnum):
    """`out`: the customer referred or influences the other; `in`: the other referred or influences them."""

    OUT = "out"
    IN = "in"


@dataclass(frozen=True, slots=True)
class Relationship:
    """One edge seen from one customer: its type, which way it points, and the customer at its other end."""

    type: EdgeType
    direction: Direction
    customer_id: str
    label: str
    """The referral's status or the influence's kind."""
    weight: float
    at: datetime | None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Unique per customer: one referral per pair, one influence per pair and kind."""
        return (self.type.value, self.direction.value, self.customer_id, self.label)


@dataclass(frozen=True, slots=True)
class RelationshipPage:
    items: list[Relationship]
    next: str | None


@dataclass(frozen=True, slots=True)
class BatchWritten:
    """How many rows of each kind one batch wrote (all of them, in one transaction)."""

    referrals: int
    influences: int


def _seen_from(customer_id: str, edge: EdgeRecord) -> Relationship | None:
    if edge.source == customer_id and edge.target != customer_id:
        direction, other = Direction.OUT, edge.target
    elif edge.target == customer_id and edge.source != customer_id:
        direction, other = Direction.IN, edge.source
    else:
        return None
    return Relationship(edge.type, direction, other, edge.label, edge.weight, edge.at)


def relationships_of(
    store: GraphStore,
    customer_id: str,
    *,
    edge_type: EdgeType | None = None,
    direction: Direction | None = None,
) -> list[Relationship]:
    """Every relationship of one customer (of one type, one way), in key order; `NotFound` for an unknown id."""
    store.get_customer(customer_id)
    seen = (_seen_from(customer_id, edge) for edge in store.edges_of(customer_id, edge_type))
    found = [r for r in seen if r is not None and (direction is None or r.direction is direction)]
    return sorted(found, key=lambda r: r.key)


def page_relationships(
    store: GraphStore,
    customer_id: str,
    *,
    edge_type: EdgeType | None = None,
    direction: Direction | None = None,
    limit: int = 100,
    after: str | None = None,
) -> RelationshipPage:
    """One page of `relationships_of` after the cursor `after` (a `next` this function returned)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    start = _decode(after) if after else None
    rows = [
        r
        for r in relationships_of(store, customer_id, edge_type=edge_type, direction=direction)
        if start is None or r.key > start
    ]
    items = rows[:limit]
    return RelationshipPage(items, _encode(items[-1].key) if len(rows) > limit else None)


def _encode(key: tuple[str, str, str, str]) -> str:
    return encode_cursor(_SEPARATOR.join(key))


def _decode(cursor: str) -> tuple[str, str, str, str]:
    parts = decode_cursor(cursor).split(_SEPARATOR)
    if len(parts) != 4:
        raise InvalidInput("the cursor is not one this API returned; start again without it")
    return parts[0], parts[1], parts[2], parts[3]


# --- writing a batch ---------------------------------------------------------------------------------------
def check_batch(
    store: GraphStore,
    *,
    referrals: Sequence[Referral],
    influences: Sequence[Influence],
    source: str = "body",
) -> list[RowError]:
    """What is wrong with a batch of edges: a natural key given twice, or a customer the store does not hold.

    Each problem names its row as `<source>.referrals[<index>]` (or `influences`), the way request validation
    names a field, so a client can point at the row to fix.
    """
    named: list[tuple[RecordKind, str, Sequence[Record]]] = [
        (RecordKind.REFERRALS, "referrals", referrals),
        (RecordKind.INFLUENCES, "influences", influences),
    ]
    wanted = {ref for _, _, rows in named for row in rows for ref in referenced_customers(row)}
    missing = wanted - store.existing_customer_ids(wanted) if wanted else set()
    problems: list[RowError] = []
    for kind, field, rows in named:
        first: dict[tuple[str, ...], int] = {}
        for index, row in enumerate(rows):
            where = f"{source}.{field}[{index}]"
            key = record_key(row)
            earlier = first.setdefault(key, index)
            if earlier != index:
                reason = f"duplicate {describe_key(kind, key)} (first at {source}.{field}[{earlier}])"
                problems.append(RowError(where, None, reason))
                continue
            unknown = list(dict.fromkeys(ref for ref in referenced_customers(row) if ref in missing))
            if unknown:
                who = " and ".join(repr(ref) for ref in unknown)
                problems.append(RowError(where, None, f"no customer {who} in the store"))
    return problems


def write_relationships(
    store: GraphStore,
    *,
    referrals: Sequence[Referral] = (),
    influences: Sequence[Influence] = (),
    source: str = "body",
) -> BatchWritten:
    """Write a batch of referrals and influences in one transaction, or nothing when any row is wrong.

    Raises `InvalidInput` listing every bad row (see `check_batch`). Edges are upserted on their natural keys,
    (referrer, friend) and (source, target, kind), so a batch sent again leaves the graph as it was.
    """
    problems = check_batch(store, referrals=referrals, influences=influences, source=source)
    if problems:
        count = len(problems)
        raise InvalidInput(f"nothing written: {count} row{'s' if count != 1 else ''} cannot be accepted", problems)
    store.write_batch(GraphBatch(influences=list(influences), referrals=list(referrals)))
    return BatchWritten(referrals=len(referrals), influences=len(influences))
