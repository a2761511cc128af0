"""Segments as a marketer browses them: what each one means, how many customers the latest analysis put in it,
and who they are, each with the analysis' own explanation.

A segment's definition is written from the thresholds the run recorded (`AnalysisParams.thresholds`), so it says
what that run actually applied rather than today's defaults. Members come from the stored scores (each
customer's latest), walked in customer id order as `engine.views` pages customers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pydantic import ValidationError

from engine.analysis import SEGMENT_ORDER
from engine.segments import SegmentThresholds
from graph.errors import InvalidInput
from graph.model import AnalysisRun, CustomerScores, Segment
from graph.store import GraphStore, closing_stream

MAX_PAGE: Final = 500
RUNS_SEARCHED: Final = 50
"""How many recent runs are searched for the latest one that finished."""


def _share(value: float) -> str:
    return f"{value * 100:.3g}%"


def _number(value: float) -> str:
    return f"{value:g}"


def segment_definitions(thresholds: SegmentThresholds) -> dict[Segment, str]:
    """What puts a customer in each segment, in words, under these thresholds (first that fits wins).

    Examples
    --------
    >>> definitions = segment_definitions(SegmentThresholds())
    >>> definitions[Segment.INFLUENCER]
    'PageRank in the top 2% of the network and at least 2 times the average, or converted referrals reaching at least 5 customers over any number of generations.'
    >>> definitions[Segment.PASSIVE]
    'Everyone else: no signal strong enough for another segment yet.'
    """  # noqa: E501
    t = thresholds
    return {
        Segment.DO_NOT_ASK: (
            f"Any reason not to ask: an average rating of {_number(t.detractor_max_rating)}/10 or lower, "
            f"{t.risk_min_complaints} or more complaints, refunds for {_share(t.risk_refund_ratio)} or more of "
            f"purchases, or {t.fatigue_min_clicks} or more referral clicks without a sign-up. Never asked for "
            "referrals; wins over every other segment."
        ),
        Segment.INFLUENCER: (
            f"PageRank in the top {_share(t.influencer_top_share)} of the network and at least "
            f"{_number(t.influencer_min_pagerank_ratio)} times the average, or converted referrals reaching at "
            f"least {t.influencer_min_descendants} customers over any number of generations."
        ),
        Segment.PROSUMER: (
            f"A prosumer score (reviews, ideas, content and feedback for what they bought) in the top "
            f"{_share(t.prosumer_top_share)}, from at least {_number(t.prosumer_min_contributions)} contributions."
        ),
        Segment.ADVOCATE: (
            f"An advocacy propensity of at least {_number(t.advocate_min_propensity)}, from satisfaction, shares "
            "and converted referrals."
        ),
        Segment.PASSIVE: "Everyone else: no signal strong enough for another segment yet.",
    }


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    segment: Segment
    count: int
    definition: str


@dataclass(frozen=True, slots=True)
class SegmentOverview:
    """Every segment from one analysis run (None before any analysis: counts are then zero)."""

    run_id: str | None
    finished_at: datetime | None
    segments: list[SegmentSummary]


@dataclass(frozen=True, slots=True)
class SegmentMembers:
    items: list[CustomerScores]
    next: str | None


def latest_run(store: GraphStore) -> AnalysisRun | None:
    """The most recent run that finished (a failed or running one has no segments to show)."""
    for run in store.list_runs(limit=RUNS_SEARCHED):
        if run.finished_at is not None and run.status != "failed":
            return run
    return None


def _thresholds(run: AnalysisRun | None) -> SegmentThresholds:
    recorded = run.params.get("thresholds") if run is not None else None
    if isinstance(recorded, Mapping):
        try:
            return SegmentThresholds.model_validate(recorded)
        except ValidationError:
            pass
    return SegmentThresholds()


def _counts(store: GraphStore, run: AnalysisRun) -> dict[Segment, int]:
    """The counts the run recorded, or else those of the stored scores it wrote."""
    recorded = run.summary.get("segments")
    if isinstance(recorded, Mapping):
        counts = {s: recorded.get(s.value) for s in Segment}
        if all(isinstance(n, int) for n in counts.values()):
            return {s: int(n or 0) for s, n in counts.items()}
    tally = dict.fromkeys(Segment, 0)
    for scores in closing_stream(store.iter_scores()):
        if scores.run_id == run.id:
            tally[scores.segment] += 1
    return tally


def segment_overview(store: GraphStore, *, run_id: str | None = None) -> SegmentOverview:
    """Each segment with its count and definition, from `run_id` or the latest finished run.

    `NotFound` for an unknown `run_id`. Before any analysis, every count is zero and the definitions are those
    of the default thresholds.
    """
    run = store.get_run(run_id) if run_id is not None else latest_run(store)
    definitions = segment_definitions(_thresholds(run))
    counts = _counts(store, run) if run is not None else dict.fromkeys(Segment, 0)
    return SegmentOverview(
        run_id=run.id if run is not None else None,
        finished_at=run.finished_at if run is not None else None,
        segments=[SegmentSummary(s, counts[s], definitions[s]) for s in SEGMENT_ORDER],
    )


def page_segment(store: GraphStore, segment: Segment, *, limit: int = 100, after: str | None = None) -> SegmentMembers:
    """Customers whose latest segment is `segment`, in id order after the customer id `after`."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    items: list[CustomerScores] = []
    more = False
    for scores in closing_stream(store.iter_scores(batch_size=max(limit + 1, 1000))):
        if scores.segment is not segment or (after is not None and scores.customer_id <= after):
            continue
        if len(items) == limit:
            more = True
            break
        items.append(scores)
    return SegmentMembers(items, items[-1].customer_id if more else None)
