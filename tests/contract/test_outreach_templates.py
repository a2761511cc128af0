"""Templates and outreach plans: keyed by id, replaced on save, listed in a stable order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from graph.errors import NotFound
from graph.model import ContactChannel, Segment
from graph.outreach import (
    Audience,
    AudienceKind,
    OutreachStatus,
    ShareChannel,
    Step,
    TemplatePurpose,
    Variant,
)
from graph.program_store import Store
from tests.contract.conftest import save_outreach_plan
from tests.factories import BASE_TIME
from tests.outreach_factories import make_outreach, make_template
from tests.program_factories import make_campaign


# --- templates ---------------------------------------------------------------------------------------------------
def test_a_saved_template_reads_back_equal_and_saving_again_replaces_it(store: Store) -> None:
    template = make_template(
        segment=Segment.INFLUENCER,
        locale="fr-FR",
        subject="Un cadeau pour {{ friend.first_name }}",
        updated_by="marketer@example.com",
    )
    store.save_template(template)
    assert store.get_template(template.id) == template

    edited = template.model_copy(
        update={"body": "Salut ! {{ link }}", "version": 2, "updated_at": BASE_TIME + timedelta(hours=1)}
    )
    store.save_template(edited)

    assert store.get_template(template.id) == edited
    assert store.list_templates() == [edited]


def test_templates_are_listed_by_id_and_filtered_by_purpose(store: Store) -> None:
    share_b = make_template(id="share-b")
    message = make_template(id="message-a", purpose=TemplatePurpose.MESSAGE, channel=ShareChannel.EMAIL)
    share_a = make_template(id="share-a", channel=ShareChannel.SMS)
    invitation = make_template(id="invite-a", purpose=TemplatePurpose.INVITATION, channel=ShareChannel.EMAIL)
    for template in (share_b, message, share_a, invitation):
        store.save_template(template)

    assert [t.id for t in store.list_templates()] == ["invite-a", "message-a", "share-a", "share-b"]
    assert store.list_templates(TemplatePurpose.SHARE) == [share_a, share_b]
    assert store.list_templates(TemplatePurpose.MESSAGE) == [message]
    assert store.list_templates(TemplatePurpose.INVITATION) == [invitation]


def test_no_templates_list_as_empty(store: Store) -> None:
    assert store.list_templates() == []
    assert store.list_templates(TemplatePurpose.SHARE) == []


def test_a_deleted_template_is_gone_and_the_others_stay(store: Store) -> None:
    kept, dropped = make_template(), make_template()
    store.save_template(kept)
    store.save_template(dropped)

    store.delete_template(dropped.id)

    with pytest.raises(NotFound):
        store.get_template(dropped.id)
    assert store.list_templates() == [kept]


def test_an_unknown_template_is_not_found_to_read_or_delete(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_template("no-such-template")
    with pytest.raises(NotFound):
        store.delete_template("no-such-template")


def test_deleting_a_template_twice_is_not_found_the_second_time(store: Store) -> None:
    template = make_template()
    store.save_template(template)
    store.delete_template(template.id)

    with pytest.raises(NotFound):
        store.delete_template(template.id)


# --- outreach plans ----------------------------------------------------------------------------------------------
def test_a_saved_outreach_reads_back_equal_with_its_variants_steps_and_audience(store: Store) -> None:
    campaign = make_campaign()
    store.save_campaign(campaign)
    outreach = make_outreach(
        campaign.id,
        audience=Audience(kind=AudienceKind.SEGMENTS, segments=(Segment.INFLUENCER, Segment.PROSUMER)),
        variants=(
            Variant(id="a", weight=2.0, template_ids={ShareChannel.WHATSAPP: "share-warm"}),
            Variant(id="b", message_template_id="msg-short", channel_order=(ShareChannel.X, ShareChannel.EMAIL)),
        ),
        steps=(Step(id="invite"), Step(id="remind", delay_days=7, channel=ContactChannel.SMS)),
        status=OutreachStatus.RUNNING,
        started_at=BASE_TIME + timedelta(hours=2),
    )

    store.save_outreach(outreach)

    assert store.get_outreach(outreach.id) == outreach
    assert store.list_outreach() == [outreach]


def test_saving_an_outreach_again_replaces_it(store: Store) -> None:
    outreach = save_outreach_plan(store)
    paused = outreach.model_copy(update={"status": OutreachStatus.PAUSED, "name": "Spring, paused"})

    store.save_outreach(paused)

    assert store.get_outreach(outreach.id) == paused
    assert store.list_outreach() == [paused]


def test_outreach_plans_are_listed_oldest_first(store: Store) -> None:
    campaign = make_campaign()
    store.save_campaign(campaign)
    late = make_outreach(campaign.id, created_at=BASE_TIME + timedelta(days=2))
    early = make_outreach(campaign.id, created_at=BASE_TIME)
    middle = make_outreach(campaign.id, created_at=BASE_TIME + timedelta(days=1))
    for outreach in (late, early, middle):
        store.save_outreach(outreach)

    assert [o.id for o in store.list_outreach()] == [early.id, middle.id, late.id]


def test_an_outreach_for_an_unknown_campaign_is_refused_and_not_stored(store: Store) -> None:
    outreach = make_outreach("no-such-campaign")

    with pytest.raises(NotFound):
        store.save_outreach(outreach)

    with pytest.raises(NotFound):
        store.get_outreach(outreach.id)
    assert store.list_outreach() == []


def test_an_unknown_outreach_is_not_found(store: Store) -> None:
    assert store.list_outreach() == []
    with pytest.raises(NotFound):
        store.get_outreach("no-such-outreach")
