"""engine.targeting against a real SQLite store: constraints, spreads worked out by hand (p = 1), forecasts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.targeting import choose_targets, forecast, forecast_campaign
from graph.diffusion import SpreadEstimate
from graph.errors import InvalidInput, NotFound
from graph.model import ContactChannel, EventKind, GraphBatch, ReferralStatus, Segment
from graph.sqlite_store import SqliteStore
from tests.factories import make_customer, make_event, make_influence, make_referral, make_scores

HUBS = {"h1": 4, "h2": 3, "h3": 2}  # hub -> number of followers; with p = 1 a hub reaches itself + followers


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "graph.db")
    yield s
    s.close()


def three_stars(store: SqliteStore, *, no_consent: tuple[str, ...] = ()) -> None:
    """Three disjoint stars: h1 -> 4 followers (spread 5 at p = 1), h2 -> 3 (spread 4), h3 -> 2 (spread 3).

    Scores are written by hand: h1 and h2 in community 0, h3 in community 1, everyone an influencer or passive.
    """
    customers, influences, scores = [], [], []
    for hub, followers in HUBS.items():
        consent = {ContactChannel.EMAIL: hub not in no_consent}
        customers.append(make_customer(id=hub, consent=consent))
        community = 1 if hub == "h3" else 0
        scores.append(
            make_scores(hub, segment=Segment.INFLUENCER, explanation=f"Influencer: {hub}", community=community)
        )
        for i in range(followers):
            follower = f"{hub}f{i}"
            customers.append(make_customer(id=follower))
            influences.append(make_influence(hub, follower))
            scores.append(make_scores(follower, segment=Segment.PASSIVE, explanation="Passive.", community=community))
    store.write_batch(GraphBatch(customers=customers, influences=influences))
    store.write_scores(scores)


def test_the_two_largest_stars_are_chosen_and_reach_exactly_nine(store: SqliteStore) -> None:
    three_stars(store)
    choice = choose_targets(store, k=2, p=1.0, seed=3, mc_runs=200)
    assert choice.seeds == ["h1", "h2"]
    # p = 1: every cascade reaches both stars whole, 5 + 4 = 9, so the interval has no width.
    assert choice.expected_spread == 9.0
    assert choice.ci95 == (9.0, 9.0)
    assert [t.rank for t in choice.targets] == [1, 2]
    assert [t.explanation for t in choice.targets] == ["Influencer: h1", "Influencer: h2"]
    assert choice.targets[0].marginal_gain == pytest.approx(5.0, abs=0.5)
    assert choice.targets[1].marginal_gain == pytest.approx(4.0, abs=0.5)
    assert {b.method for b in choice.baselines} == {"degree", "pagerank", "degree_discount"}
    degree = next(b for b in choice.baselines if b.method == "degree")
    assert degree.seeds == ["h1", "h2"]
    assert degree.expected_spread == 9.0
    assert (choice.model, choice.p, choice.k, choice.seed) == ("ic", 1.0, 2, 3)


def test_max_per_community_swaps_the_second_hub_for_the_other_community(store: SqliteStore) -> None:
    three_stars(store)
    choice = choose_targets(store, k=2, p=1.0, seed=3, mc_runs=200, max_per_community=1)
    assert choice.seeds == ["h1", "h3"]
    assert choice.expected_spread == 8.0  # 5 + 3


def test_do_not_ask_is_never_chosen(store: SqliteStore) -> None:
    three_stars(store)
    store.write_scores([make_scores("h1", segment=Segment.DO_NOT_ASK, explanation="Do not ask: 1 complaint.")])
    choice = choose_targets(store, k=1, p=1.0, seed=3, mc_runs=200)
    assert choice.seeds == ["h2"]
    assert choice.excluded["segment do_not_ask"] == 1


def test_a_complaint_since_the_analysis_already_keeps_a_customer_out(store: SqliteStore) -> None:
    three_stars(store)
    store.add_events([make_event("h1", kind=EventKind.COMPLAINT, value=None)])
    choice = choose_targets(store, k=1, p=1.0, seed=3, mc_runs=200)
    assert choice.seeds == ["h2"]
    assert choice.excluded == {"at risk since the analysis": 1}


def test_excluded_segments_and_missing_consent_are_left_out_with_reasons(store: SqliteStore) -> None:
    three_stars(store, no_consent=("h2",))
    choice = choose_targets(store, k=1, p=1.0, seed=3, mc_runs=200, exclude_segments=["passive"])
    assert choice.seeds == ["h1"]
    assert choice.excluded == {"segment passive": 9, "no consent": 1}
    assert choice.candidates == 2
    anyone = choose_targets(store, k=2, p=1.0, seed=3, mc_runs=200, only_consenting=False)
    assert anyone.seeds == ["h1", "h2"]


def test_customers_added_after_the_analysis_are_not_chosen(store: SqliteStore) -> None:
    three_stars(store)
    store.write_batch(
        GraphBatch(
            customers=[make_customer(id="new"), *(make_customer(id=f"n{i}") for i in range(9))],
            influences=[make_influence("new", f"n{i}") for i in range(9)],
        )
    )
    choice = choose_targets(store, k=1, p=1.0, seed=3, mc_runs=200)
    assert choice.seeds == ["h1"]
    assert choice.excluded["not analysed yet"] == 10


def test_targets_need_an_analysis_first(store: SqliteStore) -> None:
    store.write_batch(GraphBatch(customers=[make_customer(id="a")]))
    with pytest.raises(InvalidInput, match="advocacy analyse"):
        choose_targets(store, k=1)


def test_nobody_left_to_choose_is_a_clear_error(store: SqliteStore) -> None:
    three_stars(store)
    with pytest.raises(InvalidInput, match="no customer can be chosen"):
        choose_targets(store, k=1, exclude_segments=["influencer", "passive"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"p": 0.0}, "p must be"),
        ({"p": 1.5}, "p must be"),
        ({"model": "lt"}, "model must be"),
        ({"exclude_segments": ["vip"]}, "unknown segment 'vip'"),
        ({"max_per_community": 0}, "max_per_community"),
        ({"mc_runs": 0}, "Monte Carlo runs"),
    ],
)
def test_bad_parameters_are_refused(store: SqliteStore, options: dict[str, object], message: str) -> None:
    three_stars(store)
    params: dict[str, object] = {"k": 1}
    params.update(options)
    with pytest.raises(InvalidInput, match=message):
        choose_targets(store, **params)  # type: ignore[arg-type]


def test_selection_is_reproducible_with_a_seed(store: SqliteStore) -> None:
    three_stars(store)
    first = choose_targets(store, k=2, p=0.5, seed=11, mc_runs=500)
    again = choose_targets(store, k=2, p=0.5, seed=11, mc_runs=500)
    assert (first.seeds, first.expected_spread) == (again.seeds, again.expected_spread)


# --- forecasts -------------------------------------------------------------------------------------------------


def test_forecast_rule_by_hand() -> None:
    # A certain cascade of 3 from 1 seed: 2 friends, each converting with r = 0.5.
    #   referrals: mean 2 * 0.5 = 1, variance 2 * 0.5 * 0.5 + 0.25 * 0 = 0.5 -> high 1 + 1.96 * 0.7071 = 2.386
    #   cost per referral 10 + 5 = 15
    est = SpreadEstimate(mean=3.0, ci95=(3.0, 3.0), std=0.0, runs=100)
    reached, referrals, cost = forecast(est, 1, conversion_rate=0.5, reward_per_referral=10, friend_reward=5)
    high = 1 + 1.959963984540054 * math.sqrt(0.5)
    assert reached == (3.0, (3.0, 3.0))
    assert referrals[0] == pytest.approx(1.0)
    assert referrals[1] == pytest.approx((0.0, high))
    assert cost[0] == pytest.approx(15.0)
    assert cost[1] == pytest.approx((0.0, 15 * high))


def test_forecast_rule_adds_the_cascade_variance() -> None:
    # 11 reached on average (sd 4) from 1 seed, r = 0.1: mean 1.0, variance 10 * 0.1 * 0.9 + 0.01 * 16 = 1.06
    est = SpreadEstimate(mean=11.0, ci95=(10.9, 11.1), std=4.0, runs=1000)
    reached, referrals, _ = forecast(est, 1, conversion_rate=0.1)
    assert reached[1] == pytest.approx((11 - 1.959963984540054 * 4, 11 + 1.959963984540054 * 4))
    assert referrals[0] == pytest.approx(1.0)
    assert referrals[1][1] == pytest.approx(1.0 + 1.959963984540054 * math.sqrt(1.06))


def test_forecast_rule_refuses_impossible_rates() -> None:
    est = SpreadEstimate(mean=3.0, ci95=(3.0, 3.0), std=0.0, runs=1)
    with pytest.raises(InvalidInput):
        forecast(est, 1, conversion_rate=1.5)
    with pytest.raises(InvalidInput):
        forecast(est, 1, conversion_rate=0.5, reward_per_referral=-1)


def chain(store: SqliteStore) -> None:
    """a -> b -> c influence chain; a referred 4 friends of whom 1 converted (history rate 0.25)."""
    people = ["a", "b", "c", "x1", "x2", "x3", "x4"]
    statuses = [ReferralStatus.CONVERTED, ReferralStatus.CLICKED, ReferralStatus.SIGNED_UP, ReferralStatus.REVERSED]
    store.write_batch(
        GraphBatch(
            customers=[make_customer(id=p) for p in people],
            influences=[make_influence("a", "b"), make_influence("b", "c")],
            referrals=[make_referral("a", f"x{i + 1}", status=s) for i, s in enumerate(statuses)],
            events=[make_event("a", kind=EventKind.PURCHASE)],
        )
    )


def test_forecast_campaign_with_a_given_rate(store: SqliteStore) -> None:
    chain(store)
    result = forecast_campaign(
        store, ["a"], conversion_rate=0.5, reward_per_referral=10, friend_reward=5, p=1.0, runs=100, seed=1
    )
    assert result.expected_reached == 3.0  # a, b and c with certainty
    assert result.expected_referrals == pytest.approx(1.0)
    assert result.expected_cost == pytest.approx(15.0)
    assert result.conversion_rate_source == "given"


def test_forecast_campaign_uses_the_referral_history_by_default(store: SqliteStore) -> None:
    chain(store)
    result = forecast_campaign(store, ["a", "a"], p=1.0, runs=100, seed=1)
    assert result.seeds == ["a"]
    assert result.conversion_rate == pytest.approx(0.25)
    assert result.conversion_rate_source == "history: 1 of 4 referrals converted"
    assert result.expected_referrals == pytest.approx(2 * 0.25)


def test_forecast_campaign_errors(store: SqliteStore) -> None:
    store.write_batch(GraphBatch(customers=[make_customer(id="a")]))
    with pytest.raises(NotFound, match="'ghost'"):
        forecast_campaign(store, ["a", "ghost"], conversion_rate=0.1)
    with pytest.raises(InvalidInput, match="no referral history"):
        forecast_campaign(store, ["a"])
    with pytest.raises(InvalidInput, match="at least one customer"):
        forecast_campaign(store, [], conversion_rate=0.1)
