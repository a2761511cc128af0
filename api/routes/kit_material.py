"""`/v1/customers/{id}/kit/more` and `/kit/render`: more material for a friend, and one kit message rendered as a
page or widget shows it (`engine.kit_material`). Both are a customer's own requests, on `customer_router`."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from api.auth import V1Route
from api.deps import OutreachServiceDep
from api.params import CustomerIdPath
from api.schemas import problem_responses
from api.schemas_customers import KitFormatQuery, MaterialRequest
from engine.kit_material import material_for_friend, render_message
from engine.kits import Kit
from graph.outreach import ShareChannel

customer_router = APIRouter(prefix="/v1", tags=["kits"], route_class=V1Route)


PRIVATE_HEADERS: Final[dict[str, str]] = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""A kit carries one person's link: no cache keeps it, and no site it links to learns where it was shown."""

_RENDERED_EXAMPLE_HTML = (
    '<article class="kit-message" lang="en" data-channel="whatsapp">\n'
    '<div class="kit-text"><p>Ada here: try the shop, you get 10 EUR off '
    '<a href="https://shop.example/r/ADA7K2">https://shop.example/r/ADA7K2</a></p></div>\n'
    '<p class="kit-link"><a href="https://shop.example/r/ADA7K2">https://shop.example/r/ADA7K2</a></p>\n'
    '<figure class="kit-qr"><svg role="img">…</svg></figure>\n'
    '<p class="kit-share"><a href="https://wa.me/?text=…" rel="noopener noreferrer">whatsapp</a></p>\n'
    "</article>\n"
)


@customer_router.post(
    "/customers/{customer_id}/kit/more",
    summary="Ask for more material to pass on to a friend",
    description="The customer's kit (their link, code, QR code and rewards) with its messages written for a "
    "friend: in the friend's language (`locale`, falling back to English where no template speaks it) and for "
    "the channels they use. Their code is issued on first request. Asking counts as engagement, which lifts the "
    "back-off on messages. An unknown customer or campaign answers 404.",
    responses=problem_responses(404, 422, 503),
)
def post_more_material(
    customer_id: CustomerIdPath,
    body: Annotated[
        MaterialRequest,
        Body(
            openapi_examples={
                "french-friend": {
                    "summary": "A French friend on WhatsApp",
                    "value": {"campaign_id": "spring-2024", "locale": "fr", "channels": ["whatsapp"]},
                },
                "every-channel": {"summary": "Every channel", "value": {"campaign_id": "spring-2024"}},
            }
        ),
    ],
    service: OutreachServiceDep,
) -> Kit:
    return material_for_friend(service, customer_id, body.campaign_id, locale=body.locale, channels=body.channels)


@customer_router.get(
    "/customers/{customer_id}/kit/render",
    response_class=HTMLResponse,
    summary="One message of a customer's kit, ready to show",
    description="The kit's message for `channel` as an HTML fragment (`format=html`: the text escaped whole with "
    "its links made clickable, the referral link, the QR code as inline SVG and the channel's share link) or as "
    "plain text (`format=text`: an email's subject, a blank line, then the text). Like `GET /kit`, asking counts "
    "as engagement and issues the code on first request. An unknown customer or campaign answers 404.",
    responses={
        200: {
            "description": "The rendered message",
            "content": {
                "text/html": {"schema": {"type": "string"}, "example": _RENDERED_EXAMPLE_HTML},
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "Ada here: try the shop https://shop.example/r/ADA7K2\n",
                },
            },
        },
        **problem_responses(404, 422, 503),
    },
)
def render_kit_message(
    customer_id: CustomerIdPath,
    service: OutreachServiceDep,
    campaign_id: Annotated[str, Query(description="The referral campaign the kit is for.", examples=["spring-2024"])],
    channel: Annotated[ShareChannel, Query(description="The share channel whose message to render.")],
    format: Annotated[KitFormatQuery, Query(description="`html` (a fragment) or `text`.")] = "html",
) -> Response:
    rendered = render_message(service.kit(customer_id, campaign_id), channel, format)
    if format == "html":
        return HTMLResponse(rendered, headers=PRIVATE_HEADERS)
    return PlainTextResponse(rendered, headers=PRIVATE_HEADERS)
