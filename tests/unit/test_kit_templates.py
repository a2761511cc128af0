"""The built-in kit templates under templates/kits/: complete, valid, personal, and safe for any name."""

from __future__ import annotations

import re
from functools import cache
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.kits import DEFAULT_CHANNEL_ORDER, Impact, KitContext, KitRenderer, kit_context, sample_context
from graph.model import ContactChannel, Segment
from graph.outreach import ShareChannel, TemplatePurpose
from tests.factories import make_customer, make_scores
from tests.program_factories import make_campaign, make_code

RENDERER = KitRenderer()
BUILTINS = RENDERER.builtin_templates
SEGMENTS: list[Segment | None] = [*Segment, None]
LOCALES = ["en", "fr", "fr-CA", "de"]
SENT_CHANNELS = [ContactChannel.EMAIL, ContactChannel.SMS, ContactChannel.WHATSAPP]
BASE = "https://shop.example"


def personal(segment: Segment | None, locale: str) -> KitContext:
    ctx = sample_context(locale=locale, segment=segment)
    return ctx.model_copy(update={"advocate": ctx.advocate.model_copy(update={"segment": segment})})


def test_every_share_channel_has_a_text_in_english_and_french_for_each_kind_of_customer() -> None:
    have = {(t.purpose, t.channel, t.segment, t.locale) for t in BUILTINS}
    for channel in ShareChannel:
        for segment in (None, Segment.INFLUENCER, Segment.PROSUMER):
            for locale in ("en", "fr"):
                assert (TemplatePurpose.SHARE, channel, segment, locale) in have


def test_messages_and_invitations_exist_for_every_channel_the_engine_sends_on() -> None:
    have = {(t.purpose, t.channel, t.locale): t for t in BUILTINS if t.segment is None}
    for purpose in (TemplatePurpose.MESSAGE, TemplatePurpose.INVITATION):
        for channel in (ShareChannel.EMAIL, ShareChannel.SMS, ShareChannel.WHATSAPP):
            for locale in ("en", "fr"):
                assert (purpose, channel, locale) in have
        assert have[(purpose, ShareChannel.EMAIL, "en")].subject
        assert have[(purpose, ShareChannel.EMAIL, "fr")].subject


@pytest.mark.parametrize("template", BUILTINS, ids=[t.id for t in BUILTINS])
def test_every_builtin_template_passes_the_validation_marketers_face(template: object) -> None:
    RENDERER.validate(template)  # type: ignore[arg-type]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("segment", SEGMENTS, ids=[s.value if s else "none" for s in SEGMENTS])
def test_every_builtin_template_renders_for_every_segment_and_locale(segment: Segment | None, locale: str) -> None:
    for ctx in (personal(segment, locale), sample_context(locale=locale, sparse=True)):
        for template in BUILTINS:
            assert RENDERER.preview(template, ctx).strip(), template.id
        kit = RENDERER.render_kit(ctx)
        assert [m.channel for m in kit.messages] == list(DEFAULT_CHANNEL_ORDER)
        for message in kit.messages:
            assert message.text
            assert "{{" not in message.text
            assert "{%" not in message.text
        for purpose in (TemplatePurpose.MESSAGE, TemplatePurpose.INVITATION):
            for channel in SENT_CHANNELS:
                rendered = RENDERER.render_message(ctx, purpose=purpose, channel=channel)
                assert ctx.unsubscribe_url in rendered.text
                assert ctx.link in rendered.text
                if channel is ContactChannel.EMAIL:
                    assert rendered.subject
                    assert f'href="{ctx.unsubscribe_url}"' in (rendered.html or "")


def test_a_french_customer_gets_french_and_an_unknown_language_english() -> None:
    french = RENDERER.render_message(
        personal(None, "fr-CA"), purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.EMAIL
    )
    assert "3 amis vous ont rejoints" in french.text
    assert "Se désabonner" in french.text
    assert 'lang="fr"' in (french.html or "")
    german = RENDERER.render_message(
        personal(None, "de"), purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.EMAIL
    )
    assert "3 friends joined through you" in german.text


def whatsapp_text(segment: Segment | None) -> str:
    kit = RENDERER.render_kit(personal(segment, "en"), channels=[ShareChannel.WHATSAPP])
    return kit.messages[0].text


def test_influencers_broadcast_prosumers_invite_ideas_and_advocates_write_a_personal_note() -> None:
    influencer, prosumer, advocate, passive = (
        whatsapp_text(s) for s in (Segment.INFLUENCER, Segment.PROSUMER, Segment.ADVOCATE, Segment.PASSIVE)
    )
    assert influencer.startswith("Hi everyone!")
    assert "Trail runners" in influencer
    assert "tell me what you think" in prosumer
    assert f"{BASE}/ideas/ALEX10" in prosumer
    assert "thought of you" in advocate
    assert advocate == passive
    assert len({influencer, prosumer, advocate}) == 3


def test_the_message_to_a_customer_is_personal() -> None:
    customer = make_customer(name="Maya Okafor", attributes={"product": "Rain jacket"})
    campaign = make_campaign()
    ctx = kit_context(
        customer,
        make_code(customer, campaign),
        campaign,
        scores=make_scores(customer, segment=Segment.PROSUMER),
        impact=Impact(friends_joined=3, friends_converted=2),
        public_base_url=BASE,
        unsubscribe_url=f"{BASE}/u/t",
        preferences_url=f"{BASE}/p/t",
        idea_url=f"{BASE}/ideas/x",
        kit_url=f"{BASE}/kit/x",
    )
    message = RENDERER.render_message(ctx, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.EMAIL)
    for text in (message.text, message.html or ""):
        assert "Hi Maya" in text
        assert "3 friends joined through you" in text
        assert "2 of them bought something" in text
        assert "Rain jacket" in text
        assert "5 EUR off your first order" in text
        assert f"{BASE}/kit/x" in text
        assert f"{BASE}/ideas/x" in text
    assert message.subject == "3 friends joined through you, thank you"


names = st.text(
    st.one_of(
        st.sampled_from("<>&\"'{}%#/"),
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), max_codepoint=0x2FFF),
    ),
    min_size=1,
    max_size=80,
).filter(lambda s: s.strip() != "")
"""Any printable text, with the characters that matter to HTML and templates drawn often."""


def named(name: str, segment: Segment | None) -> KitContext:
    customer = make_customer(id="named", name=name, attributes={"product": name[:100], "community": name})
    campaign = make_campaign(id="spring")
    return kit_context(
        customer,
        make_code(customer, campaign, code="NAMED1"),
        campaign,
        scores=make_scores(customer, segment=segment) if segment else None,
        impact=Impact(friends_joined=1),
        public_base_url=BASE,
        unsubscribe_url=f"{BASE}/u/t",
        preferences_url=f"{BASE}/p/t",
        idea_url=f"{BASE}/ideas/x",
    )


def tags(html: str) -> list[str]:
    return re.findall(r"<[^>]*>", html)


@cache
def baseline(purpose: TemplatePurpose, segment: Segment | None) -> list[str]:
    """The tags the template itself writes, for a plain name."""
    return tags(
        RENDERER.render_message(named("Alex", segment), purpose=purpose, channel=ContactChannel.EMAIL).html or ""
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, segment=st.sampled_from(SEGMENTS))
def test_any_printable_name_renders_and_never_adds_markup(name: str, segment: Segment | None) -> None:
    ctx = named(name, segment)
    for purpose in (TemplatePurpose.MESSAGE, TemplatePurpose.INVITATION):
        html = RENDERER.render_message(ctx, purpose=purpose, channel=ContactChannel.EMAIL).html or ""
        assert tags(html) == baseline(purpose, segment)
    kit = RENDERER.render_kit(ctx)
    whatsapp = next(m for m in kit.messages if m.channel is ShareChannel.WHATSAPP)
    assert parse_qs(urlsplit(whatsapp.share_url or "").query)["text"] == [whatsapp.text]
