"""Sharing kits: what a customer passes on to friends, and the messages the engine sends, from Jinja2 templates.

A kit holds the customer's referral link and its QR code, a ready message per share channel, the reward for them
and for their friend, and assets they may ask more of. The messages the engine sends itself (`message`: asking a
customer to share; `invitation`: what a friend receives on an advocate's behalf) come from the same kind of
templates: text, plus HTML for email, and always the unsubscribe link.

Built-in templates live under `templates/kits/`, one file per part:

    <purpose>/<channel>[.<segment>][.<locale>].<part>.j2

`purpose` is a `TemplatePurpose`, `channel` a `ShareChannel`, `segment` a `Segment` (absent: any segment), `locale`
such as `fr` or `fr-CA` (absent: `en`), and `part` is `txt` (the text), `subject` (an email's subject) or `html`
(an email's HTML body). So `share/whatsapp.prosumer.fr.txt.j2` is what a French prosumer sends on WhatsApp. A share
text without a segment is the warm personal note that suits advocates and quiet customers. Beside the purposes,
`layout[.<locale>].html.j2` wraps every HTML email and `footer[.<locale>].txt.j2` ends every text that does not
carry its unsubscribe link already: no template can leave the way out of a message.

`KitRenderer.choose` takes the most specific template: a marketer's before a built-in file, then one for the
customer's segment before one for any segment, then the exact locale (`fr-CA`) before the language (`fr`) before
`en`.

Every template, built-in or a marketer's, renders in a sandbox: `ImmutableSandboxedEnvironment` with
`StrictUndefined`, seeing only plain data (`KIT_VARIABLES`, as dicts, lists and strings), able to call a short list
of string methods and filters, and held to a budget: `range` is capped, operators and filters refuse to build text
longer than the output limit before building it, a list or dict the template writes may not hold more than the
output limit either (counting what it would print as, nested lists included, so no comparison or printing of one can
run long in C where the clock cannot see it), output captured by `{% set %}` and `{% filter %}` blocks counts as it
grows, the output is counted as it is produced, and every loop item and sandboxed operation ticks a clock that stops
the template at the time limit. Printing a method instead of calling it is refused (its text would show a memory
address). A template nested too deeply for the parser or for Python's compiler is refused as invalid, not raised as
a crash. A marketer's HTML email is their text escaped whole, so nothing a customer typed can become markup.

Everything here is pure except `load_kit_context`, at the end, which reads the store.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache, wraps
from importlib.resources import files
from pathlib import Path
from types import BuiltinMethodType, MethodType
from typing import Annotated, Any, Final, NamedTuple, assert_never, cast
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

import qrcode  # type: ignore[import-untyped]
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, do_join, do_replace
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context
from markupsafe import Markup, escape
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from graph.errors import InvalidInput, NotFound, RowError
from graph.model import (
    ContactChannel,
    Customer,
    CustomerId,
    CustomerScores,
    EdgeRecord,
    EdgeType,
    Scalar,
    Segment,
)
from graph.outreach import ShareChannel, Template, TemplatePurpose, Variant
from graph.program import Campaign, ReferralCode, RewardKind, RewardRule, RewardSide, Slug
from graph.program_store import KitReads, Store

DEFAULT_TEMPLATES_DIR: Final[Path] = Path(str(files("templates"))) / "kits"

DEFAULT_CHANNEL_ORDER: Final[tuple[ShareChannel, ...]] = (
    ShareChannel.WHATSAPP,
    ShareChannel.EMAIL,
    ShareChannel.SMS,
    ShareChannel.X,
    ShareChannel.LINKEDIN,
    ShareChannel.FACEBOOK,
    ShareChannel.COPY_LINK,
)

MAX_RANGE: Final[int] = 1000
"""The most items `range()` may produce in a template: kit texts loop over a handful of things."""

X_TEXT_LIMIT: Final[int] = 280 - 24
"""A post on X holds 280 characters; the link it carries counts as 23, plus a space."""

_MAX_INT_BITS: Final[int] = 4096
_TEMPLATE_FILE: Final[str] = "<kit template>"
"""The file name kit templates compile under, by which a traceback's template line is found."""


# --- values --------------------------------------------------------------------------------------------------------
def _check_http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s<>\"'\\]+$", value):
        raise ValueError("a link in a kit is an absolute http(s) URL without spaces or quotes")
    return value


HttpUrl = Annotated[str, Field(max_length=2000), AfterValidator(_check_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Impact(_Model):
    """What an advocate's referrals have come to: friends who signed up or bought, and friends who bought."""

    friends_joined: int = Field(default=0, ge=0)
    friends_converted: int = Field(default=0, ge=0)


class AdvocateProfile(_Model):
    """The customer as their kit speaks of them."""

    first_name: str = Field(default="", max_length=200)
    name: str = Field(default="", max_length=200)
    locale: str = Field(default="en", max_length=35)
    segment: Segment | None = None
    community: int | None = None
    """The community the latest analysis placed them in."""
    community_name: str | None = Field(default=None, max_length=200)
    """A name for it, when the merchant gave one (the customer attribute `community`)."""
    purchases: tuple[str, ...] = ()
    """Product names, most telling first."""
    impact: Impact = Impact()


class AssetKind(StrEnum):
    IMAGE = "image"
    CARD = "card"
    VIDEO = "video"
    DOCUMENT = "document"


class Asset(_Model):
    """Material a customer may pass on or ask more of (a printable card, a photo)."""

    id: Slug
    title: str = Field(min_length=1, max_length=200)
    url: HttpUrl
    kind: AssetKind = AssetKind.IMAGE


class KitContext(_Model):
    """Everything a kit template may speak of; templates see it, minus `customer_id`, as plain data."""

    customer_id: CustomerId
    advocate: AdvocateProfile
    link: HttpUrl
    """The absolute referral link, `<public base url>/r/<code>`."""
    code: str = Field(min_length=1, max_length=32)
    campaign_name: str = Field(default="", max_length=200)
    friend_offer: str = Field(default="", max_length=500)
    reward_for_you: str = Field(default="", max_length=1000)
    reward_for_friend: str = Field(default="", max_length=1000)
    unsubscribe_url: HttpUrl
    preferences_url: HttpUrl
    idea_url: HttpUrl | None = None
    """Where a prosumer sends an idea or feedback back."""
    kit_url: HttpUrl | None = None
    """The customer's own kit page, for messages that ask them to share."""
    assets: tuple[Asset, ...] = ()


KIT_VARIABLES: Final[frozenset[str]] = frozenset(KitContext.model_fields) - {"customer_id"}
"""The top-level names a kit template may use; `range` is there too, capped at `MAX_RANGE` items."""

_FRAME_VARIABLES: Final[frozenset[str]] = KIT_VARIABLES | {"content", "purpose", "channel", "subject", "lang"}
"""What the engine's own layout and footer see besides a kit's variables."""


class KitMessage(_Model):
    """One ready message of a kit. `share_url` opens the channel with it filled in (None for copy-link)."""

    channel: ShareChannel
    subject: str | None = None
    text: str
    share_url: str | None = None


_SHARE_CHANNELS: Final[dict[str, ShareChannel]] = {channel.value: channel for channel in ShareChannel}


class Kit(_Model):
    """What a customer gets to pass on: link, QR code, a message per channel, the rewards, and assets."""

    customer_id: str
    code: str
    link: str
    qr_url: str
    """The link's QR code as an SVG image (`/qr/{code}.svg`), cacheable for a day: drawing it was a fifth of a
    kit's time, and a browser that has it asks no more."""
    messages: tuple[KitMessage, ...]
    reward_for_you: str
    reward_for_friend: str
    friend_offer: str = ""
    assets: tuple[Asset, ...] = ()
    segment: Segment | None = None
    locale: str = "en"
    variant_id: str | None = None
    template_ids: dict[ShareChannel, str] = Field(default_factory=dict)
    """The template each message came from, for A/B reports."""


ShareKit = Kit


class RenderedMessage(_Model):
    """A message the engine sends: email has a subject and HTML; SMS and WhatsApp are text only."""

    subject: str | None = None
    text: str
    html: str | None = None
    template_id: str | None = None


# --- words from rules ----------------------------------------------------------------------------------------------
_ZERO_DECIMAL: Final[frozenset[str]] = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMAL: Final[frozenset[str]] = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})

_REWARD_PHRASES: Final[dict[str, dict[str, str]]] = {
    "en": {
        "credit": "{amount} credit",
        "discount": "{amount} off",
        "cash": "{amount} cash",
        "badge": "a badge",
        "early_access": "early access",
        "co_creation": "a say in what we make next",
        "each": "for each friend who buys",
        "each_min": "for each friend who spends {min} or more",
        "milestone": "at your {nth}",
        "cap": "(up to {n} friends)",
        "friend_credit": "{amount} credit on {order}",
        "friend_discount": "{amount} off {order}",
        "friend_cash": "{amount} back on {order}",
        "first_order": "your first order",
        "first_order_min": "a first order of {min} or more",
        "join": "; ",
    },
    "fr": {
        "credit": "{amount} de crédit",
        "discount": "{amount} de réduction",
        "cash": "{amount} remboursés",
        "badge": "un badge",
        "early_access": "un accès en avant-première",
        "co_creation": "votre mot à dire sur nos prochains produits",
        "each": "pour chaque ami qui achète",
        "each_min": "pour chaque ami qui dépense au moins {min}",
        "milestone": "à votre {nth} ami",
        "cap": "(jusqu'à {n} amis)",
        "friend_credit": "{amount} de crédit sur {order}",
        "friend_discount": "{amount} de réduction sur {order}",
        "friend_cash": "{amount} remboursés sur {order}",
        "first_order": "votre première commande",
        "first_order_min": "une première commande d'au moins {min}",
        "join": " ; ",
    },
}


def _language(locale: str) -> str:
    return locale.replace("_", "-").split("-")[0].lower()


def format_money(amount_minor: int, currency: str, *, locale: str = "en") -> str:
    """An amount in minor units as people write it: whole amounts without decimals.

    >>> format_money(1000, "EUR"), format_money(1050, "EUR", locale="fr"), format_money(500, "JPY")
    ('10 EUR', '10,50 EUR', '500 JPY')
    """
    digits = 0 if currency in _ZERO_DECIMAL else 3 if currency in _THREE_DECIMAL else 2
    whole, fraction = divmod(amount_minor, 10**digits)
    text = f"{whole:,}".replace(",", "\u202f" if _language(locale) == "fr" else ",")
    if fraction:
        text += ("," if _language(locale) == "fr" else ".") + f"{fraction:0{digits}d}"
    return f"{text} {currency}"


def _ordinal(n: int, language: str) -> str:
    if language == "fr":
        return "1er" if n == 1 else f"{n}e"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def reward_words(rules: Iterable[RewardRule], side: RewardSide, *, currency: str, locale: str = "en") -> str:
    """The rewards of one side in a sentence, from the campaign's rules, in English or French.

    >>> rules = [RewardRule(id="c", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, amount_minor=1000),
    ...          RewardRule(id="b", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=3)]
    >>> reward_words(rules, RewardSide.REFERRER, currency="EUR")
    '10 EUR credit for each friend who buys; a badge at your 3rd'
    """
    language = _language(locale) if _language(locale) in _REWARD_PHRASES else "en"
    rules = tuple(rules)
    key = (tuple(_said_of(rule) for rule in rules), side, currency, language)
    said = _REWARDS_SAID.get(key)
    if said is None:
        said = _reward_words(rules, side, currency, language)
        if len(_REWARDS_SAID) >= 512:
            _REWARDS_SAID.clear()
        _REWARDS_SAID[key] = said
    return said


_REWARDS_SAID: dict[tuple[object, ...], str] = {}
"""Every kit says its campaign's rewards twice. Kept by plain values: keyed by the rules themselves, each lookup
compared every rule field by field in Python once the campaign was read again (as the link cache does every few
seconds), since the kept key still held the rules of the first read."""


def _said_of(rule: RewardRule) -> tuple[object, ...]:
    """What `_reward_words` reads of a rule."""
    return (
        rule.side,
        rule.kind,
        rule.amount_minor,
        rule.percent,
        rule.min_order_minor,
        rule.milestone,
        rule.max_per_customer,
    )


def _reward_words(rules: tuple[RewardRule, ...], side: RewardSide, currency: str, language: str) -> str:
    words = _REWARD_PHRASES[language]
    phrases: list[str] = []
    for rule in rules:
        if rule.side is not side:
            continue
        amount = (
            f"{rule.percent:g}%"
            if rule.percent is not None
            else format_money(rule.amount_minor, currency, locale=language)
        )
        thing = words[rule.kind.value].format(amount=amount)
        minimum = format_money(rule.min_order_minor, currency, locale=language) if rule.min_order_minor else None
        if side is RewardSide.FRIEND:
            order = words["first_order_min"].format(min=minimum) if minimum else words["first_order"]
            friendly = words.get(f"friend_{rule.kind.value}")
            phrases.append(friendly.format(amount=amount, order=order) if friendly else thing)
        elif rule.milestone is not None:
            phrases.append(f"{thing} {words['milestone'].format(nth=_ordinal(rule.milestone, language))}")
        else:
            when = words["each_min"].format(min=minimum) if minimum else words["each"]
            cap = f" {words['cap'].format(n=rule.max_per_customer)}" if rule.max_per_customer else ""
            phrases.append(f"{thing} {when}{cap}")
    return words["join"].join(phrases)


_PRODUCT_KEYS: Final[tuple[str, ...]] = ("product", "product_name", "products", "sku", "last_product")


def purchase_names(attribute_sets: Iterable[Mapping[str, Scalar]], *, limit: int = 5) -> tuple[str, ...]:
    """Product names from purchase attributes (`product`, `product_name`, `products` as a list, `sku`...).

    >>> purchase_names([{"product": "Trail shoes", "sku": "TS-1"}, {"products": "Rain jacket; Trail shoes"}])
    ('Trail shoes', 'TS-1', 'Rain jacket')
    """
    names: dict[str, None] = {}
    for attributes in attribute_sets:
        for key in _PRODUCT_KEYS:
            value = attributes.get(key)
            if isinstance(value, bool) or not isinstance(value, str | int):
                continue
            for name in re.split(r"[;,]", str(value)) if key == "products" else [str(value)]:
                name = " ".join(name.split())[:100]
                if name:
                    names.setdefault(name, None)
    return tuple(names)[:limit]


def impact_from_edges(customer_id: str, edges: Iterable[EdgeRecord]) -> Impact:
    """Count a referrer's `REFERRED` edges by status: `signed_up` or `converted` joined, `converted` bought."""
    return impacts_by_referrer(edge for edge in edges if edge.source == customer_id).get(customer_id, Impact())


def impacts_by_referrer(edges: Iterable[EdgeRecord]) -> dict[str, Impact]:
    """Every referrer's `Impact` from one pass over `REFERRED` edges, for callers that render many kits."""
    joined: dict[str, int] = {}
    converted: dict[str, int] = {}
    for edge in edges:
        if edge.type is not EdgeType.REFERRED or edge.label not in ("signed_up", "converted"):
            continue
        joined[edge.source] = joined.get(edge.source, 0) + 1
        if edge.label == "converted":
            converted[edge.source] = converted.get(edge.source, 0) + 1
    return {who: Impact(friends_joined=n, friends_converted=converted.get(who, 0)) for who, n in joined.items()}


def referral_link(public_base_url: str, code: str) -> str:
    """
    >>> referral_link("https://shop.example/", "JANE10")
    'https://shop.example/r/JANE10'
    """
    return f"{public_base_url.rstrip('/')}/r/{quote(code, safe='')}"


def kit_context(
    customer: Customer,
    code: ReferralCode,
    campaign: Campaign,
    *,
    scores: CustomerScores | None,
    impact: Impact,
    public_base_url: str,
    unsubscribe_url: str,
    preferences_url: str,
    idea_url: str | None = None,
    kit_url: str | None = None,
    assets: Sequence[Asset] = (),
    purchases: Sequence[str] | None = None,
) -> KitContext:
    """A customer's kit context from what the store holds about them (the pure half of `load_kit_context`)."""
    if code.customer_id != customer.id:
        raise InvalidInput(f"code {code.code} belongs to another customer than {customer.id}")
    name = " ".join((customer.name or "").split())
    community = customer.attributes.get("community")
    locale = customer.locale
    reward_for_friend = reward_words(campaign.rewards, RewardSide.FRIEND, currency=campaign.currency, locale=locale)
    return KitContext(
        customer_id=customer.id,
        advocate=AdvocateProfile(
            first_name=name.split(" ")[0] if name else "",
            name=name,
            locale=locale,
            segment=scores.segment if scores is not None else None,
            community=scores.community if scores is not None else None,
            community_name=community if isinstance(community, str) and community.strip() else None,
            purchases=tuple(purchases) if purchases is not None else purchase_names([customer.attributes]),
            impact=impact,
        ),
        link=referral_link(public_base_url, code.code),
        code=code.code,
        campaign_name=campaign.name,
        friend_offer=campaign.friend_offer or reward_for_friend,
        reward_for_you=reward_words(campaign.rewards, RewardSide.REFERRER, currency=campaign.currency, locale=locale),
        reward_for_friend=reward_for_friend,
        unsubscribe_url=unsubscribe_url,
        preferences_url=preferences_url,
        idea_url=idea_url,
        kit_url=kit_url,
        assets=tuple(assets),
    )


_SAMPLE_RULES: Final[tuple[RewardRule, ...]] = (
    RewardRule(id="credit", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, amount_minor=1000),
    RewardRule(id="badge", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=3),
    RewardRule(id="welcome", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, amount_minor=1000),
)


def sample_context(
    *, locale: str = "en", segment: Segment | None = Segment.ADVOCATE, sparse: bool = False
) -> KitContext:
    """A made-up customer to try templates on: `sparse` has no name, purchases, impact, community or offer."""
    base = "https://shop.example"
    for_you = reward_words(_SAMPLE_RULES, RewardSide.REFERRER, currency="EUR", locale=locale)
    for_friend = reward_words(_SAMPLE_RULES, RewardSide.FRIEND, currency="EUR", locale=locale)
    return KitContext(
        customer_id="sample",
        advocate=AdvocateProfile(
            first_name="" if sparse else "Alex",
            name="" if sparse else "Alex Martin",
            locale=locale,
            segment=None if sparse else segment,
            community=None if sparse else 7,
            community_name=None if sparse else "Trail runners",
            purchases=() if sparse else ("Trail shoes", "Rain jacket"),
            impact=Impact() if sparse else Impact(friends_joined=3, friends_converted=2),
        ),
        link=f"{base}/r/ALEX10",
        code="ALEX10",
        campaign_name="Spring referral",
        friend_offer="" if sparse else for_friend,
        reward_for_you="" if sparse else for_you,
        reward_for_friend="" if sparse else for_friend,
        unsubscribe_url=f"{base}/u/sample-token",
        preferences_url=f"{base}/preferences/sample-token",
        idea_url=None if sparse else f"{base}/ideas/ALEX10",
        kit_url=None if sparse else f"{base}/kit/ALEX10",
        assets=()
        if sparse
        else (Asset(id="card", title="Printable card", url=f"{base}/assets/card.pdf", kind=AssetKind.CARD),),
    )


# --- links and the QR code -----------------------------------------------------------------------------------------
def _encode(value: str) -> str:
    return _encoded(value) if len(value) <= _KEPT_ENCODING_CHARS else quote(value, safe="")


_KEPT_ENCODING_CHARS: Final = 600
"""Share texts this short keep their percent-encoding (at most ~20 MB for the 8,192 kept): a customer's kit asks
for the same texts on every view, and encoding them was a tenth of a kit's rendering."""


@lru_cache(maxsize=8192)
def _encoded(value: str) -> str:
    return quote(value, safe="")


def share_url(channel: ShareChannel, *, text: str, link: str, subject: str | None = None) -> str | None:
    """The link that opens `channel` with the message filled in; every value percent-encoded.

    >>> share_url(ShareChannel.WHATSAPP, text="Hi & welcome", link="https://s.example/r/A1")
    'https://wa.me/?text=Hi%20%26%20welcome'
    """
    match channel:  # only the asked-for channel's values are encoded: percent-encoding is a kit's hot loop
        case ShareChannel.WHATSAPP:
            return f"https://wa.me/?text={_encode(text)}"
        case ShareChannel.X:
            return f"https://twitter.com/intent/tweet?text={_encode(text)}&url={_encode(link)}"
        case ShareChannel.LINKEDIN:
            return f"https://www.linkedin.com/sharing/share-offsite/?url={_encode(link)}"
        case ShareChannel.FACEBOOK:
            return f"https://www.facebook.com/sharer/sharer.php?u={_encode(link)}"
        case ShareChannel.EMAIL:
            return f"mailto:?subject={_encode(subject or '')}&body={_encode(text)}"
        case ShareChannel.SMS:
            return f"sms:?&body={_encode(text)}"
        case ShareChannel.COPY_LINK:
            return None
    assert_never(channel)


def qr_image_link(link: str) -> str:
    """Where a referral link's QR code is served, beside the link itself.

    >>> qr_image_link("https://shop.example/r/JANE10")
    'https://shop.example/qr/JANE10.svg'
    """
    base, found, code = link.rpartition("/r/")
    if not found or not code:
        raise ValueError(f"not a referral link: {link!r}")
    return f"{base}/qr/{code}.svg"


@lru_cache(maxsize=2048)
def qr_svg(link: str) -> str:
    """The link as a QR code in one inline SVG path, titled with the link for screen readers.

    One fixed mask (any mask gives a valid code; choosing the "best" of eight was four fifths of a kit's time) and
    one path of horizontal runs rather than a square per module: a fifth of the work, a third of the bytes.
    """
    code = qrcode.QRCode(border=4, mask_pattern=2)
    code.add_data(link)
    code.make(fit=True)
    matrix = code.get_matrix()
    size = len(matrix)
    runs: list[str] = []
    for y, row in enumerate(matrix):
        x = 0
        while x < size:
            if not row[x]:
                x += 1
                continue
            start = x
            while x < size and row[x]:
                x += 1
            runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size * 4}" '
        f'height="{size * 4}" shape-rendering="crispEdges" role="img"><title>{xml_escape(link)}</title>'
        f'<rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d="{"".join(runs)}"/></svg>'
    )


# --- the sandbox ---------------------------------------------------------------------------------------------------
class RenderLimit(SecurityError):
    """A template went over its budget (time, size, range)."""


class _Compiled(NamedTuple):
    """A compiled template, the top-level names it reads, and a number no other compilation gets."""

    template: JinjaTemplate
    names: tuple[str, ...]
    serial: int


def _rendered_key(compiled: _Compiled, variables: Mapping[str, Any]) -> tuple[int, str] | None:
    """What a text render depends on: the sandbox has no clock, randomness or I/O (see `_KitSandbox`), so the
    same template given the same values of the names it reads says the same thing. None when a value is not JSON,
    or is markup (the `escape` filter leaves markup alone and escapes the same text as a string)."""
    values = _json_key([variables.get(name) for name in compiled.names])
    return None if values is None else (compiled.serial, values)


def _json_key(values: list[Any]) -> str | None:
    if any(isinstance(value, Markup) for value in values):
        return None
    try:
        return json.dumps(values, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


class RenderDeferred(Exception):
    """A render ran past the short deadline of a caller that must not wait (an event loop); that caller renders
    again where the full budget applies."""


@dataclass(slots=True)
class _Budget:
    deadline: float
    timeout_s: float
    ticks: int = 0
    defers: bool = False
    """The deadline is the caller's short one: passing it raises `RenderDeferred`, not `RenderLimit`."""


_BUDGET: ContextVar[_Budget | None] = ContextVar("kit_render_budget", default=None)
_WITHIN: ContextVar[float | None] = ContextVar("kit_render_within", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.ticks += 1
    if budget.ticks % 64 == 0 and time.monotonic() > budget.deadline:
        if budget.defers:
            raise RenderDeferred(f"the template ran longer than {budget.timeout_s:g} s here")
        raise RenderLimit(f"the template ran longer than {budget.timeout_s:g} s")


def _capped_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderLimit(f"range() may produce at most {MAX_RANGE} items in a kit template")
    return numbers


_SAFE_MEMBERS: Final[tuple[tuple[type, frozenset[str]], ...]] = (
    (
        LoopContext,
        frozenset(
            {"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0"}
            | {"previtem", "nextitem", "cycle", "changed"}
        ),
    ),
    (
        str,
        frozenset(
            {"upper", "lower", "title", "capitalize", "casefold", "strip", "lstrip", "rstrip", "split", "rsplit"}
            | {"splitlines", "startswith", "endswith", "count", "find", "rfind"}
            | {"isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper"}
        ),
    ),
    (dict, frozenset({"get", "keys", "values", "items"})),
    (list, frozenset({"index", "count"})),
    (tuple, frozenset({"index", "count"})),
)
"""The only attributes a template may read on each kind of value (dict keys are read as items, not here)."""

_FORBIDDEN_ATTRIBUTES: Final[frozenset[str]] = frozenset(
    {"mro", "format", "format_map", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code"}
    | {"f_globals", "f_locals", "f_builtins", "func_globals", "func_code", "im_func", "tb_frame"}
)

_BANNED_NODES: Final[tuple[tuple[type[nodes.Node], str], ...]] = (
    (nodes.Macro, "macros"),
    (nodes.CallBlock, "call blocks"),
    (nodes.Include, "include"),
    (nodes.Import, "import"),
    (nodes.FromImport, "import"),
    (nodes.Extends, "extends"),
    (nodes.Block, "blocks"),
    (nodes.EvalContextModifier, "autoescape blocks"),
)


def _size(value: object) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


def _weight(value: object, budget: int) -> int:
    """About how many characters `value` prints as, nested lists and dicts included, counted until past `budget`.

    Shared references count each time they appear, as they would print; counting stops once past the budget, so
    it costs at most about `budget` steps whatever the structure.
    """
    total = 0
    pending = [value]
    while pending and total <= budget:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + len(item)
            pending.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() * 3 // 10 + 1
        else:
            total += 1
    return total


def _printable(value: Any) -> Any:
    """The sandbox's `finalize`: a method printed uncalled would show a memory address, so it is refused."""
    if callable(value) and not isinstance(value, Undefined):
        raise SecurityError("a method cannot be printed; call it, e.g. advocate.items()")
    return value


class _Buffer(list[str]):
    """Output captured by a `{% set %}` or `{% filter %}` block, refused as soon as it outgrows the limit: the
    text is joined in one C call the clock cannot interrupt, so it must not be allowed to grow unbounded."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0

    def append(self, chunk: str) -> None:
        _tick()
        self.size += len(chunk)
        if self.size > self.limit:
            raise RenderLimit(f"a block captured more than {self.limit:,} characters")
        super().append(chunk)

    def extend(self, chunks: Iterable[str]) -> None:
        for chunk in chunks:
            self.append(chunk)


def _bounded(function: Callable[..., Any], limit: int) -> Callable[..., Any]:
    """A filter that refuses to hand on a result over the output limit (its Jinja markers are kept)."""

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        result = function(*args, **kwargs)
        if _size(result) > limit:
            raise RenderLimit(f"a filter produced more than {limit:,} characters")
        return result

    return bounded


def _join_filter(limit: int) -> Callable[..., str]:
    @pass_eval_context
    def join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "") -> str:
        _tick()
        items = list(value)
        if len(items) > limit or sum(len(str(item)) for item in items) + len(str(d)) * max(len(items) - 1, 0) > limit:
            raise RenderLimit(f"join would produce more than {limit:,} characters")
        return str(do_join(eval_ctx, items, d))

    return join


def _replace_filter(limit: int) -> Callable[..., str]:
    @pass_eval_context
    def replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
        _tick()
        text, old_text, new_text = str(s), str(old), str(new)
        found = text.count(old_text) if old_text else len(text) + 1
        if count is not None and count >= 0:
            found = min(found, count)
        if len(text) + found * (len(new_text) - len(old_text)) > limit:
            raise RenderLimit(f"replace would produce more than {limit:,} characters")
        return do_replace(eval_ctx, s, old, new, count)

    return replace


_PLAIN_FILTERS: Final[tuple[str, ...]] = (
    *("abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float", "int", "last", "length"),
    *("list", "lower", "reverse", "round", "sort", "string", "striptags", "title", "trim", "truncate", "upper"),
    *("urlencode", "wordcount"),
)
"""Filters that cannot make text much longer than their input; `join` and `replace` are checked beforehand."""


class _KitCodeGenerator(CodeGenerator):
    """Jinja's code generator, except that a for-loop's items go through `environment.kit_loop`, which ticks the
    render budget once per item; `a ~ b` goes through `environment.kit_concat`, which checks the size
    first (without it, a chain of `{% set s = s ~ s %}` doubles a string until memory runs out); list, tuple and
    dict literals go through `environment.kit_sized` (nesting `[l, l, l]` ten deep would otherwise build a value
    that prints as gigabytes); and block buffers are `environment.kit_buffer()`, which counts what they hold."""

    _loop_items: nodes.Node | None = None
    """The iterable of the `{% for %}` being compiled, until it is written (Jinja allows no custom node types)."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:  # noqa: N802 - Jinja's visitor name
        self._loop_items = node.iter
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if node is not self._loop_items:
            return super().visit(node, *args, **kwargs)
        self._loop_items = None
        self.write("environment.kit_loop(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.kit_buffer()")

    def _sized(
        self, visit: Callable[[Any, Frame], None], node: nodes.List | nodes.Tuple | nodes.Dict, frame: Frame
    ) -> None:
        if getattr(node, "ctx", "load") != "load":
            visit(node, frame)
            return
        self.write("environment.kit_sized(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:  # noqa: N802 - Jinja's visitor name
        self._sized(super().visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:  # noqa: N802 - Jinja's visitor name
        self._sized(super().visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:  # noqa: N802 - Jinja's visitor name
        self._sized(super().visit_Dict, node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - Jinja's visitor name
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.kit_concat({join}, (")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class _KitSandbox(ImmutableSandboxedEnvironment):
    """The sandbox kit templates run in; see the module docstring."""

    code_generator_class = _KitCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, autoescape: bool, limit: int) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            finalize=_printable,
        )
        self.limit = limit
        self.globals.clear()
        self.globals["range"] = _capped_range
        self.filters = {name: _bounded(FILTERS[name], limit) for name in _PLAIN_FILTERS}
        self.filters["join"] = _join_filter(limit)
        self.filters["replace"] = _replace_filter(limit)

    def kit_sized(self, value: Any) -> Any:
        _tick()
        if _weight(value, self.limit) > self.limit:
            raise RenderLimit(f"a list or dict would hold more than {self.limit:,} characters")
        return value

    def kit_buffer(self) -> _Buffer:
        return _Buffer(self.limit)

    def kit_loop(self, items: Iterable[Any]) -> Iterator[Any]:
        """A for-loop's items, one tick each: loops are the only way a template repeats work (macros and recursive
        loops are refused), and a loop with an empty body runs no other hook, so nested loops meet the clock here."""
        for item in items:
            _tick()
            yield item

    def kit_concat(self, join: Callable[[Iterable[Any]], str], values: tuple[Any, ...]) -> str:
        _tick()
        if sum(len(value) if isinstance(value, str) else len(str(value)) for value in values) > self.limit:
            raise RenderLimit(f"joining text with ~ would produce more than {self.limit:,} characters")
        return join(values)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return any(isinstance(obj, kind) and attr in allowed for kind, allowed in _SAFE_MEMBERS)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` can pad text to any width, so templates get no `format` at all."""
        return None

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        bound_to = getattr(__obj, "__self__", None)
        allowed = (
            __obj is _capped_range
            or isinstance(__obj, Undefined)
            or (
                isinstance(__obj, BuiltinMethodType | MethodType)
                and isinstance(bound_to, str | dict | list | tuple | LoopContext)
            )
        )
        if not allowed:
            raise SecurityError(f"{type(__obj).__name__} objects cannot be called from a kit template")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "%" and isinstance(left, str):
            raise SecurityError("text cannot be formatted with % in a kit template; join it with ~")
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and ints and right > 0 and max(left.bit_length(), 1) * right > _MAX_INT_BITS:
            raise RenderLimit("a power that large is not allowed in a kit template")
        if operator == "*":
            if ints and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise RenderLimit("a product that large is not allowed in a kit template")
            times = right if isinstance(right, int) else left if isinstance(left, int) else 0
            repeated = left if isinstance(left, str | list | tuple) else right
            if isinstance(repeated, str | list | tuple) and _weight(repeated, self.limit) * max(times, 0) > self.limit:
                raise RenderLimit(f"repeating would produce more than {self.limit:,} items")
        sequences = isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
        if operator == "+" and sequences and _weight(left, self.limit) + _weight(right, self.limit) > self.limit:
            raise RenderLimit(f"adding would produce more than {self.limit:,} items")
        return super().call_binop(context, operator, left, right)


def _static_problems(ast: nodes.Template, name: str, allowed: frozenset[str]) -> list[RowError]:
    """What can be refused without running the template: banned tags, private attributes, unknown names."""
    problems: list[RowError] = []
    for kind, label in _BANNED_NODES:
        problems.extend(
            RowError(name, node.lineno, f"{label} are not allowed in kit templates") for node in ast.find_all(kind)
        )
    problems.extend(
        RowError(name, loop.lineno, "recursive loops are not allowed in kit templates")
        for loop in ast.find_all(nodes.For)
        if loop.recursive
    )
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attribute = node.attr if isinstance(node, nodes.Getattr) else getattr(getattr(node, "arg", None), "value", None)
        if isinstance(attribute, str) and (attribute.startswith("_") or attribute in _FORBIDDEN_ATTRIBUTES):
            problems.append(RowError(name, node.lineno, f"the attribute {attribute!r} is not allowed"))
    first_use: dict[str, int] = {}
    for ref in ast.find_all(nodes.Name):
        first_use.setdefault(ref.name, ref.lineno)
    unknown = set(meta.find_undeclared_variables(ast)) - allowed
    if "self" in first_use:
        unknown.add("self")
    for variable in sorted(unknown):
        problems.append(
            RowError(
                name, first_use.get(variable), f"unknown variable {variable!r} (known: {', '.join(sorted(allowed))})"
            )
        )
    return problems


def _line_of(exc: BaseException) -> int | None:
    """The template line an exception was raised at, from the traceback Jinja rewrites to template lines."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if isinstance(line, int) else None


# --- tidying text --------------------------------------------------------------------------------------------------
def _tidy(text: str) -> str:
    """Conditional blocks leave stray spaces and blank lines; messages should not."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _one_line(text: str, limit: int = 200) -> str:
    """A subject is one line (a newline in a mail header would start another header)."""
    return " ".join(text.split())[:limit]


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


_URL_IN_ESCAPED = re.compile(r"https?://(?:[^\s<>&\"']|&amp;)+")


def _link(match: re.Match[str]) -> str:
    url = match.group(0)
    trimmed = url.rstrip(".,;:!?)")
    return f'<a href="{trimmed}">{trimmed}</a>{url[len(trimmed) :]}'


def text_to_html(text: str) -> Markup:
    """Plain text as HTML paragraphs: escaped whole, then its links made clickable.

    >>> print(text_to_html("Hi <b>you</b>\\n\\nSee https://s.example/?a=1&b=2."))
    <p>Hi &lt;b&gt;you&lt;/b&gt;</p>
    <p>See <a href="https://s.example/?a=1&amp;b=2">https://s.example/?a=1&amp;b=2</a>.</p>
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    html = []
    for paragraph in paragraphs:
        escaped = _URL_IN_ESCAPED.sub(_link, str(escape(paragraph)))
        html.append("<p>" + escaped.replace("\n", "<br>\n") + "</p>")
    return Markup("\n".join(html))  # noqa: S704 - every character of the text went through escape()


# --- the renderer --------------------------------------------------------------------------------------------------
_PARTS: Final[frozenset[str]] = frozenset({"txt", "subject", "html"})
_SEGMENTS: Final[dict[str, Segment]] = {segment.value: segment for segment in Segment}
_SHARE_CHANNEL_OF: Final[dict[ContactChannel, ShareChannel]] = {
    ContactChannel.EMAIL: ShareChannel.EMAIL,
    ContactChannel.SMS: ShareChannel.SMS,
    ContactChannel.WHATSAPP: ShareChannel.WHATSAPP,
    ContactChannel.PUSH: ShareChannel.SMS,
}
"""Push notifications use the short SMS texts."""


def _normal_locale(locale: str) -> str:
    return locale.replace("_", "-").lower()


def _locale_rank(template_locale: str, wanted: str) -> int | None:
    """0 for the exact locale, 1 for its language, 2 for English, None when the template does not fit."""
    have, want = _normal_locale(template_locale), _normal_locale(wanted)
    if have == want:
        return 0
    if have == _language(want):
        return 1
    if have == "en":
        return 2
    return None


@dataclass(frozen=True, slots=True)
class _FileName:
    stem: str
    segment: Segment | None
    locale: str
    part: str


def _parse_file_name(path: Path) -> _FileName:
    tokens = path.name.removesuffix(".j2").split(".")
    if len(tokens) < 2 or tokens[-1] not in _PARTS or len(tokens) > 4:
        raise InvalidInput(f"kit template file {path} is not named <name>[.<segment>][.<locale>].<part>.j2")
    segment: Segment | None = None
    locale = "en"
    for token in tokens[1:-1]:
        if token in _SEGMENTS and segment is None:
            segment = _SEGMENTS[token]
        elif re.match(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$", token):
            locale = token
        else:
            raise InvalidInput(f"kit template file {path}: {token!r} is neither a segment nor a locale")
    return _FileName(stem=tokens[0], segment=segment, locale=locale, part=tokens[-1])


def _builtin_id(purpose: TemplatePurpose, channel: ShareChannel, segment: Segment | None, locale: str) -> str:
    pieces = ["builtin", purpose.value, channel.value, *([segment.value] if segment else []), _normal_locale(locale)]
    return "-".join(pieces)


@dataclass(frozen=True, slots=True)
class _BuiltIns:
    templates: tuple[Template, ...]
    html: dict[str, str]
    """HTML parts by template id."""
    frames: dict[tuple[str, str], str]
    """The engine's layout and footer: (`layout.html` or `footer.txt`, locale) -> source."""


def _load_builtins(root: Path) -> _BuiltIns:
    parts: dict[tuple[TemplatePurpose, ShareChannel, Segment | None, str], dict[str, str]] = {}
    updated: dict[tuple[TemplatePurpose, ShareChannel, Segment | None, str], datetime] = {}
    for purpose in TemplatePurpose:
        folder = root / purpose.value
        for path in sorted(folder.glob("*.j2")) if folder.is_dir() else []:
            name = _parse_file_name(path)
            try:
                channel = ShareChannel(name.stem)
            except ValueError:
                raise InvalidInput(f"kit template file {path}: {name.stem!r} is not a share channel") from None
            key = (purpose, channel, name.segment, name.locale)
            parts.setdefault(key, {})[name.part] = path.read_text(encoding="utf-8")
            mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
            updated[key] = max(updated.get(key, mtime), mtime)
    templates: list[Template] = []
    html: dict[str, str] = {}
    for key, sources in sorted(parts.items(), key=lambda item: _builtin_id(*item[0])):
        purpose, channel, segment, locale = key
        template_id = _builtin_id(*key)
        if "txt" not in sources:
            raise InvalidInput(f"kit template {template_id} has no .txt.j2 part")
        templates.append(
            Template(
                id=template_id,
                purpose=purpose,
                channel=channel,
                segment=segment,
                locale=locale,
                subject=sources.get("subject"),
                body=sources["txt"],
                updated_at=updated[key],
            )
        )
        if "html" in sources:
            html[template_id] = sources["html"]
    frames = {}
    for path in sorted(root.glob("*.j2")) if root.is_dir() else []:
        name = _parse_file_name(path)
        frames[(f"{name.stem}.{name.part}", name.locale)] = path.read_text(encoding="utf-8")
    return _BuiltIns(templates=tuple(templates), html=html, frames=frames)


def _variables(ctx: KitContext) -> dict[str, Any]:
    return ctx.model_dump(mode="json", exclude={"customer_id"})


_BUILTIN_CHOICES: Final = 4096
"""Built-in choices a renderer remembers (by purpose, channel, segment and locale) before it starts over."""


def _most_specific(
    candidates: Iterable[Template],
    purpose: TemplatePurpose,
    channel: ShareChannel,
    segment: Segment | None,
    locale: str,
) -> Template | None:
    """The template of this purpose and channel for the segment (or any) in the nearest locale, newest first."""
    best: tuple[tuple[int, int, float, str], Template] | None = None
    for template in candidates:
        if template.purpose is not purpose or template.channel is not channel:
            continue
        if template.segment is not None and template.segment != segment:
            continue
        rank = _locale_rank(template.locale, locale)
        if rank is None:
            continue
        key = (0 if template.segment is not None else 1, rank, -template.updated_at.timestamp(), template.id)
        if best is None or key < best[0]:
            best = (key, template)
    return best[1] if best is not None else None


class KitRenderer:
    """Chooses, validates and renders kit templates in the sandbox (see the module docstring).

    Safe to share between threads: compiled templates are cached, and each render keeps its budget in a
    context variable. Text renders are kept too, by template and the values of the names it reads, and a kit's
    messages whole, by its templates, link and the values they read (a widget asks for the same customer's kit on
    every page view), up to `rendered_cache_chars` characters of keys and texts; HTML is always rendered afresh.
    """

    def __init__(
        self,
        templates_dir: Path = DEFAULT_TEMPLATES_DIR,
        *,
        max_output_chars: int = 20_000,
        render_timeout_s: float = 1.0,
        max_template_chars: int = 10_000,
        cache_size: int = 512,
        rendered_cache_chars: int = 16_000_000,
    ) -> None:
        self.templates_dir = templates_dir
        self.max_output_chars = max_output_chars
        self.render_timeout_s = render_timeout_s
        self.max_template_chars = max_template_chars
        self._cache_size = cache_size
        self._text_env = _KitSandbox(autoescape=False, limit=max_output_chars)
        self._html_env = _KitSandbox(autoescape=True, limit=max_output_chars)
        self._compiled: OrderedDict[tuple[str, bool, frozenset[str]], _Compiled] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._serials = itertools.count()
        self._rendered: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._rendered_chars = 0
        self._kit_names: dict[tuple[tuple[str, int, int], ...], tuple[str, ...]] = {}
        self._rendered_budget = rendered_cache_chars
        self._builtins = _load_builtins(templates_dir)
        self._builtin_choice: dict[tuple[TemplatePurpose, ShareChannel, Segment | None, str], Template | None] = {}
        self._builtin_set = frozenset(self._builtins.templates)

    @property
    def builtin_templates(self) -> tuple[Template, ...]:
        """The templates shipped under `templates_dir`, for marketers to start from."""
        return self._builtins.templates

    # --- choosing ------------------------------------------------------------------------------------------------
    def choose(
        self,
        purpose: TemplatePurpose,
        channel: ShareChannel,
        *,
        segment: Segment | None = None,
        locale: str = "en",
        marketer: Sequence[Template] = (),
    ) -> Template:
        """The most specific template for a customer, a marketer's before a built-in one; `NotFound` when none fits."""
        best = _most_specific(marketer, purpose, channel, segment, locale)
        if best is None:
            key = (purpose, channel, segment, locale)
            if key in self._builtin_choice:
                best = self._builtin_choice[key]
            else:
                best = _most_specific(self._builtins.templates, purpose, channel, segment, locale)
                if len(self._builtin_choice) >= _BUILTIN_CHOICES:
                    self._builtin_choice.clear()
                self._builtin_choice[key] = best
        if best is None:
            raise NotFound(f"no {purpose.value} template for {channel.value} in {locale!r}")
        return best

    def _by_id(self, template_id: str, marketer: Sequence[Template], purpose: TemplatePurpose) -> Template:
        found = next((t for t in (*marketer, *self._builtins.templates) if t.id == template_id), None)
        if found is None:
            raise NotFound(f"no template {template_id!r}")
        if found.purpose is not purpose:
            raise InvalidInput(f"template {template_id!r} is a {found.purpose.value} template, not {purpose.value}")
        return found

    # --- validating ----------------------------------------------------------------------------------------------
    def validate(self, template: Template) -> None:
        """Refuse a template that cannot be used, with every problem and its line: syntax, unknown variables,
        forbidden constructs, size, or a trial render (two sample customers) that fails or runs over budget."""
        problems: list[RowError] = []
        for part, source in (("body", template.body), ("subject", template.subject)):
            if source is None:
                continue
            name = f"{template.id}.{part}"
            if len(source) > self.max_template_chars:
                problems.append(
                    RowError(name, None, f"{len(source):,} characters; at most {self.max_template_chars:,} allowed")
                )
                continue
            try:
                compiled = self._compile(source, html=False, name=name, allowed=KIT_VARIABLES)
                for sparse in (False, True):
                    sample = sample_context(locale=template.locale, segment=template.segment, sparse=sparse)
                    self._run(compiled.template, _variables(sample), name=name)
            except InvalidInput as exc:
                problems.extend(p for p in exc.problems if p not in problems)
        if problems:
            raise InvalidInput(f"template {template.id!r} cannot be used", problems)

    # --- rendering -----------------------------------------------------------------------------------------------
    def preview(self, template: Template, ctx: KitContext) -> str:
        """The template's text for one customer (its subject first, when it has one), as a marketer checks it."""
        variables = _variables(ctx)
        text = _tidy(self._text(template.body, variables, name=f"{template.id}.body"))
        if template.subject is None:
            return text
        return f"{_one_line(self._text(template.subject, variables, name=f'{template.id}.subject'))}\n\n{text}"

    def render_kit(
        self,
        ctx: KitContext,
        *,
        variant: Variant | None = None,
        marketer: Sequence[Template] = (),
        channels: Sequence[ShareChannel] | None = None,
        within_s: float | None = None,
    ) -> Kit:
        """A customer's kit: one message per share channel, in `channels` order if given, else the variant's
        `channel_order`, else `DEFAULT_CHANNEL_ORDER`; the variant's `template_ids` override the choice.

        With `within_s` (shorter than the render budget), a template that runs longer raises `RenderDeferred`."""
        within = _WITHIN.set(within_s)
        try:
            return self._kit(ctx, variant, marketer, channels)
        finally:
            _WITHIN.reset(within)

    def _kit(
        self,
        ctx: KitContext,
        variant: Variant | None,
        marketer: Sequence[Template],
        channels: Sequence[ShareChannel] | None,
    ) -> Kit:
        if channels is not None:
            order = tuple(channels)
        elif variant is not None and variant.channel_order:
            order = variant.channel_order
        else:
            order = DEFAULT_CHANNEL_ORDER
        variables = _variables(ctx)
        used: dict[ShareChannel, Template] = {}
        for channel in dict.fromkeys(order):
            override = variant.template_ids.get(channel) if variant is not None else None
            used[channel] = (
                self._by_id(override, marketer, TemplatePurpose.SHARE)
                if override
                else self.choose(
                    TemplatePurpose.SHARE,
                    channel,
                    segment=ctx.advocate.segment,
                    locale=ctx.advocate.locale,
                    marketer=marketer,
                )
            )
        compiled = self._compiled_texts(used)
        key = self._messages_key(compiled, ctx.link, variables)
        kept: tuple[tuple[str, str | None, str, str | None], ...] | None = self._kept(key)
        if kept is not None:
            messages = tuple(
                KitMessage(channel=_SHARE_CHANNELS[c], subject=s, text=t, share_url=u)  # faster than model_construct
                for c, s, t, u in kept
            )
        else:
            messages = tuple(
                self._share_message(used[channel], channel, ctx, variables, body, subject)
                for channel, (body, subject) in compiled.items()
            )
            if key is not None:
                # Kept as tuples of strings, which the garbage collector stops tracking: every object a cache
                # holds is walked by each full collection, and on one worker they had grown to 100 ms.
                plain = tuple((str(m.channel), m.subject, m.text, m.share_url) for m in messages)
                size = sum(len(m.text) + len(m.share_url or "") + len(m.subject or "") for m in messages)
                self._keep(key, plain, size + len(key[2]) + len(key[3]))
        return Kit(
            customer_id=ctx.customer_id,
            code=ctx.code,
            link=ctx.link,
            qr_url=qr_image_link(ctx.link),
            messages=messages,
            reward_for_you=ctx.reward_for_you,
            reward_for_friend=ctx.reward_for_friend,
            friend_offer=ctx.friend_offer,
            assets=ctx.assets,
            segment=ctx.advocate.segment,
            locale=ctx.advocate.locale,
            variant_id=variant.id if variant is not None else None,
            template_ids={channel: template.id for channel, template in used.items()},
        )

    def _compiled_texts(
        self, used: Mapping[ShareChannel, Template]
    ) -> dict[ShareChannel, tuple[_Compiled, _Compiled | None]]:
        """Each channel's compiled body and (for email) subject: the kit's key names them, and a miss renders them."""
        compiled: dict[ShareChannel, tuple[_Compiled, _Compiled | None]] = {}
        for channel, template in used.items():
            body = self._compile(template.body, html=False, name=f"{template.id}.body", allowed=KIT_VARIABLES)
            subject = None
            if channel is ShareChannel.EMAIL and template.subject is not None:
                name = f"{template.id}.subject"
                subject = self._compile(template.subject, html=False, name=name, allowed=KIT_VARIABLES)
            compiled[channel] = (body, subject)
        return compiled

    def _messages_key(
        self,
        compiled: Mapping[ShareChannel, tuple[_Compiled, _Compiled | None]],
        link: str,
        variables: Mapping[str, Any],
    ) -> tuple[str, tuple[tuple[str, int, int], ...], str, str] | None:
        """What a kit's messages depend on: each channel's compiled body and subject, the link (appended where a
        text leaves it out) and the values of every name those templates read; one key for the whole kit instead
        of one per render. None when a value cannot be a key (see `_rendered_key`)."""
        parts = tuple(
            (str(channel), body.serial, -1 if subject is None else subject.serial)
            for channel, (body, subject) in compiled.items()
        )
        names = self._kit_names.get(parts)
        if names is None:
            texts = [text for pair in compiled.values() for text in pair if text is not None]
            names = tuple(sorted({name for text in texts for name in text.names}))
            if len(self._kit_names) >= 1024:
                self._kit_names.clear()
            self._kit_names[parts] = names
        values = _json_key([variables.get(name) for name in names])
        return None if values is None else ("kit", parts, link, values)

    def _share_message(
        self,
        template: Template,
        channel: ShareChannel,
        ctx: KitContext,
        variables: dict[str, Any],
        body: _Compiled,
        subject_text: _Compiled | None,
    ) -> KitMessage:
        """One channel's message, rendered from its compiled texts; not kept text by text (the kit is kept whole)."""
        text = _tidy(self._run(body.template, variables, name=f"{template.id}.body"))
        subject = None
        if subject_text is not None:
            subject = _one_line(self._run(subject_text.template, variables, name=f"{template.id}.subject"))
        if channel is ShareChannel.X:
            text = _shorten(text, X_TEXT_LIMIT)
        elif ctx.link not in text:
            text = f"{text}\n{ctx.link}" if text else ctx.link
        return KitMessage(
            channel=channel,
            subject=subject,
            text=text,
            share_url=share_url(channel, text=text, link=ctx.link, subject=subject),
        )

    def render_message(
        self,
        ctx: KitContext,
        *,
        purpose: TemplatePurpose,
        channel: ContactChannel,
        marketer: Sequence[Template] = (),
        template_id: str | None = None,
    ) -> RenderedMessage:
        """A message the engine sends (`message` to the customer, `invitation` to a friend on their behalf).

        Every text ends with the unsubscribe link unless it carries it already; email also gets a subject and
        HTML in the layout, whose footer always shows the link. For an invitation, `ctx.unsubscribe_url` is the
        friend's own "don't invite me again" link.
        """
        if purpose is TemplatePurpose.SHARE:
            raise InvalidInput("share texts are sent by customers themselves; render them with render_kit")
        template = (
            self._by_id(template_id, marketer, purpose)
            if template_id
            else self.choose(
                purpose,
                _SHARE_CHANNEL_OF[channel],
                segment=ctx.advocate.segment,
                locale=ctx.advocate.locale,
                marketer=marketer,
            )
        )
        variables = _variables(ctx)
        body = _tidy(self._text(template.body, variables, name=f"{template.id}.body"))
        frame = {
            **variables,
            "purpose": purpose.value,
            "channel": channel.value,
            "lang": _language(ctx.advocate.locale),
        }
        text = body
        if ctx.unsubscribe_url not in body:
            footer = _tidy(self._frame("footer.txt", ctx.advocate.locale, {**frame, "content": "", "subject": ""}))
            text = f"{body}\n\n{footer}"
        if channel is not ContactChannel.EMAIL:
            return RenderedMessage(subject=None, text=text, html=None, template_id=template.id)
        subject = ctx.campaign_name
        if template.subject is not None:
            subject = _one_line(self._text(template.subject, variables, name=f"{template.id}.subject")) or subject
        builtin_html = self._builtins.html.get(template.id) if template in self._builtin_set else None
        if builtin_html is not None:
            rendered = self._render(builtin_html, variables, html=True, name=f"{template.id}.html")
            content = Markup(rendered)  # noqa: S704 - rendered with autoescape on
        else:
            content = text_to_html(body)
        html = self._frame("layout.html", ctx.advocate.locale, {**frame, "content": content, "subject": subject})
        return RenderedMessage(subject=subject, text=text, html=html, template_id=template.id)

    # --- the guarded core ------------------------------------------------------------------------------------------
    def _frame(self, name: str, locale: str, variables: dict[str, Any]) -> str:
        ranked = [
            (rank, source)
            for (frame, frame_locale), source in self._builtins.frames.items()
            if frame == name and (rank := _locale_rank(frame_locale, locale)) is not None
        ]
        if not ranked:
            raise NotFound(f"no {name}.j2 under {self.templates_dir}")
        source = min(ranked, key=lambda item: item[0])[1]
        return self._render(source, variables, html=name.endswith(".html"), name=name, allowed=_FRAME_VARIABLES)

    def _text(self, source: str, variables: Mapping[str, Any], *, name: str) -> str:
        return self._render(source, variables, html=False, name=name)

    def _render(
        self,
        source: str,
        variables: Mapping[str, Any],
        *,
        html: bool,
        name: str,
        allowed: frozenset[str] = KIT_VARIABLES,
    ) -> str:
        compiled = self._compile(source, html=html, name=name, allowed=allowed)
        key = None if html else _rendered_key(compiled, variables)
        if key is None:  # Markup and str print differently under autoescape, and JSON cannot tell them apart
            return self._run(compiled.template, variables, name=name)
        kept: str | None = self._kept(key)
        if kept is not None:
            return kept
        text = self._run(compiled.template, variables, name=name)
        self._keep(key, text, len(key[1]) + len(text))
        return text

    def _kept(self, key: Hashable | None) -> Any:
        if key is None:
            return None
        with self._cache_lock:
            kept = self._rendered.get(key)
            if kept is None:
                return None
            self._rendered.move_to_end(key)
            return kept[0]

    def _keep(self, key: Hashable, value: object, size: int) -> None:
        """Keep a render (a text, or a kit's messages) within `rendered_cache_chars`, the least recent out first."""
        if size > self._rendered_budget // 64:
            return
        with self._cache_lock:
            if key not in self._rendered:
                self._rendered[key] = (value, size)
                self._rendered_chars += size
            while self._rendered_chars > self._rendered_budget:
                _, (_, dropped) = self._rendered.popitem(last=False)
                self._rendered_chars -= dropped

    def _compile(self, source: str, *, html: bool, name: str, allowed: frozenset[str]) -> _Compiled:
        key = (source, html, allowed)
        with self._cache_lock:
            cached = self._compiled.get(key)
            if cached is not None:
                self._compiled.move_to_end(key)
                return cached
        if len(source) > self.max_template_chars:
            raise InvalidInput(
                f"template {name} is too long",
                [RowError(name, None, f"{len(source):,} characters; at most {self.max_template_chars:,} allowed")],
            )
        env = self._html_env if html else self._text_env
        try:
            ast = env.parse(source)
            problems = _static_problems(ast, name, allowed)
            if problems:
                raise InvalidInput(f"template {name} cannot be used", problems)
            # A plain copy of the sandbox's globals (set once, when it is made), not Jinja's ChainMap over them:
            # every render copies a template's globals, and a ChainMap is copied key by key in Python.
            compiled = _Compiled(
                env.template_class.from_code(env, env.compile(ast, filename=_TEMPLATE_FILE), dict(env.globals)),
                tuple(sorted(meta.find_undeclared_variables(ast))),
                next(self._serials),
            )
        except TemplateSyntaxError as exc:
            raise InvalidInput(
                f"template {name} has a syntax error", [RowError(name, exc.lineno, exc.message or "syntax error")]
            ) from None
        except TemplateError as exc:  # constant folding at compile time runs expressions, e.g. `{{ 1[0] }}`
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise InvalidInput(f"template {name} cannot be used", [RowError(name, None, reason)]) from None
        except (RecursionError, SyntaxError) as exc:  # Jinja's parser recursing, or Python's limits on nesting
            detail = exc.msg if isinstance(exc, SyntaxError) else "too many nested brackets or operators"
            reason = f"nested too deeply to compile ({detail}); split it into simpler expressions"
            raise InvalidInput(f"template {name} cannot be used", [RowError(name, None, reason)]) from None
        with self._cache_lock:
            self._compiled[key] = compiled
            if len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        return compiled

    def _run(self, template: JinjaTemplate, variables: Mapping[str, Any], *, name: str) -> str:
        """Render under the budget: output counted as it is produced, loops and operations ticked against the clock."""
        within = _WITHIN.get()
        defers = within is not None and within < self.render_timeout_s
        timeout_s = min(within, self.render_timeout_s) if within is not None else self.render_timeout_s
        budget = _Budget(deadline=time.monotonic() + timeout_s, timeout_s=timeout_s, defers=defers)
        token = _BUDGET.set(budget)
        chunks: list[str] = []
        size = 0
        stream = cast(Generator[str, None, None], template.generate(variables))
        try:
            for chunk in stream:
                size += len(chunk)
                if size > self.max_output_chars:
                    raise RenderLimit(f"the output is longer than {self.max_output_chars:,} characters")
                chunks.append(chunk)
        except RenderDeferred:
            raise
        except Exception as exc:  # a template may fail in any way; each becomes the marketer's problem to fix
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise InvalidInput(f"template {name} failed", [RowError(name, _line_of(exc), reason)]) from None
        finally:
            stream.close()
            _BUDGET.reset(token)
        return "".join(chunks)


# --- loading from the store ----------------------------------------------------------------------------------------
def load_kit_context(
    store: Store,
    customer_id: str,
    code: ReferralCode,
    *,
    public_base_url: str,
    unsubscribe_url: str,
    preferences_url: str,
    idea_url: str | None = None,
    kit_url: str | None = None,
    assets: Sequence[Asset] = (),
    impact: Impact | None = None,
    locale: str | None = None,
    reads: KitReads | None = None,
) -> KitContext:
    """Read what a kit says about a customer: the customer, their latest scores, the campaign, their impact
    (their own `REFERRED` edges) and what they bought (their latest purchase events, then their attributes), in
    one `kit_reads` unless the caller passes the `reads` it made for the code and templates.
    `locale` speaks in another language than the customer's own (material for a friend)."""
    if reads is None:
        reads = store.kit_reads(customer_id, code.campaign_id)
    customer = reads.customer
    if locale:
        customer = customer.model_copy(update={"locale": locale})
    campaign = store.link_campaign(code.campaign_id)
    if impact is None:
        impact = impact_from_edges(customer_id, reads.referrals)
    bought = purchase_names([*(event.attributes for event in reads.purchases), customer.attributes])
    return kit_context(
        customer,
        code,
        campaign,
        scores=reads.scores,
        impact=impact,
        purchases=bought,
        public_base_url=public_base_url,
        unsubscribe_url=unsubscribe_url,
        preferences_url=preferences_url,
        idea_url=idea_url,
        kit_url=kit_url,
        assets=assets,
    )
