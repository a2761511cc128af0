"""Programme metrics and referral cascades on hand-built inputs whose answers are known."""

from __future__ import annotations

import gc
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import timedelta
from itertools import repeat
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.metrics import (
    CascadeReport,
    ProgramMetrics,
    cascade_report,
    draw_cascades_svg,
    program_metrics,
    spread_curve,
)
from graph.errors import InvalidInput
from graph.model import EdgeRecord, EdgeType, ReferralStatus
from graph.program import (
    Attribution,
    Conversion,
    ConversionStatus,
    ProgramCounts,
    Reward,
    RewardKind,
    RewardSide,
    RewardState,
    TouchKind,
)
from graph.program_store import ERASED
from tests.factories import BASE_TIME, next_id
from tests.program_factories import make_order

SVG = "{http://www.w3.org/2000/svg}"


def edge(referrer: str, friend: str, status: ReferralStatus | str = ReferralStatus.CONVERTED) -> EdgeRecord:
    return EdgeRecord(referrer, friend, EdgeType.REFERRED, str(status), 1.0, BASE_TIME)


def edges(pairs: str, status: ReferralStatus = ReferralStatus.CONVERTED) -> list[EdgeRecord]:
    """`"ab bc"` is a -> b and b -> c."""
    return [edge(pair[0], pair[1], status) for pair in pairs.split()]


def counts(**overrides: Any) -> ProgramCounts:
    fields: dict[str, Any] = {
        "campaign_id": None,
        "customers": 0,
        "advocates_with_code": 0,
        "advocates_sharing": 0,
        "clicks": 0,
        "distinct_visitors": 0,
        "signups": 0,
        "conversions": {},
        "reward_cost_minor": {},
    }
    fields.update(overrides)
    return ProgramCounts(**fields)


def conversion(
    friend: str,
    referrer: str = "ref",
    *,
    days: float = 1.0,
    status: ConversionStatus = ConversionStatus.ATTRIBUTED,
    campaign: str = "spring",
    order_id: str | None = None,
) -> Conversion:
    """`friend` ordered `days` after touching `referrer`'s code."""
    touched = BASE_TIME + timedelta(hours=1)
    return Conversion(
        order=make_order(friend, id=order_id or next_id("order"), at=touched + timedelta(days=days)),
        status=status,
        attribution=Attribution(
            referrer_id=referrer,
            campaign_id=campaign,
            code="REFCODE",
            method=TouchKind.CLICK,
            touched_at=touched,
        ),
    )


def reward(
    conversion_id: str,
    amount: int,
    state: RewardState,
    *,
    currency: str = "EUR",
    side: RewardSide = RewardSide.REFERRER,
) -> Reward:
    return Reward(
        id=f"{conversion_id}:{next_id('rule').lower()}",
        customer_id="someone",
        campaign_id="spring",
        rule_id="rule",
        side=side,
        kind=RewardKind.CREDIT,
        amount_minor=amount,
        currency=currency,
        conversion_id=conversion_id,
        state=state,
        created_at=BASE_TIME,
        updated_at=BASE_TIME,
        approve_after=BASE_TIME,
    )


def sizes(report: CascadeReport) -> list[int]:
    return [g.customers for g in report.generations]


# --- programme metrics ----------------------------------------------------------------------------------------
def test_funnel_rates_divide_the_counts_they_name() -> None:
    metrics = program_metrics(
        counts(
            customers=200,
            advocates_with_code=40,
            advocates_sharing=20,
            clicks=180,
            distinct_visitors=100,
            signups=30,
            conversions={ConversionStatus.ATTRIBUTED: 10, ConversionStatus.REVERSED: 3},
        ),
        [],
        shares=50,
    )
    assert metrics.participation_rate == pytest.approx(0.1)
    assert metrics.shares_per_advocate == pytest.approx(2.5)
    assert metrics.visitors_per_sharing_advocate == pytest.approx(5.0)
    assert metrics.signup_rate == pytest.approx(0.3)
    assert metrics.conversion_rate == pytest.approx(0.1)
    assert metrics.attributed_conversions == 10


def test_k_factor_is_distinct_buying_friends_per_advocate_who_shared() -> None:
    bought = [conversion(friend) for friend in ("f1", "f2", "f3", "f1", "f2")]
    metrics = program_metrics(counts(advocates_sharing=6), bought, shares=0)
    assert metrics.acquired_customers == 3
    assert metrics.k_factor == pytest.approx(0.5)


def test_conversions_that_are_not_attributed_acquire_nobody() -> None:
    others = [
        conversion("h", status=ConversionStatus.HELD),
        conversion("r", status=ConversionStatus.REVERSED),
        conversion("x", status=ConversionStatus.REJECTED),
        Conversion(order=make_order("u"), status=ConversionStatus.UNATTRIBUTED),
    ]
    metrics = program_metrics(counts(advocates_sharing=2), [conversion("a"), *others], shares=0)
    assert metrics.acquired_customers == 1


def test_every_rate_is_none_when_its_denominator_is_zero() -> None:
    metrics = program_metrics(
        counts(reward_cost_minor={"EUR": {RewardState.APPROVED: 700}}),
        [],
        shares=12,
    )
    for rate in (
        metrics.participation_rate,
        metrics.shares_per_advocate,
        metrics.visitors_per_sharing_advocate,
        metrics.signup_rate,
        metrics.conversion_rate,
        metrics.k_factor,
        metrics.cycle_time_median_days,
        metrics.cycle_time_p90_days,
    ):
        assert rate is None
    assert metrics.reward_cost_per_acquired_minor == {"EUR": None}
    assert metrics.referral_depth == 0


def test_cycle_time_median_and_p90_interpolate_between_closest_ranks() -> None:
    ten = [conversion(f"f{d}", days=d) for d in range(1, 11)]
    metrics = program_metrics(counts(), ten, shares=0)
    assert metrics.cycle_time_median_days == pytest.approx(5.5)
    assert metrics.cycle_time_p90_days == pytest.approx(9.1)

    three = [conversion("a", days=7), conversion("b", days=1), conversion("c", days=2)]
    metrics = program_metrics(counts(), three, shares=0)
    assert metrics.cycle_time_median_days == pytest.approx(2.0)
    assert metrics.cycle_time_p90_days == pytest.approx(6.0)


def test_cycle_time_of_a_single_conversion_is_its_own_duration() -> None:
    metrics = program_metrics(counts(), [conversion("a", days=0.5)], shares=0)
    assert metrics.cycle_time_median_days == pytest.approx(0.5)
    assert metrics.cycle_time_p90_days == pytest.approx(0.5)


def test_cycle_time_ignores_conversions_that_are_not_attributed() -> None:
    slow = [conversion(f"s{i}", days=300, status=ConversionStatus.HELD) for i in range(5)]
    metrics = program_metrics(counts(), [conversion("a", days=2), conversion("b", days=4), *slow], shares=0)
    assert metrics.cycle_time_median_days == pytest.approx(3.0)


def test_a_touch_recorded_after_its_order_counts_as_zero_days() -> None:
    metrics = program_metrics(counts(), [conversion("a", days=-1)], shares=0)
    assert metrics.cycle_time_median_days == 0.0


def test_reward_cost_per_acquired_customer_leaves_out_reversed_rejected_and_held_rewards() -> None:
    cost = {
        "EUR": {
            RewardState.PENDING: 1000,
            RewardState.APPROVED: 2000,
            RewardState.FULFILLED: 3000,
            RewardState.REVERSED: 50_000,
            RewardState.REJECTED: 70_000,
            RewardState.HELD: 9000,
        },
        "USD": {RewardState.REVERSED: 400, RewardState.FULFILLED: 100},
    }
    bought = [conversion(friend) for friend in "abcd"]
    metrics = program_metrics(counts(reward_cost_minor=cost), bought, shares=0)
    assert metrics.reward_cost_minor == {"EUR": 6000, "USD": 100}
    assert metrics.reward_cost_per_acquired_minor == {"EUR": pytest.approx(1500.0), "USD": pytest.approx(25.0)}


def test_conversions_of_other_campaigns_are_ignored_for_a_campaigns_metrics() -> None:
    mixed = [conversion("a", campaign="spring"), conversion("b", campaign="autumn", days=40)]
    metrics = program_metrics(counts(campaign_id="spring", advocates_sharing=1), mixed, shares=0)
    assert metrics.acquired_customers == 1
    assert metrics.cycle_time_p90_days == pytest.approx(1.0)


def test_referral_depth_is_the_longest_chain_of_attributed_referrals() -> None:
    chain = [conversion("b", "a"), conversion("c", "b"), conversion("d", "c"), conversion("x", "a")]
    assert program_metrics(counts(), chain, shares=0).referral_depth == 3
    chain[2] = conversion("d", "c", status=ConversionStatus.REVERSED)
    assert program_metrics(counts(), chain, shares=0).referral_depth == 2


def test_erased_friends_count_once_per_conversion_and_do_not_join_chains() -> None:
    bought = [conversion(ERASED, "a"), conversion(ERASED, "b"), conversion("c", ERASED), conversion("d", "c")]
    metrics = program_metrics(counts(), bought, shares=0)
    assert metrics.acquired_customers == 4
    assert metrics.referral_depth == 1


def test_a_negative_share_count_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        program_metrics(counts(), [], shares=-1)


def test_metrics_survive_a_json_round_trip_for_the_api() -> None:
    metrics = program_metrics(
        counts(customers=5, advocates_sharing=2, reward_cost_minor={"EUR": {RewardState.PENDING: 10}}),
        [conversion("a", days=3)],
        shares=4,
    )
    assert ProgramMetrics.model_validate_json(metrics.model_dump_json()) == metrics


# --- cascades ---------------------------------------------------------------------------------------------------
def test_a_chain_is_one_customer_per_generation_three_deep() -> None:
    report = cascade_report(edges("ab bc cd"), [], [])
    assert report.depth == 3
    assert sizes(report) == [1, 1, 1, 1]
    assert [g.k_factor for g in report.generations] == [1.0, 1.0, 1.0, None]
    assert report.seeds == 1
    assert report.customers == 4
    (seed,) = report.top_seeds
    assert (seed.seed_id, seed.size, seed.depth, seed.by_generation) == ("a", 4, 3, [1, 1, 1, 1])


def test_a_star_is_one_seed_and_one_generation_of_friends() -> None:
    report = cascade_report(edges("sa sb sc sd"), [], [])
    assert sizes(report) == [1, 4]
    first, second = report.generations
    assert (first.referrers, first.new_customers_next, first.k_factor) == (1, 4, 4.0)
    assert (second.referrers, second.new_customers_next, second.k_factor) == (0, 0, None)


def test_a_friend_of_two_seeds_is_counted_once_but_belongs_to_both_cascades() -> None:
    report = cascade_report(edges("xf yf fg"), [], [])
    assert sizes(report) == [2, 1, 1]
    assert report.generations[0].k_factor == pytest.approx(0.5)
    assert report.customers == 4
    assert [(s.seed_id, s.size, s.by_generation) for s in report.top_seeds] == [
        ("x", 3, [1, 1, 1]),
        ("y", 3, [1, 1, 1]),
    ]


def test_a_friend_is_placed_at_the_smallest_generation_that_reaches_them() -> None:
    report = cascade_report(edges("sa ab bc sc"), [], [])
    assert sizes(report) == [1, 2, 1]
    assert report.generations[1].referrers == 1


def test_cycles_end_the_walk_and_unseeded_rings_are_reported_apart() -> None:
    report = cascade_report(edges("sa ab ba xy yz zx"), [], [])
    assert sizes(report) == [1, 1, 1]
    assert report.unrooted_customers == 3
    assert report.top_seeds[0].size == 3


def test_reversed_referrals_do_not_join_and_their_referrer_becomes_a_seed() -> None:
    report = cascade_report([edge("s", "a", ReferralStatus.REVERSED), *edges("sb ac")], [], [])
    assert report.seeds == 2
    assert sizes(report) == [2, 2]
    assert sorted(s.seed_id for s in report.top_seeds) == ["a", "s"]


def test_clicked_only_referrals_and_influence_edges_build_no_cascade() -> None:
    clicked = edges("sa ab", status=ReferralStatus.CLICKED)
    follows = [EdgeRecord("s", "b", EdgeType.INFLUENCES, "follows", 0.5, None)]
    report = cascade_report([*clicked, *follows], [], [])
    assert (report.seeds, report.customers, report.depth, report.generations) == (0, 0, 0, [])


def test_signed_up_friends_join_as_converted_ones_do() -> None:
    report = cascade_report(edges("ab", ReferralStatus.SIGNED_UP) + edges("bc"), [], [])
    assert sizes(report) == [1, 1, 1]


def test_the_same_referral_delivered_twice_counts_once() -> None:
    report = cascade_report([edge("s", "a"), edge("s", "a", ReferralStatus.SIGNED_UP)], [], [])
    assert sizes(report) == [1, 1]
    assert report.generations[0].k_factor == 1.0


def test_reward_cost_lands_on_the_generation_of_the_friend_who_bought() -> None:
    bought_a = conversion("a", "s", order_id="order-a")
    bought_b = conversion("b", "a", order_id="order-b")
    rewards = [
        reward("order-a", 1000, RewardState.APPROVED),
        reward("order-a", 500, RewardState.PENDING, side=RewardSide.FRIEND),
        reward("order-b", 1000, RewardState.REVERSED),
        reward("order-b", 700, RewardState.HELD),
        reward("order-b", 300, RewardState.REJECTED),
        reward("order-b", 500, RewardState.FULFILLED, side=RewardSide.FRIEND),
        reward("order-b", 200, RewardState.APPROVED, currency="USD"),
        reward("order-unknown", 900, RewardState.APPROVED),
    ]
    report = cascade_report(edges("sa ab"), rewards, [bought_a, bought_b])
    assert [g.reward_cost_minor for g in report.generations] == [{}, {"EUR": 1500}, {"EUR": 500, "USD": 200}]
    assert report.top_seeds[0].reward_cost_minor == {"EUR": 2000, "USD": 200}
    assert report.unplaced_reward_cost_minor == {"EUR": 900}


def test_reward_cost_is_summed_per_seed_when_cascades_overlap() -> None:
    bought = conversion("f", "x", order_id="order-f")
    report = cascade_report(edges("xf yf"), [reward("order-f", 800, RewardState.APPROVED)], [bought])
    assert [s.reward_cost_minor for s in report.top_seeds] == [{"EUR": 800}, {"EUR": 800}]
    assert report.generations[1].reward_cost_minor == {"EUR": 800}


def test_top_seeds_rank_by_size_then_depth_then_id() -> None:
    report = cascade_report(edges("cx xy bp bq ar zk"), [], [], top=3)
    assert [(s.seed_id, s.size, s.depth) for s in report.top_seeds] == [("c", 3, 2), ("b", 3, 1), ("a", 2, 1)]
    assert report.seeds == 4
    assert cascade_report(edges("ab"), [], [], top=0).top_seeds == []


def test_a_negative_top_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        cascade_report([], [], [], top=-1)


def test_an_empty_programme_has_an_empty_report() -> None:
    report = cascade_report([], [reward("order-x", 100, RewardState.APPROVED)], [])
    assert (report.seeds, report.customers, report.generations, report.top_seeds) == (0, 0, [], [])
    assert report.unplaced_reward_cost_minor == {"EUR": 100}
    assert spread_curve(report) == []


def test_spread_curve_accumulates_customers_generation_by_generation() -> None:
    report = cascade_report(edges("sa sb ac ad ce"), [], [])
    assert spread_curve(report) == [(0, 1), (1, 3), (2, 5), (3, 6)]


def test_cascade_report_survives_a_json_round_trip_for_the_api() -> None:
    report = cascade_report(edges("sa ab"), [reward("o", 5, RewardState.PENDING)], [conversion("a", order_id="o")])
    assert CascadeReport.model_validate_json(report.model_dump_json()) == report


# --- the report agrees with networkx on random referral graphs ------------------------------------------------
STATUSES = st.sampled_from(list(ReferralStatus))


@st.composite
def referral_graphs(draw: st.DrawFn) -> list[EdgeRecord]:
    """A random forest (each customer referred by an earlier one or by nobody) plus a few arbitrary edges."""
    n = draw(st.integers(min_value=1, max_value=14))
    records = []
    for friend in range(1, n):
        parent = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=friend - 1)))
        if parent is not None:
            records.append(edge(f"n{parent}", f"n{friend}", draw(STATUSES)))
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), STATUSES), max_size=6))
    records += [edge(f"n{a}", f"n{b}", status) for a, b, status in extra if a != b]
    return records


@settings(max_examples=200, deadline=None)
@given(referral_graphs())
def test_generations_and_seed_cascades_match_reachability_in_networkx(records: list[EdgeRecord]) -> None:
    joined = nx.DiGraph()
    joined.add_edges_from(
        (e.source, e.target) for e in records if e.label in {ReferralStatus.SIGNED_UP, ReferralStatus.CONVERTED}
    )
    seeds = sorted(n for n in joined if joined.in_degree(n) == 0)
    reach = {seed: nx.single_source_shortest_path_length(joined, seed) for seed in seeds}
    nearest = {n: min(d[n] for d in reach.values() if n in d) for n in set().union(*reach.values())}

    report = cascade_report(records, [], [], top=len(seeds))

    assert sum(sizes(report)) == report.customers == len(nearest)
    assert sizes(report) == [Counter(nearest.values())[g] for g in range(len(report.generations))]
    assert report.unrooted_customers == joined.number_of_nodes() - len(nearest)
    assert report.seeds == len(seeds)
    for cascade in report.top_seeds:
        distances = reach[cascade.seed_id]
        assert cascade.size == 1 + len(nx.descendants(joined, cascade.seed_id))
        assert cascade.by_generation == [Counter(distances.values())[g] for g in range(cascade.depth + 1)]
    expected_order = sorted(seeds, key=lambda s: (-len(reach[s]), -max(reach[s].values()), s))
    assert [c.seed_id for c in report.top_seeds] == expected_order
    nexts = [*sizes(report)[1:], 0] if report.generations else []
    for stats, following in zip(report.generations, nexts, strict=True):
        assert stats.new_customers_next == following
        referrers = sum(1 for n, g in nearest.items() if g == stats.generation and joined.out_degree(n))
        assert stats.referrers == referrers


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_million_referrals_are_walked_in_seconds() -> None:
    """Each of 1,000 roots starts a random recursive tree; CPU time is measured, as the machine is shared."""
    n, roots = 1_000_000, 1_000
    rng = np.random.default_rng(7)
    friends = np.arange(roots, roots + n)
    parents = (rng.random(n) * friends).astype(np.int64)
    names = [f"c{i}" for i in range(roots + n)]
    gc.disable()  # a million new tuples would otherwise trigger full collections, tripling the setup
    try:
        records = list(
            map(
                EdgeRecord,
                [names[p] for p in parents.tolist()],
                names[roots:],
                repeat(EdgeType.REFERRED),
                repeat(ReferralStatus.CONVERTED.value),
                repeat(1.0),
                repeat(None),
            )
        )
    finally:
        gc.enable()
    depth = [0] * (roots + n)
    for friend, parent in zip(friends.tolist(), parents.tolist(), strict=True):
        depth[friend] = depth[parent] + 1
    seeds = np.unique(parents[parents < roots])
    reached = np.concatenate((seeds, friends))

    started = time.process_time()
    report = cascade_report(records, [], [])
    elapsed = time.process_time() - started

    assert report.seeds == seeds.size
    assert report.customers == seeds.size + n
    assert sizes(report) == np.bincount(np.asarray(depth)[reached]).tolist()
    assert sum(s.size for s in report.top_seeds) <= report.customers
    assert elapsed < 20


# --- the picture ------------------------------------------------------------------------------------------------
def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_the_cascade_chart_is_well_formed_accessible_svg_without_script() -> None:
    report = cascade_report(edges("sa sb ac ad ce"), [], [])
    root = parse(draw_cascades_svg(report))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert "generation 1: 2 customers" in (root.get("aria-label") or "")
    assert root.find(f"{SVG}title") is not None
    tags = {element.tag for element in root.iter()}
    assert f"{SVG}script" not in tags
    assert not any(name.startswith("on") for element in root.iter() for name in element.attrib)
    texts = {element.text for element in root.iter(f"{SVG}text")}
    assert {"Generation", "Customers", "k-factor"} <= texts
    assert len(root.findall(f"{SVG}rect")) == len(report.generations)
    assert root.find(f"{SVG}polyline") is not None


def test_bars_are_as_tall_as_their_generation_is_large() -> None:
    report = cascade_report(edges("sa sb sc sd ae"), [], [])
    heights = [float(rect.get("height") or 0) for rect in parse(draw_cascades_svg(report)).iter(f"{SVG}rect")]
    assert heights[1] == pytest.approx(4 * heights[0], rel=0.01)
    assert heights[2] == pytest.approx(heights[0], rel=0.01)


def test_text_put_into_the_chart_is_escaped() -> None:
    hostile = '<script>alert("x")</script> & "friends"'
    root = parse(draw_cascades_svg(cascade_report(edges("ab"), [], []), title=hostile))
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.text == hostile
    assert f"{SVG}script" not in {element.tag for element in root.iter()}
    assert (root.get("aria-label") or "").startswith(hostile)


def test_an_empty_report_draws_a_chart_that_says_so() -> None:
    root = parse(draw_cascades_svg(cascade_report([], [], [])))
    assert "No referral cascades yet" in {element.text for element in root.iter(f"{SVG}text")}
    assert root.findall(f"{SVG}rect") == []


def test_a_chart_too_small_to_read_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        draw_cascades_svg(cascade_report([], [], []), width=50)
