"""`create_app`: the FastAPI application, assembled from settings (uvicorn calls it as a factory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from api.deps import ContactHolder, StoreHolder
from api.problems import install_problem_handlers
from api.routes import ROUTERS
from engine.settings import Settings, get_settings

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
    {"name": "health", "description": "Liveness and readiness probes."},
]

DESCRIPTION = """
Customers are nodes of a graph; `REFERRED` and `INFLUENCES` are its edges. Analyses pick influencers, prosumers
and advocates and explain why.

Every error is an RFC 9457 problem (`application/problem+json`). A store that cannot be reached answers 503 with
`Retry-After`.
"""


def _number(value: float | int | None) -> str:
    """Thousands separators for KPIs (`12,345`); a dash for a missing value."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "–"


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.filters["number"] = _number
    templates.env.filters["when"] = _when
    templates.env.globals["asset_version"] = ASSET_VERSION
    return templates


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the store opens in the lifespan, or on first use if it is down at startup."""
    settings = settings or get_settings()
    holder = StoreHolder(settings)
    contact = ContactHolder(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(holder.try_open)
        try:
            yield
        finally:
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
    app.state.store_holder = holder
    app.state.contact_holder = contact
    app.state.templates = _templates()
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_docs(app)
    return app


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
