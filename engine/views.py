"""Read models for the API and the pages: customer pages, the network sample to draw, the KPI summary, and what the
marketer's programme pages and the customer's own page show (targets with a forecast, one referral from link to
reward, kit previews, a customer's kit, rewards and preferences).

They only read through a `GraphStore`, streaming its iterators and keeping at most `limit` rows (heaps), so a page
costs one pass over scores or edges, never the whole graph in memory. The store protocol has no "customers after
id" or "edges among these ids" query, so paging and the network sample walk the streams; both are fine for the
dashboard's scale and are the first things to push down into the stores if the API is used for bulk export.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from engine.analysis import as_seen
from engine.kits import Kit, load_kit_context
from engine.preferences import ContactPreferences, read_preferences
from engine.targeting import (
    BASELINES,
    Forecast,
    Method,
    Model,
    Target,
    TargetChoice,
    choose_targets,
    forecast_campaign,
)
from graph.errors import InvalidInput, NotFound
from graph.model import AnalysisRun, Customer, CustomerScores, GraphStats, Segment, utcnow
from graph.outreach import AudienceKind, OutboxCounts, Outreach, Template, TemplatePurpose, customer_key
from graph.program import (
    MONETARY_KINDS,
    Attribution,
    Balance,
    Campaign,
    CampaignStatus,
    Click,
    Conversion,
    ConversionStatus,
    LedgerEntry,
    ReferralCode,
    Reward,
    RewardRule,
    RewardSide,
    Touch,
)
from graph.program_store import Store
from graph.store import GraphStore, closing_stream

if TYPE_CHECKING:
    from engine.outreach import OutreachService

INFLUENCE_KEYS: tuple[str, ...] = ("influence", "influence_spread", "spread", "pagerank")
"""Score names read as "how much this customer sways others", in order of preference."""

MAX_PAGE = 500
MAX_VIEW_NODES = 1000

T = TypeVar("T")


def influence_of(scores: Mapping[str, float]) -> float | None:
    """The customer's influence score under the first name an analysis wrote, or None."""
    for key in INFLUENCE_KEYS:
        value = scores.get(key)
        if value is not None:
            return float(value)
    return None


# --- customers --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerPage:
    items: list[Customer]
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    """An opaque token: clients pass it back unchanged, so its format may change without breaking them."""
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = value["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise InvalidInput("the cursor is not one this API returned; start again without it") from exc
    if not isinstance(after, str):
        raise InvalidInput("the cursor is not one this API returned; start again without it")
    return after


def page_customers(store: GraphStore, *, cursor: str | None = None, limit: int = 100) -> CustomerPage:
    """Customers in id order after the cursor; `next_cursor` is None on the last page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    after = decode_cursor(cursor) if cursor else None
    items: list[Customer] = []
    more = False
    for customer in closing_stream(store.iter_customers(batch_size=max(limit + 1, 1000))):
        if after is not None and customer.id <= after:
            continue
        if len(items) == limit:
            more = True
            break
        items.append(customer)
    return CustomerPage(items, encode_cursor(items[-1].id) if more and items else None)


def customer_with_scores(store: GraphStore, customer_id: str) -> tuple[Customer, CustomerScores | None]:
    """The customer and what the latest analysis concluded about them (None before any analysis)."""
    return store.get_customer(customer_id), store.get_scores(customer_id)


def replace_customer(store: GraphStore, customer_id: str, customer: Customer) -> Customer:
    """Upsert a customer addressed by id; a body naming another id is refused rather than silently moved."""
    if customer.id != customer_id:
        raise InvalidInput(
            f"the body's id {customer.id!r} does not match the id {customer_id!r} in the path; "
            "ids cannot be changed (erase and re-create instead)"
        )
    store.upsert_customers([customer])
    return customer


# --- the network sample for drawing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewNode:
    id: str
    label: str
    segment: Segment | None
    community: int | None
    influence: float | None
    degree: int


@dataclass(frozen=True, slots=True)
class ViewEdge:
    source: str
    target: str
    type: str
    label: str
    weight: float


@dataclass(frozen=True, slots=True)
class NetworkView:
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    ranked_by: str
    run_id: str | None
    total_customers: int
    total_edges: int


def _top(items: Iterable[tuple[float, str, T]], n: int) -> list[tuple[float, str, T]]:
    """The n largest by score, ties broken by id so the sample is the same on every call."""
    return heapq.nsmallest(n, items, key=lambda item: (-item[0], item[1]))


def network_view(store: GraphStore, *, limit: int = 200) -> NetworkView:
    """The `limit` most influential customers (by the latest scores, else by degree) and the edges among them."""
    if not 1 <= limit <= MAX_VIEW_NODES:
        raise InvalidInput(f"limit must be between 1 and {MAX_VIEW_NODES}, not {limit}")
    stats = store.stats()
    scored = _top(
        (
            (influence, s.customer_id, s)
            for s in closing_stream(store.iter_scores())
            if (influence := influence_of(s.scores)) is not None
        ),
        limit,
    )
    chosen: dict[str, CustomerScores | None] = {cid: s for _, cid, s in scored}
    ranked_by = "influence" if chosen else "degree"
    if len(chosen) < limit:
        degree: Counter[str] = Counter()
        for edge in closing_stream(store.iter_edges()):
            degree[edge.source] += 1
            degree[edge.target] += 1
        for _, cid, _ in _top(((float(d), cid, None) for cid, d in degree.items() if cid not in chosen), limit):
            if len(chosen) >= limit:
                break
            chosen[cid] = store.get_scores(cid)
    edges: dict[tuple[str, str, str], ViewEdge] = {}
    view_degree: Counter[str] = Counter()
    for edge in closing_stream(store.iter_edges()):
        if edge.source in chosen and edge.target in chosen:
            key = (edge.source, edge.target, edge.type.value)
            if key not in edges:
                edges[key] = ViewEdge(edge.source, edge.target, edge.type.value, edge.label, edge.weight)
                view_degree[edge.source] += 1
                view_degree[edge.target] += 1
    nodes: list[ViewNode] = []
    for cid, scores in chosen.items():
        try:
            customer = store.get_customer(cid)
        except NotFound:  # erased between the passes
            continue
        nodes.append(
            ViewNode(
                id=cid,
                label=customer.name or cid,
                segment=scores.segment if scores else None,
                community=scores.community if scores else None,
                influence=influence_of(scores.scores) if scores else None,
                degree=view_degree[cid],
            )
        )
    kept = {node.id for node in nodes}
    run_ids = Counter(s.run_id for s in chosen.values() if s is not None)
    return NetworkView(
        nodes=nodes,
        edges=[e for e in edges.values() if e.source in kept and e.target in kept],
        ranked_by=ranked_by,
        run_id=run_ids.most_common(1)[0][0] if run_ids else None,
        total_customers=stats.customers,
        total_edges=sum(stats.edges.values()),
    )


# --- the dashboard's summary ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankedCustomer:
    id: str
    label: str
    segment: Segment
    influence: float | None
    explanation: str


@dataclass(frozen=True, slots=True)
class DashboardSummary:
    stats: GraphStats
    last_run: AnalysisRun | None
    segments: dict[Segment, int] = field(default_factory=dict)
    top_influencers: list[RankedCustomer] = field(default_factory=list)

    @property
    def analysed(self) -> int:
        return sum(self.segments.values())


def dashboard_summary(store: GraphStore, *, top: int = 10, now: datetime | None = None) -> DashboardSummary:
    """KPIs available today: counts, segments of the latest scores, the last run (`as_seen` at `now`), and the top
    influencers."""
    segments: Counter[Segment] = Counter()

    def counted(stream: Iterator[CustomerScores]) -> Iterator[tuple[float, str, CustomerScores]]:
        for s in stream:
            segments[s.segment] += 1
            influence = influence_of(s.scores)
            yield (influence if influence is not None else -math.inf), s.customer_id, s

    top_influencers: list[RankedCustomer] = []
    for influence, cid, s in _top(counted(closing_stream(store.iter_scores())), top):
        try:
            label = store.get_customer(cid).name or cid
        except NotFound:  # erased since the scores were read
            continue
        top_influencers.append(
            RankedCustomer(
                id=cid,
                label=label,
                segment=s.segment,
                influence=None if influence == -math.inf else influence,
                explanation=s.explanation,
            )
        )
    runs = store.list_runs(limit=1)
    return DashboardSummary(
        stats=store.stats(),
        last_run=as_seen(runs[0], now=now or utcnow()) if runs else None,
        segments={segment: segments[segment] for segment in Segment},
        top_influencers=top_influencers,
    )


# --- the marketer's programme pages ---------------------------------------------------------------------------------

PAGE_RUNS = 2000
"""Monte Carlo runs behind a page's targets and forecast: enough for two significant digits, quick to render."""

PAGE_RESULT_FRESH_S = 60.0
"""How long a process reuses the targets and forecasts it computed for a store state (`store_state`).

Choosing targets exports the whole graph and simulates cascades (a second or more at a few thousand customers),
and the targets and campaigns pages ask for the same choice on every load. A change the state does not show (a
customer withdrawing consent, a referral converting, a re-weighted tie) reaches these pages within this time;
sending checks consent and suppressions again, whatever a page showed."""

_MAX_REMEMBERED = 64
_remembered: dict[tuple[Hashable, ...], tuple[float, Any]] = {}
_remembered_lock = threading.Lock()


def store_state(store: GraphStore) -> tuple[str, ...]:
    """What the targets and a forecast depend on, read cheaply: the store, its counts and its latest analysis run
    (a new run writes new scores; imports, events and erasures change the counts)."""
    runs = store.list_runs(limit=1)
    latest = (runs[0].id, runs[0].status) if runs else ("", "")
    return (store.describe(), store.stats().model_dump_json(), *latest)


def _remember(key: tuple[Hashable, ...], compute: Callable[[], T]) -> T:
    """`compute()`, or what it returned for `key` within `PAGE_RESULT_FRESH_S` (its results are immutable).

    Exceptions are not remembered. Two requests that miss at once both compute; the later result is kept.
    """
    now = time.monotonic()
    with _remembered_lock:
        found = _remembered.get(key)
    if found is not None and now < found[0]:
        return cast(T, found[1])
    value = compute()
    with _remembered_lock:
        if len(_remembered) >= _MAX_REMEMBERED:
            _remembered.clear()
        _remembered[key] = (now + PAGE_RESULT_FRESH_S, value)
    return value


def reproducible_targets(
    store: GraphStore,
    *,
    k: int,
    model: Model,
    p: float,
    exclude_segments: Collection[str | Segment],
    max_per_community: int | None,
    only_consenting: bool,
    method: Method,
    seed: int | None,
    mc_runs: int,
) -> TargetChoice:
    """`choose_targets` for the API: a seeded choice is reused while the store's state is unchanged (as the pages
    reuse theirs); without a seed each call draws afresh, as asked."""

    def compute() -> TargetChoice:
        return choose_targets(
            store,
            k=k,
            model=model,
            p=p,
            exclude_segments=exclude_segments,
            max_per_community=max_per_community,
            only_consenting=only_consenting,
            method=method,
            seed=seed,
            mc_runs=mc_runs,
        )

    if seed is None:
        return compute()
    excluded = tuple(sorted(str(s) for s in exclude_segments))
    key = ("api-targets", k, model, p, excluded, max_per_community, only_consenting, method, seed, mc_runs)
    return _remember((store_state(store), *key), compute)


BudgetVerdict = Literal["within", "at_risk", "over"]


def rewards_per_referral(campaign: Campaign) -> tuple[int, int]:
    """What one converted referral pays the referrer and the friend, in minor units, for a forecast.

    Fixed monetary amounts only: a milestone pays once per referrer, not per referral, and a percent depends on
    the order's amount, so both are left out (the forecast page says so).

    >>> from datetime import UTC, datetime
    >>> from graph.program import RewardKind, RewardRule
    >>> rules = (RewardRule(id="c", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, amount_minor=1000),
    ...          RewardRule(id="m", side=RewardSide.REFERRER, kind=RewardKind.CASH, amount_minor=5000, milestone=3),
    ...          RewardRule(id="f", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, amount_minor=500))
    >>> rewards_per_referral(Campaign(id="s", name="S", rewards=rules, created_at=datetime(2024, 1, 1, tzinfo=UTC)))
    (1000, 500)
    """

    def fixed(side: RewardSide) -> int:
        return sum(
            rule.amount_minor
            for rule in campaign.rewards
            if rule.side is side and rule.kind in MONETARY_KINDS and rule.milestone is None and rule.percent is None
        )

    return fixed(RewardSide.REFERRER), fixed(RewardSide.FRIEND)


def budget_verdict(
    expected_cost: float, cost_range: tuple[float, float], budget_minor: int | None
) -> BudgetVerdict | None:
    """Whether a forecast's reward cost fits a budget: surely, probably but not surely (the range's top is over
    it), or not even on average. None without a budget.

    >>> budget_verdict(800, (500, 900), 1000), budget_verdict(800, (500, 1100), 1000)
    ('within', 'at_risk')
    >>> budget_verdict(1200, (900, 1500), 1000), budget_verdict(1200, (900, 1500), None)
    ('over', None)
    """
    if budget_minor is None:
        return None
    if expected_cost > budget_minor:
        return "over"
    if cost_range[1] > budget_minor:
        return "at_risk"
    return "within"


@dataclass(frozen=True, slots=True)
class ForecastView:
    """A forecast for the picked targets under a campaign's rewards, or why there is none."""

    forecast: Forecast | None
    problem: str | None
    currency: str
    referrer_minor: int
    friend_minor: int
    budget_minor: int | None
    verdict: BudgetVerdict | None


@dataclass(frozen=True, slots=True)
class TargetRow:
    target: Target
    label: str
    picked: bool


@dataclass(frozen=True, slots=True)
class TargetsView:
    """The chosen targets with their names and whether the marketer kept each, and the forecast for those kept."""

    choice: TargetChoice | None
    rows: list[TargetRow]
    problem: str | None
    forecast: ForecastView | None

    @property
    def picked(self) -> list[str]:
        return [row.target.customer_id for row in self.rows if row.picked]


def labels_of(store: GraphStore, customer_ids: Iterable[str]) -> dict[str, str]:
    """Each customer's name for a page, or their id (also once they are erased), read in one go."""
    wanted = list(dict.fromkeys(customer_ids))
    found = store.get_customers(wanted)
    return {cid: (found[cid].name if cid in found else None) or cid for cid in wanted}


def plan_forecast(
    store: GraphStore,
    seeds: Sequence[str],
    *,
    campaign: Campaign | None,
    conversion_rate: float | None = None,
    budget_minor: int | None = None,
    seed: int = 0,
    runs: int = PAGE_RUNS,
    state: tuple[str, ...] | None = None,
) -> ForecastView:
    """`engine.targeting.forecast_campaign` for `seeds` at `campaign`'s per-referral rewards, judged against a
    budget; what stops it (no seeds, no history and no rate) comes back as words for the page. The forecast is
    reused while the store's `state` (read here when not given) is unchanged."""
    referrer, friend = rewards_per_referral(campaign) if campaign is not None else (0, 0)
    currency = campaign.currency if campaign is not None else "EUR"

    def view(forecast: Forecast | None, problem: str | None) -> ForecastView:
        verdict = budget_verdict(forecast.expected_cost, forecast.cost_range, budget_minor) if forecast else None
        return ForecastView(forecast, problem, currency, referrer, friend, budget_minor, verdict)

    if not seeds:
        return view(None, "pick at least one customer to see what asking them would bring")
    key = (state or store_state(store), "forecast", tuple(seeds), conversion_rate, referrer, friend, runs, seed)
    try:
        forecast = _remember(
            key,
            lambda: forecast_campaign(
                store,
                seeds,
                conversion_rate=conversion_rate,
                reward_per_referral=float(referrer),
                friend_reward=float(friend),
                runs=runs,
                seed=seed,
            ),
        )
    except (InvalidInput, NotFound) as exc:
        return view(None, exc.detail)
    return view(forecast, None)


def targets_view(
    store: GraphStore,
    *,
    k: int,
    campaign: Campaign | None,
    picked: Collection[str] | None = None,
    conversion_rate: float | None = None,
    budget_minor: int | None = None,
    seed: int = 0,
    runs: int = PAGE_RUNS,
    baselines: Sequence[Method] = BASELINES,
) -> TargetsView:
    """The `k` targets `choose_targets` picks (a fixed seed, so the page and the launch agree), the ones kept
    (`picked`; None keeps all) and the forecast for those. Before any analysis the problem says so. Both are
    reused while the store's state is unchanged (`PAGE_RESULT_FRESH_S`)."""
    state = store_state(store)
    try:
        choice = _remember(
            (state, "targets", k, seed, runs, tuple(baselines)),
            lambda: choose_targets(store, k=k, seed=seed, mc_runs=runs, baselines=baselines),
        )
    except InvalidInput as exc:
        return TargetsView(None, [], exc.detail, None)
    kept = set(choice.seeds) if picked is None else set(picked)
    labels = labels_of(store, (t.customer_id for t in choice.targets))
    rows = [TargetRow(t, labels[t.customer_id], t.customer_id in kept) for t in choice.targets]
    seeds = [row.target.customer_id for row in rows if row.picked]
    forecast = plan_forecast(
        store,
        seeds,
        campaign=campaign,
        conversion_rate=conversion_rate,
        budget_minor=budget_minor,
        seed=seed,
        runs=runs,
        state=state,
    )
    return TargetsView(choice, rows, None, forecast)


@dataclass(frozen=True, slots=True)
class OutreachRow:
    outreach: Outreach
    counts: OutboxCounts


def outreach_rows(store: Store, *, limit: int = 20) -> list[OutreachRow]:
    """The newest outreach plans with their outbox counts, newest first (standing invitation plans left out)."""
    plans = [o for o in store.list_outreach() if o.audience.kind is not AudienceKind.KIT_INVITATIONS]
    return [OutreachRow(o, store.outbox_counts(o.id)) for o in reversed(plans[-limit:])]


# --- following one referral from link to reward ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TouchStep:
    """A touch the friend made, the click behind it when there is one, and whether attribution chose it."""

    touch: Touch
    click: Click | None
    decisive: bool
    after_order: bool
    """Made after the order, so it could not have earned it (a later visit, or clocks that disagree)."""


@dataclass(frozen=True, slots=True)
class RewardTrail:
    reward: Reward
    entries: list[LedgerEntry]


@dataclass(frozen=True, slots=True)
class ReferralTrail:
    """One order followed back to the link that brought it and forward to the rewards it paid, with the ledger."""

    conversion: Conversion
    buyer: str
    referrer: str | None
    campaign: Campaign | None
    code: ReferralCode | None
    touches: list[TouchStep]
    rewards: list[RewardTrail]


def _decisive(touch: Touch, attribution: Attribution | None) -> bool:
    return (
        attribution is not None
        and touch.code == attribution.code
        and touch.kind is attribution.method
        and touch.at == attribution.touched_at
    )


def referral_trail(store: Store, order_id: str) -> ReferralTrail:
    """The conversion of `order_id` (`NotFound` if unknown), the friend's touches within the longest attribution
    window before it, the code and campaign that earned it, and each reward with its ledger entries."""
    conversion = store.get_conversion(order_id)
    order, attribution = conversion.order, conversion.attribution
    campaigns = store.list_campaigns()
    window = max((c.attribution.window_days for c in campaigns), default=30)
    touches = store.touches_for(
        order.customer_id,
        click_ids=[order.click_id] if order.click_id else [],
        since=order.at - timedelta(days=window),
    )
    steps = [
        TouchStep(t, store.get_click(t.click_id) if t.click_id else None, _decisive(t, attribution), t.at > order.at)
        for t in touches
    ]
    code: ReferralCode | None = None
    campaign: Campaign | None = None
    if attribution is not None:
        campaign = next((c for c in campaigns if c.id == attribution.campaign_id), None)
        try:
            code = store.get_code(attribution.code)
        except NotFound:  # the referrer was erased and their codes with them
            code = None
    rewards: list[RewardTrail] = []
    for reward_id in conversion.reward_ids:
        try:
            reward = store.get_reward(reward_id)
        except NotFound:
            continue
        rewards.append(RewardTrail(reward, store.ledger_entries(reward_id=reward_id)))
    labels = labels_of(store, [order.customer_id, *([attribution.referrer_id] if attribution is not None else [])])
    return ReferralTrail(
        conversion=conversion,
        buyer=labels[order.customer_id],
        referrer=labels[attribution.referrer_id] if attribution is not None else None,
        campaign=campaign,
        code=code,
        touches=steps,
        rewards=rewards,
    )


# --- kits: the marketer's preview and the customer's own page -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplatePreview:
    template: Template
    text: str | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class KitPreview:
    customer: Customer
    campaign: Campaign
    kit: Kit
    templates: list[TemplatePreview]


def kit_preview(service: OutreachService, customer_id: str, campaign_id: str) -> KitPreview:
    """A customer's kit and every marketer template rendered for them, as a marketer checks them.

    Unlike `OutreachService.kit` it does not count as the customer's engagement (the marketer looked, not the
    customer). Like it, it issues the customer's code in the campaign if they have none yet.
    """
    store = service.store
    customer = store.get_customer(customer_id)
    campaign = store.get_campaign(campaign_id)
    code = service.code_for(customer_id, campaign_id)
    link = service.unsubscribe_link(customer_key(customer_id))
    context = load_kit_context(
        store,
        customer_id,
        code,
        public_base_url=service.settings.api.public_base_url,
        unsubscribe_url=link,
        preferences_url=link,
    )
    kit = service.renderer.render_kit(context, marketer=store.list_templates(TemplatePurpose.SHARE))
    previews: list[TemplatePreview] = []
    for template in store.list_templates():
        try:
            previews.append(TemplatePreview(template, service.renderer.preview(template, context), None))
        except InvalidInput as exc:
            previews.append(TemplatePreview(template, None, str(exc)))
    return KitPreview(customer, campaign, kit, previews)


@dataclass(frozen=True, slots=True)
class MilestoneProgress:
    """The next milestone reward a referrer can reach and how far they are from it."""

    rule: RewardRule
    successes: int

    @property
    def target(self) -> int:
        return self.rule.milestone or 0

    @property
    def remaining(self) -> int:
        return max(self.target - self.successes, 0)


def next_milestone(rules: Iterable[RewardRule], successes: int) -> MilestoneProgress | None:
    """The referrer-side milestone with the smallest count still ahead of `successes`, or None.

    >>> from graph.program import RewardKind
    >>> rules = [RewardRule(id="b3", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=3),
    ...          RewardRule(id="b10", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=10)]
    >>> next_milestone(rules, 1).target, next_milestone(rules, 3).target, next_milestone(rules, 10)
    (3, 10, None)
    """
    ahead = [r for r in rules if r.side is RewardSide.REFERRER and r.milestone is not None and r.milestone > successes]
    if not ahead:
        return None
    return MilestoneProgress(min(ahead, key=lambda r: (r.milestone or 0, r.id)), successes)


def successful_referrals(store: Store, customer_id: str, campaign_id: str) -> int:
    """Friends with a live (attributed or held) conversion the customer referred in the campaign, as milestones
    count them."""
    friends: set[str] = set()
    after: str | None = None
    while True:
        page = store.list_conversions(customer_id=customer_id, campaign_id=campaign_id, limit=500, after=after)
        for conversion in page:
            attribution = conversion.attribution
            if (
                attribution is not None
                and attribution.referrer_id == customer_id
                and conversion.status in (ConversionStatus.ATTRIBUTED, ConversionStatus.HELD)
            ):
                friends.add(conversion.order.customer_id)
        if len(page) < 500:
            return len(friends)
        after = page[-1].id


def default_campaign(campaigns: Sequence[Campaign]) -> Campaign | None:
    """The campaign a marketer's page starts on: the first running one, else the first one, else None."""
    running = [c for c in campaigns if c.status is CampaignStatus.ACTIVE]
    ordered = running or list(campaigns)
    return ordered[0] if ordered else None


def choose_campaign(campaigns: Sequence[Campaign], wanted: str | None) -> Campaign | None:
    """The campaign a customer's page shows: the running one asked for (`NotFound` if it is not running), else the
    first running one, else None.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2024, 1, 1, tzinfo=UTC)
    >>> cs = [Campaign(id="old", name="Old", status=CampaignStatus.ENDED, created_at=t),
    ...       Campaign(id="a", name="A", created_at=t), Campaign(id="b", name="B", created_at=t)]
    >>> choose_campaign(cs, None).id, choose_campaign(cs, "b").id
    ('a', 'b')
    """
    running = [c for c in campaigns if c.status is CampaignStatus.ACTIVE]
    if wanted is None:
        return running[0] if running else None
    chosen = next((c for c in running if c.id == wanted), None)
    if chosen is None:
        raise NotFound(f"no running referral campaign {wanted!r}")
    return chosen


@dataclass(frozen=True, slots=True)
class CustomerHome:
    """What a customer's own page shows: their kit in a running campaign, rewards, progress and preferences."""

    customer: Customer
    campaign: Campaign | None
    campaigns: list[Campaign]
    kit: Kit | None
    balances: list[Balance]
    rewards: list[Reward]
    successes: int
    milestone: MilestoneProgress | None
    preferences: ContactPreferences


def customer_home(service: OutreachService, customer_id: str, campaign_id: str | None = None) -> CustomerHome:
    """The customer's page (`OutreachService.kit` counts opening it as engagement and issues their code)."""
    store = service.store
    customer = store.get_customer(customer_id)
    campaigns = store.list_campaigns()
    campaign = choose_campaign(campaigns, campaign_id)
    kit = service.kit(customer_id, campaign.id) if campaign is not None else None
    successes = successful_referrals(store, customer_id, campaign.id) if campaign is not None else 0
    return CustomerHome(
        customer=customer,
        campaign=campaign,
        campaigns=[c for c in campaigns if c.status is CampaignStatus.ACTIVE],
        kit=kit,
        balances=store.balances(customer_id),
        rewards=store.list_rewards(customer_id=customer_id, limit=200),
        successes=successes,
        milestone=next_milestone(campaign.rewards, successes) if campaign is not None else None,
        preferences=read_preferences(store, customer_id),
    )
