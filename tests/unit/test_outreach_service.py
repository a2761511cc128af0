"""The issue's "done when" at service level: an outreach on analysis targets reaches each target with a kit that
fits their segment, within the policy, and every message not sent says why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.analysis import run_analysis
from engine.channels import MaildirAdapter
from engine.contact_policy import ContactPolicy
from engine.limits import SqliteContactLimiter
from engine.outreach import OutreachService
from engine.settings import ContactSettings, Settings
from engine.targeting import choose_targets
from graph.errors import PolicyViolation
from graph.generator import generate_network
from graph.model import ContactChannel, Segment
from graph.outreach import (
    Audience,
    AudienceKind,
    MessageKind,
    MessageStatus,
    Outreach,
    OutreachStatus,
    ShareChannel,
    Template,
    TemplatePurpose,
    customer_key,
)
from graph.sqlite_store import SqliteStore
from tests.program_factories import make_campaign

NOON_IN_PARIS = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)
EMAIL, MARKETING = ContactChannel.EMAIL, MessageKind.MARKETING


@pytest.fixture
def service(tmp_path: Path) -> OutreachService:
    store = SqliteStore(tmp_path / "net.db")
    for batch in generate_network(400, seed=5):
        store.write_batch(batch)
    run_analysis(store)
    everyone = [c.model_copy(update={"timezone": "Europe/Paris"}) for c in store.iter_customers()]
    store.upsert_customers(everyone)
    store.save_campaign(make_campaign(id="spring"))
    settings = Settings(contact=ContactSettings(maildir=str(tmp_path / "mail")))
    return OutreachService(
        store,
        settings,
        limiter=SqliteContactLimiter(tmp_path / "contacts.db"),
        adapters={ContactChannel.EMAIL: MaildirAdapter(tmp_path / "mail")},
        clock=lambda: NOON_IN_PARIS,
    )


def test_an_outreach_on_analysis_targets_reaches_each_target_or_says_why_not(service: OutreachService) -> None:
    store = service.store
    targets = [t.customer_id for t in choose_targets(store, k=15, seed=0, baselines=()).targets]
    service.create_outreach(
        Outreach(
            id="targets",
            name="Best placed",
            campaign_id="spring",
            audience=Audience(kind=AudienceKind.TARGETS, k=15),
            created_at=NOON_IN_PARIS,
        )
    )

    report = service.plan("targets")
    service_keys = service.due(outreach_id="targets")
    for key in service_keys:
        service.send(key)

    assert report.audience == len(targets) == 15
    messages = store.list_messages("targets", limit=100)
    assert sorted(m.customer_id or "" for m in messages) == sorted(targets)
    for message in messages:
        customer = store.get_customer(message.customer_id or "")
        if message.status is MessageStatus.SENT:
            assert customer.consent.get(ContactChannel.EMAIL) is True
            assert customer.email
        else:
            assert message.status is MessageStatus.HELD
            assert message.reason is not None
    assert store.outbox_counts("targets").by_status[MessageStatus.SENT] >= 1
    assert store.get_outreach("targets").status is OutreachStatus.RUNNING


def test_kits_differ_by_segment(service: OutreachService) -> None:
    store = service.store
    by_segment: dict[Segment, str] = {}
    for scores in store.iter_scores():
        by_segment.setdefault(scores.segment, scores.customer_id)
    influencer = service.kit(by_segment[Segment.INFLUENCER], "spring")
    prosumer = service.kit(by_segment[Segment.PROSUMER], "spring")
    assert influencer.segment is Segment.INFLUENCER
    assert prosumer.segment is Segment.PROSUMER
    assert influencer.messages[0].text != prosumer.messages[0].text
    assert influencer.link.endswith(f"/r/{influencer.code}")


def test_an_outreach_is_launched_before_it_can_be_resumed(service: OutreachService) -> None:
    service.create_outreach(
        Outreach(
            id="draft",
            name="Draft",
            campaign_id="spring",
            audience=Audience(kind=AudienceKind.SEGMENTS, segments=(Segment.ADVOCATE,)),
            created_at=NOON_IN_PARIS,
        )
    )
    with pytest.raises(PolicyViolation):
        service.set_status("draft", OutreachStatus.RUNNING)
    assert service.launch("draft").status is OutreachStatus.RUNNING


# --- a kit made from reads alone (what the API does on its event loop with the embedded store) ---------------------
def some_customer(service: OutreachService) -> str:
    return next(iter(service.store.iter_customers())).id


def test_a_kit_from_reads_waits_for_the_code_that_only_the_writing_path_issues(service: OutreachService) -> None:
    customer_id = some_customer(service)
    assert service.local_reads

    assert service.kit_from_reads(customer_id, "spring") is None
    assert service.store.list_codes(customer_id=customer_id) == []

    kit = service.kit(customer_id, "spring")
    assert service.kit_from_reads(customer_id, "spring") == kit
    assert len(service.store.list_codes(customer_id=customer_id)) == 1


def test_a_kit_for_someone_whose_message_waits_for_an_answer_goes_the_writing_way(service: OutreachService) -> None:
    """Asking for a kit is an engagement: it must answer the message, which only the writing path records."""
    customer_id = some_customer(service)
    service.kit(customer_id, "spring")
    person = customer_key(customer_id)
    policy = ContactPolicy(caps=(), backoff_after_ignored=1, backoff_base_days=1, backoff_factor=2)
    assert service.limiter.reserve(person, EMAIL, MARKETING, at=NOON_IN_PARIS, policy=policy, token="m1").allowed
    assert service.limiter.would_answer(person, at=NOON_IN_PARIS)

    assert service.kit_from_reads(customer_id, "spring") is None
    service.kit(customer_id, "spring")

    assert not service.limiter.would_answer(person, at=NOON_IN_PARIS)
    assert service.kit_from_reads(customer_id, "spring") is not None
    assert service.limiter.reserve(person, EMAIL, MARKETING, at=NOON_IN_PARIS, policy=policy, token="m2").allowed


def test_a_template_slower_than_the_callers_short_deadline_is_deferred_not_refused(service: OutreachService) -> None:
    customer_id = some_customer(service)
    service.kit(customer_id, "spring")
    slow = "{% for i in range(1000) %}{% for j in range(40) %}{% endfor %}{% endfor %}Come along: {{ link }}"
    service.save_template(
        Template(
            id="slow-x", purpose=TemplatePurpose.SHARE, channel=ShareChannel.X, body=slow, updated_at=NOON_IN_PARIS
        ),
        by="test",
    )

    assert service.kit_from_reads(customer_id, "spring", within_s=0.001) is None
    kit = service.kit(customer_id, "spring")
    assert kit.template_ids[ShareChannel.X] == "slow-x"
    assert service.kit_from_reads(customer_id, "spring", within_s=5.0) == kit


SINGLE_READS = ("get_customer", "get_scores", "list_codes", "referrals_from", "events_of", "list_templates")


def test_a_kit_reads_what_it_is_made_of_in_one_store_call(
    service: OutreachService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `kit_reads`, not the six single reads: on Neo4j each read is a transaction of several round trips."""
    customer_id = some_customer(service)
    service.kit(customer_id, "spring")
    calls: list[str] = []
    for name in (*SINGLE_READS, "kit_reads"):
        method = getattr(service.store, name)

        def counted(*args: object, _name: str = name, _method: object = method, **kwargs: object) -> object:
            calls.append(_name)
            return _method(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(service.store, name, counted)

    from_reads = service.kit_from_reads(customer_id, "spring")
    assert calls == ["kit_reads"]
    calls.clear()
    written = service.kit(customer_id, "spring")
    assert calls == ["kit_reads"]
    assert from_reads == written
