"""Whom to ask, and what asking them would bring: the targets and forecast services.

`choose_targets` picks `k` customers that maximise the expected influence cascade (`graph.influence`), under the
constraints of the latest analysis: ``do_not_ask`` customers are never chosen, nor customers the analysis has not
seen yet (no verdict means no permission), nor customers whose events since the analysis now raise a risk flag
(checked again with that run's thresholds), nor, by default, customers without consent on any channel; segments can
be excluded and each community capped. The chosen set is then judged independently by forward Monte Carlo
(`graph.diffusion.simulate_spread`), and so are the classic baselines (top degree, PageRank, degree discount) under
the same constraints and the same random numbers, so a marketer sees what the choice is worth against them.

`forecast_campaign` answers "what if we ask these customers": expected customers reached, expected referrals at a
conversion rate, and the reward cost, each with a range. `forecast` is its pure rule.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.sampling import WorkerSampling, select_on_workers
from engine.segments import SegmentThresholds
from graph.diffusion import SpreadEstimate, simulate_spread
from graph.errors import InvalidInput, NotFound
from graph.export import export_graphs
from graph.influence import CascadeGraph, select_seeds
from graph.model import EdgeType, ReferralStatus, Segment
from graph.scores import risk_flags
from graph.store import GraphStore

Model = Literal["ic", "wc"]
Method = Literal["imm", "degree", "pagerank", "degree_discount"]
BASELINES: tuple[Method, ...] = ("degree", "pagerank", "degree_discount")
Z95 = 1.959963984540054
"""Two-sided 95% quantile of the normal distribution."""

ProgressFn = Callable[[str, int, int], None]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Target(_Frozen):
    """One chosen customer, in selection order, with what they add and why the analysis rated them."""

    customer_id: str
    rank: int
    marginal_gain: float = Field(description="Extra customers expected to be reached by adding this target.")
    segment: Segment
    community: int | None
    explanation: str


class Baseline(_Frozen):
    """A heuristic's choice under the same constraints, and its spread by the same simulation."""

    method: str
    seeds: list[str]
    expected_spread: float
    ci95: tuple[float, float]
    seconds: float


class TargetChoice(_Frozen):
    """The targets, the expected cascade they start (Monte Carlo, 95% CI) and how the baselines compare."""

    targets: list[Target]
    expected_spread: float = Field(description="Mean customers reached (targets included) over the simulations.")
    ci95: tuple[float, float]
    estimated_spread: float | None = Field(description="The selector's own held-out RR-set estimate.")
    k: int
    model: str
    p: float
    method: str
    winner: str | None = Field(description="For imm: which candidate set won the held-out comparison.")
    seed: int
    mc_runs: int
    candidates: int = Field(description="Customers that could be chosen under the constraints.")
    excluded: dict[str, int] = Field(description="Customers left out, by reason.")
    run_id: str | None = Field(description="The analysis run whose segments and communities were used.")
    baselines: list[Baseline]
    warnings: list[str]
    seconds: float

    @property
    def seeds(self) -> list[str]:
        return [t.customer_id for t in self.targets]


class Forecast(_Frozen):
    """What asking `seeds` is expected to bring; ranges are approximate 95% intervals of the outcome."""

    seeds: list[str]
    model: str
    p: float
    runs: int
    expected_reached: float = Field(description="Customers reached by the cascade, seeds included.")
    reached_range: tuple[float, float]
    reached_ci95: tuple[float, float] = Field(description="Precision of the simulated mean (not the outcome).")
    conversion_rate: float
    conversion_rate_source: str
    expected_referrals: float = Field(description="Reached friends (seeds excluded) who convert.")
    referrals_range: tuple[float, float]
    reward_per_referral: float
    friend_reward: float
    expected_cost: float
    cost_range: tuple[float, float]


def _check_model(model: str, p: float, runs: int) -> None:
    if model not in ("ic", "wc"):
        raise InvalidInput(f"model must be 'ic' (independent cascade) or 'wc' (weighted cascade), not {model!r}")
    if not 0.0 < p <= 1.0:
        raise InvalidInput(f"p must be a probability in (0, 1], not {p}")
    if runs < 1:
        raise InvalidInput(f"the number of Monte Carlo runs must be at least 1, not {runs}")


def _segments(names: Iterable[str | Segment]) -> set[Segment]:
    chosen: set[Segment] = set()
    for name in names:
        try:
            chosen.add(Segment(name))
        except ValueError:
            known = ", ".join(s.value for s in Segment)
            raise InvalidInput(f"unknown segment {name!r}; segments are {known}") from None
    return chosen


def choose_targets(
    store: GraphStore,
    *,
    k: int,
    model: Model = "ic",
    p: float = 0.01,
    exclude_segments: Collection[str | Segment] = (),
    max_per_community: int | None = None,
    only_consenting: bool = True,
    method: Method = "imm",
    seed: int | None = None,
    mc_runs: int = 10_000,
    weight: str | None = None,
    baselines: Sequence[Method] = BASELINES,
    workers: int = 1,
    worker_sampling: WorkerSampling | None = None,
    progress: ProgressFn | None = None,
) -> TargetChoice:
    """Choose `k` customers to ask, in order, with the expected cascade and the baselines' for comparison.

    Parameters
    ----------
    store : GraphStore
        Needs scores from an analysis run (`engine.analysis.run_analysis`).
    k : int
        How many customers to ask.
    model, p, weight
        Diffusion model as in `graph.influence.CascadeGraph.from_networkx`: ``"ic"`` with probability `p` per
        influence edge (scaled by `weight` if given), or ``"wc"``.
    exclude_segments : collection of segment names
        Segments never to choose; ``do_not_ask`` is always excluded.
    max_per_community : int, optional
        At most this many targets per analysis community (customers without a community are not capped).
    only_consenting : bool
        Choose only customers with consent on at least one channel.
    method : {"imm", "degree", "pagerank", "degree_discount"}
        Selector for the targets; the others in `baselines` are reported for comparison.
    seed : int, optional
        Makes selection and simulation reproducible; drawn and reported when not given.
    mc_runs : int
        Monte Carlo cascades per spread estimate.
    workers : int
        Threads for sampling and simulation on this machine.
    worker_sampling : WorkerSampling, optional
        Sample IMM's RR sets on Celery workers instead (`engine.sampling`); the greedy still runs here.

    Returns
    -------
    TargetChoice

    Raises
    ------
    InvalidInput
        No analysis yet, nobody left to choose, or a parameter out of range.
    """
    started = time.perf_counter()
    if isinstance(k, bool) or k < 1:
        raise InvalidInput(f"k must be a positive number of customers, not {k}")
    _check_model(model, p, mc_runs)
    if max_per_community is not None and max_per_community < 1:
        raise InvalidInput(f"max_per_community must be at least 1, not {max_per_community}")
    excluded_segments = _segments(exclude_segments) | {Segment.DO_NOT_ASK}
    report: ProgressFn = progress or (lambda step, done, total: None)

    report("load scores", 0, 0)
    segment_of: dict[str, Segment] = {}
    community_of: dict[Hashable, int] = {}
    run_ids: set[str] = set()
    for scores in store.iter_scores():
        segment_of[scores.customer_id] = scores.segment
        if scores.community is not None:
            community_of[scores.customer_id] = scores.community
        run_ids.add(scores.run_id)
    if not segment_of:
        raise InvalidInput(
            f"{store.describe()} has no analysis yet, so no customer has been cleared to ask: run `advocacy analyse`"
        )
    run_id, thresholds = _latest_run(store, run_ids)

    report("export graph", 0, 0)
    graphs = export_graphs(store)
    G = graphs.influence  # noqa: N806 - NetworkX's name for a graph
    # Risk is checked again now: a complaint since the analysis must not wait for the next run to count.
    risk_now = risk_flags(
        G,
        graphs.referrals,
        detractor_max_rating=thresholds.detractor_max_rating,
        min_complaints=thresholds.risk_min_complaints,
        refund_ratio=thresholds.risk_refund_ratio,
        fatigue_min_clicks=thresholds.fatigue_min_clicks,
    )
    excluded: dict[str, int] = {}
    candidates: list[str] = []
    for node, attrs in G.nodes.items():
        segment = segment_of.get(node)
        if segment is None:
            reason = "not analysed yet"
        elif segment in excluded_segments:
            reason = f"segment {segment.value}"
        elif risk_now[node]:
            reason = "at risk since the analysis"
        elif only_consenting and not attrs.get("consent", False):
            reason = "no consent"
        else:
            candidates.append(node)
            continue
        excluded[reason] = excluded.get(reason, 0) + 1
    if not candidates:
        why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(excluded.items())) or "no customers"
        raise InvalidInput(f"no customer can be chosen under these constraints ({why})")

    report("prepare cascade graph", 0, 0)
    cg = CascadeGraph.from_networkx(G, model=model, p=p, weight=weight)
    del G, graphs, risk_now
    groups = community_of if max_per_community is not None else None

    report(f"select ({method})", 0, 0)
    if worker_sampling is not None and method == "imm":
        selection = select_on_workers(
            worker_sampling,
            cg,
            k=k,
            seed=seed if seed is not None else secrets.randbelow(2**31),
            candidates=candidates,
            max_per_group=max_per_community,
            groups=groups,
        )
    else:
        selection = select_seeds(
            cg,
            k,
            method=method,
            seed=seed,
            candidates=candidates,
            max_per_group=max_per_community,
            groups=groups,
            workers=workers,
        )
    used_seed = int(selection.params.get("seed", seed if seed is not None else 0))
    report("simulate spread", 0, 0)
    spread = simulate_spread(cg, selection.seeds, runs=mc_runs, seed=used_seed, workers=workers)

    compared: list[Baseline] = []
    for other in baselines:
        if other == method:
            continue
        report(f"baseline {other}", 0, 0)
        begin = time.perf_counter()
        chosen = select_seeds(
            cg,
            k,
            method=other,
            seed=used_seed,
            candidates=candidates,
            max_per_group=max_per_community,
            groups=groups,
            estimate=False,
        )
        # Same seed, same random numbers: differences between the sets are not simulation noise.
        est = simulate_spread(cg, chosen.seeds, runs=mc_runs, seed=used_seed, workers=workers)
        compared.append(
            Baseline(
                method=other,
                seeds=[str(s) for s in chosen.seeds],
                expected_spread=est.mean,
                ci95=est.ci95,
                seconds=round(time.perf_counter() - begin, 3),
            )
        )

    targets: list[Target] = []
    for rank, (cid, gain) in enumerate(_with_gains(selection.seeds, selection.marginal_gains), start=1):
        latest = store.get_scores(str(cid))
        targets.append(
            Target(
                customer_id=str(cid),
                rank=rank,
                marginal_gain=gain,
                segment=segment_of[str(cid)],
                community=community_of.get(cid),
                explanation=latest.explanation if latest is not None else "",
            )
        )
    return TargetChoice(
        targets=targets,
        expected_spread=spread.mean,
        ci95=spread.ci95,
        estimated_spread=selection.estimated_spread,
        k=k,
        model=model,
        p=p,
        method=method,
        winner=selection.params.get("winner"),
        seed=used_seed,
        mc_runs=mc_runs,
        candidates=len(candidates),
        excluded=excluded,
        run_id=run_id,
        baselines=compared,
        warnings=list(selection.warnings),
        seconds=round(time.perf_counter() - started, 3),
    )


def _with_gains(seeds: Sequence[Hashable], gains: Sequence[float]) -> list[tuple[Hashable, float]]:
    padded = list(gains) + [math.nan] * (len(seeds) - len(gains))
    return list(zip(seeds, padded, strict=True))


def _latest_run(store: GraphStore, run_ids: set[str]) -> tuple[str | None, SegmentThresholds]:
    """The newest run whose scores are stored, and the thresholds it used (defaults if it is not on record)."""
    for run in store.list_runs(limit=20):
        if run.id in run_ids:
            try:
                return run.id, SegmentThresholds.model_validate(run.params.get("thresholds", {}))
            except ValidationError:
                return run.id, SegmentThresholds()
    return (next(iter(run_ids)) if len(run_ids) == 1 else None), SegmentThresholds()


def forecast(
    spread: SpreadEstimate,
    seeds: int,
    *,
    conversion_rate: float,
    reward_per_referral: float = 0.0,
    friend_reward: float = 0.0,
) -> tuple[tuple[float, tuple[float, float]], tuple[float, tuple[float, float]], tuple[float, tuple[float, float]]]:
    """Reached, referrals and cost, each as ``(expected, (low, high))``: the pure rule of `forecast_campaign`.

    The cascade reaches ``N`` customers (mean and standard deviation from the simulation); the ``N - seeds``
    friends each convert with probability ``r``, so referrals have mean ``(E[N] - seeds) r`` and variance
    ``(E[N] - seeds) r (1 - r) + r^2 Var(N)`` (binomial thinning of a random count). Each referral costs
    ``reward_per_referral + friend_reward``. Ranges are ``mean -+ 1.96 sd`` clipped at the possible values.

    Examples
    --------
    A certain cascade of 3 from 1 seed, half of the 2 friends converting, rewards 10 + 5:

    >>> est = SpreadEstimate(mean=3.0, ci95=(3.0, 3.0), std=0.0, runs=100)
    >>> reached, referrals, cost = forecast(est, 1, conversion_rate=0.5, reward_per_referral=10, friend_reward=5)
    >>> reached, referrals[0], cost[0]
    ((3.0, (3.0, 3.0)), 1.0, 15.0)
    """
    if not 0.0 <= conversion_rate <= 1.0:
        raise InvalidInput(f"conversion_rate must be between 0 and 1, not {conversion_rate}")
    if reward_per_referral < 0 or friend_reward < 0:
        raise InvalidInput("rewards cannot be negative")
    reached = spread.mean
    reached_sd = spread.std
    reached_range = (max(float(seeds), reached - Z95 * reached_sd), reached + Z95 * reached_sd)
    friends = max(reached - seeds, 0.0)
    r = conversion_rate
    referrals = friends * r
    referrals_sd = math.sqrt(friends * r * (1.0 - r) + r * r * reached_sd * reached_sd)
    referrals_range = (max(0.0, referrals - Z95 * referrals_sd), referrals + Z95 * referrals_sd)
    unit = reward_per_referral + friend_reward
    cost = (referrals * unit, (referrals_range[0] * unit, referrals_range[1] * unit))
    return (reached, reached_range), (referrals, referrals_range), cost


def historical_conversion_rate(store: GraphStore) -> tuple[float, int, int] | None:
    """Converted referrals over all referrals in `store` (reversed ones count as not converted), or None."""
    sent = converted = 0
    for edge in store.iter_edges(EdgeType.REFERRED):
        sent += 1
        converted += str(edge.label) == ReferralStatus.CONVERTED.value
    return (converted / sent, converted, sent) if sent else None


def forecast_campaign(
    store: GraphStore,
    seeds: Sequence[str],
    *,
    conversion_rate: float | None = None,
    reward_per_referral: float = 0.0,
    friend_reward: float = 0.0,
    model: Model = "ic",
    p: float = 0.01,
    weight: str | None = None,
    runs: int = 10_000,
    seed: int | None = None,
    workers: int = 1,
) -> Forecast:
    """What if we ask `seeds`: customers reached, referrals and reward cost, with ranges.

    Parameters
    ----------
    store : GraphStore
        The customer graph.
    seeds : sequence of customer ids
        Customers to ask (duplicates count once).
    conversion_rate : float, optional
        Chance that a reached friend converts; by default the store's history (converted / all referrals).
    reward_per_referral, friend_reward : float
        Paid to the referrer and to the friend for each converted referral.
    model, p, weight, runs, seed, workers
        The diffusion model and its simulation, as for `choose_targets`.

    Returns
    -------
    Forecast

    Raises
    ------
    NotFound
        A seed is not a stored customer.
    InvalidInput
        No seeds, a parameter out of range, or no referral history and no `conversion_rate`.
    """
    wanted = list(dict.fromkeys(seeds))
    if not wanted:
        raise InvalidInput("a forecast needs at least one customer to ask")
    _check_model(model, p, runs)
    missing = sorted(set(wanted) - store.existing_customer_ids(wanted))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10])
        raise NotFound(f"{len(missing)} customer(s) to ask are not in {store.describe()}: {shown}")
    if conversion_rate is None:
        history = historical_conversion_rate(store)
        if history is None:
            raise InvalidInput("no referral history to estimate a conversion rate from: give conversion_rate")
        conversion_rate, converted, sent = history
        source = f"history: {converted:,} of {sent:,} referrals converted"
    else:
        source = "given"
    graphs = export_graphs(store, referrals=False, events=False)
    cg = CascadeGraph.from_networkx(graphs.influence, model=model, p=p, weight=weight)
    del graphs
    spread = simulate_spread(cg, wanted, runs=runs, seed=seed, workers=workers)
    (reached, reached_range), (referrals, referrals_range), (cost, cost_range) = forecast(
        spread,
        len(wanted),
        conversion_rate=conversion_rate,
        reward_per_referral=reward_per_referral,
        friend_reward=friend_reward,
    )
    return Forecast(
        seeds=wanted,
        model=model,
        p=p,
        runs=runs,
        expected_reached=reached,
        reached_range=reached_range,
        reached_ci95=spread.ci95,
        conversion_rate=conversion_rate,
        conversion_rate_source=source,
        expected_referrals=referrals,
        referrals_range=referrals_range,
        reward_per_referral=reward_per_referral,
        friend_reward=friend_reward,
        expected_cost=cost,
        cost_range=cost_range,
    )
