"""`Store.kit_reads`: what a kit is made of, in one read, equal to the six reads it replaces."""

from __future__ import annotations

from datetime import timedelta

import pytest

from graph.errors import InvalidInput, NotFound
from graph.model import EventKind, GraphBatch, ReferralStatus
from graph.outreach import ShareChannel, TemplatePurpose
from graph.program import CodeStatus
from graph.program_store import Store
from tests.contract.conftest import set_scene
from tests.factories import BASE_TIME, make_customer, make_event, make_referral, make_scores
from tests.outreach_factories import make_template
from tests.program_factories import make_campaign, make_code


def test_kit_reads_give_what_the_separate_reads_give(store: Store) -> None:
    scene = set_scene(store)
    advocate, campaign = scene.referrer, scene.campaign
    other_campaign = make_campaign()
    store.save_campaign(other_campaign)
    newer = store.create_code(make_code(advocate, campaign, created_at=BASE_TIME + timedelta(days=2)))
    store.set_code_status(scene.code.code, CodeStatus.REVOKED, at=BASE_TIME + timedelta(days=2), replaced_by=newer.code)
    store.create_code(make_code(advocate, other_campaign))
    stranger = make_customer()
    second_friend = make_customer()
    store.write_batch(
        GraphBatch(
            customers=[stranger, second_friend],
            referrals=[
                make_referral(advocate, scene.friend, status=ReferralStatus.CONVERTED),
                make_referral(advocate, second_friend),
                make_referral(stranger, advocate),
            ],
            events=[
                *(
                    make_event(advocate, at=BASE_TIME + timedelta(days=day), attributes={"product": f"p{day}"})
                    for day in (1, 5, 3)
                ),
                make_event(advocate, kind=EventKind.IDEA, value=None, at=BASE_TIME + timedelta(days=9)),
                make_event(stranger, at=BASE_TIME + timedelta(days=7)),
            ],
        )
    )
    store.create_code(make_code(stranger, campaign))
    store.write_scores([make_scores(advocate)])
    for template in (
        make_template(id="share-b", channel=ShareChannel.EMAIL, subject="From {{ advocate.first_name }}"),
        make_template(id="share-a"),
        make_template(id="message-a", purpose=TemplatePurpose.MESSAGE, channel=ShareChannel.EMAIL, subject="Hi"),
    ):
        store.save_template(template)

    reads = store.kit_reads(advocate.id, campaign.id, purchases=2)

    assert reads.customer == store.get_customer(advocate.id)
    assert reads.scores == store.get_scores(advocate.id) is not None
    assert reads.codes == tuple(store.list_codes(customer_id=advocate.id, campaign_id=campaign.id))
    assert [c.code for c in reads.codes] == [scene.code.code, newer.code]
    assert reads.active_code == newer
    assert reads.referrals == tuple(store.referrals_from(advocate.id))
    assert [(e.target, e.label) for e in reads.referrals] == sorted(
        [(scene.friend.id, ReferralStatus.CONVERTED.value), (second_friend.id, ReferralStatus.CLICKED.value)]
    )
    assert reads.purchases == tuple(store.events_of(advocate.id, kind=EventKind.PURCHASE, limit=2))
    assert [e.attributes["product"] for e in reads.purchases] == ["p5", "p3"]
    assert reads.share_templates == tuple(store.list_templates(TemplatePurpose.SHARE))
    assert [t.id for t in reads.share_templates] == ["share-a", "share-b"]


def test_a_customer_with_nothing_yet_reads_empty(store: Store) -> None:
    scene = set_scene(store)
    newcomer = make_customer()
    store.upsert_customers([newcomer])

    reads = store.kit_reads(newcomer.id, scene.campaign.id)

    assert reads.customer == newcomer
    assert (reads.scores, reads.codes, reads.referrals, reads.purchases, reads.share_templates) == (
        None,
        (),
        (),
        (),
        (),
    )
    assert reads.active_code is None


def test_a_paused_code_is_not_the_active_one(store: Store) -> None:
    scene = set_scene(store)
    store.set_code_status(scene.code.code, CodeStatus.PAUSED, at=BASE_TIME + timedelta(days=1))

    reads = store.kit_reads(scene.referrer.id, scene.campaign.id)

    assert [c.status for c in reads.codes] == [CodeStatus.PAUSED]
    assert reads.active_code is None


def test_kit_reads_refuse_an_unknown_customer_and_a_negative_limit(store: Store) -> None:
    scene = set_scene(store)

    with pytest.raises(NotFound, match="nobody"):
        store.kit_reads("nobody", scene.campaign.id)
    with pytest.raises(InvalidInput, match="purchases"):
        store.kit_reads(scene.referrer.id, scene.campaign.id, purchases=-1)
