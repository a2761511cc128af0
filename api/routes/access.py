"""Credentials: who am I, customer tokens for front ends, API keys, and signing a browser in.

`router` is guarded like every `/v1` router. `public_router` serves the two doors a browser comes through:
a marketer signs in at `/login` with an API key, and a customer opens `/me?token=…` from the merchant's site,
which trades the one-time token for a session cookie and drops the token from the address bar.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import (
    CUSTOMER_COOKIE,
    MARKETER_COOKIE,
    Customer,
    Marketer,
    PrincipalDep,
    PublicRoute,
    V1Route,
    marketer_from_key,
)
from api.deps import ClockDep, SettingsDep, StoreDep
from api.schemas import problem_responses
from api.schemas_access import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, CustomerTokenIn, CustomerTokenOut, MeOut
from engine.access import Scope, issue_customer_token, issue_session, new_api_key, read_customer_token, token_keys
from engine.settings import Settings
from graph.errors import Forbidden, NotFound, Unauthorized

router = APIRouter(prefix="/v1", tags=["access"], route_class=V1Route)
public_router = APIRouter(tags=["access"], include_in_schema=False, route_class=PublicRoute)


@router.get("/me", summary="Who the credential belongs to", responses=problem_responses(503))
def me(principal: PrincipalDep) -> MeOut:
    """The widget asks this first: a customer token names its customer; a key names itself and its scopes."""
    if isinstance(principal, Customer):
        return MeOut(kind="customer", customer_id=principal.customer_id)
    return MeOut(kind="marketer", key_id=principal.key_id, name=principal.name, scopes=list(principal.scopes))


@router.post(
    "/customer-tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Issue a short-lived customer token",
    description=(
        "For merchants' backends that would rather not sign tokens themselves. Needs `tokens:issue`. The token lets "
        "its customer read and change only their own data; hand it to the signed-in customer's browser."
    ),
    responses=problem_responses(404, 422, 503),
)
def create_customer_token(
    body: CustomerTokenIn, store: StoreDep, settings: SettingsDep, clock: ClockDep
) -> CustomerTokenOut:
    store.get_customer(body.customer_id)  # raises NotFound: no token for someone who does not exist
    ttl = min(body.ttl_s, settings.api.customer_token_max_ttl_s)
    token, claims = issue_customer_token(
        token_keys(settings), settings.api.customer_token_kid, body.customer_id, now=clock(), ttl=timedelta(seconds=ttl)
    )
    return CustomerTokenOut(token=token, customer_id=body.customer_id, expires_at=claims.expires_at)


@router.get("/api-keys", summary="List API keys (never their secrets)", responses=problem_responses(503))
def list_api_keys(store: StoreDep) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(key) for key in store.list_api_keys()]


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key",
    description="The key is in this response only: it is stored hashed and cannot be shown again.",
    responses=problem_responses(422, 503),
)
def create_api_key(body: ApiKeyCreate, store: StoreDep, clock: ClockDep) -> ApiKeyCreated:
    record, key = new_api_key(body.name, body.scopes, now=clock())
    store.save_api_key(record)
    return ApiKeyCreated(**ApiKeyOut.of(record).model_dump(), key=key)


@router.delete(
    "/api-keys/{key_id}",
    summary="Revoke an API key",
    description="Takes effect at once, for the key and for browser sessions signed in with it.",
    responses=problem_responses(404, 503),
)
def revoke_api_key(key_id: str, store: StoreDep, clock: ClockDep, principal: PrincipalDep) -> ApiKeyOut:
    if isinstance(principal, Marketer) and principal.key_id == key_id and principal.via == "session":
        raise Forbidden("sign in with another admin key to revoke the one this session uses")
    return ApiKeyOut.of(store.revoke_api_key(key_id, at=clock()))


def _set_session(response: Response, settings: Settings, name: str, token: str) -> None:
    response.set_cookie(
        name,
        token,
        max_age=settings.api.session_ttl_s,
        httponly=True,
        secure=settings.api.secure_cookies,
        samesite="lax",
        path="/",
    )


def _safe_next(value: str | None) -> str:
    """Only a path on this site: `//evil.example` or `https://…` would make sign-in an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@public_router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    response: Response = request.app.state.templates.TemplateResponse(
        request, "pages/login.html", {"next": _safe_next(next), "error": None}
    )
    return response


@public_router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    settings: SettingsDep,
    clock: ClockDep,
    key: Annotated[str, Form(max_length=300)],
    next: Annotated[str | None, Form(max_length=500)] = None,
) -> Response:
    """Trade an API key with `read` for a session cookie; the key itself never reaches the page's scripts."""
    try:
        marketer = marketer_from_key(request, key.strip())
        if not marketer.allows(Scope.READ):
            raise Forbidden("this key cannot read the dashboard (it needs the 'read' scope)")
    except (Unauthorized, Forbidden) as exc:
        page: Response = request.app.state.templates.TemplateResponse(
            request, "pages/login.html", {"next": _safe_next(next), "error": exc.detail}, status_code=exc.status
        )
        return page
    token, _ = issue_session(
        settings.api.session_secret.get_secret_value(),
        "marketer",
        marketer.key_id,
        now=clock(),
        ttl=timedelta(seconds=settings.api.session_ttl_s),
    )
    response = RedirectResponse(_safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    _set_session(response, settings, MARKETER_COOKIE, token)
    return response


@public_router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(MARKETER_COOKIE, path="/")
    response.delete_cookie(CUSTOMER_COOKIE, path="/")
    return response


@public_router.get("/me/enter")
def enter_customer_page(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    clock: ClockDep,
    token: Annotated[str, Query(min_length=10, max_length=4000)],
) -> Response:
    """The merchant's "your referral page" link: a one-time customer token becomes a session cookie.

    A token opens the page once (a link forwarded or found in a log later is refused); the merchant's site makes a
    fresh one each time the customer clicks through.
    """
    now = clock()
    claims = read_customer_token(
        token_keys(settings), token, now=now, max_ttl=timedelta(seconds=settings.api.customer_token_max_ttl_s)
    )
    if not store.use_token_once(claims.jti, expires_at=claims.expires_at, now=now):
        raise Unauthorized("this link was already used: open your referral page again from the shop's site")
    try:
        store.get_customer(claims.customer_id)
    except NotFound:
        raise Unauthorized("this link names no customer of this shop") from None
    session, _ = issue_session(
        settings.api.session_secret.get_secret_value(),
        "customer",
        claims.customer_id,
        now=now,
        ttl=timedelta(seconds=settings.api.session_ttl_s),
    )
    response = RedirectResponse("/me", status_code=status.HTTP_303_SEE_OTHER)
    _set_session(response, settings, CUSTOMER_COOKIE, session)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
