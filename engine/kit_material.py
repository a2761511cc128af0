"""More material for a friend, and one kit message rendered on its own, as HTML or text.

A customer's kit speaks their own language. Asking for more material for a friend gets the same kit (their link,
their code, their rewards) with its messages written for the friend: in the friend's language and for the
channels they use, from the same sandboxed templates. Asking counts as engagement, as asking for the kit does.

`render_message_html` and `render_message_text` turn one message of a kit into what a page or widget shows:
the text (escaped whole, its links made clickable), the link, the QR code and the channel's share link.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from markupsafe import Markup

from engine.kits import Kit, KitMessage, qr_svg, text_to_html
from engine.outreach import OutreachService
from graph.errors import NotFound
from graph.outreach import ShareChannel, TemplatePurpose, customer_key

KitFormat = Literal["html", "text"]


def material_for_friend(
    service: OutreachService,
    customer_id: str,
    campaign_id: str,
    *,
    locale: str | None = None,
    channels: Sequence[ShareChannel] | None = None,
) -> Kit:
    """The customer's kit with its messages for a friend: in `locale` (default: the customer's own) and for
    `channels` (default: every share channel). `NotFound` for an unknown customer or campaign."""
    store = service.store
    code = service.code_for(customer_id, campaign_id)  # NotFound for an unknown customer or campaign
    service.limiter.record_engagement(customer_key(customer_id), at=service.clock())
    context = service.kit_context_of(customer_id, code, locale=locale)
    return service.renderer.render_kit(context, marketer=store.list_templates(TemplatePurpose.SHARE), channels=channels)


def kit_message(kit: Kit, channel: ShareChannel) -> KitMessage:
    """The kit's message for `channel`; `NotFound` when the kit has none for it."""
    for message in kit.messages:
        if message.channel is channel:
            return message
    raise NotFound(f"the kit has no {channel.value} message")


def render_message_text(kit: Kit, channel: ShareChannel) -> str:
    """The message as the customer sends it: an email's subject first, then the text (which holds the link).

    >>> from engine.kits import KitMessage
    >>> kit = Kit(customer_id="c1", code="ADA7K2", link="https://s.example/r/ADA7K2",
    ...           qr_url="https://s.example/qr/ADA7K2.svg",
    ...           messages=(KitMessage(channel=ShareChannel.SMS, text="Try it https://s.example/r/ADA7K2"),),
    ...           reward_for_you="", reward_for_friend="")
    >>> render_message_text(kit, ShareChannel.SMS)
    'Try it https://s.example/r/ADA7K2\\n'
    """
    message = kit_message(kit, channel)
    head = f"{message.subject}\n\n" if message.subject else ""
    return f"{head}{message.text}\n"


def render_message_html(kit: Kit, channel: ShareChannel) -> str:
    """The message as an HTML fragment: text escaped whole, the link, the QR code and the share link.

    The QR code is drawn inline from the link by the engine (the fragment stands alone); everything else is
    escaped.
    """
    message = kit_message(kit, channel)
    parts = [Markup('<article class="kit-message" lang="{}" data-channel="{}">').format(kit.locale, channel.value)]
    if message.subject:
        parts.append(Markup('<h2 class="kit-subject">{}</h2>').format(message.subject))
    parts.append(Markup('<div class="kit-text">{}</div>').format(text_to_html(message.text)))
    parts.append(Markup('<p class="kit-link"><a href="{0}">{0}</a></p>').format(kit.link))
    parts.append(Markup('<figure class="kit-qr">{}</figure>').format(Markup(qr_svg(kit.link))))  # noqa: S704 - ours
    if message.share_url:
        parts.append(
            Markup('<p class="kit-share"><a href="{}" rel="noopener noreferrer">{}</a></p>').format(
                message.share_url, channel.value
            )
        )
    parts.append(Markup("</article>"))
    return str(Markup("\n").join(parts)) + "\n"


def render_message(kit: Kit, channel: ShareChannel, kit_format: KitFormat) -> str:
    if kit_format == "html":
        return render_message_html(kit, channel)
    return render_message_text(kit, channel)
