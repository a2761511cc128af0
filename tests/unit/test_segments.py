"""engine.segments: which segment wins, at which boundary, and what the explanation says."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.segments import CustomerSignals, SegmentThresholds, assign_segment, qualifying_segments, rank_descending
from graph.model import Segment

DEFAULTS = SegmentThresholds()


def signals(**overrides: Any) -> CustomerSignals:
    """A customer of a 100-customer network with average PageRank, ranked in the middle, and no other signal."""
    fields: dict[str, Any] = {
        "customer_id": "c1",
        "network_size": 100,
        "pagerank": 0.01,
        "pagerank_rank": 50,
        "prosumer_rank": 50,
        "advocacy": 0.35,
        "consent": True,
    }
    fields.update(overrides)
    return CustomerSignals(**fields)


def segment_of(s: CustomerSignals, thresholds: SegmentThresholds = DEFAULTS) -> Segment:
    return assign_segment(s, thresholds)[0]


def test_rank_descending_gives_ties_the_best_shared_rank() -> None:
    assert rank_descending({"a": 0.5, "b": 0.9, "c": 0.5, "d": 0.1}) == {"a": 2, "b": 1, "c": 2, "d": 4}
    assert rank_descending({}) == {}


def test_influencer_by_pagerank_rank_stops_at_the_top_share() -> None:
    # top 2% of 100 customers: ranks 1 and 2 (fewer than 2 customers rank above them), not rank 3.
    strong = {"pagerank": 0.05}  # 5x the average 1/100
    assert segment_of(signals(pagerank_rank=2, **strong)) is Segment.INFLUENCER
    assert segment_of(signals(pagerank_rank=3, **strong)) is Segment.PASSIVE


def test_top_rank_alone_is_not_enough_when_pagerank_is_near_the_average() -> None:
    # A network without edges: everyone ranks first with PageRank 1/N, i.e. 1x the average (< 2x).
    assert segment_of(signals(pagerank=0.01, pagerank_rank=1)) is Segment.PASSIVE
    assert segment_of(signals(pagerank=0.02, pagerank_rank=1)) is Segment.INFLUENCER  # exactly 2x


def test_proven_referral_reach_makes_an_influencer_whatever_the_pagerank() -> None:
    assert segment_of(signals(converted_referrals=3, descendants=5, generations=2)) is Segment.INFLUENCER
    assert segment_of(signals(converted_referrals=3, descendants=4, generations=2)) is Segment.PASSIVE


def test_do_not_ask_wins_over_every_other_segment() -> None:
    star = signals(
        pagerank=0.2,
        pagerank_rank=1,
        descendants=40,
        contributions=10,
        prosumer=5,
        prosumer_rank=1,
        advocacy=0.9,
        risk=("2 complaints",),
    )
    segment, explanation = assign_segment(star, DEFAULTS)
    assert segment is Segment.DO_NOT_ASK
    assert explanation == "Do not ask: 2 complaints."


def test_prosumer_needs_both_the_top_share_and_enough_contributions() -> None:
    # top 10% of 100: ranks 1..10.
    assert segment_of(signals(prosumer=2.0, prosumer_rank=10, contributions=3)) is Segment.PROSUMER
    assert segment_of(signals(prosumer=2.0, prosumer_rank=11, contributions=3)) is Segment.PASSIVE
    assert segment_of(signals(prosumer=2.0, prosumer_rank=1, contributions=2)) is Segment.PASSIVE


def test_advocate_threshold_is_inclusive() -> None:
    assert segment_of(signals(advocacy=0.55)) is Segment.ADVOCATE
    assert segment_of(signals(advocacy=0.549)) is Segment.PASSIVE


def test_influencer_outranks_prosumer_and_the_explanation_says_it_is_both() -> None:
    s = signals(pagerank=0.05, pagerank_rank=1, prosumer=4.0, prosumer_rank=1, contributions=8)
    assert qualifying_segments(s, DEFAULTS) == [Segment.INFLUENCER, Segment.PROSUMER]
    assert "also prosumer" in assign_segment(s, DEFAULTS)[1]


def test_thresholds_are_configurable() -> None:
    generous = SegmentThresholds(influencer_top_share=0.05, advocate_min_propensity=0.3)
    assert segment_of(signals(pagerank=0.05, pagerank_rank=5), generous) is Segment.INFLUENCER
    assert segment_of(signals(), generous) is Segment.ADVOCATE


def test_thresholds_reject_impossible_values_and_unknown_names() -> None:
    with pytest.raises(ValidationError):
        SegmentThresholds(influencer_top_share=1.5)
    with pytest.raises(ValidationError):
        SegmentThresholds(advocate_min_propensity=-0.1)
    with pytest.raises(ValidationError):
        SegmentThresholds(influencer_share=0.1)  # type: ignore[call-arg]


def test_influencer_explanation_quotes_the_numbers_that_decided() -> None:
    s = signals(
        network_size=1000,
        pagerank=0.0031,
        pagerank_rank=12,
        out_degree=40,
        converted_referrals=14,
        descendants=37,
        generations=3,
        community=4,
        community_size=120,
    )
    segment, explanation = assign_segment(s, DEFAULTS)
    assert segment is Segment.INFLUENCER
    assert explanation == (
        "Influencer: PageRank 0.0031 ranks 12 of 1,000 (top 1.2%), 3.1× average; "
        "14 converted referrals reaching 37 customers in 3 generations; influences 40 directly; "
        "community 4 (120 members)."
    )


def test_explanations_of_the_other_segments() -> None:
    prosumer = signals(contributions=7, purchases=3, prosumer=1.75, prosumer_rank=4, consent=False)
    assert assign_segment(prosumer, DEFAULTS)[1] == (
        "Prosumer: 7 reviews, ideas, content or feedback for 3 purchases (score 1.75, top 4%); no contact consent."
    )
    advocate = signals(advocacy=0.78, mean_rating=9.2, ratings=5, shares=4, converted_referrals=2)
    assert assign_segment(advocate, DEFAULTS)[1] == (
        "Advocate: propensity 0.78 from average rating 9.2/10 over 5 ratings, 4 shares, 2 converted referrals."
    )
    bridge = signals(community=2, community_size=1, bridging=0.62)
    assert assign_segment(bridge, DEFAULTS)[1] == (
        "Passive: no strong signal (PageRank top 50%, 0 contributions, propensity 0.35); "
        "community 2 (1 member), bridges communities (participation 0.62)."
    )


def test_scores_carry_every_number_and_the_rating_only_when_there_is_one() -> None:
    assert "mean_rating" not in signals().scores()
    scores = signals(mean_rating=8.0, ratings=1, risk=("1 complaint",)).scores()
    assert scores["mean_rating"] == 8.0
    assert scores["risk"] == 1.0
    assert scores["pagerank"] == 0.01
