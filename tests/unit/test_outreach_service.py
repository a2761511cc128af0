"""The issue's "done when" at service level: an outreach on analysis targets reaches each target with a kit that
fits their segment, within the policy, and every message not sent says why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.analysis import run_analysis
from engine.channels import MaildirAdapter
from engine.limits import SqliteContactLimiter
from engine.outreach import OutreachService
from engine.settings import ContactSettings, Settings
from engine.targeting import choose_targets
from graph.errors import PolicyViolation
from graph.generator import generate_network
from graph.model import ContactChannel, Segment
from graph.outreach import Audience, AudienceKind, MessageStatus, Outreach, OutreachStatus
from graph.sqlite_store import SqliteStore
from tests.program_factories import make_campaign

NOON_IN_PARIS = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)


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
