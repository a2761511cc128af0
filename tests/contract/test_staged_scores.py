"""Staged scores on both stores: invisible until published, published with the run's final record, dropped with
the person on erasure, and discarded per run. (Neo4j publishes in slices; a cut-off publish and its completion
are in tests/integration/test_neo4j_store.py.)"""

from __future__ import annotations

import pytest

from graph.errors import InvalidInput
from graph.model import Segment
from graph.store import GraphStore
from tests.factories import make_customer, make_run, make_scores


@pytest.fixture
def scored(store: GraphStore) -> GraphStore:
    """Ada and Bob scored by run-1, as a finished run left them."""
    store.upsert_customers([make_customer(id="ada"), make_customer(id="bob")])
    store.write_scores([make_scores("ada", run_id="run-1"), make_scores("bob", run_id="run-1")])
    return store


def test_staged_scores_are_invisible_until_their_run_publishes_them(scored: GraphStore) -> None:
    before = {s.customer_id: s for s in scored.iter_scores()}
    newer = [
        make_scores("ada", run_id="run-2", segment=Segment.INFLUENCER, scores={"pagerank": 0.9}),
        make_scores("bob", run_id="run-2", segment=Segment.DO_NOT_ASK, scores={"pagerank": 0.01}),
    ]

    assert scored.stage_scores(newer) == 2
    assert scored.get_scores("ada") == before["ada"]
    assert {s.customer_id: s for s in scored.iter_scores()} == before
    assert scored.staged_score_runs() == ["run-2"]

    run = make_run(id="run-2", status="done")
    assert scored.publish_scores(run) == 2

    assert list(scored.iter_scores()) == newer
    assert scored.get_scores("bob") == newer[1]
    assert scored.get_run("run-2") == run, "the final record is saved with the scores"
    assert scored.staged_score_runs() == []
    assert scored.unfinished_publications() == []


def test_publishing_replaces_every_field_including_a_community_that_became_none(scored: GraphStore) -> None:
    earlier = scored.get_scores("ada")
    assert earlier is not None
    assert (earlier.community, set(earlier.scores)) == (1, {"pagerank", "advocacy"})
    newer = make_scores("ada", run_id="run-2", explanation="Quiet now.", scores={"reach": 3.0}, community=None)

    scored.stage_scores([newer])
    scored.publish_scores(make_run(id="run-2"))

    assert scored.get_scores("ada") == newer, "no score name or community of run-1 is left behind"


def test_staging_a_customer_twice_in_one_run_keeps_the_last(scored: GraphStore) -> None:
    scored.stage_scores([make_scores("ada", run_id="run-2", explanation="First pass.")])
    last = make_scores("ada", run_id="run-2", explanation="Second pass.")
    scored.stage_scores([last])

    assert scored.publish_scores(make_run(id="run-2")) == 1
    assert scored.get_scores("ada") == last


def test_each_run_publishes_only_what_it_staged(scored: GraphStore) -> None:
    mine = make_scores("ada", run_id="run-2")
    theirs = make_scores("bob", run_id="run-3")
    scored.stage_scores([mine])
    scored.stage_scores([theirs])

    scored.publish_scores(make_run(id="run-2"))

    assert scored.get_scores("ada") == mine
    assert scored.get_scores("bob") == make_scores("bob", run_id="run-1")
    assert scored.staged_score_runs() == ["run-3"]


def test_a_run_with_nothing_staged_publishes_its_record_and_leaves_scores_alone(scored: GraphStore) -> None:
    before = list(scored.iter_scores())

    assert scored.publish_scores(make_run(id="run-2")) == 0

    assert list(scored.iter_scores()) == before
    assert scored.get_run("run-2").id == "run-2"


def test_a_record_that_cannot_be_saved_publishes_nothing(scored: GraphStore) -> None:
    before = list(scored.iter_scores())
    scored.stage_scores([make_scores("ada", run_id="run-2")])

    with pytest.raises(InvalidInput, match="run-2"):
        scored.publish_scores(make_run(id="run-2", params={"bad": object()}))

    assert list(scored.iter_scores()) == before
    assert scored.staged_score_runs() == ["run-2"], "still there for a retry"


def test_scores_of_a_customer_erased_while_staged_are_not_published(scored: GraphStore) -> None:
    scored.stage_scores([make_scores("ada", run_id="run-2"), make_scores("bob", run_id="run-2")])

    scored.erase_customer("bob")
    assert scored.publish_scores(make_run(id="run-2")) == 1

    assert scored.existing_customer_ids(["bob"]) == set(), "publishing does not bring an erased person back"
    assert [s.customer_id for s in scored.iter_scores()] == ["ada"]
    assert scored.staged_score_runs() == []


def test_erasure_removes_the_persons_staged_scores_of_every_run(scored: GraphStore) -> None:
    scored.stage_scores([make_scores("bob", run_id="run-2")])
    scored.stage_scores([make_scores("bob", run_id="run-3"), make_scores("ada", run_id="run-3")])

    scored.erase_customer("bob")

    assert scored.staged_score_runs() == ["run-3"]
    assert scored.discard_staged_scores(["run-3"]) == 1, "only Ada's is left"


def test_discarding_drops_the_named_runs_only(scored: GraphStore) -> None:
    for run_id in ("run-2", "run-3", "run-4"):
        scored.stage_scores([make_scores("ada", run_id=run_id), make_scores("bob", run_id=run_id)])

    assert scored.discard_staged_scores([]) == 0
    assert scored.discard_staged_scores(["run-2", "run-4", "run-9"]) == 4

    assert scored.staged_score_runs() == ["run-3"]
    assert scored.publish_scores(make_run(id="run-3")) == 2


def test_delete_all_removes_staged_scores(scored: GraphStore) -> None:
    scored.stage_scores([make_scores("ada", run_id="run-2")])

    scored.delete_all()

    assert scored.staged_score_runs() == []
    assert scored.stage_scores([]) == 0
