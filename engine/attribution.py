"""Which referrer's touch earns a signup or an order: a pure choice over the touches the store found.

Only touches that were `usable` (the code could attribute at that moment) and fall within the campaign's window
before the event count, both ends included. A code the person typed themselves (at checkout, or at signup for a
signup) states their intent and always wins; otherwise the campaign's model picks the latest or the earliest
touch. Ties go to the more explicit kind, then the code in alphabetical order, so a replayed event is attributed
the same way every time.

Self-referral is not hidden here: if the chosen touch belongs to the friend's own code, it is returned, and the
fraud rules reject the conversion with a recorded reason.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from graph.program import Attribution, AttributionModel, AttributionSettings, Touch, TouchKind

_EXPLICITNESS: Final[dict[TouchKind, int]] = {
    TouchKind.CHECKOUT_CODE: 0,
    TouchKind.SIGNUP_CODE: 1,
    TouchKind.CLICK: 2,
}
_AT_CHECKOUT: Final[frozenset[TouchKind]] = frozenset({TouchKind.CHECKOUT_CODE})
_AT_SIGNUP: Final[frozenset[TouchKind]] = frozenset({TouchKind.SIGNUP_CODE, TouchKind.CHECKOUT_CODE})


def attribute(
    order_at: datetime, friend_id: str, touches: Sequence[Touch], settings: AttributionSettings
) -> Attribution | None:
    """The touch that earns an order placed at `order_at` by `friend_id`, or None when no touch counts.

    The caller adds a `checkout_code` touch at `order_at` for a code typed at checkout; it beats any click.
    `friend_id` filters nothing: a touch on the friend's own code may win, for the fraud rules to reject.
    """
    chosen = _choose(_as_utc(order_at), touches, settings, explicit=_AT_CHECKOUT)
    return _attribution(chosen) if chosen is not None else None


def attribute_signup(
    signup_at: datetime, friend_id: str, touches: Sequence[Touch], settings: AttributionSettings
) -> Attribution | None:
    """The same rule for a signup: a code typed at signup wins like a code typed at checkout."""
    chosen = _choose(_as_utc(signup_at), touches, settings, explicit=_AT_SIGNUP)
    return _attribution(chosen) if chosen is not None else None


def counting_touches(at: datetime, touches: Sequence[Touch], settings: AttributionSettings) -> list[Touch]:
    """The touches that may attribute an event at `at`: usable, and within the window before it (ends included)."""
    at = _as_utc(at)
    start = at - timedelta(days=settings.window_days)
    return [touch for touch in touches if touch.usable and start <= touch.at <= at]


def explain(attribution: Attribution | None, touches: Sequence[Touch]) -> str:
    """One sentence for marketers: which touch won and what else was ignored.

    >>> from datetime import UTC, datetime
    >>> def click(day: int) -> Touch:
    ...     return Touch(kind=TouchKind.CLICK, code="JANE4K2", referrer_id="jane", campaign_id="spring",
    ...                  at=datetime(2024, 3, day, tzinfo=UTC), usable=True)
    >>> touches = [click(1), click(2), click(3)]
    >>> explain(attribute(datetime(2024, 3, 4, tzinfo=UTC), "bob", touches, AttributionSettings()), touches)
    'Last click on JANE4K2 on 2024-03-03, 2 earlier touches ignored.'
    """
    if attribution is None:
        if not touches:
            return "Not attributed: no referral touch was found."
        unusable = sum(not touch.usable for touch in touches)
        why = f" ({unusable} on a paused, revoked or expired code)" if unusable else ""
        return f"Not attributed: {_count(len(touches), 'touch')} found, none usable within the attribution window{why}."
    others = list(touches)
    winner = next((touch for touch in others if _is_winner(touch, attribution)), None)
    if winner is not None:
        others.remove(winner)
    usable = [touch for touch in others if touch.usable]
    earlier = sum(touch.at < attribution.touched_at for touch in usable)
    later = sum(touch.at > attribution.touched_at for touch in usable)
    counts = (
        (earlier, "earlier touch"),
        (later, "later touch"),
        (len(usable) - earlier - later, "simultaneous touch"),
        (len(others) - len(usable), "unusable touch"),
    )
    ignored = [_count(n, noun) for n, noun in counts if n]
    day = attribution.touched_at.date().isoformat()
    if attribution.method is TouchKind.CHECKOUT_CODE:
        what = f"Code {attribution.code} typed at checkout on {day}"
    elif attribution.method is TouchKind.SIGNUP_CODE:
        what = f"Code {attribution.code} entered at signup on {day}"
    elif not others:
        what = f"Click on {attribution.code} on {day}"
    elif later and not earlier:
        what = f"First click on {attribution.code} on {day}"
    else:
        what = f"Last click on {attribution.code} on {day}"
    if not others:
        return f"{what}, the only touch."
    return f"{what}, {_join(ignored)} ignored."


def _choose(
    at: datetime, touches: Sequence[Touch], settings: AttributionSettings, *, explicit: Collection[TouchKind]
) -> Touch | None:
    counting = counting_touches(at, touches, settings)
    if not counting:
        return None
    stated = [touch for touch in counting if touch.kind in explicit]
    if stated:
        return _latest(stated)
    if settings.model is AttributionModel.FIRST_TOUCH:
        return _earliest(counting)
    return _latest(counting)


def _tie_break(touch: Touch) -> tuple[int, str, str, str, str]:
    return (_EXPLICITNESS[touch.kind], touch.code, touch.campaign_id, touch.referrer_id, touch.click_id or "")


def _latest(touches: Sequence[Touch]) -> Touch:
    when = max(touch.at for touch in touches)
    return min((touch for touch in touches if touch.at == when), key=_tie_break)


def _earliest(touches: Sequence[Touch]) -> Touch:
    when = min(touch.at for touch in touches)
    return min((touch for touch in touches if touch.at == when), key=_tie_break)


def _attribution(touch: Touch) -> Attribution:
    return Attribution(
        referrer_id=touch.referrer_id,
        campaign_id=touch.campaign_id,
        code=touch.code,
        method=touch.kind,
        touched_at=touch.at,
    )


def _is_winner(touch: Touch, attribution: Attribution) -> bool:
    return (
        touch.code == attribution.code
        and touch.kind is attribution.method
        and touch.at == attribution.touched_at
        and touch.campaign_id == attribution.campaign_id
    )


def _as_utc(at: datetime) -> datetime:
    """Naive times are UTC, as everywhere in `graph.model`, so they compare with stored touches."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _count(n: int, noun: str) -> str:
    plural = noun + ("es" if noun.endswith("ch") else "s")
    return f"{n} {noun if n == 1 else plural}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
