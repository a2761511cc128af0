"""A/B assignment and results: deterministic weighted splits, Wilson intervals, P(best) and the marketer's sentence."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy.stats import binomtest

from engine.ab import (
    VariantResult,
    assign_variant,
    summary,
    variant_results,
    wilson_interval,
)
from graph.outreach import Variant

KEYS = [f"customer:c{i}" for i in range(20_000)]
CHI2_P001 = {1: 10.83, 2: 13.82}
"""Chi-square critical values at p = 0.001: a fair hash exceeds them one time in a thousand."""


def chi_square(observed: Counter[str], expected: dict[str, float]) -> float:
    return sum((observed[key] - value) ** 2 / value for key, value in expected.items())


def result(variant_id: str, rate: float | None, prob_best: float | None) -> VariantResult:
    return VariantResult(
        variant_id=variant_id,
        audience=1000,
        reached=1000 if rate is not None else 0,
        converted=round((rate or 0) * 1000),
        rate=rate,
        ci_low=None if rate is None else rate * 0.8,
        ci_high=None if rate is None else rate * 1.2,
        prob_best=prob_best,
        lift_vs_first=None,
    )


# --- assignment ---------------------------------------------------------------------------------------------
def test_a_person_gets_the_same_variant_on_every_call():
    variants = [Variant(id="a"), Variant(id="b"), Variant(id="c")]
    first = [assign_variant("spring", key, variants) for key in KEYS[:500]]
    again = [assign_variant("spring", key, list(variants)) for key in KEYS[:500]]
    assert first == again
    assert set(first) == {"a", "b", "c"}


def test_equal_weights_split_the_audience_evenly():
    variants = [Variant(id="a"), Variant(id="b")]
    observed = Counter(assign_variant("spring", key, variants) for key in KEYS)
    assert chi_square(observed, {"a": 10_000, "b": 10_000}) < CHI2_P001[1]


def test_weights_give_each_variant_its_share():
    variants = [Variant(id="a", weight=1), Variant(id="b", weight=2), Variant(id="c", weight=7)]
    observed = Counter(assign_variant("spring", key, variants) for key in KEYS)
    expected = {"a": 2_000.0, "b": 4_000.0, "c": 14_000.0}
    assert chi_square(observed, expected) < CHI2_P001[2]


def test_each_outreach_splits_people_independently_of_the_others():
    variants = [Variant(id="a"), Variant(id="b")]
    spring = [assign_variant("spring", key, variants) for key in KEYS]
    autumn = [assign_variant("autumn", key, variants) for key in KEYS]
    same = sum(s == a for s, a in zip(spring, autumn, strict=True))
    assert chi_square(Counter(same=same, other=len(KEYS) - same), {"same": 10_000, "other": 10_000}) < CHI2_P001[1]


def test_a_lone_variant_takes_everyone_and_no_variant_is_refused():
    assert {assign_variant("spring", key, [Variant(id="only", weight=0.1)]) for key in KEYS[:200]} == {"only"}
    with pytest.raises(ValueError, match="at least one variant"):
        assign_variant("spring", "customer:c1", [])


# --- Wilson intervals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombes_published_values(successes, trials, low, high):
    computed = wilson_interval(successes, trials)
    assert computed == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(("successes", "trials"), [(0, 1), (3, 7), (50, 100), (999, 1000), (1000, 1000)])
def test_wilson_interval_agrees_with_scipy(successes, trials):
    expected = binomtest(successes, trials).proportion_ci(method="wilson")
    assert wilson_interval(successes, trials) == pytest.approx((expected.low, expected.high), abs=1e-9)


# --- variant results ----------------------------------------------------------------------------------------
def test_results_report_rate_and_interval_in_the_order_given():
    results = variant_results({"b": (120, 100, 12), "a": (130, 110, 11)})
    assert [r.variant_id for r in results] == ["b", "a"]
    assert results[0].rate == pytest.approx(0.12)
    assert (results[0].ci_low, results[0].ci_high) == pytest.approx(wilson_interval(12, 100))
    assert (results[1].audience, results[1].reached, results[1].converted) == (130, 110, 11)


def test_a_clear_winner_is_best_with_near_certainty():
    results = variant_results({"a": (1000, 1000, 10), "b": (1000, 1000, 100)})
    assert results[1].prob_best is not None
    assert results[1].prob_best > 0.99
    assert summary(results).endswith("— b wins")


def test_identical_arms_are_each_best_about_half_the_time():
    results = variant_results({"a": (1000, 1000, 50), "b": (1000, 1000, 50)})
    for arm in results:
        assert arm.prob_best == pytest.approx(0.5, abs=0.03)


def test_probabilities_of_being_best_sum_to_one_and_repeat_with_the_seed():
    counts = {"a": (500, 480, 20), "b": (500, 470, 26), "c": (500, 490, 18)}
    results = variant_results(counts)
    assert sum(r.prob_best or 0.0 for r in results) == pytest.approx(1.0)
    assert variant_results(counts) == results
    assert variant_results(counts, seed=1) != results


def test_lift_over_the_first_variant_comes_with_an_interval_around_it():
    results = variant_results({"a": (5000, 5000, 100), "b": (5000, 5000, 200)})
    control, challenger = results
    assert control.lift_vs_first is None
    assert control.lift_ci_low is None
    assert challenger.lift_vs_first == pytest.approx(1.0)
    assert challenger.lift_ci_low is not None
    assert challenger.lift_ci_high is not None
    assert 0 < challenger.lift_ci_low < 1.0 < challenger.lift_ci_high


def test_an_arm_that_sent_nothing_has_no_rate_rather_than_an_error():
    results = variant_results({"a": (0, 0, 0), "b": (100, 90, 9), "c": (50, 0, 0)})
    empty, measured, unsent = results
    for arm in (empty, unsent):
        assert (arm.rate, arm.ci_low, arm.ci_high, arm.prob_best) == (None, None, None, None)
    assert measured.prob_best == 1.0
    assert measured.lift_vs_first is None
    assert measured.lift_ci_low is None


def test_a_control_without_conversions_gives_no_point_lift_but_still_an_interval():
    _, challenger = variant_results({"a": (100, 100, 0), "b": (100, 100, 5)})
    assert challenger.lift_vs_first is None
    assert challenger.lift_ci_low is not None
    assert challenger.lift_ci_low > 0


def test_no_variants_give_no_results():
    assert variant_results({}) == []


@pytest.mark.parametrize("counts", [(10, 5, 6), (10, 11, 1), (-1, 0, 0), (5, 5, -1)])
def test_impossible_counts_are_refused(counts):
    with pytest.raises(ValueError, match="counts must satisfy"):
        variant_results({"a": counts})


# --- summary ------------------------------------------------------------------------------------------------
def test_summary_says_keep_testing_until_the_leader_is_95_percent_likely_best():
    undecided = [result("a", 0.032, 0.17), result("b", 0.041, 0.83)]
    assert summary(undecided) == "b converts 4.1% vs a 3.2%; b is better with probability 0.83 — keep testing"
    decided = [result("a", 0.032, 0.03), result("b", 0.041, 0.97)]
    assert summary(decided) == "b converts 4.1% vs a 3.2%; b is better with probability 0.97 — b wins"


def test_summary_never_rounds_a_near_certainty_up_to_certainty():
    sentence = summary([result("a", 0.01, 0.0001), result("b", 0.10, 0.9999)])
    assert "probability above 0.99 — b wins" in sentence
    assert "1.00" not in sentence


def test_summary_of_three_arms_names_the_best_and_those_not_yet_sent():
    sentence = summary(
        [result("a", 0.02, 0.2), result("b", 0.03, 0.5), result("c", 0.025, 0.3), result("d", None, None)]
    )
    assert sentence == (
        "b converts 3.0% vs a 2.0% and c 2.5%; b is the best with probability 0.50; d has sent nothing yet "
        "— keep testing"
    )


def test_summary_with_one_measured_arm_or_none_compares_nothing():
    assert (
        summary([result("a", 0.05, 1.0)])
        == "a converts 5.0% (95% interval 4.0%–6.0%) — nothing to compare it with yet."
    )
    assert summary([result("a", None, None), result("b", None, None)]) == (
        "Nothing sent yet: no variant can be compared."
    )
