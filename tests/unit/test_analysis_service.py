"""engine.analysis and graph.export against a real SQLite store in a temporary file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.analysis import (
    ABANDONED_AFTER_S,
    AnalysisParams,
    as_seen,
    compare_runs,
    discard_dead_staging,
    pack_ids,
    run_analysis,
    unpack_ids,
)
from graph.errors import InvalidInput, StoreUnavailable
from graph.export import export_graphs
from graph.model import (
    AnalysisRun,
    ContactChannel,
    CustomerScores,
    EventKind,
    GraphBatch,
    InfluenceKind,
    ReferralStatus,
    Segment,
    utcnow,
)
from graph.sqlite_store import SqliteStore
from tests.factories import make_customer, make_event, make_influence, make_referral, make_scores


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "graph.db")
    yield s
    s.close()


def small_network(store: SqliteStore) -> None:
    """A hub influencing 8 customers, a 3-step converted referral chain, a prosumer, a complainer and a loner.

    hub -> f1..f8 (INFLUENCES); ref0 -> ref1 -> ref2 -> ref3 (converted), ref0 -> ref4, ref0 -> ref5 (converted);
    pro: 4 reviews, 2 ideas, 1 purchase; hub: 1 complaint after the analysis in one test; loner: no tie at all.
    """
    ids = ["hub", *(f"f{i}" for i in range(1, 9)), *(f"ref{i}" for i in range(6)), "pro", "loner"]
    customers = [make_customer(id=cid) for cid in ids]
    influences = [make_influence("hub", f"f{i}", weight=1.0) for i in range(1, 9)]
    influences += [make_influence("f1", "f2"), make_influence("ref0", "ref1"), make_influence("pro", "f3")]
    converted = ReferralStatus.CONVERTED
    referrals = [
        make_referral("ref0", "ref1", status=converted),
        make_referral("ref1", "ref2", status=converted),
        make_referral("ref2", "ref3", status=converted),
        make_referral("ref0", "ref4", status=converted),
        make_referral("ref0", "ref5", status=converted),
    ]
    events = [make_event("pro", kind=EventKind.REVIEW, value=5.0) for _ in range(4)]
    events += [make_event("pro", kind=EventKind.IDEA, value=None) for _ in range(2)]
    events += [make_event("pro", kind=EventKind.PURCHASE)]
    store.write_batch(GraphBatch(customers=customers, influences=influences, referrals=referrals, events=events))


# --- export ----------------------------------------------------------------------------------------------------


def test_export_sums_the_weights_of_every_kind_between_two_customers(store: SqliteStore) -> None:
    store.write_batch(
        GraphBatch(
            customers=[make_customer(id="a"), make_customer(id="b")],
            influences=[
                make_influence("a", "b", kind=InfluenceKind.FOLLOWS, weight=1.0),
                make_influence("a", "b", kind=InfluenceKind.SHARES, weight=0.5),
                make_influence("b", "a", kind=InfluenceKind.MENTIONS, weight=0.25),
            ],
        )
    )
    G = export_graphs(store).influence  # noqa: N806
    assert G["a"]["b"]["weight"] == pytest.approx(1.5)
    assert G["b"]["a"]["weight"] == pytest.approx(0.25)
    assert G.number_of_edges() == 2


def test_export_carries_consent_event_summaries_and_referral_statuses(store: SqliteStore) -> None:
    store.write_batch(
        GraphBatch(
            customers=[
                make_customer(id="yes", consent={ContactChannel.SMS: True}),
                make_customer(id="no", consent={ContactChannel.EMAIL: False}),
            ],
            referrals=[make_referral("yes", "no", status=ReferralStatus.SIGNED_UP)],
            events=[
                make_event("yes", kind=EventKind.RATING, value=9.0),
                make_event("yes", kind=EventKind.RATING, value=7.0),
                make_event("no", kind=EventKind.COMPLAINT, value=None),
            ],
        )
    )
    graphs = export_graphs(store)
    yes, no = graphs.influence.nodes["yes"], graphs.influence.nodes["no"]
    assert yes["consent"] is True
    assert "consent" not in no
    assert (yes["rating_count"], yes["rating_total"]) == (2, 16.0)
    assert no["complaint_count"] == 1
    assert no["complaint_last"] is not None
    assert graphs.referrals["yes"]["no"]["status"] == "signed_up"
    assert graphs.customers == 2


def test_export_drops_and_counts_a_self_loop_that_bypassed_the_model(store: SqliteStore, tmp_path: Path) -> None:
    store.write_batch(GraphBatch(customers=[make_customer(id="a"), make_customer(id="b")]))
    store.add_influences([make_influence("a", "b")])
    with sqlite3.connect(tmp_path / "graph.db") as raw:  # as another tool writing the file might
        raw.execute("INSERT INTO influences VALUES ('a', 'a', 'follows', 1.0, NULL)")
    graphs = export_graphs(store)
    assert graphs.self_loops_dropped == 1
    assert not graphs.influence.has_edge("a", "a")
    assert graphs.influence.has_edge("a", "b")


# --- the analysis run ------------------------------------------------------------------------------------------


def test_analysis_segments_explains_and_writes_back_every_customer(store: SqliteStore) -> None:
    small_network(store)
    thresholds = {"influencer_top_share": 0.05, "influencer_min_descendants": 4}
    run = run_analysis(store, params=AnalysisParams.model_validate({"thresholds": thresholds}))

    hub = store.get_scores("hub")
    assert hub is not None
    assert hub.segment is Segment.INFLUENCER  # PageRank rank 1 of 17 (top 5% allows rank 1 only)
    assert hub.explanation.startswith("Influencer: PageRank")
    assert hub.scores["out_degree"] == 8.0
    assert hub.run_id == run.id

    ref0 = store.get_scores("ref0")
    assert ref0 is not None
    assert ref0.segment is Segment.INFLUENCER  # 5 descendants (ref1..ref5) >= 4
    assert ref0.scores["referral_descendants"] == 5.0
    assert ref0.scores["referral_generations"] == 3.0
    assert "3 converted referrals reaching 5 customers in 3 generations" in ref0.explanation

    pro = store.get_scores("pro")
    assert pro is not None
    assert pro.segment is Segment.PROSUMER  # 6 contributions / (1 purchase + 1) = 3.0, the top score
    assert pro.scores["prosumer"] == pytest.approx(3.0)

    loner = store.get_scores("loner")
    assert loner is not None
    assert loner.community is None
    assert loner.segment is Segment.PASSIVE

    assert run.status == "done"
    assert run.summary["customers"] == 17
    assert sum(run.summary["segments"].values()) == 17
    assert run.summary["scores_written"] == 17
    assert run.summary["isolated_customers"] == 5  # loner, and ref2..ref5 who only have referral edges
    assert run.summary["top_influencers"][0]["customer_id"] == "hub"
    assert {"export", "pagerank", "communities", "write scores", "total"} <= run.timings.keys()
    assert store.get_run(run.id) == run


def test_an_empty_store_is_a_clear_error_and_records_no_run(store: SqliteStore) -> None:
    with pytest.raises(InvalidInput, match="holds no customers"):
        run_analysis(store)
    assert store.list_runs() == []


def test_without_influence_edges_no_one_is_an_influencer_by_rank_and_the_run_says_why(store: SqliteStore) -> None:
    store.write_batch(
        GraphBatch(
            customers=[make_customer(id=c) for c in ("a", "b", "c", "d", "e", "f", "g")],
            referrals=[make_referral("a", f, status=ReferralStatus.CONVERTED) for f in "bcdef"],
        )
    )
    run = run_analysis(store)
    assert any("no influence edges" in w for w in run.summary["warnings"])
    # Everyone has PageRank 1/7, so only the proven referral reach of a (5 customers) makes an influencer.
    assert run.summary["segments"]["influencer"] == 1
    a = store.get_scores("a")
    assert a is not None
    assert a.segment is Segment.INFLUENCER
    assert run.summary["isolated_customers"] == 7
    assert run.summary["communities"] == 0


def test_a_failing_run_is_recorded_as_failed(store: SqliteStore) -> None:
    small_network(store)
    with pytest.raises(InvalidInput, match="not installed"):
        run_analysis(store, params=AnalysisParams(nx_backend="no-such-backend"))
    (run,) = store.list_runs()
    assert run.status == "failed"
    assert "not installed" in run.summary["error"]


def test_the_same_seed_gives_the_same_communities(store: SqliteStore) -> None:
    small_network(store)
    run_analysis(store, params=AnalysisParams(seed=3))
    first = {s.customer_id: s.community for s in store.iter_scores()}
    run_analysis(store, params=AnalysisParams(seed=3))
    assert {s.customer_id: s.community for s in store.iter_scores()} == first


def test_compare_runs_counts_the_customers_who_changed_segment(store: SqliteStore) -> None:
    small_network(store)
    before = run_analysis(store)
    store.add_events([make_event("hub", kind=EventKind.COMPLAINT, value=None)])
    after = run_analysis(store, params=AnalysisParams(seed=1))
    cmp = compare_runs(before, after)
    assert cmp.changed_segments == 1
    assert cmp.changed_exact is True
    assert cmp.transitions == {"influencer->do_not_ask": 1}
    assert cmp.segment_counts["do_not_ask"] == (0, 1)
    assert cmp.params_changed == {"seed": (0, 1)}
    assert cmp.customers == (17, 17)
    assert [r.id for r in store.list_runs()] == [after.id, before.id]


def test_compare_runs_without_membership_falls_back_to_a_lower_bound(store: SqliteStore) -> None:
    small_network(store)
    a = run_analysis(store)
    b = a.model_copy(
        update={"summary": {**a.summary, "membership": None, "segments": {**a.summary["segments"], "passive": 0}}}
    )
    cmp = compare_runs(a, b)
    assert cmp.changed_exact is False
    assert cmp.changed_segments == a.summary["segments"]["passive"] // 2


def test_packed_ids_round_trip() -> None:
    ids = [f"c{i:05d}" for i in range(2000, 0, -1)]
    assert unpack_ids(pack_ids(ids)) == sorted(ids)
    assert unpack_ids(pack_ids([])) == []


# --- liveness: a running record beats until the run ends ---------------------------------------------------------
def test_a_running_analysis_says_which_step_is_under_way_and_beats(store: SqliteStore) -> None:
    small_network(store)
    seen: list[AnalysisRun] = []

    def progress(step: str, done: int, total: int) -> None:
        if step == "write scores" and done == 0:
            time.sleep(0.2)  # several beats of 0.02 s
            seen.extend(store.list_runs(limit=1))

    run = run_analysis(store, progress=progress, heartbeat_s=0.02)
    (during,) = seen
    assert during.id == run.id
    assert (during.status, during.finished_at) == ("running", None)
    assert during.summary["step"] == "write scores"
    assert datetime.fromisoformat(during.summary["heartbeat_at"]) > run.started_at
    assert "pagerank" in during.timings, "the steps done so far are on record"
    assert store.get_run(run.id) == run, "the final record is written last"
    assert "heartbeat_at" not in run.summary


def test_a_beat_that_cannot_be_saved_does_not_end_the_analysis(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    small_network(store)
    saves = {"running": 0}
    original = store.save_run

    def flaky(run: AnalysisRun) -> None:
        if run.status == "running":
            saves["running"] += 1
            if saves["running"] > 1:
                raise StoreUnavailable("the store is away for a moment")
        original(run)

    def slow(step: str, done: int, total: int) -> None:
        if step == "write scores" and done == 0:
            time.sleep(0.1)

    store.save_run = flaky  # type: ignore[method-assign]
    run = run_analysis(store, progress=slow, heartbeat_s=0.02)
    assert run.status == "done"
    assert store.get_run(run.id).status == "done"
    assert "heartbeat not saved" in caplog.text


def test_a_running_record_is_seen_abandoned_only_after_a_silent_heartbeat() -> None:
    started = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    beat = started + timedelta(minutes=30)
    running = AnalysisRun(id="r1", started_at=started, summary={"step": "reach", "heartbeat_at": beat.isoformat()})
    at = {s: beat + timedelta(seconds=s) for s in (0, ABANDONED_AFTER_S, ABANDONED_AFTER_S + 1)}
    assert as_seen(running, now=at[0]).status == "running"
    assert as_seen(running, now=at[ABANDONED_AFTER_S]).status == "running"
    abandoned = as_seen(running, now=at[ABANDONED_AFTER_S + 1])
    assert abandoned.status == "abandoned"
    assert abandoned.model_copy(update={"status": "running"}) == running, "nothing else changes"
    assert as_seen(running, now=at[0], abandoned_after_s=0.0).status == "running"
    naive = running.model_copy(update={"summary": {"heartbeat_at": beat.replace(tzinfo=None).isoformat()}})
    assert as_seen(naive, now=at[ABANDONED_AFTER_S]).status == "running", "a time without a zone is UTC"
    assert as_seen(naive, now=at[ABANDONED_AFTER_S + 1]).status == "abandoned"


@pytest.mark.parametrize("summary", [{}, {"heartbeat_at": "not a time"}])
def test_a_running_record_without_a_readable_heartbeat_counts_from_its_start(summary: dict[str, str]) -> None:
    started = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    running = AnalysisRun(id="r1", started_at=started, summary=summary)
    assert as_seen(running, now=started + timedelta(seconds=ABANDONED_AFTER_S)).status == "running"
    assert as_seen(running, now=started + timedelta(seconds=ABANDONED_AFTER_S + 1)).status == "abandoned"


@pytest.mark.parametrize("status", ["done", "failed"])
def test_a_finished_run_is_seen_as_it_is_however_old(status: str) -> None:
    started = datetime(2020, 1, 1, tzinfo=UTC)
    run = AnalysisRun(id="r1", started_at=started, finished_at=started, status=status)
    assert as_seen(run, now=started + timedelta(days=365)) is run


# --- staged scores ---------------------------------------------------------------------------------------------
def test_readers_see_the_previous_run_until_the_next_one_publishes(store: SqliteStore) -> None:
    small_network(store)
    first = run_analysis(store)
    during: list[set[str]] = []
    steps: list[str] = []

    def progress(step: str, done: int, total: int) -> None:
        steps.append(step)
        if step == "write scores" and done > 0:
            during.append({scores.run_id for scores in store.iter_scores()})

    second = run_analysis(store, params=AnalysisParams(write_batch_size=4), progress=progress)

    assert len(during) >= 4, "several batches were staged"
    assert all(seen == {first.id} for seen in during), "no reader saw the second run's scores before it published"
    assert steps[-1] == "publish scores"
    assert {scores.run_id for scores in store.iter_scores()} == {second.id}
    assert store.staged_score_runs() == []


def test_a_run_that_fails_while_writing_scores_leaves_the_previous_ones_whole(store: SqliteStore) -> None:
    small_network(store)
    first = run_analysis(store)
    before = list(store.iter_scores())
    original = store.stage_scores
    calls = {"n": 0}

    def fails_third(scores: list[CustomerScores]) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreUnavailable("the disk went away")
        return original(scores)

    store.stage_scores = fails_third  # type: ignore[method-assign,assignment]
    with pytest.raises(StoreUnavailable):
        run_analysis(store, params=AnalysisParams(write_batch_size=3))

    failed = next(run for run in store.list_runs() if run.id != first.id)
    assert failed.status == "failed"
    assert list(store.iter_scores()) == before, "two batches were staged, none published"
    assert store.staged_score_runs() == [], "a run that fails drops what it staged"


def test_only_runs_that_will_never_publish_lose_their_staged_scores(store: SqliteStore) -> None:
    small_network(store)
    now = utcnow()
    quiet = now - timedelta(seconds=ABANDONED_AFTER_S + 1)
    records = {
        "beating": AnalysisRun(id="beating", started_at=quiet, summary={"heartbeat_at": now.isoformat()}),
        "abandoned": AnalysisRun(id="abandoned", started_at=quiet, summary={"heartbeat_at": quiet.isoformat()}),
        "failed": AnalysisRun(id="failed", started_at=quiet, finished_at=now, status="failed"),
    }
    for record in records.values():
        store.save_run(record)
    for run_id in ("beating", "abandoned", "failed", "unrecorded"):
        store.stage_scores([make_scores("hub", run_id=run_id), make_scores("pro", run_id=run_id)])

    assert discard_dead_staging(store, now=now) == ["abandoned", "failed", "unrecorded"]
    assert store.staged_score_runs() == ["beating"]
    assert discard_dead_staging(store, now=now) == []

    run_analysis(store)
    assert store.staged_score_runs() == ["beating"], "a run leaves another live run's staging alone"
    assert discard_dead_staging(store, now=now + timedelta(seconds=ABANDONED_AFTER_S + 1)) == ["beating"]


def test_a_clean_up_that_fails_at_the_start_is_recorded_as_the_runs_failure(store: SqliteStore) -> None:
    small_network(store)

    def unavailable() -> list[str]:
        raise StoreUnavailable("the store went away")

    store.staged_score_runs = unavailable  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        run_analysis(store)

    (run,) = store.list_runs()
    assert run.status == "failed", "not left running until it is seen abandoned"
    assert "the store went away" in run.summary["error"]
