"""The analysis run: export the graph, score every customer, segment and explain, write back, record the run.

`run_analysis` is the service: it streams the store into NetworkX (`graph.export`), computes the scores of
`graph.scores`, applies the pure segment rule of `engine.segments` customer by customer, stages `CustomerScores`
in batches, and publishes them together with an `AnalysisRun` holding the parameters, the time each step took and
a summary. Runs are listed by the store (`GraphStore.list_runs`) and compared with `compare_runs`.

Edge cases, each a documented result rather than a surprise:

* no customers: `InvalidInput`, nothing recorded;
* no influence edges: PageRank is uniform, so nobody is an influencer by rank (the rule asks for twice the
  average); referral reach can still make influencers. The summary carries a warning;
* isolated customers (no influence tie): community ``None``, bridging 0, core number 0; counted in the summary;
* self-loops: dropped by the export and counted in the summary's warnings.

A run that fails after it started is saved with status ``failed`` and the error, then the error is raised again.
Scores are staged while the run writes them and published with its final record (`GraphStore.publish_scores`):
a run that fails or dies half way leaves the previous run's scores whole (its staged ones are dropped when it
fails, or by the next run once it is seen abandoned); a publish cut off half way (Neo4j publishes in slices) is
finished by the next run.
While it runs, its record's summary says which step is under way and when it last did (a heartbeat every
``HEARTBEAT_S``); a process killed without a word (SIGKILL, out of memory) stops beating, and `as_seen` then
reports its run ``abandoned`` instead of leaving it ``running`` for ever.
"""

from __future__ import annotations

import base64
import heapq
import logging
import resource
import secrets
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from engine.segments import CustomerSignals, SegmentThresholds, assign_segment, rank_descending
from graph import scores as sc
from graph.errors import InvalidInput, NotFound
from graph.export import CustomerGraphs, ProgressFn, export_graphs
from graph.model import AnalysisRun, CustomerScores, Segment, utcnow
from graph.store import GraphStore

log = logging.getLogger(__name__)

SEGMENT_ORDER: tuple[Segment, ...] = (
    Segment.INFLUENCER,
    Segment.PROSUMER,
    Segment.ADVOCATE,
    Segment.PASSIVE,
    Segment.DO_NOT_ASK,
)


class AnalysisParams(BaseModel):
    """What an analysis run may be asked to do differently; recorded with the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, description="Seed of Louvain's node order: same graph and seed, same communities.")
    resolution: float = Field(default=1.0, gt=0, description="Louvain resolution; above 1 gives smaller communities.")
    pagerank_alpha: float = Field(default=0.85, gt=0, lt=1, description="PageRank damping factor.")
    nx_backend: str | None = Field(
        default=None, description="NetworkX backend for community detection (e.g. 'parallel'); None: NetworkX's."
    )
    prosumer_smoothing: float = Field(default=1.0, gt=0, description="Added to purchases in the prosumer score.")
    conversion_prior_weight: float = Field(
        default=2.0, ge=0, description="Referrals' worth of weight the network conversion rate has per customer."
    )
    thresholds: SegmentThresholds = Field(default_factory=SegmentThresholds)
    write_batch_size: int = Field(default=5_000, ge=1, le=100_000)
    top_n: int = Field(default=10, ge=0, le=1_000, description="Top influencers kept in the run summary.")


class RunComparison(BaseModel):
    """How two runs differ: counts, customers that changed segment, communities, top influencers, parameters."""

    model_config = ConfigDict(frozen=True)

    run_a: str
    run_b: str
    customers: tuple[int, int]
    segment_counts: dict[str, tuple[int, int]]
    changed_segments: int = Field(description="Customers whose segment differs between the two runs.")
    changed_exact: bool = Field(description="False when a run kept no membership, so the count is a lower bound.")
    transitions: dict[str, int] = Field(description="'influencer->passive': how many customers moved that way.")
    communities: tuple[int, int]
    top_influencers_kept: int
    params_changed: dict[str, tuple[Any, Any]]
    seconds: tuple[float, float]


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def pack_ids(ids: list[str]) -> str:
    """Sorted ids, newline-joined, zlib-compressed and base64-encoded: a compact membership list for a run record.

    Examples
    --------
    >>> unpack_ids(pack_ids(["b", "a"]))
    ['a', 'b']
    """
    raw = "\n".join(sorted(ids)).encode()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def unpack_ids(packed: str) -> list[str]:
    """The ids `pack_ids` packed."""
    raw = zlib.decompress(base64.b64decode(packed)).decode()
    return raw.split("\n") if raw else []


class _Clock:
    def __init__(self, progress: ProgressFn | None) -> None:
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.current = ""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current = name
        if self.progress is not None:
            self.progress(name, 0, 0)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


HEARTBEAT_S: Final = 30.0
"""How often a running analysis re-saves its record with the step under way (`summary.heartbeat_at`)."""
ABANDONED_AFTER_S: Final = 300.0
"""A running analysis silent this long has lost its process: `as_seen` reports it `abandoned`."""
ABANDONED: Final = "abandoned"


class _Heartbeat:
    """Re-saves the running record every `every_s` with the step under way, from a thread, until the run ends.

    Leaving stops the thread and waits for a save in flight, so the final record (done or failed) is written last.
    A beat that cannot be saved is skipped: the analysis goes on, and only a long silence marks it abandoned."""

    def __init__(self, store: GraphStore, run: AnalysisRun, clock: _Clock, every_s: float) -> None:
        self._store, self._run, self._clock, self._every_s = store, run, clock, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"heartbeat {run.id}", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.beat()
            except Exception as exc:  # a missed beat must not end the analysis; the next one may land
                log.warning("analysis %s: heartbeat not saved: %s", self._run.id, exc)

    def beat(self) -> None:
        summary = {"step": self._clock.current, "heartbeat_at": utcnow().isoformat()}
        self._store.save_run(self._run.model_copy(update={"summary": summary, "timings": dict(self._clock.timings)}))


def as_seen(run: AnalysisRun, *, now: datetime, abandoned_after_s: float = ABANDONED_AFTER_S) -> AnalysisRun:
    """The run as a reader should see it: `running` with no heartbeat for `abandoned_after_s` is `abandoned`.

    A record without a heartbeat (written before runs had one) counts from its start."""
    if run.status != "running":
        return run
    beat = run.summary.get("heartbeat_at")
    try:
        last = datetime.fromisoformat(beat) if isinstance(beat, str) else run.started_at
    except ValueError:
        last = run.started_at
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    if (now - last).total_seconds() <= abandoned_after_s:
        return run
    return run.model_copy(update={"status": ABANDONED})


def run_analysis(
    store: GraphStore,
    *,
    params: AnalysisParams | None = None,
    progress: ProgressFn | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> AnalysisRun:
    """Score, segment and explain every customer in `store`, write the results back and record the run.

    Parameters
    ----------
    store : GraphStore
        Read through its ``iter_*`` methods; scores are staged in batches (``stage_scores``) and published with
        the final record (``publish_scores``: one transaction on SQLite, slices on Neo4j).
    params : AnalysisParams, optional
        Seeds, thresholds and tuning; defaults otherwise.
    progress : callable, optional
        ``progress(step, done, total)``: called when a step starts (``0, 0``) and while scores are written.
    heartbeat_s : float, optional
        How often the running record is re-saved with the step under way (see `as_seen`).

    Returns
    -------
    AnalysisRun
        The saved run record (status ``done``).

    Raises
    ------
    InvalidInput
        When the store holds no customers, or a parameter cannot be used (an unknown NetworkX backend).
    """
    params = params or AnalysisParams()
    run = AnalysisRun(
        id=f"run-{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}",
        started_at=utcnow(),
        params=params.model_dump(mode="json"),
    )
    clock = _Clock(progress)
    started = time.perf_counter()
    with clock.step("export"):
        graphs = export_graphs(store, progress=progress)
    if graphs.customers == 0:
        raise InvalidInput(f"{store.describe()} holds no customers: import customers before running an analysis")
    heartbeat = _Heartbeat(store, run, clock, heartbeat_s)
    heartbeat.beat()
    try:
        with heartbeat:
            finish_publications(store)
            discard_dead_staging(store, now=utcnow())
            summary = _analyse(store, graphs, run.id, params, clock, progress)
    except BaseException as exc:  # record any failure (even Ctrl-C), then let it propagate unchanged
        failed = run.model_copy(
            update={
                "status": "failed",
                "finished_at": utcnow(),
                "timings": dict(clock.timings),
                "summary": {"error": f"{type(exc).__name__}: {exc}"},
            }
        )
        store.save_run(failed)
        try:
            store.discard_staged_scores([run.id])
        except Exception as cleanup:  # the next run drops them; the error that ended this one is what matters
            log.warning("analysis %s: staged scores not discarded: %s", run.id, cleanup)
        raise
    clock.timings["total"] = round(time.perf_counter() - started, 4)
    summary["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    done = run.model_copy(
        update={"status": "done", "finished_at": utcnow(), "timings": clock.timings, "summary": summary}
    )
    if progress is not None:
        progress("publish scores", 0, 0)
    store.publish_scores(done)
    return done


def finish_publications(store: GraphStore) -> list[str]:
    """Finish publishing the runs whose publishing was cut off (Neo4j publishes in slices): their scores were all
    staged, so completing the swap, not undoing it, leaves every customer with one run's scores."""
    finished = []
    for run in store.unfinished_publications():
        log.warning("analysis %s: its publishing was cut off; finishing it", run.id)
        store.publish_scores(run)
        finished.append(run.id)
    return finished


def discard_dead_staging(store: GraphStore, *, now: datetime) -> list[str]:
    """Drop the scores staged by runs that will never publish them: failed, finished, abandoned (see `as_seen`)
    or without a record. A run still beating keeps its own. Returns the runs whose scores were dropped."""
    dead: list[str] = []
    for run_id in store.staged_score_runs():
        try:
            seen = as_seen(store.get_run(run_id), now=now)
        except NotFound:
            dead.append(run_id)
            continue
        if seen.status != "running":
            dead.append(run_id)
    if dead:
        rows = store.discard_staged_scores(dead)
        log.info("analysis: dropped %d staged score(s) of runs that did not publish: %s", rows, ", ".join(dead))
    return dead


def _analyse(
    store: GraphStore,
    graphs: CustomerGraphs,
    run_id: str,
    params: AnalysisParams,
    clock: _Clock,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    G, R = graphs.influence, graphs.referrals  # noqa: N806 - NetworkX's names for a graph
    t = params.thresholds
    n = G.number_of_nodes()
    warnings: list[str] = []
    if graphs.self_loops_dropped:
        warnings.append(f"{graphs.self_loops_dropped} self-loop edge(s) ignored")
    if graphs.unknown_customers:
        warnings.append(f"{graphs.unknown_customers} edge or event endpoint(s) named customers the store did not list")
    if G.number_of_edges() == 0:
        warnings.append("no influence edges: PageRank is uniform, so influencers come from referral reach only")

    with clock.step("pagerank"):
        prebuilt = sc.adjacency(G)
        pagerank = sc.influence_pagerank(G, alpha=params.pagerank_alpha, prebuilt=prebuilt)
        pagerank_rank = rank_descending(pagerank)
    with clock.step("communities"):
        membership: dict[Hashable, int] = sc.community_membership(
            G, seed=params.seed, resolution=params.resolution, backend=params.nx_backend, prebuilt=prebuilt
        )
    with clock.step("reach"):
        out_degree = sc.out_degrees(G)
        core = sc.core_numbers(G, prebuilt=prebuilt)
    with clock.step("bridging"):
        bridging = sc.participation_coefficients(G, membership, prebuilt=prebuilt)
        del prebuilt
    with clock.step("referrals"):
        counts = sc.referral_counts(R)
        reach = sc.referral_reach(R)
        rates = sc.conversion_rates(R, prior_weight=params.conversion_prior_weight, counts=counts)
        converted = {node: c.converted for node, c in counts.items() if c.converted}
    with clock.step("prosumer, advocacy and risk"):
        contributions = sc.prosumer_contributions(G)
        prosumer = sc.prosumer_scores(G, smoothing=params.prosumer_smoothing, contributions=contributions)
        prosumer_rank = rank_descending(prosumer)
        advocacy = sc.advocacy_propensity(G, converted)
        ratings = sc.mean_ratings(G)
        risk = sc.risk_flags(
            G,
            R,
            detractor_max_rating=t.detractor_max_rating,
            min_complaints=t.risk_min_complaints,
            refund_ratio=t.risk_refund_ratio,
            fatigue_min_clicks=t.fatigue_min_clicks,
            counts=counts,
        )

    # Isolated customers belong to no community: Louvain leaves each alone, which says nothing about them.
    isolated = {node for node, nbrs in G._succ.items() if not nbrs and not G._pred[node]}
    sizes = Counter(c for node, c in membership.items() if node not in isolated)
    no_counts = sc.ReferralCounts(0, 0, 0, 0)
    no_reach = sc.ReferralReach(0, 0)
    segment_counts: Counter[str] = Counter()
    members: dict[str, list[str]] = {s.value: [] for s in SEGMENT_ORDER if s is not Segment.PASSIVE}
    top: list[tuple[float, str, int, int]] = []
    batch: list[CustomerScores] = []
    written = 0
    write_seconds = 0.0
    segment_start = time.perf_counter()

    def flush() -> None:
        nonlocal written, write_seconds
        begin = time.perf_counter()
        store.stage_scores(batch)
        write_seconds += time.perf_counter() - begin
        written += len(batch)
        batch.clear()
        if progress is not None:
            progress("write scores", written, n)

    clock.current = "write scores"
    if progress is not None:
        progress("write scores", 0, n)
    for node, attrs in G.nodes.items():
        cid = str(node)
        community = None if node in isolated else membership.get(node)
        c = counts.get(node, no_counts)
        r = reach.get(node, no_reach)
        signals = CustomerSignals(
            customer_id=cid,
            network_size=n,
            pagerank=pagerank[node],
            pagerank_rank=pagerank_rank[node],
            out_degree=out_degree[node],
            core_number=core[node],
            community=community,
            community_size=sizes[community] if community is not None else 0,
            bridging=bridging[node],
            referrals_sent=c.sent,
            converted_referrals=c.converted,
            descendants=r.descendants,
            generations=r.generations,
            conversion_rate=rates.get(node, 0.0),
            contributions=contributions[node],
            purchases=int(attrs.get("purchase_count", 0)),
            prosumer=prosumer[node],
            prosumer_rank=prosumer_rank[node],
            advocacy=advocacy[node],
            mean_rating=ratings[node],
            ratings=int(attrs.get("rating_count", 0)),
            shares=int(attrs.get("share_count", 0)),
            consent=bool(attrs.get("consent", False)),
            risk=risk[node],
        )
        segment, explanation = assign_segment(signals, t)
        segment_counts[segment.value] += 1
        if segment is not Segment.PASSIVE:
            members[segment.value].append(cid)
        if segment is Segment.INFLUENCER and params.top_n:
            entry = (signals.pagerank, cid, signals.converted_referrals, signals.descendants)
            if len(top) < params.top_n:
                heapq.heappush(top, entry)
            else:
                heapq.heappushpop(top, entry)
        batch.append(
            # Every field is built here from checked values: skip re-validating a million rows.
            CustomerScores.model_construct(
                customer_id=cid,
                run_id=run_id,
                segment=segment,
                explanation=explanation[:2000],
                scores=signals.scores(),
                community=community,
            )
        )
        if len(batch) >= params.write_batch_size:
            flush()
    if batch:
        flush()
    clock.timings["write scores"] = round(write_seconds, 4)
    clock.timings["segments"] = round(time.perf_counter() - segment_start - write_seconds, 4)

    return {
        "customers": n,
        "influence_edges": int(G.number_of_edges()),
        "referral_edges": int(R.number_of_edges()),
        "isolated_customers": len(isolated),
        "communities": len(sizes),
        "largest_communities": [[c, size] for c, size in sizes.most_common(10)],
        "segments": {s.value: segment_counts.get(s.value, 0) for s in SEGMENT_ORDER},
        "top_influencers": [
            {"customer_id": cid, "pagerank": pr, "converted_referrals": conv, "referral_descendants": desc}
            for pr, cid, conv, desc in sorted(top, reverse=True)
        ],
        "scores_written": written,
        "warnings": warnings,
        "membership": {
            "encoding": "zlib+base64, sorted ids, newline-separated",
            "segments": {segment: pack_ids(ids) for segment, ids in members.items()},
        },
    }


def _segments_of(run: AnalysisRun) -> dict[str, str] | None:
    membership = run.summary.get("membership")
    packed = membership.get("segments") if isinstance(membership, Mapping) else None
    if not isinstance(packed, Mapping):
        return None
    return {cid: segment for segment, blob in packed.items() for cid in unpack_ids(str(blob))}


def compare_runs(a: AnalysisRun, b: AnalysisRun) -> RunComparison:
    """What changed from run `a` to run `b`.

    ``changed_segments`` counts customers whose segment differs; a customer not listed in a run's non-passive
    segments is passive in that run (so a customer erased between the runs who had a segment counts as changed).
    When either run kept no membership list the count falls back to half the summed segment-count differences, a
    lower bound, and ``changed_exact`` is False.

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> def run(rid, segs, n):
    ...     return AnalysisRun(id=rid, started_at=datetime(2025, 1, 1, tzinfo=UTC), summary={
    ...         "customers": n, "segments": {}, "membership": {"segments": {
    ...             s: pack_ids(ids) for s, ids in segs.items()}}})
    >>> cmp = compare_runs(run("a", {"influencer": ["x", "y"]}, 3), run("b", {"influencer": ["x"]}, 3))
    >>> cmp.changed_segments, cmp.transitions
    (1, {'influencer->passive': 1})
    """
    sa, sb = a.summary, b.summary
    counts_a: Mapping[str, int] = sa.get("segments", {})
    counts_b: Mapping[str, int] = sb.get("segments", {})
    names = [s.value for s in SEGMENT_ORDER]
    segment_counts = {name: (int(counts_a.get(name, 0)), int(counts_b.get(name, 0))) for name in names}
    seg_a, seg_b = _segments_of(a), _segments_of(b)
    transitions: Counter[str] = Counter()
    if seg_a is not None and seg_b is not None:
        passive = Segment.PASSIVE.value
        for cid in seg_a.keys() | seg_b.keys():
            before, after = seg_a.get(cid, passive), seg_b.get(cid, passive)
            if before != after:
                transitions[f"{before}->{after}"] += 1
        changed, exact = sum(transitions.values()), True
    else:
        changed, exact = sum(abs(x - y) for x, y in segment_counts.values()) // 2, False
    top_a = {row["customer_id"] for row in sa.get("top_influencers", [])}
    top_b = {row["customer_id"] for row in sb.get("top_influencers", [])}
    keys = a.params.keys() | b.params.keys()
    return RunComparison(
        run_a=a.id,
        run_b=b.id,
        customers=(int(sa.get("customers", 0)), int(sb.get("customers", 0))),
        segment_counts=segment_counts,
        changed_segments=changed,
        changed_exact=exact,
        transitions=dict(transitions.most_common()),
        communities=(int(sa.get("communities", 0)), int(sb.get("communities", 0))),
        top_influencers_kept=len(top_a & top_b),
        params_changed={
            k: (a.params.get(k), b.params.get(k)) for k in sorted(keys) if a.params.get(k) != b.params.get(k)
        },
        seconds=(float(a.timings.get("total", 0.0)), float(b.timings.get("total", 0.0))),
    )
