"""The referral programme's use cases: codes, clicks, signups, orders, refunds, reviews and reward payouts.

Each method loads through the store, calls a pure rule (`engine.codes`, `engine.attribution`, `engine.fraud`,
`engine.rewards`, `engine.metrics`) and saves the result. Money moves only inside the store's transactions
(`settle_conversion`, `record_refund`, `review_conversion`, `advance_rewards`, `transition_reward`), so every
method is safe to call again with the same input, from any number of workers at once: a redelivered order is
settled once and rewarded once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from engine.attribution import attribute, attribute_signup
from engine.clicks import ClickRecorder
from engine.codes import candidate_codes, validate_vanity
from engine.fraud import assess, customer_signals, detect_leak
from engine.fulfilment import Fulfiller, FulfilmentError, LedgerFulfiller
from engine.metrics import CascadeReport, ProgramMetrics, cascade_report, program_metrics
from engine.rewards import plan_rewards
from engine.settings import ReferralSettings
from engine.webhooks import referring_host, visitor_identity
from graph.errors import InvalidInput, LedgerConflict, NotFound, PolicyViolation
from graph.model import Customer, EdgeType, EventKind, utcnow
from graph.program import (
    Attribution,
    AttributionSettings,
    Campaign,
    CampaignStatus,
    Click,
    CodeStatus,
    Conversion,
    ConversionStatus,
    LeakVerdict,
    Order,
    ReferralCode,
    Refund,
    Reward,
    RewardHistory,
    RewardState,
    Settlement,
    Signal,
    Signup,
    Touch,
    TouchKind,
    normalise_code,
)
from graph.program_store import ERASED, Store

log = logging.getLogger(__name__)

_CODE_ATTEMPTS = 8


class ClickOutcome(NamedTuple):
    """A recorded click and where to send the visitor. `attributable` is False on a paused or revoked code."""

    click: Click
    code: ReferralCode
    campaign: Campaign
    redirect_url: str
    attributable: bool


class Visit(NamedTuple):
    """What a browser following a link tells about itself; hashed into the click, never stored raw."""

    ip: str | None
    user_agent: str | None
    referer: str | None
    cookie: str | None
    customer_id: str | None


@dataclass(frozen=True, slots=True)
class FulfilmentReport:
    fulfilled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Reward id -> why it was not fulfilled; retryable failures stay approved for the next run."""


class ReferralService:
    """One instance per store; methods are thread-safe as the store is."""

    def __init__(
        self,
        store: Store,
        settings: ReferralSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        fulfiller: Fulfiller | None = None,
        clicks: ClickRecorder | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.fulfiller: Fulfiller = fulfiller if fulfiller is not None else LedgerFulfiller()
        self.clicks = clicks
        """Writes clicks in batches when given (the API's); without it each click is written before returning."""

    # --- campaigns and codes -------------------------------------------------------------------------------
    def create_campaign(self, campaign: Campaign) -> Campaign:
        """Create a campaign; an id in use is refused (`update_campaign` changes one on purpose)."""
        try:
            self.store.get_campaign(campaign.id)
        except NotFound:
            self.store.save_campaign(campaign)
            return campaign
        raise LedgerConflict(f"campaign {campaign.id!r} exists; update it instead of creating it again")

    def update_campaign(self, campaign: Campaign) -> Campaign:
        """Replace a campaign's settings; rewards already issued keep the terms they were issued under."""
        self.store.get_campaign(campaign.id)
        self.store.save_campaign(campaign)
        return campaign

    def change_campaign_status(self, campaign_id: str, status: CampaignStatus) -> Campaign:
        """Pause, resume or end a campaign; setting the status it already has changes nothing.

        Ending is final, as revoking a code is: an ended campaign's links and rewards would otherwise come back.
        """
        campaign = self.store.get_campaign(campaign_id)
        if campaign.status is status:
            return campaign
        if campaign.status is CampaignStatus.ENDED:
            raise PolicyViolation(f"campaign {campaign_id!r} has ended; create a new campaign instead of reviving it")
        changed = campaign.model_copy(update={"status": status})
        self.store.save_campaign(changed)
        return changed

    def get_campaign(self, campaign_id: str) -> Campaign:
        return self.store.get_campaign(campaign_id)

    def list_campaigns(self) -> list[Campaign]:
        return self.store.list_campaigns()

    def issue_code(self, customer_id: str, campaign_id: str, *, vanity: str | None = None) -> ReferralCode:
        """A new code for an advocate: the vanity code asked for, or a friendly generated one.

        A generated code that collides is retried with a fresh one; a vanity code that is taken is refused.
        """
        customer = self.store.get_customer(customer_id)
        campaign = self.store.get_campaign(campaign_id)
        if campaign.status is CampaignStatus.ENDED:
            raise InvalidInput(f"campaign {campaign_id!r} has ended; codes are no longer issued for it")
        now = self.clock()
        if vanity is not None:
            wanted = validate_vanity(vanity)
            return self.store.create_code(
                ReferralCode(code=wanted, customer_id=customer.id, campaign_id=campaign.id, vanity=True, created_at=now)
            )
        for candidate in candidate_codes(customer.name, attempts=_CODE_ATTEMPTS):
            try:
                return self.store.create_code(
                    ReferralCode(code=candidate, customer_id=customer.id, campaign_id=campaign.id, created_at=now)
                )
            except LedgerConflict:
                continue
        raise LedgerConflict(f"no free code after {_CODE_ATTEMPTS} attempts; try again")

    def get_code(self, code: str) -> ReferralCode:
        return self.store.get_code(self._normalised(code))

    def change_code_status(self, code: str, status: CodeStatus) -> ReferralCode:
        """Pause, resume or revoke. Friends who touched the code before keep their attribution.

        Revoking is final: a revoked (or rotated) code cannot be resumed, or a leaked code would come back.
        """
        current = self.store.get_code(self._normalised(code))
        if current.status is CodeStatus.REVOKED and status is not CodeStatus.REVOKED:
            raise PolicyViolation(f"code {current.code} was revoked; issue a new code instead of reviving it")
        return self.store.set_code_status(current.code, status, at=self.clock())

    def rotate_code(self, code: str) -> ReferralCode:
        """Replace a leaked code: the advocate gets a new code, the old one stops attributing new visitors.

        Friends who clicked the old code before the rotation are still attributed (their touch predates it),
        so a leak costs the advocate none of their honest referrals. Returns the new code.
        """
        old = self.store.get_code(self._normalised(code))
        if old.status is CodeStatus.REVOKED and old.replaced_by is not None:
            return self.store.get_code(old.replaced_by)
        fresh = self.issue_code(old.customer_id, old.campaign_id)
        self.store.set_code_status(old.code, CodeStatus.REVOKED, at=self.clock(), replaced_by=fresh.code)
        return fresh

    # --- clicks and signups --------------------------------------------------------------------------------
    def follow(self, code: str) -> tuple[ReferralCode, Campaign]:
        """The code and campaign behind a public link, read through the store's short-lived link cache."""
        referral_code = self.store.link_code(self._normalised(code))
        return referral_code, self.store.link_campaign(referral_code.campaign_id)

    def click(
        self,
        code: str,
        *,
        ip: str | None,
        user_agent: str | None,
        referer: str | None,
        cookie: str | None,
        customer_id: str | None = None,
    ) -> ClickOutcome:
        """Record a visit through `/r/{code}`; the raw IP is hashed with a key here and never stored."""
        referral_code, campaign = self.follow(code)
        visit = Visit(ip, user_agent, referer, cookie, customer_id)
        return self._clicked(referral_code, campaign, visit)

    def click_from_memory(
        self, code: str, *, ip: str | None, user_agent: str | None, referer: str | None, cookie: str | None
    ) -> ClickOutcome | None:
        """`click` when it needs no I/O (the link cache holds the code and campaign, clicks go in batches), so an
        async caller can answer without a thread; None when the store must be read first."""
        normal = normalise_code(code)
        known = self.store.links.peek(normal) if normal and self.clicks is not None else None
        if known is None:
            return None
        return self._clicked(*known, Visit(ip, user_agent, referer, cookie, None))

    def _clicked(self, referral_code: ReferralCode, campaign: Campaign, visit: Visit) -> ClickOutcome:
        key = self.settings.click_hash_key.get_secret_value()
        visitor, ip_hash = visitor_identity(key, ip=visit.ip, user_agent=visit.user_agent, cookie=visit.cookie)
        now = self.clock()
        click = Click(
            id=secrets.token_urlsafe(16),
            code=referral_code.code,
            at=now,
            visitor=visitor,
            ip_hash=ip_hash,
            source=referring_host(visit.referer),
            customer_id=visit.customer_id,
        )
        if self.clicks is not None:
            self.clicks.submit(click)
        else:
            self.store.record_click(click)
        shown = referral_code.replaced_by or referral_code.code
        redirect = campaign.landing_url.replace("{code}", shown)
        attributable = referral_code.usable_at(now) and campaign.status is CampaignStatus.ACTIVE
        return ClickOutcome(click, referral_code, campaign, redirect, attributable)

    def signup(self, signup: Signup, *, customer: Customer | None = None) -> Attribution | None:
        """Record a friend's signup; with a code or a click it starts their `REFERRED` edge at `signed_up`."""
        if customer is not None:
            self._ensure_customer(customer)
        stored = self.store.get_customer(signup.customer_id)
        signals = _merge_signals(signup.signals, customer_signals(stored.email, stored.phone))
        signup = signup.model_copy(update={"signals": signals})
        touches = self._touches(signup.customer_id, signup.click_id, signup.code, signup.at, TouchKind.SIGNUP_CODE)
        settings = self._attribution_settings(touches)
        attribution = attribute_signup(signup.at, signup.customer_id, touches, settings) if settings else None
        if attribution is not None and attribution.referrer_id == signup.customer_id:
            log.info("signup of %s through their own code %s not attributed", signup.customer_id, attribution.code)
            attribution = None
        self.store.record_signup(signup, attribution)
        return attribution

    # --- orders, refunds, reviews --------------------------------------------------------------------------
    def process_order(self, order: Order, *, customer: Customer | None = None) -> Conversion:
        """Attribute, check and reward one order, once however often it is delivered."""
        if customer is not None:
            self._ensure_customer(customer)
        buyer = self.store.get_customer(order.customer_id)
        order = order.model_copy(
            update={"signals": _merge_signals(order.signals, customer_signals(buyer.email, buyer.phone))}
        )
        conversion = self.store.record_order(order)
        if conversion.status is not ConversionStatus.PENDING:
            return conversion
        order = conversion.order
        touches = self._touches(order.customer_id, order.click_id, order.code, order.at, TouchKind.CHECKOUT_CODE)
        settings = self._attribution_settings(touches)
        attribution = attribute(order.at, order.customer_id, touches, settings) if settings else None
        now = self.clock()
        if attribution is None:
            return self.store.settle_conversion(order.id, None, _unattributed, at=now)
        campaign = self.store.get_campaign(attribution.campaign_id)
        context = self.store.fraud_context(order, attribution, campaign.fraud)
        referrer = self.store.existing_customer_ids([attribution.referrer_id])
        if referrer:
            known = self.store.get_customer(attribution.referrer_id)
            # The referrer may never have ordered or signed up through us: their own email and phone count too.
            derived = customer_signals(known.email, known.phone)
            context = context.model_copy(update={"referrer_signals": _merge_signals(context.referrer_signals, derived)})
        verdict = assess(context, campaign.fraud)

        def plan(history: RewardHistory) -> Settlement:
            return plan_rewards(campaign, order, attribution, verdict, history, at=now)

        settled = self.store.settle_conversion(order.id, attribution, plan, at=now)
        log.info(
            "order %s: %s (referrer %s, code %s, fraud %s)",
            order.id,
            settled.status.value,
            attribution.referrer_id,
            attribution.code,
            verdict.action.value,
        )
        return settled

    def process_refund(self, refund: Refund) -> Conversion:
        """Record a refund; once the whole amount is refunded the rewards are reversed, even if already paid."""
        return self.store.record_refund(refund, at=self.clock())

    def review(self, order_id: str, *, approve: bool, reviewer: str, note: str = "") -> Conversion:
        """A marketer's decision on a held conversion."""
        if not reviewer.strip():
            raise InvalidInput("a review needs the reviewer's name")
        conversion = self.store.get_conversion(order_id)
        hold_days = 0
        if conversion.attribution is not None:
            hold_days = self.store.get_campaign(conversion.attribution.campaign_id).hold_days
        now = self.clock()
        return self.store.review_conversion(
            order_id,
            approve=approve,
            reviewer=reviewer.strip(),
            note=note,
            at=now,
            approve_after=now + timedelta(days=hold_days),
        )

    def get_conversion(self, order_id: str) -> Conversion:
        return self.store.get_conversion(order_id)

    # --- rewards -------------------------------------------------------------------------------------------
    def advance(self, *, limit: int = 1000) -> list[Reward]:
        """Approve rewards past their hold period; reject held ones nobody reviewed in time."""
        return self.store.advance_rewards(self.clock(), limit=limit)

    def fulfil(self, *, limit: int = 100) -> FulfilmentReport:
        """Send approved rewards through the fulfiller, then mark each fulfilled.

        The fulfiller receives the reward id as its idempotency key, so a crash between delivery and the
        ledger write makes the next run deliver again harmlessly rather than lose the payout.
        """
        report = FulfilmentReport()
        for reward in self.store.list_rewards(state=RewardState.APPROVED, limit=limit):
            if reward.customer_id == ERASED:
                report.failed[reward.id] = "the person was erased; nobody to pay"
                continue
            try:
                self.fulfiller.deliver(reward)
            except FulfilmentError as exc:
                report.failed[reward.id] = str(exc)
                log.warning(
                    "reward %s not fulfilled (%s): %s", reward.id, "will retry" if exc.retryable else "refused", exc
                )
                continue
            try:
                self.store.transition_reward(reward.id, RewardState.FULFILLED, at=self.clock(), reason="fulfilled")
            except LedgerConflict as exc:  # reversed while being delivered: the clawback entry already exists
                report.failed[reward.id] = exc.detail
                continue
            report.fulfilled.append(reward.id)
        return report

    # --- fraud scanning and metrics ------------------------------------------------------------------------
    def scan_leaks(self, *, days: int = 7) -> list[LeakVerdict]:
        """Codes that look posted publicly, most suspicious first, for a marketer to pause or rotate."""
        since = self.clock() - timedelta(days=days)
        verdicts: list[LeakVerdict] = []
        campaigns: dict[str, Campaign] = {}
        for activity in self.store.iter_code_activity(since=since):
            campaign = campaigns.get(activity.campaign_id)
            if campaign is None:
                campaign = campaigns[activity.campaign_id] = self.store.get_campaign(activity.campaign_id)
            verdict = detect_leak(activity, campaign.fraud)
            if verdict.leaked:
                verdicts.append(verdict)
        return sorted(verdicts, key=lambda v: (-v.score, v.code))

    def metrics(self, campaign_id: str | None = None) -> ProgramMetrics:
        counts = self.store.program_counts(campaign_id)
        shares = self.store.stats().events.get(EventKind.SHARE.value, 0)
        return program_metrics(counts, self.store.iter_conversions(campaign_id), shares=shares)

    def cascades(self, campaign_id: str | None = None, *, top: int = 20) -> CascadeReport:
        conversions = list(self.store.iter_conversions(campaign_id))
        rewards = self.store.list_rewards(campaign_id=campaign_id, limit=10_000_000)
        edges = self.store.iter_edges(EdgeType.REFERRED)
        if campaign_id is not None:
            pairs = {(c.attribution.referrer_id, c.order.customer_id) for c in conversions if c.attribution}
            edges = (e for e in edges if (e.source, e.target) in pairs)
        return cascade_report(edges, rewards, conversions, top=top)

    # --- helpers -------------------------------------------------------------------------------------------
    @staticmethod
    def _normalised(code: str) -> str:
        normal = normalise_code(code)
        if not normal:
            raise NotFound("no such referral code")
        return normal

    def _ensure_customer(self, customer: Customer) -> None:
        """Create a customer the merchant just told us about; an existing record is not overwritten."""
        if not self.store.existing_customer_ids([customer.id]):
            self.store.upsert_customers([customer])

    def _touches(
        self, customer_id: str, click_id: str | None, code: str | None, at: datetime, code_kind: TouchKind
    ) -> list[Touch]:
        """Stored touches within the longest window of any campaign, plus the code typed now (if it exists)."""
        if self.clicks is not None:
            self.clicks.flush()  # the friend's click may still be on its way to the store
        window = max((c.attribution.window_days for c in self.store.list_campaigns()), default=30)
        touches = self.store.touches_for(
            customer_id, click_ids=[click_id] if click_id else [], since=at - timedelta(days=window)
        )
        if code:
            try:
                typed = self.store.get_code(normalise_code(code))
            except NotFound:
                log.info("code %r given by %s is unknown; ignored for attribution", code, customer_id)
            else:
                touches.append(
                    Touch(
                        kind=code_kind,
                        code=typed.code,
                        referrer_id=typed.customer_id,
                        campaign_id=typed.campaign_id,
                        at=at,
                        usable=typed.usable_at(at),
                    )
                )
        return touches

    def _attribution_settings(self, touches: list[Touch]) -> AttributionSettings | None:
        """One campaign's window and model decide; with touches from several, the newest touch's campaign does."""
        if not touches:
            return None
        latest = max(touches, key=lambda t: t.at)
        return self.store.get_campaign(latest.campaign_id).attribution


def _merge_signals(given: tuple[Signal, ...], derived: tuple[Signal, ...]) -> tuple[Signal, ...]:
    seen: dict[tuple[str, str], Signal] = {}
    for signal in (*given, *derived):
        seen.setdefault((signal.kind.value, signal.value), signal)
    return tuple(seen.values())


def _unattributed(history: RewardHistory) -> Settlement:
    return Settlement(status=ConversionStatus.UNATTRIBUTED)
