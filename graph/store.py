"""The `GraphStore` protocol: everything the engine may ask of the customer graph.

Two implementations keep the same contract (`tests/contract/`): `Neo4jStore` for production and `SqliteStore`
for the embedded default. Every write method is one transaction: it writes all of its rows or none, and writing
the same rows again changes nothing. Errors are raised as `graph.errors` classes, never as driver exceptions.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from graph.model import (
    AnalysisRun,
    Customer,
    CustomerScores,
    EdgeRecord,
    EdgeType,
    ErasureReport,
    Event,
    EventKind,
    EventSummary,
    GraphBatch,
    GraphStats,
    Influence,
    Referral,
)


@runtime_checkable
class GraphStore(Protocol):
    """The customer graph. Ids are the merchant's external customer ids."""

    local_reads: bool
    """Reads are work in this process that waits on neither the network nor a writer (SQLite in WAL mode), so an
    async caller may make them on its event loop rather than pay for a thread."""

    # --- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers a trivial query."""

    def describe(self) -> str:
        """Where the store is, for messages (no passwords)."""

    # --- writes (each call one transaction, idempotent) ----------------------------------------------------
    def write_batch(self, batch: GraphBatch) -> None:
        """Write customers, then edges and events, all in one transaction.

        Edges and events may point at customers in the same batch or already stored. Any edge or event whose
        customer is missing raises `InvalidInput` naming the ids, and nothing of the batch is written.
        """

    def upsert_customers(self, customers: Sequence[Customer]) -> int:
        """Create or replace customers by id (all fields set as given); returns how many rows were given."""

    def add_influences(self, edges: Sequence[Influence]) -> int:
        """Create or update `INFLUENCES` edges keyed by (source, target, kind)."""

    def add_referrals(self, referrals: Sequence[Referral]) -> int:
        """Create or update `REFERRED` edges keyed by (referrer, friend); status and times as given."""

    def add_events(self, events: Sequence[Event]) -> int:
        """Record events; an event id already stored is left as it is."""

    def write_scores(self, scores: Sequence[CustomerScores]) -> int:
        """Write scores and segments onto customers at once (replacing earlier scores); an analysis stages instead."""

    def stage_scores(self, scores: Sequence[CustomerScores]) -> int:
        """Keep one batch of a run's scores (each names its run) aside, where no reader sees them yet.

        A run stages in batches and publishes once, so a run that dies half way leaves the live scores whole."""

    def publish_scores(self, run: AnalysisRun) -> int:
        """Make the scores staged under `run.id` the live ones, drop them from the staging area and save `run` (its
        final record). Scores of customers erased since they were staged are dropped. Returns how many customers
        got scores (by this call).

        SQLite does it in one transaction: readers see the previous scores or these, never a mix. Neo4j moves them
        in slices (one transaction for a large graph outgrows the server's transaction memory): while it runs a
        reader may see both, and a publish cut off half way is listed by `unfinished_publications` and finished by
        calling this again with the run it lists. Either way a run's scores are never left half applied for good."""

    def unfinished_publications(self) -> list[AnalysisRun]:
        """Runs (their final records) whose publishing began and did not end; always empty where it is atomic."""

    def staged_score_runs(self) -> list[str]:
        """The runs that have scores staged, sorted: running ones, and any that died before publishing."""

    def discard_staged_scores(self, run_ids: Collection[str]) -> int:
        """Drop the scores staged by these runs (ones that failed or were abandoned); returns how many."""

    def save_run(self, run: AnalysisRun) -> None:
        """Create or replace the record of an analysis run."""

    def erase_customer(self, customer_id: str) -> ErasureReport:
        """Erase a person (GDPR art. 17): their node, personal data, edges, events and scores.

        Only anonymous counts survive (`GraphStats.erased`). Raises `NotFound` for an unknown id.
        """

    def delete_all(self) -> None:
        """Remove every customer, edge, event, score and run (for demos and tests)."""

    # --- reads ---------------------------------------------------------------------------------------------
    def get_customer(self, customer_id: str) -> Customer:
        """Raise `NotFound` when there is no such customer."""

    def existing_customer_ids(self, customer_ids: Iterable[str]) -> set[str]:
        """The subset of `customer_ids` that are stored."""

    def get_customers(self, customer_ids: Iterable[str]) -> dict[str, Customer]:
        """The stored ones of `customer_ids`, by id, in one read (unknown ids are left out)."""

    def get_scores(self, customer_id: str) -> CustomerScores | None:
        """The latest scores written for a customer, if any."""

    def get_run(self, run_id: str) -> AnalysisRun:
        """Raise `NotFound` when there is no such run."""

    def list_runs(self, limit: int = 50) -> list[AnalysisRun]:
        """Most recent first."""

    def referrals_from(self, customer_id: str) -> list[EdgeRecord]:
        """The `REFERRED` edges from one customer (their friends and how far each got), by friend id."""

    def edges_of(self, customer_id: str, edge_type: EdgeType | None = None) -> list[EdgeRecord]:
        """Every edge (or every edge of one type) from or to one customer, as `iter_edges` gives it, in no order.

        One customer's relationships without a pass over the whole graph; an unknown id has none.
        """

    def events_of(self, customer_id: str, *, kind: EventKind | None = None, limit: int = 50) -> list[Event]:
        """One customer's latest events (of one kind), newest first: what a kit says they bought or made."""

    def get_event(self, event_id: str) -> Event | None:
        """The event stored under `event_id`, whoever it belongs to (the first one stored keeps the id)."""

    def stats(self) -> GraphStats:
        """Counts of customers, edges by type, events by kind, and anonymous erasure counts."""

    # --- streaming export for analysis ---------------------------------------------------------------------
    def iter_customers(self, batch_size: int = 10_000) -> Iterator[Customer]:
        """Every customer, streamed in id order without loading all of them at once."""

    def iter_edges(self, edge_type: EdgeType | None = None, batch_size: int = 50_000) -> Iterator[EdgeRecord]:
        """Every edge (or every edge of one type), streamed."""

    def iter_event_summaries(self) -> Iterator[EventSummary]:
        """Per customer and event kind: count, summed value, latest time (aggregated by the store)."""

    def iter_scores(self, batch_size: int = 10_000) -> Iterator[CustomerScores]:
        """Every customer's latest scores, streamed in customer id order."""


class RowWriter:
    """The per-kind write methods expressed through one `_write_rows`, so every store has a single write path.

    A store implements `_write_rows` as one transaction that checks references and writes all rows or none;
    `write_batch`, `upsert_customers` and the `add_*` methods are then the same for every store.
    """

    def _write_rows(
        self,
        customers: Sequence[Customer],
        influences: Sequence[Influence],
        referrals: Sequence[Referral],
        events: Sequence[Event],
    ) -> None:
        raise NotImplementedError

    def write_batch(self, batch: GraphBatch) -> None:
        self._write_rows(batch.customers, batch.influences, batch.referrals, batch.events)

    def upsert_customers(self, customers: Sequence[Customer]) -> int:
        self._write_rows(customers, (), (), ())
        return len(customers)

    def add_influences(self, edges: Sequence[Influence]) -> int:
        self._write_rows((), edges, (), ())
        return len(edges)

    def add_referrals(self, referrals: Sequence[Referral]) -> int:
        self._write_rows((), (), referrals, ())
        return len(referrals)

    def add_events(self, events: Sequence[Event]) -> int:
        self._write_rows((), (), (), events)
        return len(events)


T = TypeVar("T")


def closing_stream(iterator: Iterator[T]) -> Iterator[T]:
    """Yield from a store stream and close it early when the caller stops (releases its cursor or session)."""
    try:
        yield from iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
