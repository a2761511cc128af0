"""The referral programme's health in numbers, including the multi-hop cascades one-hop reports cannot show.

Pure functions over values the store already loaded (`ProgramCounts`, `Conversion`, `Reward`, `EdgeRecord`):
no store calls, so the same numbers come out of both stores and a test can build every input by hand.
Every rate is ``None`` when its denominator is 0, never NaN or an error, so a new campaign reads as "no data"
rather than as a 0% that looks like failure.

A cascade is the forest of people who joined through referrals: a friend joins when their ``REFERRED`` edge is
``signed_up`` or ``converted``. Generation 0 are the seeds (referrers nobody brought in), generation g+1 the
friends brought by generation g. The walk is breadth-first and iterative, so a million edges take seconds and a
cycle in the data (a fraud ring, a bad import) cannot loop it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from graph.errors import InvalidInput
from graph.model import EdgeRecord, EdgeType, ReferralStatus
from graph.program import Conversion, ConversionStatus, ProgramCounts, Reward, RewardState
from graph.program_store import ERASED

__all__ = [
    "CascadeReport",
    "GenerationStats",
    "ProgramMetrics",
    "SeedCascade",
    "cascade_report",
    "draw_cascades_svg",
    "program_metrics",
    "spread_curve",
]

COSTED_REWARD_STATES: Final[frozenset[RewardState]] = frozenset(
    {RewardState.PENDING, RewardState.APPROVED, RewardState.FULFILLED}
)
"""Rewards that are or will be paid. Held ones await review and may be rejected; reversed and rejected never pay."""

_JOINED: Final[frozenset[str]] = frozenset({ReferralStatus.SIGNED_UP.value, ReferralStatus.CONVERTED.value})
_SECONDS_PER_DAY: Final = 86_400.0


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)


def _rate(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# --- one-hop programme metrics ------------------------------------------------------------------------------
class ProgramMetrics(_Result):
    """The programme's funnel and economics, for one campaign or overall."""

    campaign_id: str | None
    customers: int
    advocates_with_code: int
    advocates_sharing: int
    shares: int
    clicks: int
    distinct_visitors: int
    signups: int
    attributed_conversions: int
    acquired_customers: int
    """Distinct friends with at least one attributed conversion."""
    participation_rate: float | None
    """Advocates whose code got a click, over all customers."""
    shares_per_advocate: float | None
    """Share events per advocate who shared (whose code got a click)."""
    visitors_per_sharing_advocate: float | None
    signup_rate: float | None
    """Signups over distinct visitors."""
    conversion_rate: float | None
    """Attributed conversions over distinct visitors."""
    k_factor: float | None
    """Acquired customers per advocate who shared."""
    cycle_time_median_days: float | None
    cycle_time_p90_days: float | None
    reward_cost_minor: dict[str, int]
    """Per currency: pending + approved + fulfilled rewards (held, reversed and rejected excluded)."""
    reward_cost_per_acquired_minor: dict[str, float | None]
    """Per currency: `reward_cost_minor` over acquired customers, in minor units."""
    referral_depth: int
    """Longest chain of attributed referrals (a -> b -> c is 2); 0 without any."""


def program_metrics(counts: ProgramCounts, conversions: Iterable[Conversion], *, shares: int) -> ProgramMetrics:
    """Compute the programme's metrics from the store's aggregates and its conversions.

    Definitions, each ``None`` when its denominator is 0:

    - participation rate = advocates sharing / customers, where an advocate shares when their code got a click;
    - shares per advocate = share events / advocates sharing;
    - visitors per sharing advocate = distinct visitors / advocates sharing; signup rate = signups / distinct
      visitors;
    - conversion rate = attributed conversions (``counts.conversions``) / distinct visitors;
    - k-factor (viral coefficient) = acquired customers / advocates sharing, where acquired customers are the
      distinct friends with at least one attributed conversion: how many new buying customers each advocate who
      shared brought in. Above 1 the programme grows by itself;
    - cycle time = days from the attributed touch to the order, over attributed conversions only (a touch
      recorded after its order, from clock skew, counts as 0); median and 90th percentile by linear
      interpolation between closest ranks;
    - reward cost per acquired customer = (pending + approved + fulfilled rewards) / acquired customers, per
      currency. Reversed and rejected rewards never pay and held ones may still be rejected, so all three are
      left out;
    - referral depth = the longest chain of attributed referrals (referrer -> buying friend).

    Conversions of other campaigns than ``counts.campaign_id`` (when set) are ignored. Friends erased since are
    counted once per attributed conversion, as their ids are gone, and are left out of the depth.
    """
    if shares < 0:
        raise InvalidInput(f"shares is a count of events, not {shares}")
    attributed = [
        c
        for c in conversions
        if c.status is ConversionStatus.ATTRIBUTED
        and c.attribution is not None
        and (counts.campaign_id is None or c.attribution.campaign_id == counts.campaign_id)
    ]
    friends = {c.order.customer_id for c in attributed if c.order.customer_id != ERASED}
    acquired = len(friends) + sum(1 for c in attributed if c.order.customer_id == ERASED)
    days = sorted(
        max(0.0, (c.order.at - c.attribution.touched_at).total_seconds() / _SECONDS_PER_DAY)
        for c in attributed
        if c.attribution is not None
    )
    index: dict[str, int] = {}
    referrers: list[int] = []
    buyers: list[int] = []
    for c in attributed:
        if c.attribution is not None and ERASED not in (c.attribution.referrer_id, c.order.customer_id):
            referrers.append(index.setdefault(c.attribution.referrer_id, len(index)))
            buyers.append(index.setdefault(c.order.customer_id, len(index)))
    forest = _Forest.build(index, referrers, buyers)
    generation, _ = forest.walk(forest.seeds())
    cost = {
        currency: sum(amount for state, amount in by_state.items() if state in COSTED_REWARD_STATES)
        for currency, by_state in sorted(counts.reward_cost_minor.items())
    }
    sharing = counts.advocates_sharing
    visitors = counts.distinct_visitors
    return ProgramMetrics(
        campaign_id=counts.campaign_id,
        customers=counts.customers,
        advocates_with_code=counts.advocates_with_code,
        advocates_sharing=sharing,
        shares=shares,
        clicks=counts.clicks,
        distinct_visitors=visitors,
        signups=counts.signups,
        attributed_conversions=counts.conversions.get(ConversionStatus.ATTRIBUTED, 0),
        acquired_customers=acquired,
        participation_rate=_rate(sharing, counts.customers),
        shares_per_advocate=_rate(shares, sharing),
        visitors_per_sharing_advocate=_rate(visitors, sharing),
        signup_rate=_rate(counts.signups, visitors),
        conversion_rate=_rate(counts.conversions.get(ConversionStatus.ATTRIBUTED, 0), visitors),
        k_factor=_rate(acquired, sharing),
        cycle_time_median_days=_quantile(days, 0.5),
        cycle_time_p90_days=_quantile(days, 0.9),
        reward_cost_minor=cost,
        reward_cost_per_acquired_minor={currency: _rate(amount, acquired) for currency, amount in cost.items()},
        referral_depth=int(generation.max(initial=0)),
    )


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile of sorted values, interpolating linearly between closest ranks (numpy's default)."""
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- cascades -----------------------------------------------------------------------------------------------
class GenerationStats(_Result):
    """One generation of the cascade forest; generation 0 are the seeds."""

    generation: int
    customers: int
    referrers: int
    """Customers of this generation with at least one joined friend (the k-factor's denominator)."""
    new_customers_next: int
    """Customers of the next generation."""
    k_factor: float | None
    """`new_customers_next / referrers`; None when nobody in this generation brought anyone."""
    reward_cost_minor: dict[str, int]
    """Live rewards (both sides) of conversions whose friend is in this generation, per currency."""


class SeedCascade(_Result):
    """Everyone reachable from one seed through joined referrals, by distance from the seed."""

    seed_id: str
    size: int
    """The seed plus every friend reachable from it (friends of friends included)."""
    depth: int
    by_generation: list[int]
    """Customers at each distance from the seed; `by_generation[0]` is the seed itself."""
    reward_cost_minor: dict[str, int]


class CascadeReport(_Result):
    """The referral cascade forest: its generations, its largest seed cascades, and what it cost."""

    seeds: int
    customers: int
    """Everyone in the forest, seeds included: the sum of the generations' customers."""
    depth: int
    generations: list[GenerationStats]
    top_seeds: list[SeedCascade]
    unrooted_customers: int
    """Customers who joined only through referral cycles that no seed reaches (worth a fraud review)."""
    unplaced_reward_cost_minor: dict[str, int]
    """Live rewards of conversions whose friend is in no generation (unknown conversion, erased or unrooted)."""


def cascade_report(
    edges: Iterable[EdgeRecord],
    rewards: Iterable[Reward],
    conversions: Iterable[Conversion],
    *,
    top: int = 20,
) -> CascadeReport:
    """Walk the referral cascades from their seeds and measure each generation.

    A friend joins when their ``REFERRED`` edge is ``signed_up`` or ``converted``; ``clicked`` and ``reversed``
    edges (and other edge types) are ignored. Seeds are referrers who are not the friend on any joining edge.
    Generation g+1 are the friends of generation g not already placed: a friend referred by several people is
    counted once, at their smallest generation, and a cycle ends the walk where it meets a placed customer.

    The k-factor of generation g is exactly ``customers(g+1) / referrers(g)``, where ``referrers(g)`` counts
    the customers of generation g with at least one joining edge out, wherever that friend was placed; it is
    None when ``referrers(g)`` is 0. A generation's reward cost sums the pending, approved and fulfilled rewards,
    referrer and friend side, of every conversion whose buyer (the friend) is in that generation.

    ``top_seeds`` lists the ``top`` seeds by cascade size, then depth, then id. A seed's cascade is every
    customer reachable from it, so two seeds sharing a friend both count that friend. When every friend joined
    through one referrer the cascades are disjoint trees and one vectorised walk measures them all; otherwise
    each seed is walked on its own, in time proportional to the sum of the cascades' sizes.

    >>> from graph.model import EdgeRecord, EdgeType
    >>> chain = [EdgeRecord(a, b, EdgeType.REFERRED, "converted", 1.0, None) for a, b in ("ab", "bc", "cd")]
    >>> report = cascade_report(chain, [], [])
    >>> report.depth, [g.customers for g in report.generations]
    (3, [1, 1, 1, 1])
    """
    if top < 0:
        raise InvalidInput(f"top is how many seeds to list, at least 0, not {top}")
    forest = _joining_edges(edges)
    seeds = forest.seeds()
    generation, root = forest.walk(seeds)
    placed = generation >= 0
    sizes = np.bincount(generation[placed])
    depth = len(sizes) - 1
    has_friends = np.diff(forest.indptr) > 0
    referrers = np.bincount(generation[placed & has_friends], minlength=len(sizes))
    costs = _LiveCosts.of(rewards, conversions, forest.index)
    generation_or_none = np.append(generation, -1)

    generations = []
    for g, customers in enumerate(sizes.tolist()):
        following = int(sizes[g + 1]) if g < depth else 0
        generations.append(
            GenerationStats(
                generation=g,
                customers=customers,
                referrers=int(referrers[g]),
                new_customers_next=following,
                k_factor=_rate(following, int(referrers[g])),
                reward_cost_minor=costs.at_generation(generation_or_none, g),
            )
        )
    top_seeds = [
        SeedCascade(
            seed_id=forest.names[seed],
            size=len(members),
            depth=len(by_generation) - 1,
            by_generation=by_generation,
            reward_cost_minor=costs.of_members(members, len(forest.names)),
        )
        for seed, by_generation, members in forest.largest_cascades(seeds, generation, root, top)
    ]
    return CascadeReport(
        seeds=len(seeds),
        customers=int(placed.sum()),
        depth=max(depth, 0),
        generations=generations,
        top_seeds=top_seeds,
        unrooted_customers=int((~placed).sum()),
        unplaced_reward_cost_minor=costs.unplaced(generation_or_none),
    )


Ids = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class _Forest:
    """Joining edges over dense integer ids in CSR form: the friends of ``i`` are ``heads[indptr[i]:indptr[i+1]]``.

    Integer arrays rather than dicts of lists because a million customers walked in Python take tens of
    seconds, and level-by-level numpy takes well under one.
    """

    names: list[str]
    index: dict[str, int]
    indptr: Ids
    heads: Ids
    has_parent: npt.NDArray[np.bool_]
    single_parent: bool
    """Every friend joined through one referrer: cascades are disjoint trees."""

    @classmethod
    def build(cls, index: dict[str, int], sources: list[int], targets: list[int]) -> _Forest:
        n = len(index)
        pairs = np.sort(np.asarray(sources, dtype=np.int64) * n + np.asarray(targets, dtype=np.int64))
        pairs = pairs[_first_of_runs(pairs)]
        referrer, friend = np.divmod(pairs, n) if n else (pairs, pairs)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(referrer, minlength=n), out=indptr[1:])
        parents = np.bincount(friend, minlength=n)
        return cls(list(index), index, indptr, friend, parents > 0, bool(parents.max(initial=0) <= 1))

    def seeds(self) -> Ids:
        """Referrers nobody brought in, in id order."""
        candidates = np.flatnonzero((np.diff(self.indptr) > 0) & ~self.has_parent).tolist()
        return np.asarray(sorted(candidates, key=self.names.__getitem__), dtype=np.int64)

    def friends_of(self, frontier: Ids) -> tuple[Ids, Ids]:
        """Every friend of the frontier, and beside each the referrer it came through."""
        starts = self.indptr[frontier]
        counts = self.indptr[frontier + 1] - starts
        offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        return self.heads[offsets], np.repeat(frontier, counts)

    def walk(self, roots: Ids) -> tuple[Ids, Ids]:
        """Breadth-first from `roots`: each customer's smallest distance (-1 if unreached) and a root reaching it."""
        generation = np.full(len(self.names), -1, dtype=np.int64)
        root = np.full(len(self.names), -1, dtype=np.int64)
        generation[roots] = 0
        root[roots] = roots
        frontier, g = roots, 0
        while frontier.size:
            friends, through = self.friends_of(frontier)
            new = np.flatnonzero(generation[friends] < 0)
            order = new[np.argsort(friends[new], kind="stable")]
            first = order[_first_of_runs(friends[order])]
            frontier = friends[first]
            g += 1
            generation[frontier] = g
            root[frontier] = root[through[first]]
        return generation, root

    def largest_cascades(self, seeds: Ids, generation: Ids, root: Ids, top: int) -> list[tuple[int, list[int], Ids]]:
        """The `top` seeds by cascade size, depth and id, each with its size per distance and its members."""
        if not top or not seeds.size:
            return []
        if self.single_parent:
            placed = generation >= 0
            size = np.bincount(root[placed], minlength=len(self.names))
            deepest = np.zeros(len(self.names), dtype=np.int64)
            np.maximum.at(deepest, root[placed], generation[placed])
            order = np.lexsort((np.arange(seeds.size), -deepest[seeds], -size[seeds]))[:top]
            chosen = []
            for seed in seeds[order].tolist():
                members = np.flatnonzero(root == seed)
                chosen.append((seed, np.bincount(generation[members]).tolist(), members))
            return chosen
        indptr, heads = self.indptr.tolist(), self.heads.tolist()
        shapes = ((rank, seed, _distance_counts(indptr, heads, seed)) for rank, seed in enumerate(seeds.tolist()))
        ranked = heapq.nsmallest(top, shapes, key=lambda shape: (-sum(shape[2]), -len(shape[2]), shape[0]))
        return [
            (seed, by_generation, np.flatnonzero(self.walk(np.asarray([seed], dtype=np.int64))[0] >= 0))
            for _, seed, by_generation in ranked
        ]


def _first_of_runs(ordered: Ids) -> Ids:
    """Positions of the first of each run of equal values in a sorted array; cheaper than np.unique at these sizes."""
    if not ordered.size:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))


def _distance_counts(indptr: list[int], heads: list[int], seed: int) -> list[int]:
    """Customers at each distance from one seed; plain lists because most seeds reach only a few friends."""
    seen = {seed}
    frontier = [seed]
    counts = []
    while frontier:
        counts.append(len(frontier))
        following = []
        for customer in frontier:
            for friend in heads[indptr[customer] : indptr[customer + 1]]:
                if friend not in seen:
                    seen.add(friend)
                    following.append(friend)
        frontier = following
    return counts


def _joining_edges(edges: Iterable[EdgeRecord]) -> _Forest:
    """The edges through which a friend joined, over dense ids given in order of first appearance."""
    index: dict[str, int] = {}
    intern = index.setdefault
    sources: list[int] = []
    targets: list[int] = []
    referred = EdgeType.REFERRED.value
    joined = _JOINED
    for source, target, kind, label, _weight, _at in edges:
        if kind != referred or label not in joined or source == target:
            continue
        sources.append(intern(source, len(index)))
        targets.append(intern(target, len(index)))
    return _Forest.build(index, sources, targets)


@dataclass(frozen=True, slots=True)
class _LiveCosts:
    """Pending, approved and fulfilled reward amounts per currency, each beside its buyer's id (-1 if unknown).

    Arrays indexed by buyer end in one extra slot, so that the unknown buyer -1 reads that slot.
    """

    by_currency: dict[str, tuple[Ids, Ids]]

    @classmethod
    def of(cls, rewards: Iterable[Reward], conversions: Iterable[Conversion], index: dict[str, int]) -> _LiveCosts:
        buyer = {c.id: index.get(c.order.customer_id, -1) for c in conversions}
        rows: dict[str, tuple[list[int], list[int]]] = {}
        for reward in rewards:
            if reward.state in COSTED_REWARD_STATES and reward.amount_minor:
                owners, amounts = rows.setdefault(reward.currency, ([], []))
                owners.append(buyer.get(reward.conversion_id, -1))
                amounts.append(reward.amount_minor)
        return cls(
            {
                currency: (np.asarray(owners, dtype=np.int64), np.asarray(amounts, dtype=np.int64))
                for currency, (owners, amounts) in sorted(rows.items())
            }
        )

    def _where(self, keep: Callable[[Ids], npt.NDArray[np.bool_]]) -> dict[str, int]:
        totals = {
            currency: int(amounts[keep(owners)].sum()) for currency, (owners, amounts) in self.by_currency.items()
        }
        return {currency: total for currency, total in totals.items() if total}

    def at_generation(self, generation: Ids, g: int) -> dict[str, int]:
        return self._where(lambda owners: generation[owners] == g)

    def unplaced(self, generation: Ids) -> dict[str, int]:
        return self._where(lambda owners: generation[owners] < 0)

    def of_members(self, members: Ids, n: int) -> dict[str, int]:
        inside = np.zeros(n + 1, dtype=np.bool_)
        inside[members] = True
        return self._where(lambda owners: inside[owners])


def spread_curve(report: CascadeReport) -> list[tuple[int, int]]:
    """Customers reached by the end of each generation, cumulatively: how far the programme has spread.

    >>> from graph.model import EdgeRecord, EdgeType
    >>> star = [EdgeRecord("s", f, EdgeType.REFERRED, "signed_up", 1.0, None) for f in "abc"]
    >>> spread_curve(cascade_report(star, [], []))
    [(0, 1), (1, 4)]
    """
    curve: list[tuple[int, int]] = []
    reached = 0
    for stats in report.generations:
        reached += stats.customers
        curve.append((stats.generation, reached))
    return curve


# --- picture ------------------------------------------------------------------------------------------------
_BAR_COLOUR: Final = "#4c78a8"
_LINE_COLOUR: Final = "#e45756"
_INK: Final = "#333333"


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def draw_cascades_svg(
    report: CascadeReport,
    *,
    width: int = 640,
    height: int = 320,
    title: str = "Referral cascades by generation",
) -> str:
    """Customers per generation as bars and each generation's k-factor as a line, as a standalone SVG.

    Nothing external is loaded and no script is emitted; every text is escaped, so the markup can be inlined
    in a page. ``role="img"`` and ``aria-label`` give screen readers the same numbers in words.
    """
    if not (200 <= width <= 4000 and 120 <= height <= 4000):
        raise InvalidInput(f"a chart is 200-4000 wide and 120-4000 high, not {width}x{height}")
    left, right, top, bottom = 56, 56, 36, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    generations = report.generations
    counts = [g.customers for g in generations]
    summary = (
        "; ".join(
            f"generation {g.generation}: {g.customers} customers"
            + (f", k-factor {g.k_factor:.2f}" if g.k_factor is not None else "")
            for g in generations
        )
        or "no referral cascades yet"
    )
    label = f"{title}. {summary}."
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(summary)}</desc>",
        f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="13" fill="{_INK}">{escape(title)}</text>',
    ]
    base = top + plot_h
    parts.append(f'<path d="M{left} {top}V{base}H{left + plot_w}V{top}" fill="none" stroke="{_INK}" stroke-width="1"/>')
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="{_INK}">Generation</text>'
    )
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'fill="{_BAR_COLOUR}">Customers</text>'
    )
    parts.append(
        f'<text transform="translate({width - 12} {top + plot_h / 2:.1f}) rotate(90)" text-anchor="middle" '
        f'fill="{_LINE_COLOUR}">k-factor</text>'
    )
    if not generations:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
            f'fill="{_INK}">No referral cascades yet</text>'
        )
        parts.append("</svg>")
        return "".join(parts)

    most = max(counts) or 1
    ks = [g.k_factor for g in generations]
    k_top = max([1.0, *(k for k in ks if k is not None)])
    band = plot_w / len(generations)
    label_every = max(1, math.ceil(len(generations) / 12))
    for tick, value in ((base, 0), (top, most)):
        parts.append(f'<text x="{left - 6}" y="{tick + 4}" text-anchor="end" fill="{_INK}">{value}</text>')
    for tick, k_value in ((base, 0.0), (top, k_top)):
        parts.append(f'<text x="{left + plot_w + 6}" y="{tick + 4}" fill="{_INK}">{escape(_number(k_value))}</text>')
    points: list[list[str]] = [[]]
    for i, stats in enumerate(generations):
        centre = left + band * (i + 0.5)
        bar_h = plot_h * stats.customers / most
        parts.append(
            f'<rect x="{centre - band * 0.35:.1f}" y="{base - bar_h:.1f}" width="{band * 0.7:.1f}" '
            f'height="{bar_h:.1f}" fill="{_BAR_COLOUR}"><title>generation {stats.generation}: '
            f"{stats.customers} customers</title></rect>"
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{centre:.1f}" y="{base + 14}" text-anchor="middle" fill="{_INK}">{stats.generation}</text>'
            )
        if stats.k_factor is None:
            points.append([])
            continue
        y = base - plot_h * stats.k_factor / k_top
        points[-1].append(f"{centre:.1f},{y:.1f}")
        parts.append(
            f'<circle cx="{centre:.1f}" cy="{y:.1f}" r="3" fill="{_LINE_COLOUR}"><title>generation '
            f"{stats.generation}: k-factor {stats.k_factor:.2f}</title></circle>"
        )
    for segment in points:
        if len(segment) > 1:
            parts.append(
                f'<polyline points="{" ".join(segment)}" fill="none" stroke="{_LINE_COLOUR}" stroke-width="2"/>'
            )
    parts.append("</svg>")
    return "".join(parts)
