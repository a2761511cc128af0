"""engine.kits: choosing templates, the sandbox and its budget, kits and messages, and the context they speak of."""

from __future__ import annotations

import gc
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import qrcode  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from engine.kits import (
    DEFAULT_CHANNEL_ORDER,
    KIT_VARIABLES,
    MAX_RANGE,
    X_TEXT_LIMIT,
    Impact,
    KitContext,
    KitRenderer,
    format_money,
    impact_from_edges,
    impacts_by_referrer,
    kit_context,
    load_kit_context,
    purchase_names,
    qr_svg,
    reward_words,
    sample_context,
    share_url,
)
from graph.errors import InvalidInput, NotFound
from graph.model import ContactChannel, EdgeRecord, EdgeType, ReferralStatus, Segment
from graph.outreach import ShareChannel, Template, TemplatePurpose, Variant
from graph.program import RewardKind, RewardRule, RewardSide
from graph.sqlite_store import SqliteStore
from tests.factories import BASE_TIME, make_customer, make_referral, make_scores
from tests.outreach_factories import make_template
from tests.program_factories import make_campaign, make_code

BASE = "https://shop.example"


@pytest.fixture(scope="module")
def renderer() -> KitRenderer:
    return KitRenderer()


def context(
    *,
    name: str = "Jane Doe",
    locale: str = "en",
    segment: Segment | None = Segment.ADVOCATE,
    code: str = "JANE10",
    **attrs: object,
) -> KitContext:
    customer = make_customer(name=name, locale=locale, attributes=attrs or {"product": "Trail shoes"})
    campaign = make_campaign()
    return kit_context(
        customer,
        make_code(customer, campaign, code=code),
        campaign,
        scores=make_scores(customer, segment=segment, community=4) if segment is not None else None,
        impact=Impact(friends_joined=3, friends_converted=1),
        public_base_url=BASE,
        unsubscribe_url=f"{BASE}/u/tok",
        preferences_url=f"{BASE}/p/tok",
        idea_url=f"{BASE}/ideas/JANE10",
    )


def share(body: str, **overrides: object) -> Template:
    return make_template(body=body, **overrides)


def problems_of(renderer: KitRenderer, template: Template) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        renderer.validate(template)
    assert caught.value.problems, "a refusal names its problems"
    return [str(p) for p in caught.value.problems]


# --- choosing --------------------------------------------------------------------------------------------------
def test_a_marketer_template_is_chosen_before_the_builtin_one(renderer: KitRenderer) -> None:
    mine = share("Try it: {{ link }}", id="mine")
    chosen = renderer.choose(TemplatePurpose.SHARE, ShareChannel.WHATSAPP, segment=Segment.ADVOCATE, marketer=[mine])
    assert chosen == mine


def test_a_template_for_the_customers_segment_beats_one_for_any_segment(renderer: KitRenderer) -> None:
    generic = share("Any: {{ link }}", id="generic")
    prosumer = share("Ideas: {{ link }}", id="prosumer", segment=Segment.PROSUMER)
    both = [generic, prosumer]
    assert (
        renderer.choose(TemplatePurpose.SHARE, ShareChannel.WHATSAPP, segment=Segment.PROSUMER, marketer=both)
        == prosumer
    )
    assert (
        renderer.choose(TemplatePurpose.SHARE, ShareChannel.WHATSAPP, segment=Segment.INFLUENCER, marketer=both)
        == generic
    )


def test_exact_locale_beats_its_language_which_beats_english(renderer: KitRenderer) -> None:
    en, fr, fr_ca = (
        share(f"{loc}: {{{{ link }}}}", id=f"t-{loc.lower()}", locale=loc, channel=ShareChannel.SMS)
        for loc in ("en", "fr", "fr-CA")
    )

    def pick(locale: str, pool: list[Template]) -> Template:
        return renderer.choose(TemplatePurpose.SHARE, ShareChannel.SMS, segment=None, locale=locale, marketer=pool)

    assert pick("fr-CA", [en, fr, fr_ca]) == fr_ca
    assert pick("fr_ca", [en, fr, fr_ca]) == fr_ca
    assert pick("fr-BE", [en, fr, fr_ca]) == fr
    assert pick("fr-BE", [en, fr_ca]) == en
    assert pick("de", [en, fr, fr_ca]) == en


def test_templates_of_another_purpose_channel_segment_or_language_are_never_chosen(renderer: KitRenderer) -> None:
    others = [
        make_template(id="msg", purpose=TemplatePurpose.MESSAGE),
        make_template(id="sms", channel=ShareChannel.SMS),
        make_template(id="infl", segment=Segment.INFLUENCER),
        make_template(id="de", locale="de"),
    ]
    chosen = renderer.choose(TemplatePurpose.SHARE, ShareChannel.WHATSAPP, segment=Segment.PROSUMER, marketer=others)
    assert chosen.id == "builtin-share-whatsapp-prosumer-en"


def test_builtins_fall_back_from_segment_and_locale_to_the_generic_english_note(renderer: KitRenderer) -> None:
    chosen = renderer.choose(TemplatePurpose.SHARE, ShareChannel.EMAIL, segment=Segment.PASSIVE, locale="de-AT")
    assert chosen.id == "builtin-share-email-en"
    chosen = renderer.choose(TemplatePurpose.SHARE, ShareChannel.EMAIL, segment=Segment.INFLUENCER, locale="fr-CA")
    assert chosen.id == "builtin-share-email-influencer-fr"


def test_of_two_equally_specific_marketer_templates_the_newer_wins(renderer: KitRenderer) -> None:
    old = share("Old {{ link }}", id="old")
    new = share("New {{ link }}", id="new", updated_at=BASE_TIME + timedelta(days=1))
    assert renderer.choose(TemplatePurpose.SHARE, ShareChannel.WHATSAPP, marketer=[old, new]) == new


def test_choose_raises_not_found_when_no_template_fits(tmp_path: Path) -> None:
    empty = KitRenderer(tmp_path)
    assert empty.builtin_templates == ()
    with pytest.raises(NotFound):
        empty.choose(TemplatePurpose.SHARE, ShareChannel.X, segment=None)


def test_a_misnamed_builtin_file_is_refused_when_loading(tmp_path: Path) -> None:
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "whatsapp.celebrity.txt.j2").write_text("{{ link }}", encoding="utf-8")
    with pytest.raises(InvalidInput, match="celebrity"):
        KitRenderer(tmp_path)


# --- validation ------------------------------------------------------------------------------------------------
def test_validate_accepts_a_good_marketer_template(renderer: KitRenderer) -> None:
    good = share(
        "Hi! {% if advocate.purchases %}I love my {{ advocate.purchases[0] | lower }}.{% endif %}\n"
        "{% for p in advocate.purchases %}{{ loop.index }}. {{ p }}{{ ', ' if not loop.last }}{% endfor %}\n"
        "{{ friend_offer | default('A treat', true) }} with {{ link }} ({{ code }})",
        subject="{{ advocate.first_name | upper }} recommends",
    )
    renderer.validate(good)


def test_a_syntax_error_is_reported_with_its_line(renderer: KitRenderer) -> None:
    problems = problems_of(renderer, share("Hi,\n\nHere: {{ link }\nBye", id="broken"))
    assert problems == ["broken.body:3: unexpected '}'"]


def test_a_syntax_error_in_the_subject_is_reported_against_the_subject(renderer: KitRenderer) -> None:
    problems = problems_of(renderer, share("{{ link }}", id="subj", subject="{% if %}"))
    assert len(problems) == 1
    assert problems[0].startswith("subj.subject:1:")


def test_unknown_variables_are_refused_by_name_and_line(renderer: KitRenderer) -> None:
    problems = problems_of(renderer, share("{{ link }}\n{{ customer.email }} {{ password }}", id="leak"))
    assert any(p.startswith("leak.body:2: unknown variable 'customer'") for p in problems)
    assert any(p.startswith("leak.body:2: unknown variable 'password'") for p in problems)
    assert "customer" not in KIT_VARIABLES


def test_an_oversized_template_is_refused() -> None:
    small = KitRenderer(max_template_chars=100)
    problems = problems_of(small, share("{{ link }}" + "x" * 200))
    assert "at most 100" in problems[0]


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__ }}",
        "{{ ''['__class__'] }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ link.__class__.__mro__[1].__subclasses__() }}",
        "{{ link.mro() }}",
        "{{ advocate.mro }}",
        "{{ self }}",
        "{{ link.format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ lipsum(10**9) }}",
        "{{ advocate.purchases.pop() }}",
        "{{ link.encode() }}",
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
        "{% include 'x' %}",
        "{% autoescape false %}{{ advocate.name }}{% endautoescape %}",
        "{{ advocate.name | safe }}",
        "{{ link | center(1000000000) }}",
    ],
    ids=[
        "class",
        "class-by-item",
        "globals",
        "subclasses",
        "mro-call",
        "mro-attribute",
        "self",
        "format",
        "format-width",
        "percent-width",
        "lipsum",
        "mutation",
        "encode",
        "macro-recursion",
        "include",
        "autoescape-off",
        "safe-filter",
        "center",
    ],
)
def test_sandbox_escapes_and_unsafe_constructs_are_refused(renderer: KitRenderer, body: str) -> None:
    problems_of(renderer, share(body))
    with pytest.raises(InvalidInput):
        renderer.preview(share(body), context())


def test_an_attribute_name_built_at_render_time_still_fails_safely(renderer: KitRenderer) -> None:
    sneaky = share("{% set k = '__cla' ~ 'ss__' %}{{ link[k] }}")
    assert any("unsafe" in p for p in problems_of(renderer, sneaky))
    with pytest.raises(InvalidInput, match="unsafe"):
        renderer.preview(sneaky, context())


def test_a_billion_item_range_is_refused_without_running() -> None:
    renderer = KitRenderer(render_timeout_s=5.0)
    started = time.monotonic()
    problems = problems_of(renderer, share("{% for i in range(10**9) %}x{% endfor %}"))
    assert f"at most {MAX_RANGE}" in problems[0]
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "body",
    [
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}"
        "{% endfor %}",
        "{% for a in link %}{% for b in link %}{% for c in link %}{% for d in link %}{% for e in link %}"
        "{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
    ],
    ids=["ranges", "characters"],
)
def test_nested_loops_stop_at_the_time_limit(body: str) -> None:
    renderer = KitRenderer(render_timeout_s=0.2)
    started = time.monotonic()
    problems = problems_of(renderer, share(body))
    assert time.monotonic() - started < 1.5
    assert "longer than 0.2 s" in problems[0]


def test_nested_loops_that_print_stop_at_the_output_limit(renderer: KitRenderer) -> None:
    problems = problems_of(
        renderer, share("{% for a in range(1000) %}{% for b in range(1000) %}xx{% endfor %}{% endfor %}")
    )
    assert "longer than 20,000 characters" in problems[0]


@pytest.mark.parametrize(
    "body",
    [
        "{{ link * 100000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ link | replace('', link) | replace('', link) | replace('', link) }}",
        "{{ range(1000) | join(link * 600) }}",
        "{% set a = link * 500 %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{{ a }}",
        "{% set l = [link] * 15000 %}{% set l = l + l %}{{ l | length }}",
    ],
    ids=["repeat", "power", "replace", "join", "concat", "list-growth"],
)
def test_text_that_would_grow_past_the_limit_is_refused_before_it_is_built(renderer: KitRenderer, body: str) -> None:
    problems = problems_of(renderer, share(body))
    assert "more than" in problems[0] or "not allowed" in problems[0]


def test_validate_tries_the_template_on_a_customer_who_has_nothing(renderer: KitRenderer) -> None:
    fragile = share("I love my {{ advocate.purchases[0] }}: {{ link }}")
    renderer.preview(fragile, context())
    assert problems_of(renderer, fragile)
    with pytest.raises(InvalidInput):
        renderer.preview(fragile, sample_context(sparse=True))


def test_rendering_leaves_the_callers_trace_function_in_place(renderer: KitRenderer) -> None:
    calls: list[str] = []

    def tracer(frame: object, event: str, arg: object) -> None:
        calls.append(event)

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        renderer.preview(share("{{ link }}"), context())
        with pytest.raises(InvalidInput):
            renderer.preview(share("{% for a in range(10**9) %}{% endfor %}"), context())
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)


# --- kits ------------------------------------------------------------------------------------------------------
def test_a_kit_has_one_message_per_share_channel_in_the_default_order(renderer: KitRenderer) -> None:
    ctx = context()
    kit = renderer.render_kit(ctx)
    assert [m.channel for m in kit.messages] == list(DEFAULT_CHANNEL_ORDER)
    assert kit.link == f"{BASE}/r/JANE10"
    assert kit.customer_id == ctx.customer_id
    assert set(kit.template_ids) == set(DEFAULT_CHANNEL_ORDER)
    assert kit.variant_id is None


def test_a_variant_sets_the_channel_order_and_overrides_templates(renderer: KitRenderer) -> None:
    mine = share("Variant B says {{ link }}", id="variant-b", channel=ShareChannel.SMS)
    variant = Variant(
        id="b", template_ids={ShareChannel.SMS: "variant-b"}, channel_order=(ShareChannel.SMS, ShareChannel.X)
    )
    kit = renderer.render_kit(context(), variant=variant, marketer=[mine])
    assert [m.channel for m in kit.messages] == [ShareChannel.SMS, ShareChannel.X]
    assert kit.messages[0].text == f"Variant B says {BASE}/r/JANE10"
    assert kit.template_ids[ShareChannel.SMS] == "variant-b"
    assert kit.variant_id == "b"


def test_a_variant_naming_an_unknown_template_is_not_found(renderer: KitRenderer) -> None:
    variant = Variant(id="b", template_ids={ShareChannel.SMS: "gone"})
    with pytest.raises(NotFound):
        renderer.render_kit(context(), variant=variant)


def test_channels_asked_for_come_in_the_order_asked(renderer: KitRenderer) -> None:
    kit = renderer.render_kit(context(), channels=[ShareChannel.COPY_LINK, ShareChannel.EMAIL])
    assert [m.channel for m in kit.messages] == [ShareChannel.COPY_LINK, ShareChannel.EMAIL]
    email = kit.messages[1]
    assert email.subject
    assert kit.messages[0].share_url is None


def test_every_message_carries_the_link_and_x_sends_it_as_the_url(renderer: KitRenderer) -> None:
    mine = share("No link here", id="bare-x", channel=ShareChannel.X)
    bare = share("No link here", id="bare-wa")
    kit = renderer.render_kit(context(), marketer=[mine, bare])
    by_channel = {m.channel: m for m in kit.messages}
    assert by_channel[ShareChannel.WHATSAPP].text == f"No link here\n{kit.link}"
    x = urlsplit(by_channel[ShareChannel.X].share_url or "")
    assert parse_qs(x.query) == {"text": ["No link here"], "url": [kit.link]}
    for channel in (ShareChannel.EMAIL, ShareChannel.SMS, ShareChannel.LINKEDIN, ShareChannel.COPY_LINK):
        assert kit.link in by_channel[channel].text


def test_share_urls_are_url_encoded(renderer: KitRenderer) -> None:
    tricky = share("A&B #1 ?x=y 100% <ok> {{ link }}", id="tricky")
    mail = share("Body & more {{ link }}", id="mail", channel=ShareChannel.EMAIL, subject="Hi & bye?")
    kit = renderer.render_kit(context(), marketer=[tricky, mail], channels=[ShareChannel.WHATSAPP, ShareChannel.EMAIL])
    whatsapp, email = kit.messages
    url = whatsapp.share_url or ""
    assert url.startswith("https://wa.me/?text=")
    assert not set(url.removeprefix("https://wa.me/?text=")) & set(" &#<>?")
    assert parse_qs(urlsplit(url).query)["text"] == [whatsapp.text]
    mailto = email.share_url or ""
    assert mailto.startswith("mailto:?subject=Hi%20%26%20bye%3F&body=Body%20%26%20more%20")
    assert unquote(mailto.split("&body=")[1]) == email.text


@pytest.mark.parametrize(
    ("channel", "prefix"),
    [
        (ShareChannel.WHATSAPP, "https://wa.me/?text="),
        (ShareChannel.X, "https://twitter.com/intent/tweet?text="),
        (ShareChannel.LINKEDIN, "https://www.linkedin.com/sharing/share-offsite/?url="),
        (ShareChannel.FACEBOOK, "https://www.facebook.com/sharer/sharer.php?u="),
        (ShareChannel.EMAIL, "mailto:?subject="),
        (ShareChannel.SMS, "sms:?&body="),
    ],
)
def test_each_channel_has_its_share_link(channel: ShareChannel, prefix: str) -> None:
    url = share_url(channel, text="Hi there", link=f"{BASE}/r/A B", subject="S")
    assert url is not None
    assert url.startswith(prefix)
    assert " " not in url


def test_an_x_post_fits_in_one_post(renderer: KitRenderer) -> None:
    long = share("word " * 200, id="long-x", channel=ShareChannel.X)
    kit = renderer.render_kit(context(), marketer=[long], channels=[ShareChannel.X])
    assert len(kit.messages[0].text) <= X_TEXT_LIMIT
    assert kit.messages[0].text.endswith("…")


def test_the_qr_code_is_a_well_formed_inline_svg_of_the_link() -> None:
    link = f"{BASE}/r/JANE10"
    svg = qr_svg(link)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert root.find(f"{ns}title") is not None
    assert root.find(f"{ns}title").text == link  # type: ignore[union-attr]
    path = root.find(f"{ns}path")
    assert path is not None
    assert "href" not in svg
    drawn = set()
    for x, y, n in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", path.get("d", "")):
        drawn |= {(int(x) + i, int(y)) for i in range(int(n))}
    code = qrcode.QRCode(border=4, mask_pattern=2)
    code.add_data(link)
    code.make(fit=True)
    dark = {(x, y) for y, row in enumerate(code.get_matrix()) for x, on in enumerate(row) if on}
    assert drawn == dark
    assert len(dark) > 100
    assert qr_svg(f"{BASE}/r/OTHER1") != svg


def test_a_kit_reports_rewards_segment_locale_and_assets(renderer: KitRenderer) -> None:
    ctx = context(segment=Segment.INFLUENCER)
    kit = renderer.render_kit(ctx)
    assert kit.reward_for_you == ctx.reward_for_you
    assert "10 EUR credit for each friend who buys" in kit.reward_for_you
    assert kit.reward_for_friend == "5 EUR off your first order"
    assert kit.segment is Segment.INFLUENCER
    assert kit.locale == "en"
    assert kit.qr_url == f"{BASE}/qr/{kit.code}.svg"
    assert kit.template_ids[ShareChannel.WHATSAPP] == "builtin-share-whatsapp-influencer-en"


# --- messages --------------------------------------------------------------------------------------------------
def test_an_email_message_has_subject_text_and_html_each_with_the_unsubscribe_link(renderer: KitRenderer) -> None:
    ctx = context()
    message = renderer.render_message(ctx, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.EMAIL)
    assert message.subject
    assert "\n" not in message.subject
    assert ctx.unsubscribe_url in message.text
    assert message.html is not None
    assert f'href="{ctx.unsubscribe_url}"' in message.html
    assert message.template_id == "builtin-message-email-en"


@pytest.mark.parametrize("channel", [ContactChannel.SMS, ContactChannel.WHATSAPP, ContactChannel.PUSH])
def test_short_channels_get_text_only_with_the_unsubscribe_link(renderer: KitRenderer, channel: ContactChannel) -> None:
    ctx = context()
    message = renderer.render_message(ctx, purpose=TemplatePurpose.MESSAGE, channel=channel)
    assert message.subject is None
    assert message.html is None
    assert ctx.unsubscribe_url in message.text
    assert ctx.link in message.text


def test_a_marketer_template_without_the_unsubscribe_link_gets_the_footer(renderer: KitRenderer) -> None:
    ctx = context()
    bare = make_template(id="bare", purpose=TemplatePurpose.MESSAGE, channel=ShareChannel.SMS, body="Share {{ link }}")
    own = make_template(
        id="own",
        purpose=TemplatePurpose.MESSAGE,
        channel=ShareChannel.SMS,
        body="{{ link }} stop: {{ unsubscribe_url }}",
    )
    footed = renderer.render_message(ctx, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.SMS, marketer=[bare])
    assert footed.text == f"Share {ctx.link}\n\nStop: {ctx.unsubscribe_url}"
    kept = renderer.render_message(
        ctx, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.SMS, marketer=[own], template_id="own"
    )
    assert kept.text.count(ctx.unsubscribe_url) == 1


def test_a_marketers_html_email_is_their_text_escaped_whole(renderer: KitRenderer) -> None:
    ctx = context(name="<script>alert(1)</script> Smith")
    mail = make_template(
        id="mail",
        purpose=TemplatePurpose.MESSAGE,
        channel=ShareChannel.EMAIL,
        subject="For {{ advocate.first_name }}\nBcc: all@example.com",
        body="<b>Hi</b> {{ advocate.name }}!\n\nYour link: {{ link }}",
    )
    message = renderer.render_message(
        ctx, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.EMAIL, marketer=[mail]
    )
    assert message.html is not None
    assert "<script>" not in message.html
    assert "<b>" not in message.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Smith" in message.html
    assert f'<a href="{ctx.link}">{ctx.link}</a>' in message.html
    assert message.subject == "For <script>alert(1)</script> Bcc: all@example.com"
    assert "<script>alert(1)</script> Smith" in message.text


def test_a_customer_named_script_never_appears_unescaped_in_builtin_html(renderer: KitRenderer) -> None:
    ctx = context(name="<script>x</script>", product="<img src=x onerror=alert(1)>")
    for purpose in (TemplatePurpose.MESSAGE, TemplatePurpose.INVITATION):
        html = renderer.render_message(ctx, purpose=purpose, channel=ContactChannel.EMAIL).html or ""
        assert "<script>" not in html
        assert "<img" not in html
        assert "&lt;script&gt;" in html


def test_an_invitation_speaks_for_the_advocate_and_offers_a_way_out(renderer: KitRenderer) -> None:
    ctx = context(name="Jane Doe").model_copy(update={"unsubscribe_url": f"{BASE}/u/friend-token"})
    for channel in (ContactChannel.EMAIL, ContactChannel.SMS, ContactChannel.WHATSAPP):
        message = renderer.render_message(ctx, purpose=TemplatePurpose.INVITATION, channel=channel)
        assert "Jane" in message.text
        assert "Doe" not in message.text
        assert ctx.friend_offer in message.text
        assert ctx.link in message.text
        assert message.text.count(f"{BASE}/u/friend-token") == 1
    email = renderer.render_message(ctx, purpose=TemplatePurpose.INVITATION, channel=ContactChannel.EMAIL)
    assert email.subject == "Jane thought you'd like this"
    assert "Don't invite me again" in (email.html or "")


def test_impact_is_mentioned_only_when_someone_joined(renderer: KitRenderer) -> None:
    ctx = context()
    with_impact = renderer.render_message(ctx, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.EMAIL)
    assert "3 friends joined through you" in with_impact.text
    assert "3 friends joined through you" in (with_impact.subject or "")
    one = ctx.model_copy(update={"advocate": ctx.advocate.model_copy(update={"impact": Impact(friends_joined=1)})})
    assert (
        "1 friend joined through you"
        in renderer.render_message(one, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.SMS).text
    )
    none = ctx.model_copy(update={"advocate": ctx.advocate.model_copy(update={"impact": Impact()})})
    quiet = renderer.render_message(none, purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.EMAIL)
    assert "joined through you" not in quiet.text
    assert "joined through you" not in (quiet.html or "")


def test_share_texts_are_not_sent_as_messages(renderer: KitRenderer) -> None:
    with pytest.raises(InvalidInput):
        renderer.render_message(context(), purpose=TemplatePurpose.SHARE, channel=ContactChannel.EMAIL)


def test_a_message_template_id_must_name_a_template_of_that_purpose(renderer: KitRenderer) -> None:
    wrong = make_template(id="wrong")
    with pytest.raises(InvalidInput, match="share template"):
        renderer.render_message(
            context(),
            purpose=TemplatePurpose.MESSAGE,
            channel=ContactChannel.SMS,
            marketer=[wrong],
            template_id="wrong",
        )
    with pytest.raises(NotFound):
        renderer.render_message(
            context(), purpose=TemplatePurpose.MESSAGE, channel=ContactChannel.SMS, template_id="gone"
        )


def test_preview_shows_subject_then_text_for_one_customer(renderer: KitRenderer) -> None:
    template = make_template(body="Hi {{ advocate.first_name }}: {{ link }}", subject="For {{ advocate.first_name }}")
    assert renderer.preview(template, context(name="Ann Lee")) == f"For Ann\n\nHi Ann: {BASE}/r/JANE10"


# --- the context -----------------------------------------------------------------------------------------------
def test_the_context_takes_name_segment_community_purchases_rewards_and_link() -> None:
    ctx = context(name="  Jane   Q. Doe ", segment=Segment.PROSUMER, product="Trail shoes", community="Trail runners")
    assert ctx.advocate.first_name == "Jane"
    assert ctx.advocate.name == "Jane Q. Doe"
    assert ctx.advocate.segment is Segment.PROSUMER
    assert ctx.advocate.community == 4
    assert ctx.advocate.community_name == "Trail runners"
    assert ctx.advocate.purchases == ("Trail shoes",)
    assert ctx.link == f"{BASE}/r/JANE10"
    assert ctx.friend_offer == "5 EUR off your first order"
    assert ctx.reward_for_you == (
        "10 EUR credit for each friend who buys (up to 50 friends); a badge at your 3rd; 50 EUR cash at your 10th"
    )


def test_a_campaign_without_a_friend_offer_offers_the_friend_rewards() -> None:
    customer = make_customer(locale="fr")
    campaign = make_campaign(friend_offer="")
    ctx = kit_context(
        customer,
        make_code(customer, campaign),
        campaign,
        scores=None,
        impact=Impact(),
        public_base_url=BASE,
        unsubscribe_url=f"{BASE}/u",
        preferences_url=f"{BASE}/p",
    )
    assert ctx.friend_offer == ctx.reward_for_friend == "5 EUR de réduction sur votre première commande"
    assert ctx.advocate.segment is None


def test_a_code_of_another_customer_is_refused() -> None:
    customer, other = make_customer(), make_customer()
    campaign = make_campaign()
    with pytest.raises(InvalidInput):
        kit_context(
            customer,
            make_code(other, campaign),
            campaign,
            scores=None,
            impact=Impact(),
            public_base_url=BASE,
            unsubscribe_url=f"{BASE}/u",
            preferences_url=f"{BASE}/p",
        )


def test_links_in_a_context_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        sample_context().model_validate({**sample_context().model_dump(), "unsubscribe_url": "javascript:alert(1)"})


def test_reward_words_describe_each_rule() -> None:
    rules = [
        RewardRule(id="pct", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, percent=10, min_order_minor=2000),
        RewardRule(id="early", side=RewardSide.REFERRER, kind=RewardKind.EARLY_ACCESS, milestone=1),
        RewardRule(id="welcome", side=RewardSide.FRIEND, kind=RewardKind.CASH, amount_minor=1250, min_order_minor=5000),
        RewardRule(id="badge", side=RewardSide.FRIEND, kind=RewardKind.BADGE),
    ]
    assert reward_words(rules, RewardSide.REFERRER, currency="EUR") == (
        "10% credit for each friend who spends 20 EUR or more; early access at your 1st"
    )
    assert reward_words(rules, RewardSide.FRIEND, currency="EUR") == (
        "12.50 EUR back on a first order of 50 EUR or more; a badge"
    )
    assert reward_words(rules, RewardSide.REFERRER, currency="EUR", locale="fr-CA") == (
        "10% de crédit pour chaque ami qui dépense au moins 20 EUR ; un accès en avant-première à votre 1er ami"
    )
    assert reward_words([], RewardSide.FRIEND, currency="EUR") == ""


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({}, "10 EUR credit for each friend who buys"),
        ({"amount_minor": 2000}, "20 EUR credit for each friend who buys"),
        ({"amount_minor": 0, "percent": 5}, "5% credit for each friend who buys"),
        ({"kind": RewardKind.CASH}, "10 EUR cash for each friend who buys"),
        ({"min_order_minor": 3000}, "10 EUR credit for each friend who spends 30 EUR or more"),
        ({"max_per_customer": 5}, "10 EUR credit for each friend who buys (up to 5 friends)"),
        ({"milestone": 3}, "10 EUR credit at your 3rd"),
        ({"side": RewardSide.FRIEND}, ""),
    ],
)
def test_kept_reward_words_follow_every_field_they_say(change: dict[str, object], words: str) -> None:
    """Kept by the rules' values, not the rule objects: the same rules read again say the same, a change is said."""
    rule = RewardRule(id="c", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, amount_minor=1000)
    assert reward_words([rule], RewardSide.REFERRER, currency="EUR") == "10 EUR credit for each friend who buys"
    changed = RewardRule.model_validate({**rule.model_dump(), **change})
    assert reward_words([changed], RewardSide.REFERRER, currency="EUR") == words


def test_money_is_written_in_its_currencys_units() -> None:
    assert format_money(123456, "EUR") == "1,234.56 EUR"
    assert format_money(123456, "EUR", locale="fr") == "1\u202f234,56 EUR"
    assert format_money(1500, "JPY") == "1,500 JPY"
    assert format_money(1500, "KWD") == "1.500 KWD"


def test_purchase_names_come_from_product_attributes_without_repeats() -> None:
    assert purchase_names([{"sku": "A-1", "orders": 3, "vip": True}]) == ("A-1",)
    assert purchase_names([{"products": "Tent, Stove;Tent"}, {"product": "Stove"}]) == ("Tent", "Stove")
    assert purchase_names([{"product": "  "}, {}]) == ()
    assert len(purchase_names([{"products": ",".join(f"p{i}" for i in range(20))}])) == 5


def edge(source: str, target: str, status: ReferralStatus) -> EdgeRecord:
    return EdgeRecord(source, target, EdgeType.REFERRED, status.value, 1.0, BASE_TIME)


def test_impact_counts_friends_who_joined_and_who_bought() -> None:
    edges = [
        edge("a", "f1", ReferralStatus.CLICKED),
        edge("a", "f2", ReferralStatus.SIGNED_UP),
        edge("a", "f3", ReferralStatus.CONVERTED),
        edge("a", "f4", ReferralStatus.REVERSED),
        edge("b", "f5", ReferralStatus.CONVERTED),
        EdgeRecord("a", "f6", EdgeType.INFLUENCES, "follows", 1.0, None),
    ]
    assert impact_from_edges("a", edges) == Impact(friends_joined=2, friends_converted=1)
    assert impact_from_edges("nobody", edges) == Impact()
    assert impacts_by_referrer(edges) == {
        "a": Impact(friends_joined=2, friends_converted=1),
        "b": Impact(friends_joined=1, friends_converted=1),
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "kits.db")
    try:
        yield s
    finally:
        s.close()


def test_load_kit_context_reads_customer_scores_campaign_and_referrals(store: SqliteStore) -> None:
    jane = make_customer(id="jane", name="Jane Doe", attributes={"product": "Tent", "community": "Campers"})
    friends = [make_customer(id=f"f{i}") for i in range(4)]
    store.upsert_customers([jane, *friends])
    store.add_referrals(
        [
            make_referral(jane, friends[0], status=ReferralStatus.SIGNED_UP),
            make_referral(jane, friends[1], status=ReferralStatus.CONVERTED),
            make_referral(jane, friends[2], status=ReferralStatus.CLICKED),
            make_referral(friends[3], jane, status=ReferralStatus.CONVERTED),
        ]
    )
    store.write_scores([make_scores(jane, segment=Segment.INFLUENCER, community=9)])
    campaign = make_campaign(id="spring")
    store.save_campaign(campaign)
    code = store.create_code(make_code(jane, campaign, code="JANE10"))

    ctx = load_kit_context(
        store, "jane", code, public_base_url=f"{BASE}/", unsubscribe_url=f"{BASE}/u/t", preferences_url=f"{BASE}/p/t"
    )

    assert ctx.customer_id == "jane"
    assert ctx.link == f"{BASE}/r/JANE10"
    assert ctx.campaign_name == campaign.name
    assert ctx.advocate.segment is Segment.INFLUENCER
    assert ctx.advocate.community == 9
    assert ctx.advocate.community_name == "Campers"
    assert ctx.advocate.purchases == ("Tent",)
    assert ctx.advocate.impact == Impact(friends_joined=2, friends_converted=1)
    given = load_kit_context(
        store,
        "jane",
        code,
        public_base_url=BASE,
        unsubscribe_url=f"{BASE}/u/t",
        preferences_url=f"{BASE}/p/t",
        impact=Impact(friends_joined=7),
    )
    assert given.advocate.impact.friends_joined == 7


def test_load_kit_context_for_an_unknown_customer_is_not_found(store: SqliteStore) -> None:
    campaign = make_campaign()
    with pytest.raises(NotFound):
        load_kit_context(
            store,
            "ghost",
            make_code("ghost", campaign),
            public_base_url=BASE,
            unsubscribe_url=f"{BASE}/u",
            preferences_url=f"{BASE}/p",
        )


# --- kept text renders ----------------------------------------------------------------------------------------------
def test_a_kept_render_follows_every_value_the_template_reads_and_the_templates_text() -> None:
    kept = KitRenderer()
    template = share("{{ advocate.first_name }} ({{ advocate.segment }}): {{ friend_offer }} {{ link }}")
    first = kept.preview(template, context(name="Jane Doe"))

    assert kept.preview(template, context(name="Jane Doe")) == first
    assert kept.preview(template, context(name="Lena Doe")).startswith("Lena (advocate)")
    assert kept.preview(template, context(name="Jane Doe", segment=Segment.INFLUENCER)).startswith("Jane (influencer)")
    edited = template.model_copy(update={"body": "Now: " + template.body, "version": 2})
    assert kept.preview(edited, context(name="Jane Doe")) == "Now: " + first


def test_kept_renders_stay_within_their_budget() -> None:
    small = KitRenderer(rendered_cache_chars=30_000)
    template = share("{{ advocate.first_name }} says: {{ friend_offer }} {{ link }}")
    for n in range(200):
        assert small.preview(template, context(name=f"Person{n} Doe")).startswith(f"Person{n} says")
    assert 0 < len(small._rendered) < 200
    assert small._rendered_chars <= 30_000


KEPT = KitRenderer()
FRESH = KitRenderer(rendered_cache_chars=0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Jane Doe", "Lena Roe", "Ünal Ak", "Jo"]),
            st.sampled_from([None, *Segment]),
            st.sampled_from(["en", "fr", "en-GB"]),
            st.sampled_from(["Trail shoes", "Tent", ""]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_kits_from_kept_renders_say_what_fresh_renders_say(
    people: list[tuple[str, Segment | None, str, str]],
) -> None:
    for name, segment, locale, product in people:
        ctx = context(name=name, segment=segment, locale=locale, product=product)
        assert KEPT.render_kit(ctx) == FRESH.render_kit(ctx)


MARKETER_BODIES = (
    "{{ advocate.first_name }} recommends {{ advocate.purchases | join(', ') }}",
    "{{ advocate.first_name }} recommends {{ advocate.purchases | join(', ') }}: {{ link }}",
    "{{ friend_offer }}",
    "Plain words, no names",
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Jane Doe", "Lena Roe"]),
            st.sampled_from(["JANE10", "LENA20"]),
            st.sampled_from(MARKETER_BODIES),
            st.sampled_from([None, "{{ advocate.first_name }} has a gift", "A gift"]),
            st.sampled_from([None, ("email", "x"), ("x", "email", "sms")]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_kept_kits_follow_their_templates_link_and_channels(
    asks: list[tuple[str, str, str, str | None, tuple[str, ...] | None]],
) -> None:
    """A whole kit's messages are kept under one key: the chosen templates' texts (an edit is a new key), the link
    (appended to a text that leaves it out) and the channels asked for."""
    for name, code, body, subject, channels in asks:
        ctx = context(name=name, code=code)
        marketer = [
            share(body, id="mine-x", channel=ShareChannel.X),
            share(body, id="mine-email", channel=ShareChannel.EMAIL, subject=subject),
        ]
        order = None if channels is None else [ShareChannel(c) for c in channels]
        kept = KEPT.render_kit(ctx, marketer=marketer, channels=order)
        assert kept == FRESH.render_kit(ctx, marketer=marketer, channels=order)
        assert all(code in message.text + (message.share_url or "") for message in kept.messages)


def test_a_kits_messages_are_kept_whole_and_rendered_again_when_a_value_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = KitRenderer()
    runs: list[str] = []
    run = kept._run

    def counted(template: Any, variables: Mapping[str, Any], *, name: str) -> str:
        runs.append(name)
        return run(template, variables, name=name)

    monkeypatch.setattr(kept, "_run", counted)
    first = kept.render_kit(context(name="Jane Doe"))
    rendered = len(runs)
    assert rendered >= len(first.messages)
    assert kept.render_kit(context(name="Jane Doe")).messages == first.messages
    assert len(runs) == rendered, "the same kit again renders nothing"
    other = kept.render_kit(context(name="Lena Doe"))
    assert len(runs) > rendered
    assert any("Lena" in message.text for message in other.messages)
    assert not any("Jane" in message.text for message in other.messages)


def test_kept_renders_are_nothing_the_garbage_collector_walks() -> None:
    """Each full collection walks every object a cache holds; kept renders are strings and tuples of them, which
    collections stop tracking (a tuple once what it holds is untracked, so nested ones take one pass a level)."""
    kept = KitRenderer()
    for n in range(20):
        kept.render_kit(context(name=f"Person{n} Doe", code=f"CODE{n}"))
    for _ in range(4):
        gc.collect()
    assert kept._rendered
    assert not [key for key, value in kept._rendered.items() if gc.is_tracked(key) or gc.is_tracked(value)]


def test_markup_and_the_same_text_as_a_string_are_never_one_kept_render() -> None:
    kept = KitRenderer()
    template = share("{{ friend_offer | e }}")
    compiled = kept._compile(template.body, html=False, name="t", allowed=KIT_VARIABLES)
    as_text = kept._render(template.body, {"friend_offer": "<b>5 EUR</b>"}, html=False, name="t")
    as_markup = kept._render(template.body, {"friend_offer": Markup("<b>5 EUR</b>")}, html=False, name="t")
    assert (as_text, as_markup) == ("&lt;b&gt;5 EUR&lt;/b&gt;", "<b>5 EUR</b>")
    assert compiled.names == ("friend_offer",)
