"""Authentication, authorisation and rate limits for every route, in one place a reviewer can read.

Each `/v1` route has one entry in `POLICY`: the scope a marketer key needs, and whether a customer may call it
for themself (the route's `{customer_id}` must then be the customer's own). `authorise` runs before every `/v1`
handler (their routers make `V1Route`s), so a route without an entry is refused, never silently open; a test
walks the app's routes against the table. Webhooks authenticate by signature and public pages by signed links, so
their routers skip it.

Credentials, in the order they are read: `Authorization: Bearer <marketer key | customer token>`, then the
marketer's session cookie, then the customer's session cookie (browsers on our own pages; unsafe methods must echo
the session's CSRF secret).
"""

from __future__ import annotations

import bisect
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPBearer
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from api.deps import ClockDep, app_clock, holder_of
from engine.access import (
    Scope,
    Session,
    check_api_key,
    check_csrf,
    grants,
    looks_like_api_key,
    read_customer_token,
    read_session,
    split_api_key,
    token_keys,
)
from engine.settings import Settings
from graph.errors import Forbidden, TooManyRequests, Unauthorized

MARKETER_COOKIE: Final = "advocacy_session"
CUSTOMER_COOKIE: Final = "advocacy_customer"
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Marketer:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    via: Literal["key", "session"]

    @property
    def ident(self) -> str:
        return f"key:{self.key_id}"

    def allows(self, scope: Scope) -> bool:
        return grants(self.scopes, scope)


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    via: Literal["token", "session"]

    @property
    def ident(self) -> str:
        return f"customer:{self.customer_id}"


Principal = Marketer | Customer


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs: a marketer scope, and whether the customer it names may call it with their token."""

    scope: Scope
    customer_self: bool = False


_R, _W = Scope.READ, Scope.CUSTOMERS_WRITE
POLICY: Final[dict[tuple[str, str], Rule]] = {
    ("GET", "/v1/me"): Rule(_R, customer_self=True),
    ("GET", "/metrics"): Rule(_R),
    ("POST", "/v1/customer-tokens"): Rule(Scope.TOKENS_ISSUE),
    ("GET", "/v1/api-keys"): Rule(Scope.ADMIN),
    ("POST", "/v1/api-keys"): Rule(Scope.ADMIN),
    ("DELETE", "/v1/api-keys/{key_id}"): Rule(Scope.ADMIN),
    # customers and the graph
    ("GET", "/v1/customers"): Rule(_R),
    ("GET", "/v1/customers/{customer_id}"): Rule(_R, customer_self=True),
    ("PUT", "/v1/customers/{customer_id}"): Rule(_W),
    ("DELETE", "/v1/customers/{customer_id}"): Rule(_W),
    ("GET", "/v1/stats"): Rule(_R),
    ("POST", "/v1/import"): Rule(_W),
    ("GET", "/v1/graph/view"): Rule(_R),
    ("GET", "/v1/customers/{customer_id}/relationships"): Rule(_R),
    ("POST", "/v1/relationships"): Rule(_W),
    ("GET", "/v1/customers/{customer_id}/events"): Rule(_R, customer_self=True),
    ("POST", "/v1/customers/{customer_id}/events"): Rule(_W),
    ("GET", "/v1/customers/{customer_id}/preferences"): Rule(_R, customer_self=True),
    ("PUT", "/v1/customers/{customer_id}/preferences"): Rule(_W, customer_self=True),
    # analysis, segments, targets, forecasts
    ("GET", "/v1/analysis/runs"): Rule(_R),
    ("POST", "/v1/analysis/runs"): Rule(Scope.ANALYSIS_RUN),
    ("GET", "/v1/analysis/runs/{run_id}"): Rule(_R),
    ("GET", "/v1/analysis/runs/{run_a}/compare/{run_b}"): Rule(_R),
    ("GET", "/v1/segments"): Rule(_R),
    ("GET", "/v1/segments/{segment}/customers"): Rule(_R),
    ("GET", "/v1/targets"): Rule(_R),
    ("POST", "/v1/forecasts"): Rule(_R),
    # campaigns and codes
    ("GET", "/v1/campaigns"): Rule(_R),
    ("POST", "/v1/campaigns"): Rule(Scope.CAMPAIGNS_WRITE),
    ("GET", "/v1/campaigns/{campaign_id}"): Rule(_R),
    ("POST", "/v1/campaigns/{campaign_id}/pause"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/campaigns/{campaign_id}/resume"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/campaigns/{campaign_id}/end"): Rule(Scope.CAMPAIGNS_WRITE),
    ("GET", "/v1/customers/{customer_id}/codes"): Rule(_R, customer_self=True),
    ("POST", "/v1/customers/{customer_id}/codes"): Rule(_W),
    ("GET", "/v1/codes/{code}"): Rule(_R),
    ("POST", "/v1/codes/{code}/pause"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/codes/{code}/resume"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/codes/{code}/revoke"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/codes/{code}/rotate"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/codes/leaks/scan"): Rule(Scope.CAMPAIGNS_WRITE),
    # conversions, rewards, fraud
    ("POST", "/v1/signups"): Rule(Scope.ORDERS_WRITE),
    ("POST", "/v1/orders"): Rule(Scope.ORDERS_WRITE),
    ("POST", "/v1/refunds"): Rule(Scope.ORDERS_WRITE),
    ("GET", "/v1/conversions"): Rule(_R),
    ("GET", "/v1/conversions/{order_id}"): Rule(_R),
    ("GET", "/v1/rewards"): Rule(_R),
    ("GET", "/v1/rewards/{reward_id}"): Rule(_R),
    ("GET", "/v1/customers/{customer_id}/ledger"): Rule(_R, customer_self=True),
    ("POST", "/v1/rewards/advance"): Rule(Scope.REWARDS_WRITE),
    ("POST", "/v1/rewards/fulfil"): Rule(Scope.REWARDS_WRITE),
    ("GET", "/v1/fraud/cases"): Rule(_R),
    ("POST", "/v1/fraud/cases/{order_id}/decision"): Rule(Scope.REWARDS_WRITE),
    ("GET", "/v1/metrics"): Rule(_R),
    ("GET", "/v1/metrics/cascades"): Rule(_R),
    ("GET", "/v1/metrics/cascades.svg"): Rule(_R),
    # templates, outreach, kits
    ("GET", "/v1/templates"): Rule(_R),
    ("POST", "/v1/templates"): Rule(Scope.CAMPAIGNS_WRITE),
    ("GET", "/v1/templates/{template_id}"): Rule(_R),
    ("PUT", "/v1/templates/{template_id}"): Rule(Scope.CAMPAIGNS_WRITE),
    ("DELETE", "/v1/templates/{template_id}"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/templates/preview"): Rule(_R),
    ("GET", "/v1/outreach"): Rule(_R),
    ("POST", "/v1/outreach"): Rule(Scope.CAMPAIGNS_WRITE),
    ("GET", "/v1/outreach/{outreach_id}"): Rule(_R),
    ("POST", "/v1/outreach/{outreach_id}/launch"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/outreach/{outreach_id}/pause"): Rule(Scope.CAMPAIGNS_WRITE),
    ("POST", "/v1/outreach/{outreach_id}/resume"): Rule(Scope.CAMPAIGNS_WRITE),
    ("GET", "/v1/outreach/{outreach_id}/counts"): Rule(_R),
    ("GET", "/v1/outreach/{outreach_id}/held"): Rule(_R),
    ("GET", "/v1/outreach/{outreach_id}/variants"): Rule(_R),
    ("GET", "/v1/customers/{customer_id}/kit"): Rule(_R, customer_self=True),
    ("GET", "/v1/customers/{customer_id}/kit/render"): Rule(_R, customer_self=True),
    ("POST", "/v1/customers/{customer_id}/kit/more"): Rule(_W, customer_self=True),
    ("POST", "/v1/customers/{customer_id}/responses"): Rule(_W, customer_self=True),
    ("POST", "/v1/customers/{customer_id}/invitations"): Rule(_W, customer_self=True),
}
"""Every `/v1` route but the signed webhooks, and `/metrics`. Reads need `read`; each write names its scope."""


_TIME: Final = struct.Struct("d")


class LocalWindows:
    """Moving-window counts for one process, without the timer thread `limits`' memory storage starts per hit.

    Each key keeps the times of its hits within the window (at most the limit's amount of them), trimmed on each
    hit; idle keys are dropped when there are many. On `/r/{code}` this was a fifth of the redirect's time. The
    times are packed in `bytes`, which the garbage collector does not track: up to `MAX_KEYS` containers (one per
    address that clicked) would each be walked by every full collection of the process.
    """

    MAX_KEYS: Final = 100_000

    def __init__(self) -> None:
        self._hits: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, amount: int, window_s: float, now: float) -> float | None:
        """None if the hit is allowed (and counted); else the seconds until the window lets one in."""
        cutoff = now - window_s
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.MAX_KEYS:
                    self._forget_idle(cutoff)
                hits = b""
            times = memoryview(hits).cast("d")
            gone = bisect.bisect_right(times, cutoff)
            if len(times) - gone >= amount:
                self._hits[key] = hits[gone * _TIME.size :]
                return times[gone] + window_s - now
            self._hits[key] = hits[gone * _TIME.size :] + _TIME.pack(now)
            return None

    def _forget_idle(self, cutoff: float) -> None:
        for key in [
            key for key, hits in self._hits.items() if not hits or _TIME.unpack(hits[-_TIME.size :])[0] <= cutoff
        ]:
            del self._hits[key]


class RateLimits:
    """Moving-window request limits per client IP (public routes) and per principal (`/v1`).

    With `memory://` each process counts alone (`LocalWindows`); `redis://…` shares the counts between API
    processes through `limits`' Redis storage.
    """

    def __init__(self, settings: Settings) -> None:
        self._public = parse(settings.api.rate_limit_public)
        self._key = parse(settings.api.rate_limit_key)
        storage = settings.api.rate_limit_storage
        self._local = LocalWindows() if storage.startswith("memory://") else None
        self._limiter = None if self._local else MovingWindowRateLimiter(storage_from_string(storage))
        self._trust_forwarded = settings.api.trust_forwarded_for

    @property
    def in_process(self) -> bool:
        """Counted in this process's memory, so a check never waits on the network."""
        return self._local is not None

    def client_ip(self, request: Request) -> str:
        if self._trust_forwarded:
            forwarded = request.headers.get("x-forwarded-for", "")
            first = forwarded.split(",")[0].strip()
            if first:
                return first
        return request.client.host if request.client else "unknown"

    def check_public(self, request: Request) -> None:
        self._hit(self._public, "ip", self.client_ip(request), "this address")

    def check_principal(self, principal: Principal) -> None:
        self._hit(self._key, "principal", principal.ident, "this credential")

    def _hit(self, item: RateLimitItem, bucket: str, who: str, what: str) -> None:
        wait = self._wait(item, bucket, who)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            raise TooManyRequests(f"too many requests from {what}: at most {item}; retry in {retry} s", retry)

    def _wait(self, item: RateLimitItem, bucket: str, who: str) -> float | None:
        if self._local is not None:
            return self._local.hit(f"{bucket}:{who}", item.amount, item.get_expiry(), time.monotonic())
        assert self._limiter is not None
        try:
            if self._limiter.hit(item, bucket, who):
                return None
            return self._limiter.get_window_stats(item, bucket, who).reset_time - time.time()
        except Exception as exc:  # a shared limiter that is down must not take the API with it: fail open, loudly
            log.warning("rate limiter unavailable, not limiting: %s", type(exc).__name__)
            return None


bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A marketer API key (`adv_…`) or a customer token (a short-lived JWT from the merchant's backend).",
)
marketer_cookie = APIKeyCookie(
    name=MARKETER_COOKIE, auto_error=False, scheme_name="marketerSession", description="Set by signing in at /login."
)
customer_cookie = APIKeyCookie(
    name=CUSTOMER_COOKIE, auto_error=False, scheme_name="customerSession", description="Set by opening /me?token=…"
)


CREDENTIALS: Final = (bearer_scheme, marketer_cookie, customer_cookie)


def document_credentials(schema: dict[str, Any], guarded: Iterable[tuple[str, str]]) -> None:
    """Declare the credentials `authorise` accepts (any one of them) on each guarded `(path, method)`."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    for scheme in CREDENTIALS:
        schemes[scheme.scheme_name] = scheme.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    for path, method in guarded:
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is not None:
            operation["security"] = [{scheme.scheme_name: []} for scheme in CREDENTIALS]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def marketer_from_key(request: Request, presented: str) -> Marketer:
    key_id, secret = split_api_key(presented)
    record = check_api_key(holder_of(request).get().get_api_key(key_id), secret)
    return Marketer(record.id, record.name, record.scopes, via="key")


def session_of(request: Request, cookie: str, now: datetime) -> Session:
    return read_session(_settings(request).api.session_secret.get_secret_value(), cookie, now=now)


def marketer_from_session(request: Request, session: Session) -> Marketer:
    """A session outlives nothing: a key revoked after sign-in ends its sessions at the next request."""
    record = holder_of(request).get().get_api_key(session.subject)
    if session.kind != "marketer" or record is None or record.revoked_at is not None:
        raise Unauthorized("session ended: sign in again")
    return Marketer(record.id, record.name, record.scopes, via="session")


def authenticate(request: Request, now: datetime) -> Principal:
    """The caller, from the first credential present; cached on the request (middleware and routes share it)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    principal = _authenticate(request, now)
    request.state.principal = principal
    return principal


def _authenticate(request: Request, now: datetime) -> Principal:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise Unauthorized("use 'Authorization: Bearer <API key or customer token>'")
        if looks_like_api_key(credentials):
            return marketer_from_key(request, credentials)
        settings = _settings(request)
        claims = read_customer_token(
            token_keys(settings),
            credentials,
            now=now,
            max_ttl=timedelta(seconds=settings.api.customer_token_max_ttl_s),
        )
        return Customer(claims.customer_id, via="token")
    for cookie_name in (MARKETER_COOKIE, CUSTOMER_COOKIE):
        cookie = request.cookies.get(cookie_name)
        if not cookie:
            continue
        session = session_of(request, cookie, now)
        if request.method not in SAFE_METHODS:
            check_csrf(session, request.headers.get(CSRF_HEADER))
        if session.kind == "customer":
            return Customer(session.subject, via="session")
        return marketer_from_session(request, session)
    raise Unauthorized("credentials required: an API key or a customer token as 'Authorization: Bearer …'")


def route_template(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path_format", request.url.path))


def check_rule(principal: Principal, rule: Rule, request: Request) -> None:
    if isinstance(principal, Marketer):
        if not principal.allows(rule.scope):
            raise Forbidden(f"this API key lacks the scope '{rule.scope.value}'")
        return
    if not rule.customer_self:
        raise Forbidden("a customer token cannot call this route")
    named = request.path_params.get("customer_id")
    if named is not None and named != principal.customer_id:
        raise Forbidden("a customer token reaches only its own customer's routes")


async def authorise(request: Request) -> Principal:
    """The guard of every `/v1` router: who is calling, may they call this route, and not too often.

    It reads the credentials itself; `document_credentials` puts them in the OpenAPI document (as dependencies,
    FastAPI would solve three more per request, for nothing but the document).

    A customer's token or session and in-process rate limits need no I/O and are checked on the event loop; API
    keys and marketer sessions (looked up in the store) and limits shared through Redis go to the threadpool.
    """
    rule = POLICY.get((request.method if request.method != "HEAD" else "GET", route_template(request)))
    if rule is None:
        raise Forbidden("no access rule covers this route")  # fail closed; tests/unit/test_api_auth.py
    now = app_clock(request)()
    if _admission_waits(request):
        return await run_in_threadpool(_admit, request, rule, now)
    return _admit(request, rule, now)


def _admit(request: Request, rule: Rule, now: datetime) -> Principal:
    principal = authenticate(request, now)
    rate_limits(request).check_principal(principal)
    check_rule(principal, rule, request)
    return principal


def _admission_waits(request: Request) -> bool:
    """Whether admitting this request may wait on the store or Redis: only a bearer customer token with
    in-process limits is known not to (a session cookie may name a marketer, whose key is looked up)."""
    if not rate_limits(request).in_process:
        return True
    authorization = request.headers.get("authorization")
    if authorization:
        return looks_like_api_key(authorization.partition(" ")[2].strip())
    return True


def rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


async def limit_public(request: Request) -> None:
    """Per-IP limit for routes anyone can hit (`/r/{code}`, landing, unsubscribe, sign-in)."""
    limits = rate_limits(request)
    if limits.in_process:
        limits.check_public(request)
    else:
        await run_in_threadpool(limits.check_public, request)


class GuardedRoute(APIRoute):
    """A route whose guard admits the request before FastAPI reads the body or solves the parameters.

    As a router's dependency the guard was solved like one on every request (75 of a kit request's ~1,600 Python
    calls); here it is one call, and a refused caller costs no body parsing. `api.app` checks that each guarded
    router makes its guard's routes."""

    async def admit(self, request: Request) -> None:
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        admit = self.admit

        async def admitted(request: Request) -> Response:
            await admit(request)
            return await handler(request)

        return admitted


class V1Route(GuardedRoute):
    """A `/v1` route: `authorise` (credentials, `POLICY`, the caller's limit)."""

    async def admit(self, request: Request) -> None:
        await authorise(request)


class PublicRoute(GuardedRoute):
    """A route anyone may open: `limit_public` (the client address's limit)."""

    async def admit(self, request: Request) -> None:
        await limit_public(request)


async def admitted_principal(request: Request) -> Principal:
    """The caller `authorise` admitted to this request (running it again would count the request twice)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Forbidden("this route is not behind the /v1 guard")  # fail closed; api.app checks route classes
    return principal


PrincipalDep = Annotated[Principal, Depends(admitted_principal)]


class SignInRequired(Exception):
    """A marketer page was opened without a live session: the app answers with a redirect to `/login`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True, slots=True)
class MarketerPage:
    marketer: Marketer
    session: Session

    @property
    def csrf(self) -> str:
        """For forms (`csrf_token` field) and scripts (`X-CSRF-Token` header) on the page."""
        return self.session.csrf


@dataclass(frozen=True, slots=True)
class CustomerPage:
    customer: Customer
    session: Session

    @property
    def customer_id(self) -> str:
        return self.customer.customer_id

    @property
    def csrf(self) -> str:
        return self.session.csrf


def marketer_page(request: Request, clock: ClockDep) -> MarketerPage:
    """Dependency of every marketer page: the signed-in marketer, or a redirect to sign in and come back."""
    cookie = request.cookies.get(MARKETER_COOKIE)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not cookie:
        raise SignInRequired(target)
    try:
        session = session_of(request, cookie, clock())
        marketer = marketer_from_session(request, session)
    except Unauthorized:
        raise SignInRequired(target) from None
    if not marketer.allows(Scope.READ):
        raise Forbidden("this key cannot read the dashboard (it needs the 'read' scope)")
    rate_limits(request).check_principal(marketer)
    return MarketerPage(marketer, session)


def customer_page(request: Request, clock: ClockDep) -> CustomerPage:
    """Dependency of the customer's own page: the session `/me/enter` set, or a clear 401 page."""
    cookie = request.cookies.get(CUSTOMER_COOKIE)
    if not cookie:
        raise Unauthorized("open your referral page from the link on the shop's site")
    session = session_of(request, cookie, clock())
    if session.kind != "customer":
        raise Unauthorized("open your referral page from the link on the shop's site")
    customer = Customer(session.subject, via="session")
    rate_limits(request).check_principal(customer)
    return CustomerPage(customer, session)


def require_page_csrf(page: MarketerPage | CustomerPage, presented: str | None) -> None:
    """Forms on our pages post `csrf_token`; a cross-site form cannot know it."""
    check_csrf(page.session, presented)


MarketerPageDep = Annotated[MarketerPage, Depends(marketer_page)]
CustomerPageDep = Annotated[CustomerPage, Depends(customer_page)]
