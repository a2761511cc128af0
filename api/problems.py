"""RFC 9457 problem details: the one place where errors become HTTP responses.

Every `graph.errors` class maps to its status, so routes never catch errors themselves. Clients get
`application/problem+json` with `type`, `title`, `status`, `detail` and `instance`, plus `errors` when several
input rows are wrong. A browser asking for a page gets the same facts as a small HTML page instead of JSON.
Unexpected exceptions are logged with their traceback and answered with a generic 500 that reveals nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from graph.errors import (
    AdvocacyError,
    Forbidden,
    InvalidInput,
    LedgerConflict,
    NotFound,
    PolicyViolation,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:advocacy:problem:"
"""Problem types are URNs: stable identifiers that need not be dereferenceable (RFC 9457 section 3.1.1)."""

_SLUGS: dict[type[AdvocacyError], str] = {
    NotFound: "not-found",
    InvalidInput: "invalid-input",
    PolicyViolation: "policy-violation",
    LedgerConflict: "ledger-conflict",
    StoreUnavailable: "store-unavailable",
    Unauthorized: "unauthorized",
    Forbidden: "forbidden",
    TooManyRequests: "too-many-requests",
}


def problem_type(error: type[AdvocacyError]) -> str:
    """The type URI of an error class; subclasses inherit their nearest mapped ancestor's type."""
    for cls in error.__mro__:
        slug = _SLUGS.get(cls)
        if slug is not None:
            return TYPE_PREFIX + slug
    return TYPE_PREFIX + "internal"


def _wants_html(request: Request) -> bool:
    """Pages (not the JSON API) answer browsers with HTML so a person never sees raw JSON."""
    if request.url.path.startswith(("/v1/", "/healthz", "/readyz", "/openapi", "/docs", "/redoc", "/static/")):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str,
    type_: str = "about:blank",
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    """Build one problem-details response (JSON, or HTML for a browser asking for a page)."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = list(errors)
    if extensions:
        body.update(extensions)
    if _wants_html(request):
        return _html_problem(request, body, headers)
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _html_problem(request: Request, body: dict[str, Any], headers: Mapping[str, str] | None) -> Response:
    templates = getattr(request.app.state, "templates", None)
    if templates is None:
        return HTMLResponse(f"<h1>{body['status']} {body['title']}</h1>", status_code=body["status"], headers=headers)
    return templates.TemplateResponse(  # type: ignore[no-any-return]
        request, "pages/error.html", {"problem": body}, status_code=body["status"], headers=headers
    )


async def _advocacy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdvocacyError)
    headers: dict[str, str] = {}
    extensions: dict[str, Any] = {}
    errors: list[dict[str, Any]] | None = None
    if isinstance(exc, StoreUnavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
        extensions["dependency"] = "store"
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc.detail)
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="advocacy"'
    if isinstance(exc, InvalidInput) and exc.problems:
        errors = [{"source": p.source, "line": p.line, "reason": p.reason} for p in exc.problems]
    if exc.status >= 500 and not isinstance(exc, StoreUnavailable):
        log.error("engine error on %s %s", request.method, request.url.path, exc_info=exc)
    detail = exc.detail
    if isinstance(exc, StoreUnavailable) and request.url.path != "/readyz":
        detail = exc.public  # hosts, users and driver errors stay in the log (above) and on /readyz
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        detail=detail,
        type_=problem_type(type(exc)),
        errors=errors,
        headers=headers or None,
        extensions=extensions or None,
    )


def _location(loc: Sequence[Any]) -> str:
    """`("body", "customers", 3, "email")` -> `body.customers[3].email`, the way a person reads a path."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"source": _location(err.get("loc", ())), "line": None, "reason": str(err.get("msg", "")), "kind": err["type"]}
        for err in exc.errors()
    ]
    count = len(errors)
    return problem_response(
        request,
        status=422,
        title="Invalid input",
        detail=f"the request has {count} invalid field{'s' if count != 1 else ''}",
        type_=TYPE_PREFIX + "validation",
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI answers a body that is not even text with a bare 400, and malformed JSON with 422: a client
        # gets the one documented "invalid input" problem for both.
        return await _validation_error(request, _undecodable_body(exc.__cause__))
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem_response(
        request, status=exc.status_code, title=title, detail=detail, headers=getattr(exc, "headers", None)
    )


def _undecodable_body(error: UnicodeDecodeError) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", error.start),
                "msg": f"JSON decode error: the body is not valid {error.encoding} text",
                "input": {},
            }
        ]
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        status=500,
        title="Internal error",
        detail="the server failed to handle this request; the error has been logged",
        type_=TYPE_PREFIX + "internal",
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Register every handler on `app`; called once by `create_app`."""
    app.add_exception_handler(AdvocacyError, _advocacy_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
