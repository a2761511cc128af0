"""engine.attribution: the window's edges, explicit codes, first vs last touch, ties and the explanation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.attribution import attribute, attribute_signup, counting_touches, explain
from graph.program import Attribution, AttributionModel, AttributionSettings, Touch, TouchKind
from tests.factories import BASE_TIME

ORDER_AT = BASE_TIME + timedelta(days=40)
LAST = AttributionSettings(window_days=30)
FIRST = AttributionSettings(window_days=30, model=AttributionModel.FIRST_TOUCH)


def touch(code: str = "JANE4K2", **overrides: Any) -> Touch:
    fields: dict[str, Any] = {
        "kind": TouchKind.CLICK,
        "code": code,
        "referrer_id": code.lower(),
        "campaign_id": "spring",
        "at": ORDER_AT - timedelta(days=1),
        "usable": True,
    }
    fields.update(overrides)
    return Touch(**fields)


def days_before(days: float, **overrides: Any) -> dict[str, Any]:
    return {"at": ORDER_AT - timedelta(days=days), **overrides}


def test_no_touches_means_no_attribution() -> None:
    assert attribute(ORDER_AT, "bob", [], LAST) is None


def test_a_single_click_attributes_with_its_code_referrer_and_time() -> None:
    click = touch("JANE4K2", **days_before(3))
    assert attribute(ORDER_AT, "bob", [click], LAST) == Attribution(
        referrer_id="jane4k2", campaign_id="spring", code="JANE4K2", method=TouchKind.CLICK, touched_at=click.at
    )


def test_a_touch_exactly_window_days_before_the_order_counts() -> None:
    edge = touch(at=ORDER_AT - timedelta(days=30))
    attribution = attribute(ORDER_AT, "bob", [edge], LAST)
    assert attribution is not None
    assert attribution.touched_at == edge.at


def test_a_touch_one_microsecond_before_the_window_does_not_count() -> None:
    outside = touch(at=ORDER_AT - timedelta(days=30, microseconds=1))
    assert attribute(ORDER_AT, "bob", [outside], LAST) is None


def test_a_touch_at_the_order_time_counts_and_one_after_it_does_not() -> None:
    assert attribute(ORDER_AT, "bob", [touch(at=ORDER_AT)], LAST) is not None
    assert attribute(ORDER_AT, "bob", [touch(at=ORDER_AT + timedelta(microseconds=1))], LAST) is None


def test_the_window_follows_the_campaign_setting() -> None:
    old = touch(**days_before(10))
    assert attribute(ORDER_AT, "bob", [old], AttributionSettings(window_days=7)) is None
    assert attribute(ORDER_AT, "bob", [old], AttributionSettings(window_days=10)) is not None


def test_unusable_touches_are_ignored_even_when_later() -> None:
    usable = touch("JANE4K2", **days_before(5))
    revoked = touch("MAX7P3Q", **days_before(1, usable=False))
    attribution = attribute(ORDER_AT, "bob", [usable, revoked], LAST)
    assert attribution is not None
    assert attribution.code == "JANE4K2"


def test_only_unusable_touches_means_no_attribution() -> None:
    assert attribute(ORDER_AT, "bob", [touch(usable=False)], LAST) is None


def test_last_touch_picks_the_latest_click() -> None:
    touches = [
        touch("JANE4K2", **days_before(9)),
        touch("MAX7P3Q", **days_before(2)),
        touch("ANA9K3M", **days_before(5)),
    ]
    attribution = attribute(ORDER_AT, "bob", touches, LAST)
    assert attribution is not None
    assert attribution.code == "MAX7P3Q"


def test_first_touch_picks_the_earliest_click_within_the_window() -> None:
    touches = [
        touch("OLD2K3M", **days_before(31)),
        touch("JANE4K2", **days_before(9)),
        touch("MAX7P3Q", **days_before(2)),
    ]
    attribution = attribute(ORDER_AT, "bob", touches, FIRST)
    assert attribution is not None
    assert attribution.code == "JANE4K2"


@pytest.mark.parametrize("settings", [LAST, FIRST], ids=["last touch", "first touch"])
def test_a_checkout_code_beats_a_later_click_under_either_model(settings: AttributionSettings) -> None:
    checkout = touch("JANE4K2", kind=TouchKind.CHECKOUT_CODE, at=ORDER_AT - timedelta(seconds=1))
    later_click = touch("MAX7P3Q", at=ORDER_AT)
    earlier_click = touch("ANA9K3M", **days_before(20))
    attribution = attribute(ORDER_AT, "bob", [earlier_click, later_click, checkout], settings)
    assert attribution is not None
    assert (attribution.code, attribution.method) == ("JANE4K2", TouchKind.CHECKOUT_CODE)


def test_an_unusable_checkout_code_does_not_win_and_clicks_decide() -> None:
    checkout = touch("JANE4K2", kind=TouchKind.CHECKOUT_CODE, at=ORDER_AT, usable=False)
    click = touch("MAX7P3Q", **days_before(3))
    attribution = attribute(ORDER_AT, "bob", [checkout, click], LAST)
    assert attribution is not None
    assert attribution.code == "MAX7P3Q"


def test_for_an_order_a_signup_code_is_an_ordinary_touch_judged_by_the_model() -> None:
    signup = touch("JANE4K2", kind=TouchKind.SIGNUP_CODE, **days_before(10))
    click = touch("MAX7P3Q", **days_before(2))
    last = attribute(ORDER_AT, "bob", [signup, click], LAST)
    first = attribute(ORDER_AT, "bob", [signup, click], FIRST)
    assert last is not None
    assert first is not None
    assert (last.code, first.code) == ("MAX7P3Q", "JANE4K2")


def test_ties_in_time_go_to_the_more_explicit_kind_then_the_code() -> None:
    at = ORDER_AT - timedelta(days=1)
    click_b = touch("BBB2K3M", at=at)
    click_a = touch("AAA2K3M", at=at)
    signup = touch("ZZZ2K3M", kind=TouchKind.SIGNUP_CODE, at=at)
    for settings in (LAST, FIRST):
        with_signup = attribute(ORDER_AT, "bob", [click_b, signup, click_a], settings)
        clicks_only = attribute(ORDER_AT, "bob", [click_b, click_a], settings)
        assert with_signup is not None
        assert clicks_only is not None
        assert with_signup.code == "ZZZ2K3M"
        assert clicks_only.code == "AAA2K3M"


@given(order=st.permutations(range(5)))
def test_the_choice_does_not_depend_on_the_order_the_store_returns_touches_in(order: list[int]) -> None:
    at = ORDER_AT - timedelta(days=2)
    touches = [
        touch("BBB2K3M", at=at),
        touch("AAA2K3M", at=at),
        touch("CCC2K3M", **days_before(5)),
        touch("DDD2K3M", **days_before(1, usable=False)),
        touch("EEE2K3M", **days_before(40)),
    ]
    shuffled = [touches[i] for i in order]
    assert attribute(ORDER_AT, "bob", shuffled, LAST) == attribute(ORDER_AT, "bob", touches, LAST)
    assert attribute(ORDER_AT, "bob", shuffled, FIRST) == attribute(ORDER_AT, "bob", touches, FIRST)


def test_a_touch_on_the_friends_own_code_is_returned_for_the_fraud_rules_to_reject() -> None:
    own = touch("BOB2K3M", referrer_id="bob", **days_before(1))
    other = touch("JANE4K2", **days_before(4))
    attribution = attribute(ORDER_AT, "bob", [other, own], LAST)
    assert attribution is not None
    assert attribution.referrer_id == "bob"


def test_naive_event_times_are_taken_as_utc() -> None:
    naive = ORDER_AT.replace(tzinfo=None)
    assert attribute(naive, "bob", [touch(at=ORDER_AT)], LAST) is not None


def test_signup_code_wins_over_a_later_click_at_signup() -> None:
    signup_at = ORDER_AT
    code = touch("JANE4K2", kind=TouchKind.SIGNUP_CODE, at=signup_at)
    click = touch("MAX7P3Q", at=signup_at)
    earlier = touch("ANA9K3M", **days_before(3))
    attribution = attribute_signup(signup_at, "bob", [earlier, click, code], FIRST)
    assert attribution is not None
    assert (attribution.code, attribution.method) == ("JANE4K2", TouchKind.SIGNUP_CODE)


def test_signup_without_a_code_follows_the_model_and_the_window() -> None:
    touches = [
        touch("ANA9K3M", **days_before(31)),
        touch("JANE4K2", **days_before(3)),
        touch("MAX7P3Q", **days_before(1)),
    ]
    last = attribute_signup(ORDER_AT, "bob", touches, LAST)
    first = attribute_signup(ORDER_AT, "bob", touches, FIRST)
    assert last is not None
    assert first is not None
    assert (last.code, first.code) == ("MAX7P3Q", "JANE4K2")
    assert attribute_signup(ORDER_AT, "bob", touches[:1], LAST) is None


def test_counting_touches_lists_the_usable_ones_in_the_window() -> None:
    kept = touch("JANE4K2", **days_before(30))
    touches = [kept, touch("ANA9K3M", **days_before(31)), touch("MAX7P3Q", **days_before(1, usable=False))]
    assert counting_touches(ORDER_AT, touches, LAST) == [kept]


def test_explain_last_click_counts_the_earlier_touches_it_ignored() -> None:
    touches = [
        touch("ANA9K3M", at=BASE_TIME + timedelta(days=20)),
        touch("ANA9K3M", at=BASE_TIME + timedelta(days=25)),
        touch("JANE4K2", at=BASE_TIME + timedelta(days=29)),
    ]
    attribution = attribute(ORDER_AT, "bob", touches, LAST)
    assert explain(attribution, touches) == "Last click on JANE4K2 on 2024-03-30, 2 earlier touches ignored."


def test_explain_first_click_counts_later_and_unusable_touches() -> None:
    touches = [
        touch("JANE4K2", at=BASE_TIME + timedelta(days=20)),
        touch("ANA9K3M", at=BASE_TIME + timedelta(days=25)),
        touch("MAX7P3Q", at=BASE_TIME + timedelta(days=26), usable=False),
    ]
    attribution = attribute(ORDER_AT, "bob", touches, FIRST)
    assert (
        explain(attribution, touches)
        == "First click on JANE4K2 on 2024-03-21, 1 later touch and 1 unusable touch ignored."
    )


def test_explain_names_a_checkout_code_and_a_lone_click() -> None:
    checkout = touch("JANE4K2", kind=TouchKind.CHECKOUT_CODE, at=ORDER_AT)
    click = touch("MAX7P3Q", **days_before(2))
    both = [click, checkout]
    assert explain(attribute(ORDER_AT, "bob", both, LAST), both) == (
        "Code JANE4K2 typed at checkout on 2024-04-10, 1 earlier touch ignored."
    )
    assert (
        explain(attribute(ORDER_AT, "bob", [click], LAST), [click]) == "Click on MAX7P3Q on 2024-04-08, the only touch."
    )


def test_explain_without_attribution_says_why() -> None:
    assert explain(None, []) == "Not attributed: no referral touch was found."
    stale = [touch(**days_before(45)), touch(usable=False)]
    assert explain(None, stale) == (
        "Not attributed: 2 touches found, none usable within the attribution window "
        "(1 on a paused, revoked or expired code)."
    )
    assert explain(None, stale[:1]) == "Not attributed: 1 touch found, none usable within the attribution window."
