"""Read models for the API and the dashboard: customer pages, the network sample to draw, and the KPI summary.

They only read through a `GraphStore`, streaming its iterators and keeping at most `limit` rows (heaps), so a page
costs one pass over scores or edges, never the whole graph in memory. The store protocol has no "customers after
id" or "edges among these ids" query, so paging and the network sample walk the streams; both are fine for the
dashboard's scale and are the first things to push down into the stores if the API is used for bulk export.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from graph.errors import InvalidInput, NotFound
from graph.model import AnalysisRun, Customer, CustomerScores, GraphStats, Segment
from graph.store import GraphStore

INFLUENCE_KEYS: tuple[str, ...] = ("influence", "influence_spread", "spread", "pagerank")
"""Score names read as "how much this customer sways others", in order of preference."""

MAX_PAGE = 500
MAX_VIEW_NODES = 1000

T = TypeVar("T")


def influence_of(scores: Mapping[str, float]) -> float | None:
    """The customer's influence score under the first name an analysis wrote, or None."""
    for key in INFLUENCE_KEYS:
        value = scores.get(key)
        if value is not None:
            return float(value)
    return None


def _closing(iterator: Iterator[T]) -> Iterator[T]:
    """Yield from a store stream and close it early when the caller stops (releases its cursor)."""
    try:
        yield from iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


# --- customers --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerPage:
    items: list[Customer]
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    """An opaque token: clients pass it back unchanged, so its format may change without breaking them."""
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = value["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise InvalidInput("the cursor is not one this API returned; start again without it") from exc
    if not isinstance(after, str):
        raise InvalidInput("the cursor is not one this API returned; start again without it")
    return after


def page_customers(store: GraphStore, *, cursor: str | None = None, limit: int = 100) -> CustomerPage:
    """Customers in id order after the cursor; `next_cursor` is None on the last page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    after = decode_cursor(cursor) if cursor else None
    items: list[Customer] = []
    more = False
    for customer in _closing(store.iter_customers(batch_size=max(limit + 1, 1000))):
        if after is not None and customer.id <= after:
            continue
        if len(items) == limit:
            more = True
            break
        items.append(customer)
    return CustomerPage(items, encode_cursor(items[-1].id) if more and items else None)


def customer_with_scores(store: GraphStore, customer_id: str) -> tuple[Customer, CustomerScores | None]:
    """The customer and what the latest analysis concluded about them (None before any analysis)."""
    return store.get_customer(customer_id), store.get_scores(customer_id)


def replace_customer(store: GraphStore, customer_id: str, customer: Customer) -> Customer:
    """Upsert a customer addressed by id; a body naming another id is refused rather than silently moved."""
    if customer.id != customer_id:
        raise InvalidInput(
            f"the body's id {customer.id!r} does not match the id {customer_id!r} in the path; "
            "ids cannot be changed (erase and re-create instead)"
        )
    store.upsert_customers([customer])
    return customer


# --- the network sample for drawing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewNode:
    id: str
    label: str
    segment: Segment | None
    community: int | None
    influence: float | None
    degree: int


@dataclass(frozen=True, slots=True)
class ViewEdge:
    source: str
    target: str
    type: str
    label: str
    weight: float


@dataclass(frozen=True, slots=True)
class NetworkView:
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    ranked_by: str
    run_id: str | None
    total_customers: int
    total_edges: int


def _top(items: Iterable[tuple[float, str, T]], n: int) -> list[tuple[float, str, T]]:
    """The n largest by score, ties broken by id so the sample is the same on every call."""
    return heapq.nsmallest(n, items, key=lambda item: (-item[0], item[1]))


def network_view(store: GraphStore, *, limit: int = 200) -> NetworkView:
    """The `limit` most influential customers (by the latest scores, else by degree) and the edges among them."""
    if not 1 <= limit <= MAX_VIEW_NODES:
        raise InvalidInput(f"limit must be between 1 and {MAX_VIEW_NODES}, not {limit}")
    stats = store.stats()
    scored = _top(
        (
            (influence, s.customer_id, s)
            for s in _closing(store.iter_scores())
            if (influence := influence_of(s.scores)) is not None
        ),
        limit,
    )
    chosen: dict[str, CustomerScores | None] = {cid: s for _, cid, s in scored}
    ranked_by = "influence" if chosen else "degree"
    if len(chosen) < limit:
        degree: Counter[str] = Counter()
        for edge in _closing(store.iter_edges()):
            degree[edge.source] += 1
            degree[edge.target] += 1
        for _, cid, _ in _top(((float(d), cid, None) for cid, d in degree.items() if cid not in chosen), limit):
            if len(chosen) >= limit:
                break
            chosen[cid] = store.get_scores(cid)
    edges: dict[tuple[str, str, str], ViewEdge] = {}
    view_degree: Counter[str] = Counter()
    for edge in _closing(store.iter_edges()):
        if edge.source in chosen and edge.target in chosen:
            key = (edge.source, edge.target, edge.type.value)
            if key not in edges:
                edges[key] = ViewEdge(edge.source, edge.target, edge.type.value, edge.label, edge.weight)
                view_degree[edge.source] += 1
                view_degree[edge.target] += 1
    nodes: list[ViewNode] = []
    for cid, scores in chosen.items():
        try:
            customer = store.get_customer(cid)
        except NotFound:  # erased between the passes
            continue
        nodes.append(
            ViewNode(
                id=cid,
                label=customer.name or cid,
                segment=scores.segment if scores else None,
                community=scores.community if scores else None,
                influence=influence_of(scores.scores) if scores else None,
                degree=view_degree[cid],
            )
        )
    kept = {node.id for node in nodes}
    run_ids = Counter(s.run_id for s in chosen.values() if s is not None)
    return NetworkView(
        nodes=nodes,
        edges=[e for e in edges.values() if e.source in kept and e.target in kept],
        ranked_by=ranked_by,
        run_id=run_ids.most_common(1)[0][0] if run_ids else None,
        total_customers=stats.customers,
        total_edges=sum(stats.edges.values()),
    )


# --- the dashboard's summary ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankedCustomer:
    id: str
    label: str
    segment: Segment
    influence: float | None
    explanation: str


@dataclass(frozen=True, slots=True)
class DashboardSummary:
    stats: GraphStats
    last_run: AnalysisRun | None
    segments: dict[Segment, int] = field(default_factory=dict)
    top_influencers: list[RankedCustomer] = field(default_factory=list)

    @property
    def analysed(self) -> int:
        return sum(self.segments.values())


def dashboard_summary(store: GraphStore, *, top: int = 10) -> DashboardSummary:
    """KPIs available today: counts, segments of the latest scores, the last run, and the top influencers."""
    segments: Counter[Segment] = Counter()

    def counted(stream: Iterator[CustomerScores]) -> Iterator[tuple[float, str, CustomerScores]]:
        for s in stream:
            segments[s.segment] += 1
            influence = influence_of(s.scores)
            yield (influence if influence is not None else -math.inf), s.customer_id, s

    top_influencers: list[RankedCustomer] = []
    for influence, cid, s in _top(counted(_closing(store.iter_scores())), top):
        try:
            label = store.get_customer(cid).name or cid
        except NotFound:  # erased since the scores were read
            continue
        top_influencers.append(
            RankedCustomer(
                id=cid,
                label=label,
                segment=s.segment,
                influence=None if influence == -math.inf else influence,
                explanation=s.explanation,
            )
        )
    runs = store.list_runs(limit=1)
    return DashboardSummary(
        stats=store.stats(),
        last_run=runs[0] if runs else None,
        segments={segment: segments[segment] for segment in Segment},
        top_influencers=top_influencers,
    )
