"""Signups, orders and refunds as the merchant reports them, directly (`/v1/signups`, `/v1/orders`, `/v1/refunds`)
or as signed webhooks (`/v1/webhooks/...`), and the conversions they became (`/v1/conversions`).

Every delivery is idempotent: the same order or refund sent again is answered with what was decided the first
time (200 instead of 201) and pays nothing twice. `webhook_router` is separate from `router` because webhooks
prove who sent them with a signature over the raw body, not with the credentials a later issue adds to `router`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response

from api.auth import V1Route
from api.deps import ClockDep, ServiceDep, SettingsDep, StoreDep
from api.schemas_program import (
    ORDER_EXAMPLE,
    REFUND_EXAMPLE,
    SIGNUP_EXAMPLE,
    WEBHOOK_EVENT_EXAMPLE,
    ConversionPage,
    OrderRequest,
    SignupRequest,
    SignupResult,
    WebhookOutcome,
    program_problems,
)
from engine.referrals import ReferralService
from engine.webhooks import (
    SHOPIFY_HMAC_HEADER,
    SIGNATURE_HEADER,
    OrderEvent,
    RefundEvent,
    WebhookEvent,
    parse_event,
    parse_shopify_order,
    parse_shopify_refund,
    verify,
    verify_shopify,
)
from graph.errors import Forbidden, NotFound
from graph.program import Conversion, ConversionStatus, Refund
from graph.program_store import Store

router = APIRouter(prefix="/v1", tags=["conversions"], route_class=V1Route)
webhook_router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

MAX_PAGE = 500

OrderIdPath = Annotated[str, Path(description="The merchant's order id.", examples=["order-9001"])]


def page_conversions(
    store: Store,
    *,
    status: ConversionStatus | None = None,
    campaign_id: str | None = None,
    customer_id: str | None = None,
    limit: int,
    after: str | None,
) -> tuple[list[Conversion], str | None]:
    """One page and the cursor of the next (None on the last page): one row more than asked tells which."""
    rows = store.list_conversions(
        status=status, campaign_id=campaign_id, customer_id=customer_id, limit=limit + 1, after=after
    )
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)


def _is_known(service: ReferralService, order_id: str) -> bool:
    try:
        service.get_conversion(order_id)
    except NotFound:
        return False
    return True


# --- direct delivery ---------------------------------------------------------------------------------------
@router.post(
    "/signups",
    summary="Record a friend's signup",
    description="With a `code` the friend typed or the `click_id` of their `/r/` visit, the signup is attributed "
    "to the code's owner and starts their `REFERRED` edge. `customer` creates the friend when the store does not "
    "know them yet. Sending the same signup again changes nothing and answers the same.",
    responses=program_problems(404, 422, 503),
)
def post_signup(
    body: Annotated[
        SignupRequest, Body(openapi_examples={"signup": {"summary": "Through a click", "value": SIGNUP_EXAMPLE}})
    ],
    service: ServiceDep,
) -> SignupResult:
    attribution = service.signup(body.signup(), customer=body.customer)
    return SignupResult(customer_id=body.customer_id, attribution=attribution)


@router.post(
    "/orders",
    status_code=201,
    summary="Record an order: attribute it, check it for fraud, issue its rewards",
    description="201 with the new conversion and its `Location`; 200 with the stored one when the order id was "
    "seen before (a redelivery). The same id with another buyer, amount or currency answers 409. `customer` "
    "creates the buyer when the store does not know them yet.",
    responses=program_problems(404, 409, 422, 503)
    | {200: {"description": "A redelivery: the conversion decided the first time"}},
)
def post_order(
    request: Request,
    response: Response,
    body: Annotated[
        OrderRequest, Body(openapi_examples={"order": {"summary": "With a checkout code", "value": ORDER_EXAMPLE}})
    ],
    service: ServiceDep,
) -> Conversion:
    redelivery = _is_known(service, body.id)
    conversion = service.process_order(body.order(), customer=body.customer)
    if redelivery:
        response.status_code = 200
    response.headers["Location"] = request.app.url_path_for("get_conversion", order_id=conversion.id)
    return conversion


@router.post(
    "/refunds",
    status_code=201,
    summary="Record a refund",
    description="Refunds of an order add up; once they reach its amount the conversion is `reversed` and its "
    "rewards are clawed back, paid ones included. 201 when the refund changed the conversion, 200 when it did not "
    "(a redelivered refund id).",
    responses=program_problems(404, 422, 503) | {200: {"description": "Nothing changed: a redelivery"}},
)
def post_refund(
    response: Response,
    refund: Annotated[Refund, Body(openapi_examples={"refund": {"summary": "In full", "value": REFUND_EXAMPLE}})],
    service: ServiceDep,
) -> Conversion:
    before = service.get_conversion(refund.order_id)
    after = service.process_refund(refund)
    if after == before:
        response.status_code = 200
    return after


# --- reading conversions -----------------------------------------------------------------------------------
@router.get(
    "/conversions",
    summary="List conversions, one page at a time",
    description="In order-id order. Pass the returned `next` as `after` for the next page; it is null on the "
    "last page. `customer_id` matches the buyer or the referrer; `campaign_id` the attribution's campaign.",
    responses=program_problems(422, 503),
)
def list_conversions(
    store: StoreDep,
    status: Annotated[ConversionStatus | None, Query(description="Only conversions in this status.")] = None,
    campaign_id: Annotated[str | None, Query(description="Only conversions attributed in this campaign.")] = None,
    customer_id: Annotated[str | None, Query(description="Only conversions with this buyer or referrer.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Conversions per page.")] = 100,
    after: Annotated[str | None, Query(description="`next` from the previous page.")] = None,
) -> ConversionPage:
    items, following = page_conversions(
        store, status=status, campaign_id=campaign_id, customer_id=customer_id, limit=limit, after=after
    )
    return ConversionPage(items=items, next=following)


@router.get("/conversions/{order_id}", summary="Read one conversion", responses=program_problems(404, 503))
def get_conversion(order_id: OrderIdPath, service: ServiceDep) -> Conversion:
    return service.get_conversion(order_id)


# --- signed webhooks ---------------------------------------------------------------------------------------
def _apply(service: ReferralService, event: WebhookEvent) -> WebhookOutcome:
    if isinstance(event, OrderEvent):
        return WebhookOutcome(event="order", conversion=service.process_order(event.order, customer=event.customer))
    if isinstance(event, RefundEvent):
        return WebhookOutcome(event="refund", conversion=service.process_refund(event.refund))
    return WebhookOutcome(event="signup", attribution=service.signup(event.signup, customer=event.customer))


async def raw_body(request: Request) -> bytes:
    """The exact bytes the sender signed; the routes themselves stay sync and run in the thread pool."""
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]

_RAW_JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}, "example": WEBHOOK_EVENT_EXAMPLE}},
    }
}
"""The body is read raw (the signature covers its exact bytes), so OpenAPI is told about it by hand."""


@webhook_router.post(
    "/events",
    status_code=202,
    summary="Receive a signed order, refund or signup event",
    description="Our documented envelope, signed with the shared webhook secret in `X-Advocacy-Signature` "
    "(a timestamp and an HMAC-SHA256 of the exact body). A missing, wrong or stale signature answers 401 and "
    "nothing is recorded. Events are idempotent, so retries are safe.",
    responses=program_problems(401, 404, 409, 422, 503),
    openapi_extra=_RAW_JSON_BODY,
)
def receive_event(
    body: RawBody,
    service: ServiceDep,
    settings: SettingsDep,
    clock: ClockDep,
    signature: Annotated[
        str | None, Header(alias=SIGNATURE_HEADER, description="`t=<unix seconds>,v1=<hex HMAC-SHA256>`.")
    ] = None,
) -> WebhookOutcome:
    config = settings.referral
    verify(
        body,
        signature,
        config.webhook_secret.get_secret_value(),
        now=clock(),
        tolerance_s=config.webhook_tolerance_s,
    )
    event = parse_event(body, ip_key=config.click_hash_key.get_secret_value())
    return _apply(service, event)


def _shopify_secret(settings: SettingsDep) -> str:
    secret = settings.referral.shopify_secret
    if secret is None:
        raise Forbidden("Shopify webhooks are not configured on this server (ADVOCACY_REFERRAL__SHOPIFY_SECRET)")
    return secret.get_secret_value()


@webhook_router.post(
    "/shopify/orders-paid",
    status_code=202,
    summary="Receive Shopify's orders/paid webhook",
    description="Verified with `X-Shopify-Hmac-Sha256` against the app secret: 403 while no secret is configured, "
    "401 when the HMAC does not match. The order's discount codes and note attributes (`click_id`) attribute it.",
    responses=program_problems(401, 403, 404, 409, 422, 503),
    openapi_extra=_RAW_JSON_BODY,
)
def receive_shopify_order(
    body: RawBody,
    service: ServiceDep,
    settings: SettingsDep,
    hmac: Annotated[
        str | None, Header(alias=SHOPIFY_HMAC_HEADER, description="base64 HMAC-SHA256 of the body.")
    ] = None,
) -> WebhookOutcome:
    secret = _shopify_secret(settings)
    verify_shopify(body, hmac, secret)
    config = settings.referral
    event = parse_shopify_order(
        body, ip_key=config.click_hash_key.get_secret_value(), click_attribute=config.click_cookie
    )
    return _apply(service, event)


@webhook_router.post(
    "/shopify/refunds-create",
    status_code=202,
    summary="Receive Shopify's refunds/create webhook",
    description="Verified like `orders-paid`. Refunds add up per order; a full refund claws the rewards back.",
    responses=program_problems(401, 403, 404, 422, 503),
    openapi_extra=_RAW_JSON_BODY,
)
def receive_shopify_refund(
    body: RawBody,
    service: ServiceDep,
    settings: SettingsDep,
    hmac: Annotated[
        str | None, Header(alias=SHOPIFY_HMAC_HEADER, description="base64 HMAC-SHA256 of the body.")
    ] = None,
) -> WebhookOutcome:
    secret = _shopify_secret(settings)
    verify_shopify(body, hmac, secret)
    return _apply(service, parse_shopify_refund(body))
