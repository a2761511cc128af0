"""`create_app`: the FastAPI application, assembled from settings (uvicorn calls it as a factory)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from api import idempotency
from api.auth import (
    GuardedRoute,
    PublicRoute,
    RateLimits,
    SignInRequired,
    V1Route,
    authorise,
    document_credentials,
)
from api.bodylimit import BodyLimitMiddleware
from api.deps import Clock, ContactHolder, StoreHolder, click_recorder
from api.idempotency import IdempotencyMiddleware
from api.observability import install_observability
from api.problems import install_problem_handlers
from api.routes import ROUTERS, Guard
from api.schemas import problem_responses
from engine.kits import qr_svg
from engine.settings import Settings, get_settings
from graph.model import utcnow

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(str(files("templates")))
ASSET_VERSION = "0.1.0"
"""Appended to our own CSS and JS URLs so browsers fetch them again after an upgrade."""

TAGS = [
    {"name": "customers", "description": "Customers as the merchant knows them: list, read, upsert, erase."},
    {"name": "graph", "description": "The network as a whole: counts, bulk import, a sample to draw."},
    {"name": "analysis", "description": "Records of the analyses that segment and score customers."},
    {"name": "targets", "description": "Whom to ask (influence maximisation) and what asking them would bring."},
    {"name": "campaigns", "description": "Referral programmes: the friend's offer, attribution and reward rules."},
    {"name": "codes", "description": "Advocates' referral codes: issue, vanity codes, pause, resume, revoke, rotate."},
    {"name": "conversions", "description": "Signups, orders and refunds, and what the engine decided about each."},
    {"name": "webhooks", "description": "Signed inbound events: our JSON envelope and Shopify's order webhooks."},
    {"name": "rewards", "description": "Rewards and their ledger: pending, approved, fulfilled, reversed."},
    {"name": "fraud", "description": "Held conversions awaiting review, and codes that look leaked."},
    {"name": "metrics", "description": "Participation, k-factor, cost per acquired customer, and multi-hop cascades."},
    {"name": "templates", "description": "Kit and message templates marketers write: validated, versioned, previewed."},
    {"name": "outreach", "description": "Messages to customers within the contact policy: plans, hold-backs, A/B."},
    {"name": "kits", "description": "What customers ask for and send back: their kit, ideas, invitations."},
    {"name": "public", "description": "Links and pages a friend sees: `/r/{code}` and the landing page."},
    {"name": "unsubscribe", "description": "The signed one-click unsubscribe link in every message (RFC 8058)."},
    {"name": "relationships", "description": "Referral and influence ties: read them, add them in batches."},
    {"name": "events", "description": "What customers did: purchases, reviews, ideas, feedback, shares."},
    {"name": "segments", "description": "Influencers, prosumers, advocates, passives, do-not-ask: counts and members."},
    {"name": "preferences", "description": "Consent per channel, unsubscribe, locale and time zone: the customer's."},
    {"name": "access", "description": "Who a credential is, customer tokens for front ends, and API keys."},
    {"name": "health", "description": "Liveness and readiness probes."},
]

DESCRIPTION = """
Customers are nodes of a graph; `REFERRED` and `INFLUENCES` are its edges. Analyses pick influencers, prosumers
and advocates and explain why.

Every error is an RFC 9457 problem (`application/problem+json`). A store that cannot be reached answers 503 with
`Retry-After`.

**Credentials.** Marketers and the merchant's backend send an API key, `Authorization: Bearer adv_…`; each key has
scopes (`read`, `customers:write`, `analysis:run`, `campaigns:write`, `orders:write`, `rewards:write`,
`tokens:issue`, `admin`). A customer's browser sends a short-lived customer token (an HS256 JWT the merchant's
backend signs, or gets from `POST /v1/customer-tokens`) and reaches only that customer's own routes. Lists page with
opaque cursors. POSTs that create or pay accept an `Idempotency-Key`. Requests are rate limited per credential and,
on public routes, per client address (429 with `Retry-After`).
"""


def _number(value: float | int | None) -> str:
    """Thousands separators for KPIs (`12,345`); a dash for a missing value."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "–"


def _qr_svg(link: str) -> Markup:
    """A referral link's QR code inline (the engine draws it from the link; nothing in it comes from input)."""
    return Markup(qr_svg(link))  # noqa: S704


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.filters["number"] = _number
    templates.env.filters["when"] = _when
    templates.env.filters["qr_svg"] = _qr_svg
    templates.env.globals["asset_version"] = ASSET_VERSION
    return templates


def create_app(settings: Settings | None = None, *, clock: Clock = utcnow) -> FastAPI:
    """Build the app; the store opens in the lifespan, or on first use if it is down at startup. `clock` is the
    time the programme sees (a test's clock)."""
    settings = settings or get_settings()
    holder = StoreHolder(settings)
    contact = ContactHolder(settings)
    clicks = click_recorder(settings, holder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(holder.try_open)
        _freeze_startup_heap()
        try:
            yield
        finally:
            if clicks is not None:
                await run_in_threadpool(clicks.close)
            await run_in_threadpool(contact.close)
            await run_in_threadpool(holder.close)

    app = FastAPI(
        title="Advocacy network",
        version=ASSET_VERSION,
        summary="Referral and advocacy network engine",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # served below from vendored files: FastAPI's default loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.store_holder = holder
    app.state.contact_holder = contact
    app.state.clicks = clicks
    app.state.templates = _templates()
    app.state.rate_limits = RateLimits(settings)
    install_problem_handlers(app)
    app.add_exception_handler(SignInRequired, _sign_in)
    for router, guard in ROUTERS:
        app.include_router(router, **_guarded(router, guard))
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID", idempotency.REPLAYED, "Location"],
            allow_credentials=False,  # the widget sends a bearer token, never our cookies
            max_age=600,
        )
    _document_extras(app, settings)
    install_observability(app, dependencies=[Depends(authorise)])  # Prometheus scrapes with a `read` key
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_docs(app)
    return app


def _freeze_startup_heap() -> None:
    """Move what starting made (modules, routes, the OpenAPI models, ~230k objects) out of the collector's sight.

    A full collection walked all of it: 100-250 ms on this machine, every few seconds under load, and every request
    queued behind one waited that long (the kit's p99 at 500 requests/s was ~300 ms, its p50 5 ms). Objects made
    later are collected as before. Once per process: a uvicorn worker starts one app, a test process many, whose
    cycles a second freeze would keep forever."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)


_GUARDS: Final[dict[Guard, tuple[type[GuardedRoute], tuple[int, ...]]]] = {
    "v1": (V1Route, (401, 403, 429)),
    "public": (PublicRoute, (429,)),
}
"""Each guarded router's route class, and the problems its guard may answer with."""


def _guarded(router: APIRouter, guard: Guard) -> dict[str, Any]:
    """`include_router` arguments for a router's guard (see `api.routes`). Guarded routers' routes run the guard
    themselves; one that would not is refused here rather than served unguarded."""
    if guard not in _GUARDS:
        return {}
    route_class, statuses = _GUARDS[guard]
    unguarded = [str(route) for route in router.routes if not isinstance(route, route_class)]
    if unguarded or router.route_class is not route_class:
        raise TypeError(f"a {guard} router needs APIRouter(route_class={route_class.__name__}): {unguarded}")
    return {"responses": problem_responses(*statuses)}


def _document_extras(app: FastAPI, settings: Settings) -> None:
    """Add what FastAPI cannot infer to the OpenAPI document: the `Idempotency-Key` header, and the credentials
    on each route of a `v1` router (`authorise` reads them itself)."""
    build = app.openapi
    guarded = [
        (route.path, method.lower())
        for router, guard in ROUTERS
        if guard == "v1"
        for route in router.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    ]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            idempotency.document(schema, ttl_s=settings.api.idempotency_ttl_s)
            document_credentials(schema, guarded)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from `api/static/vendor/swagger-ui`, so the API reference works offline too."""
    vendor = "/static/vendor/swagger-ui"
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} · API reference",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_favicon_url=f"{vendor}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
        )

    @app.get(redirect, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
