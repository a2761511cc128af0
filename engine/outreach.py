"""Staying in touch: plan an outreach, send each message once within the contact policy, let people answer.

`plan` turns an audience into outbox messages (one key per outreach, step and person); `send` takes one key
through the whole policy (pure prechecks, then the atomic limiter), renders the person's kit, and hands the
message to a channel adapter. Any number of workers may call `send` with the same key: the outbox lease gives it
to one of them, the limiter's token counts it once, and the adapter's Message-ID / Idempotency-Key lets the
provider drop a resend after a crash. Whatever happens, the message ends `sent`, `held` (with the reason a
marketer reads) or `failed`; quiet hours only defer it.

Customers answer through the same service: ask for their kit or more material, send an idea or feedback (a
prosumer signal in the graph), invite a friend (who is protected by the same policy), or unsubscribe.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from engine.ab import VariantResult, assign_variant, variant_results
from engine.channels import ChannelAdapter, DeliveryError, Outgoing
from engine.contact_policy import precheck
from engine.fraud import normalise_email
from engine.kits import Kit, KitContext, KitRenderer, RenderDeferred, load_kit_context
from engine.limits import ContactLimiter, LimitDecision, LimiterStateLost, Reservation
from engine.referrals import ReferralService
from engine.settings import Settings
from engine.targeting import choose_targets
from engine.unsubscribe import UnsubscribeRequest, link_secrets, make_token, read_token, unsubscribe_url
from engine.webhooks import keyed_hash
from graph.errors import InvalidInput, LedgerConflict, NotFound, PolicyViolation
from graph.model import ContactChannel, Customer, Event, EventKind, Segment, utcnow
from graph.outreach import (
    Audience,
    AudienceKind,
    HoldReason,
    MessageKind,
    MessageStatus,
    OutboxCounts,
    OutboxMessage,
    Outreach,
    OutreachStatus,
    Step,
    Suppression,
    Template,
    TemplatePurpose,
    Variant,
    customer_key,
)
from graph.program import ConversionStatus, ReferralCode
from graph.program_store import KitReads, Store, newest_active

log = logging.getLogger(__name__)

RETRY_DELAY = timedelta(minutes=5)
"""How long a message waits after a transient delivery failure before a worker tries again."""

OUTREACH_FRESH_S = 2.0
"""How long `send` trusts an outreach it has read, at least: a pause made elsewhere reaches a worker within this,
or within `OUTREACH_READ_SHARE` times the read's own duration when that is longer. The record holds its whole
audience (up to a million ids; 150 ms to read and validate at 100,000), so reading it for every message made a
campaign quadratic; on a busy machine even one read every 2 s took a large share of a worker's CPU."""

OUTREACH_READ_SHARE = 20
"""A worker spends at most about 1/20 of its time re-reading outreach records."""


class Dispatcher(Protocol):
    """Where `send` runs: inline in this process (embedded mode) or on Celery workers (production)."""

    def dispatch(self, keys: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class PlanReport:
    outreach_id: str
    audience: int
    enqueued: int
    already_planned: int
    excluded: dict[str, int] = field(default_factory=dict)
    """Customers left out before planning, by reason (do_not_ask, erased...)."""


class OutreachService:
    """Thread-safe as its store and limiter are; one per process is enough."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        limiter: ContactLimiter,
        adapters: Mapping[ContactChannel, ChannelAdapter],
        renderer: KitRenderer | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.settings = settings
        self.limiter = limiter
        self.adapters = dict(adapters)
        self.renderer = renderer or KitRenderer()
        self.clock = clock
        self.referrals = ReferralService(store, settings.referral, clock=clock)
        self._outreach_read: dict[str, tuple[float, Outreach]] = {}
        """Per outreach id: until when (`time.monotonic`) the copy read is trusted, and the copy."""

    # --- templates ---------------------------------------------------------------------------------------------
    def save_template(self, template: Template, *, by: str) -> Template:
        """Validate (syntax, variables, size, a trial render in the sandbox) and store, bumping the version."""
        self.renderer.validate(template)
        try:
            version = self.store.get_template(template.id).version + 1
        except NotFound:
            version = 1
        saved = template.model_copy(update={"version": version, "updated_at": self.clock(), "updated_by": by})
        self.store.save_template(saved)
        return saved

    def preview_template(self, template: Template, customer_id: str, campaign_id: str) -> str:
        """What `template` would say to this customer, without saving it (validated first)."""
        self.renderer.validate(template)
        context = self.kit_context_of(customer_id, self.code_for(customer_id, campaign_id))
        return self.renderer.preview(template, context)

    # --- outreach plans ----------------------------------------------------------------------------------------
    def create_outreach(self, outreach: Outreach) -> Outreach:
        try:
            self.store.get_outreach(outreach.id)
        except NotFound:
            self.store.get_campaign(outreach.campaign_id)
            for template_id in _template_ids(outreach):
                self.store.get_template(template_id)
            draft = outreach.model_copy(update={"status": OutreachStatus.DRAFT, "started_at": None})
            self.store.save_outreach(draft)
            self._outreach_read.pop(draft.id, None)
            return draft
        raise LedgerConflict(f"outreach {outreach.id!r} exists")

    def audience(self, outreach: Outreach) -> tuple[list[str], Counter[str]]:
        """The customer ids to contact, in order, and how many were left out and why."""
        spec = outreach.audience
        excluded: Counter[str] = Counter()
        if spec.kind is AudienceKind.KIT_INVITATIONS:
            raise PolicyViolation("invitations from kits are sent one by one, never planned")
        if spec.kind is AudienceKind.CUSTOMERS:
            wanted = list(dict.fromkeys(spec.customer_ids))
        elif spec.kind is AudienceKind.SEGMENTS:
            segments = set(spec.segments)
            wanted = [s.customer_id for s in self.store.iter_scores() if s.segment in segments]
        else:
            choice = choose_targets(self.store, k=spec.k or 50, seed=0, baselines=())
            wanted = [t.customer_id for t in choice.targets]
        known = self.store.existing_customer_ids(wanted)
        excluded["unknown"] = len(wanted) - len(known)
        people = []
        for customer_id in wanted:
            if customer_id not in known:
                continue
            scores = self.store.get_scores(customer_id)
            if scores is not None and scores.segment is Segment.DO_NOT_ASK:
                excluded[HoldReason.DO_NOT_ASK.value] += 1
                continue
            people.append(customer_id)
        return people, +excluded

    def launch(self, outreach_id: str) -> Outreach:
        """Mark a draft running from now (its cadence counts from here); a launched outreach is left as it is."""
        outreach = self.store.get_outreach(outreach_id)
        if outreach.status is OutreachStatus.DONE:
            raise PolicyViolation(f"outreach {outreach_id!r} is done")
        if outreach.audience.kind is AudienceKind.KIT_INVITATIONS:
            raise PolicyViolation("invitations from kits are sent one by one, never launched")
        if outreach.status is OutreachStatus.DRAFT:
            outreach = outreach.model_copy(update={"status": OutreachStatus.RUNNING, "started_at": self.clock()})
            self.store.save_outreach(outreach)
            self._outreach_read.pop(outreach_id, None)
        return outreach

    def plan(self, outreach_id: str) -> PlanReport:
        """Launch if needed, then write one outbox message per person and step; planning again adds only what
        is missing."""
        outreach = self.launch(outreach_id)
        now = self.clock()
        started = outreach.started_at or now
        people, excluded = self.audience(outreach)
        enqueued = 0
        for chunk in _chunks(people, 1000):
            messages = [
                self._message(outreach, step, customer_id, started, now)
                for customer_id in chunk
                for step in outreach.steps
            ]
            enqueued += self.store.enqueue_messages(messages)
        total = len(people) * len(outreach.steps)
        return PlanReport(outreach_id, len(people), enqueued, total - enqueued, dict(excluded))

    def set_status(self, outreach_id: str, status: OutreachStatus) -> Outreach:
        """Pause or resume (paused messages wait in the outbox), or mark done."""
        outreach = self.store.get_outreach(outreach_id)
        if outreach.status is OutreachStatus.DONE and status is not OutreachStatus.DONE:
            raise PolicyViolation(f"outreach {outreach_id!r} is done")
        if outreach.status is OutreachStatus.DRAFT and status is OutreachStatus.RUNNING:
            raise PolicyViolation(f"outreach {outreach_id!r} has not been launched; launch it to start it")
        updated = outreach.model_copy(update={"status": status})
        self.store.save_outreach(updated)
        self._outreach_read.pop(outreach_id, None)
        return updated

    def due(self, *, limit: int = 1000, outreach_id: str | None = None) -> list[str]:
        """Keys of messages a worker could send now (cadence steps that came due, expired leases)."""
        due = self.store.due_messages(now=self.clock(), limit=limit, outreach_id=outreach_id)
        return [m.key for m in due]

    # --- sending one message -----------------------------------------------------------------------------------
    def send(self, key: str) -> OutboxMessage:
        """Take one outbox message through the policy to its channel, once. Safe to call again with the same key."""
        now = self.clock()
        message = self.store.claim_message(key, at=now, lease_s=self.settings.contact.lease_s)
        if message is None:
            return self.store.get_message(key)
        try:
            return self._send_claimed(message, now)
        except DeliveryError as exc:
            if exc.retryable:
                return self._finish(message, MessageStatus.QUEUED, not_before=now + RETRY_DELAY, detail=str(exc))
            self.limiter.release(message.person_key, message.channel, message.kind, token=message.key)
            return self._finish(message, MessageStatus.FAILED, detail=str(exc))

    def _send_claimed(self, message: OutboxMessage, now: datetime) -> OutboxMessage:
        if message.kind is not MessageKind.TRANSACTIONAL:
            outreach = self._recent_outreach(message.outreach_id)
            if outreach.status is OutreachStatus.PAUSED:
                later = now + timedelta(hours=1)
                return self._finish(message, MessageStatus.QUEUED, not_before=later, reason=HoldReason.PAUSED)
            if outreach.status is OutreachStatus.DONE:
                return self._finish(message, MessageStatus.HELD, reason=HoldReason.PAUSED, detail="outreach ended")
        else:
            outreach = None
        customer = self._customer_of(message)
        if message.kind is not MessageKind.INVITATION and customer is None:
            return self._finish(message, MessageStatus.HELD, reason=HoldReason.ERASED)
        address = message.to_address if message.kind is MessageKind.INVITATION else _address(customer, message.channel)
        scores = self.store.get_scores(customer.id) if customer is not None else None
        suppressions = self.store.suppressions([message.person_key]).get(message.person_key, [])
        hold = precheck(
            customer=customer if message.kind is not MessageKind.INVITATION else None,
            person_key=message.person_key,
            channel=message.channel,
            kind=message.kind,
            segment=scores.segment if scores is not None else None,
            suppressions=suppressions,
            now=now,
            policy=self.settings.contact.policy,
            has_address=bool(address),
        )
        if hold is not None:
            if hold.reason is HoldReason.QUIET_HOURS and hold.retry_at is not None:
                return self._finish(
                    message, MessageStatus.QUEUED, not_before=hold.retry_at, reason=hold.reason, detail=hold.detail
                )
            return self._finish(message, MessageStatus.HELD, reason=hold.reason, detail=hold.detail)
        adapter = self.adapters.get(message.channel)
        if adapter is None:
            detail = f"no {message.channel.value} provider is configured"
            return self._finish(message, MessageStatus.HELD, reason=HoldReason.NO_ADDRESS, detail=detail)
        decision = self._reserve(message, now)
        if not decision.allowed:
            assert decision.reason is not None
            return self._finish(message, MessageStatus.HELD, reason=decision.reason, detail=decision.detail)
        assert address is not None
        outgoing = self._compose(message, outreach, address, now)
        delivery = adapter.send(outgoing)
        return self._finish(message, MessageStatus.SENT, provider_id=delivery.provider_id)

    def _reserve(self, message: OutboxMessage, now: datetime) -> LimitDecision:
        """The limiter's decision; if its Redis lost the counts, they are restored from the outbox first."""
        policy = self.settings.contact.policy

        def reserve() -> LimitDecision:
            return self.limiter.reserve(
                message.person_key, message.channel, message.kind, at=now, policy=policy, token=message.key
            )

        try:
            return reserve()
        except LimiterStateLost:
            log.warning("the contact limiter lost its counts; restoring them from the outbox")
            self.limiter.restore(self._contacts_since, at=now, policy=policy)
            return reserve()

    def _contacts_since(self, since: datetime) -> Iterator[Reservation]:
        """Every message the outbox holds as sent after `since`, under its own key as the token.

        Messages still `sending` are left out: each is decided again when its worker reserves it (its own token
        would otherwise let it through whatever else the person received). One that had gone out on the lost
        counts and is recorded `sent` only after this read is the one contact a restore can miss.
        """
        for outreach in self.store.list_outreach():
            after: str | None = None
            while True:
                page = self.store.list_messages(outreach.id, status=MessageStatus.SENT, limit=1000, after=after)
                for m in page:
                    if m.sent_at is not None and m.sent_at > since:
                        yield Reservation(m.person_key, m.channel, m.kind, m.sent_at, m.key)
                if len(page) < 1000:
                    break
                after = page[-1].key

    def _compose(self, message: OutboxMessage, outreach: Outreach | None, address: str, now: datetime) -> Outgoing:
        token = make_token(self._unsubscribe_secret, message.person_key, channel=None, issued_at=now)
        link = unsubscribe_url(self.settings.api.public_base_url, token)
        if message.kind is MessageKind.INVITATION:
            assert message.customer_id is not None
            assert outreach is not None
            advocate = message.customer_id
            purpose, template_id = TemplatePurpose.INVITATION, None
        else:
            assert message.customer_id is not None
            advocate = message.customer_id
            purpose = TemplatePurpose.MESSAGE
            template_id = _message_template(outreach, message) if outreach is not None else None
        campaign_id = outreach.campaign_id if outreach is not None else self.settings.referral.default_campaign
        context = self.kit_context_of(advocate, self.code_for(advocate, campaign_id), unsubscribe=link)
        rendered = self.renderer.render_message(
            context,
            purpose=purpose,
            channel=message.channel,
            marketer=self.store.list_templates(purpose),
            template_id=template_id,
        )
        return Outgoing(
            key=message.key,
            to=address,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            unsubscribe_url=link,
            kind=message.kind,
        )

    def _finish(
        self,
        message: OutboxMessage,
        status: MessageStatus,
        *,
        reason: HoldReason | None = None,
        detail: str = "",
        provider_id: str | None = None,
        not_before: datetime | None = None,
    ) -> OutboxMessage:
        finished = self.store.finish_message(
            message.key,
            status,
            at=self.clock(),
            reason=reason,
            detail=detail[:500],
            provider_id=provider_id,
            not_before=not_before,
        )
        if status is MessageStatus.HELD:
            log.info("held %s: %s %s", message.key, reason.value if reason else "", detail)
        return finished

    # --- customers answering -------------------------------------------------------------------------------
    def kit(self, customer_id: str, campaign_id: str, *, outreach_id: str | None = None) -> Kit:
        """A customer's sharing kit, for their A/B variant when they came through an outreach."""
        variant = self._variant_of(customer_id, outreach_id)
        reads = self.store.kit_reads(customer_id, campaign_id)
        self.limiter.record_engagement(customer_key(customer_id), at=self.clock())
        code = reads.active_code or self.referrals.issue_code(customer_id, campaign_id)
        return self._render_kit(reads, code, variant)

    @property
    def local_reads(self) -> bool:
        """Whether `kit_from_reads` is work in this process that waits on nothing (the embedded store)."""
        return self.store.local_reads and self.limiter.local_reads

    def kit_from_reads(
        self, customer_id: str, campaign_id: str, *, outreach_id: str | None = None, within_s: float | None = None
    ) -> Kit | None:
        """`kit`, when giving it writes nothing: their code exists and no message to them waits for an answer
        (so their engagement changes nothing). None when it would write, or when a template takes longer than
        `within_s` (an event loop calls this; `kit` renders with the full budget)."""
        variant = self._variant_of(customer_id, outreach_id)
        if self.limiter.would_answer(customer_key(customer_id), at=self.clock()):
            return None
        reads = self.store.kit_reads(customer_id, campaign_id)
        code = reads.active_code
        if code is None:
            return None
        try:
            return self._render_kit(reads, code, variant, within_s=within_s)
        except RenderDeferred:
            return None

    def _variant_of(self, customer_id: str, outreach_id: str | None) -> Variant | None:
        if outreach_id is None:
            return None
        outreach = self.store.get_outreach(outreach_id)
        chosen = assign_variant(outreach.id, customer_key(customer_id), outreach.variants)
        return next(v for v in outreach.variants if v.id == chosen)

    def _render_kit(
        self, reads: KitReads, code: ReferralCode, variant: Variant | None, *, within_s: float | None = None
    ) -> Kit:
        return self.renderer.render_kit(
            self.kit_context_of(reads.customer.id, code, reads=reads),
            variant=variant,
            marketer=reads.share_templates,
            within_s=within_s,
        )

    def respond(self, customer_id: str, kind: EventKind, text: str, *, campaign_id: str | None = None) -> Event:
        """An idea, feedback, a review or a request for more material: recorded as the customer's event.

        Ideas, feedback, reviews and content are prosumer signals for the next analysis; any answer also counts
        as engagement, which lifts the back-off on further messages.
        """
        if kind not in (EventKind.IDEA, EventKind.FEEDBACK, EventKind.REVIEW, EventKind.CONTENT, EventKind.SHARE):
            raise InvalidInput(f"a customer can send an idea, feedback, a review or content, not {kind.value}")
        text = text.strip()
        if not text or len(text) > 5000:
            raise InvalidInput("the message must have 1 to 5,000 characters")
        now = self.clock()
        self.store.get_customer(customer_id)
        attributes: dict[str, str | int | float | bool | None] = {"text": text}
        if campaign_id is not None:
            attributes["campaign_id"] = campaign_id
        event = Event(
            id=f"{kind.value}:{customer_id}:{uuid.uuid4().hex}",
            customer_id=customer_id,
            kind=kind,
            at=now,
            attributes=attributes,
        )
        self.store.add_events([event])
        self.limiter.record_engagement(customer_key(customer_id), at=now)
        return event

    def invite_friend(
        self, advocate_id: str, campaign_id: str, friend_email: str, *, outreach_id: str | None = None
    ) -> OutboxMessage:
        """Email a friend on an advocate's behalf: the friend's own caps and refusals apply, across advocates."""
        advocate = self.store.get_customer(advocate_id)
        scores = self.store.get_scores(advocate.id)
        if scores is not None and scores.segment is Segment.DO_NOT_ASK:
            raise PolicyViolation("this customer is not asked to refer friends")
        email = friend_email.strip()
        if "@" not in email or len(email) > 254:
            raise InvalidInput("the friend's email address is not valid")
        person = self.friend_key(email)
        outreach_id = outreach_id or self._invitations_outreach(campaign_id)
        now = self.clock()
        message = OutboxMessage(
            key=f"{outreach_id}:invite:{person}:{advocate.id}",
            outreach_id=outreach_id,
            step_id="invite",
            person_key=person,
            customer_id=advocate.id,
            channel=ContactChannel.EMAIL,
            kind=MessageKind.INVITATION,
            variant_id="a",
            not_before=now,
            created_at=now,
            updated_at=now,
            to_address=email,
        )
        self.store.enqueue_messages([message])
        return self.send(message.key)

    def friend_key(self, email: str) -> str:
        """The person key of someone known only by email: a keyed hash, so the address itself is not a key."""
        return "email:" + keyed_hash(self.settings.secret_key.get_secret_value(), "email", normalise_email(email))

    def read_unsubscribe(self, token: str) -> UnsubscribeRequest:
        """Check an unsubscribe link without acting on it (mail scanners open links; only the POST acts)."""
        return read_token(link_secrets(self.settings.contact), token, now=self.clock())

    def unsubscribe(self, token: str) -> Suppression:
        """A one-click unsubscribe (or a friend declining invitations): nobody contacts them for marketing again."""
        request = read_token(link_secrets(self.settings.contact), token, now=self.clock())
        reason = HoldReason.DECLINED if request.person_key.startswith("email:") else HoldReason.UNSUBSCRIBED
        suppression = Suppression(
            person_key=request.person_key, reason=reason, at=self.clock(), channel=request.channel
        )
        self.store.suppress(suppression)
        if request.person_key.startswith("customer:"):
            customer_id = request.person_key.removeprefix("customer:")
            try:
                customer = self.store.get_customer(customer_id)
            except NotFound:
                return suppression
            channels = [request.channel] if request.channel is not None else list(ContactChannel)
            consent = {**customer.consent, **dict.fromkeys(channels, False)}
            self.store.upsert_customers([customer.model_copy(update={"consent": consent})])
        return suppression

    def unsubscribe_link(self, person_key: str, channel: ContactChannel | None = None) -> str:
        token = make_token(self._unsubscribe_secret, person_key, channel=channel, issued_at=self.clock())
        return unsubscribe_url(self.settings.api.public_base_url, token)

    # --- reporting -----------------------------------------------------------------------------------------------
    def counts(self, outreach_id: str) -> OutboxCounts:
        self.store.get_outreach(outreach_id)
        return self.store.outbox_counts(outreach_id)

    def held(
        self, outreach_id: str, *, reason: HoldReason | None = None, limit: int = 100, after: str | None = None
    ) -> list[OutboxMessage]:
        """Messages held back, with why, a page at a time (`after` is the last key of the previous page)."""
        self.store.get_outreach(outreach_id)
        return self.store.list_messages(outreach_id, status=MessageStatus.HELD, reason=reason, limit=limit, after=after)

    def variants(self, outreach_id: str) -> list[VariantResult]:
        """Conversion per variant with its uncertainty: advocates with a successful referral after their message."""
        outreach = self.store.get_outreach(outreach_id)
        first_sent: dict[str, tuple[str, datetime | None]] = {}
        for message in self._all_messages(outreach_id):
            if message.customer_id is None or message.kind is MessageKind.INVITATION:
                continue
            variant, sent = first_sent.get(message.customer_id, (message.variant_id, None))
            if message.sent_at is not None and (sent is None or message.sent_at < sent):
                sent = message.sent_at
            first_sent[message.customer_id] = (variant, sent)
        converted: set[str] = set()
        for conversion in self.store.iter_conversions(outreach.campaign_id):
            if conversion.attribution is None or conversion.status is not ConversionStatus.ATTRIBUTED:
                continue
            referrer = conversion.attribution.referrer_id
            sent = first_sent.get(referrer, ("", None))[1]
            if sent is not None and conversion.order.at >= sent:
                converted.add(referrer)
        counts: dict[str, list[int]] = {v.id: [0, 0, 0] for v in outreach.variants}
        for customer_id, (variant, sent) in first_sent.items():
            row = counts.setdefault(variant, [0, 0, 0])
            row[0] += 1
            row[1] += sent is not None
            row[2] += customer_id in converted
        return variant_results({v: (a, r, c) for v, (a, r, c) in counts.items()})

    # --- helpers -------------------------------------------------------------------------------------------------
    @property
    def _unsubscribe_secret(self) -> str:
        return self.settings.contact.unsubscribe_secret.get_secret_value()

    def _recent_outreach(self, outreach_id: str) -> Outreach:
        """The outreach as read a moment ago (see `OUTREACH_FRESH_S`); this service's own changes drop it at once."""
        started = time.monotonic()
        read = self._outreach_read.get(outreach_id)
        if read is not None and started < read[0]:
            return read[1]
        outreach = self.store.get_outreach(outreach_id)
        took = time.monotonic() - started
        if len(self._outreach_read) >= 64:
            self._outreach_read.clear()
        self._outreach_read[outreach_id] = (started + max(OUTREACH_FRESH_S, OUTREACH_READ_SHARE * took), outreach)
        return outreach

    def _all_messages(self, outreach_id: str) -> Iterator[OutboxMessage]:
        after: str | None = None
        while True:
            page = self.store.list_messages(outreach_id, limit=1000, after=after)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].key

    def _message(
        self, outreach: Outreach, step: Step, customer_id: str, started: datetime, now: datetime
    ) -> OutboxMessage:
        person = customer_key(customer_id)
        return OutboxMessage(
            key=f"{outreach.id}:{step.id}:{person}",
            outreach_id=outreach.id,
            step_id=step.id,
            person_key=person,
            customer_id=customer_id,
            channel=step.channel,
            kind=MessageKind.MARKETING,
            variant_id=assign_variant(outreach.id, person, outreach.variants),
            not_before=started + timedelta(days=step.delay_days),
            created_at=now,
            updated_at=now,
        )

    def _customer_of(self, message: OutboxMessage) -> Customer | None:
        if message.customer_id is None:
            return None
        try:
            return self.store.get_customer(message.customer_id)
        except NotFound:
            return None

    def code_for(self, customer_id: str, campaign_id: str) -> ReferralCode:
        """The advocate's active code in the campaign, issued on first need."""
        return self._active_code(customer_id, campaign_id) or self.referrals.issue_code(customer_id, campaign_id)

    def _active_code(self, customer_id: str, campaign_id: str) -> ReferralCode | None:
        return newest_active(self.store.list_codes(customer_id=customer_id, campaign_id=campaign_id))

    def kit_context_of(
        self,
        customer_id: str,
        code: ReferralCode,
        *,
        unsubscribe: str | None = None,
        locale: str | None = None,
        reads: KitReads | None = None,
    ) -> KitContext:
        """What a kit of `code` says about the customer, with their own unsubscribe link unless one is given."""
        base = self.settings.api.public_base_url
        link = unsubscribe or self.unsubscribe_link(customer_key(customer_id))
        return load_kit_context(
            self.store,
            customer_id,
            code,
            public_base_url=base,
            unsubscribe_url=link,
            preferences_url=link,
            locale=locale,
            reads=reads,
        )

    def _invitations_outreach(self, campaign_id: str) -> str:
        """Invitations from kits live in one standing outreach per campaign, so hold-backs are reported too."""
        outreach_id = f"{campaign_id}-invitations"[:64]
        try:
            self.store.get_outreach(outreach_id)
        except NotFound:
            self.store.save_outreach(
                Outreach(
                    id=outreach_id,
                    name=f"Invitations sent from kits ({campaign_id})",
                    campaign_id=campaign_id,
                    audience=Audience(kind=AudienceKind.KIT_INVITATIONS),
                    status=OutreachStatus.RUNNING,
                    created_at=self.clock(),
                    started_at=self.clock(),
                )
            )
        return outreach_id


def _template_ids(outreach: Outreach) -> set[str]:
    ids = {s.message_template_id for s in outreach.steps if s.message_template_id}
    for variant in outreach.variants:
        ids.update(variant.template_ids.values())
        if variant.message_template_id:
            ids.add(variant.message_template_id)
    return {i for i in ids if i is not None}


def _message_template(outreach: Outreach, message: OutboxMessage) -> str | None:
    step = next((s for s in outreach.steps if s.id == message.step_id), None)
    variant = next((v for v in outreach.variants if v.id == message.variant_id), None)
    if step is not None and step.message_template_id:
        return step.message_template_id
    return variant.message_template_id if variant is not None else None


def _address(customer: Customer | None, channel: ContactChannel) -> str | None:
    if customer is None:
        return None
    if channel is ContactChannel.EMAIL:
        return customer.email
    if channel in (ContactChannel.SMS, ContactChannel.WHATSAPP):
        return customer.phone
    return None


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
