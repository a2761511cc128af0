"""A/B tests of outreach: who gets which variant, and how each variant converts, with its uncertainty.

Assignment hashes (outreach, person), so it needs no stored state: a retried plan, a second worker or an
audience that grows later all give a person the same variant. Changing the variants' weights mid-test moves
people between arms, so weights are fixed once an outreach runs.

Results are read honestly for a marketer: a rate with its Wilson 95% interval, the probability that each variant
is truly the best (Beta posteriors under a uniform prior, by Monte Carlo with a fixed seed, so a page shows the
same figure on every load), and the lift over the first variant (the control) with its 95% credible interval.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Final

import numpy as np
from pydantic import BaseModel, ConfigDict

from graph.outreach import Variant

Z95: Final = NormalDist().inv_cdf(0.975)
WINNING_PROBABILITY: Final = 0.95
"""How sure `summary` must be before it calls a winner; below it, the advice is to keep testing."""
_UNIT: Final = float(2**53)


def assignment_point(outreach_id: str, person_key: str) -> float:
    """Where a person falls in [0, 1) for an outreach: uniform, and independent between outreaches.

    >>> assignment_point("spring", "customer:c1") == assignment_point("spring", "customer:c1")
    True
    """
    digest = hashlib.sha256(f"{outreach_id}\x00{person_key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _UNIT


def assign_variant(outreach_id: str, person_key: str, variants: Sequence[Variant]) -> str:
    """The id of the variant `person_key` receives in `outreach_id`, each variant taking a share by its weight.

    >>> from graph.outreach import Variant
    >>> assign_variant("spring", "customer:c1", [Variant(id="a")])
    'a'
    """
    if not variants:
        raise ValueError("an A/B assignment needs at least one variant")
    point = assignment_point(outreach_id, person_key) * math.fsum(variant.weight for variant in variants)
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if point < cumulative:
            return variant.id
    return variants[-1].id


class VariantResult(BaseModel):
    """How one variant did. Rates are None while nothing was sent; `lift_*` compare it with the first variant."""

    model_config = ConfigDict(frozen=True)

    variant_id: str
    audience: int
    reached: int
    """Messages sent."""
    converted: int
    """Advocates reached who made at least one successful referral after their message."""
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    prob_best: float | None
    """P(this variant's true rate is the highest), among variants that sent anything."""
    lift_vs_first: float | None
    """Relative lift of the rate over the first variant's (0.25 = 25% better); None for the first itself."""
    lift_ci_low: float | None = None
    lift_ci_high: float | None = None


def wilson_interval(successes: int, trials: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval: sound near 0% and 100%, where conversion rates live and the normal one fails.

    >>> [round(x, 4) for x in wilson_interval(81, 263)]
    [0.2553, 0.3662]
    """
    if trials <= 0:
        raise ValueError("a Wilson interval needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError("successes must be between 0 and the number of trials")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _check(variant_id: str, audience: int, reached: int, converted: int) -> None:
    if not 0 <= converted <= reached <= audience:
        raise ValueError(
            f"variant {variant_id!r}: counts must satisfy 0 <= converted <= reached <= audience, "
            f"got audience={audience}, reached={reached}, converted={converted}"
        )


def variant_results(
    counts: Mapping[str, tuple[int, int, int]], *, draws: int = 20000, seed: int = 0
) -> list[VariantResult]:
    """Each variant's rate, interval, probability of being best and lift over the first, in `counts`' order.

    `counts` maps a variant id to (audience, reached, converted). With the default 20,000 draws a probability is
    within ±0.007 of its exact value 95% of the time.
    """
    if draws < 1:
        raise ValueError("draws must be positive")
    for variant_id, (audience, reached, converted) in counts.items():
        _check(variant_id, audience, reached, converted)
    ids = list(counts)
    measured = [variant_id for variant_id in ids if counts[variant_id][1] > 0]
    rng = np.random.default_rng(seed)
    samples = {
        variant_id: rng.beta(1 + counts[variant_id][2], 1 + counts[variant_id][1] - counts[variant_id][2], draws)
        for variant_id in measured
    }
    prob_best: dict[str, float] = {}
    if measured:
        stacked = np.vstack([samples[variant_id] for variant_id in measured])
        wins = np.bincount(np.argmax(stacked, axis=0), minlength=len(measured))
        prob_best = {variant_id: float(wins[i]) / draws for i, variant_id in enumerate(measured)}
    first = ids[0] if ids else None
    results = []
    for variant_id in ids:
        audience, reached, converted = counts[variant_id]
        rate = ci_low = ci_high = lift = lift_low = lift_high = None
        if reached:
            rate = converted / reached
            ci_low, ci_high = wilson_interval(converted, reached)
        if variant_id != first and first in samples and variant_id in samples:
            first_rate = counts[first][2] / counts[first][1]
            if rate is not None and first_rate > 0:
                lift = rate / first_rate - 1
            ratios = samples[variant_id] / samples[first] - 1
            low, high = np.quantile(ratios, [0.025, 0.975])
            lift_low, lift_high = float(low), float(high)
        results.append(
            VariantResult(
                variant_id=variant_id,
                audience=audience,
                reached=reached,
                converted=converted,
                rate=rate,
                ci_low=ci_low,
                ci_high=ci_high,
                prob_best=prob_best.get(variant_id),
                lift_vs_first=lift,
                lift_ci_low=lift_low,
                lift_ci_high=lift_high,
            )
        )
    return results


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _probability(value: float) -> str:
    """Two decimals, without rounding a near-certainty up to a certainty the data cannot give."""
    if value > 0.99:
        return "above 0.99"
    if value < 0.01:
        return "below 0.01"
    return f"{value:.2f}"


def summary(results: Sequence[VariantResult]) -> str:
    """One honest sentence for a marketer: the best variant, how sure we are, and whether to keep testing.

    >>> summary([])
    'No variants to compare.'
    """
    if not results:
        return "No variants to compare."
    measured = [
        (result.variant_id, result.rate, result.prob_best, result.ci_low, result.ci_high)
        for result in results
        if result.rate is not None and result.prob_best is not None
    ]
    unsent = [result.variant_id for result in results if result.rate is None]
    waiting = f"; {', '.join(unsent)} {'has' if len(unsent) == 1 else 'have'} sent nothing yet" if unsent else ""
    if not measured:
        return "Nothing sent yet: no variant can be compared."
    if len(measured) == 1:
        variant_id, rate, _, low, high = measured[0]
        interval = f" (95% interval {_percent(low)}–{_percent(high)})" if low is not None and high is not None else ""
        return f"{variant_id} converts {_percent(rate)}{interval}{waiting} — nothing to compare it with yet."
    best_id, best_rate, best_prob, _, _ = max(measured, key=lambda row: row[2])
    compared = " and ".join(f"{row[0]} {_percent(row[1])}" for row in measured if row[0] != best_id)
    verdict = f"{best_id} wins" if best_prob >= WINNING_PROBABILITY else "keep testing"
    better = "better" if len(measured) == 2 else "the best"
    return (
        f"{best_id} converts {_percent(best_rate)} vs {compared}; {best_id} is {better} with "
        f"probability {_probability(best_prob)}{waiting} — {verdict}"
    )
