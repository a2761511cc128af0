"""`/widget-demo`: how a merchant embeds the `<advocacy-share>` widget, with the widget running against this server.

The page never mints a customer token (that would hand anyone any customer's kit): the visitor pastes one signed
by the merchant's backend, `advocacy token <customer>` or `POST /v1/customer-tokens`, and it stays in the browser.
The widget itself is built from `frontend/widget` into `api/static/widget/` (see docs/widget.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from api.deps import SettingsDep
from graph.program import Slug

router = APIRouter(tags=["widget"], include_in_schema=False)

WIDGET_DIR: Final = Path(__file__).resolve().parents[1] / "static" / "widget"
SCRIPT_PATH: Final = "/static/widget/advocacy-share.js"


class WidgetBuild(BaseModel):
    """What `frontend/build.mjs` wrote next to the bundle: its version, size and Subresource Integrity hash."""

    version: str
    bytes: int
    integrity: str


def widget_build(directory: Path = WIDGET_DIR) -> WidgetBuild | None:
    """The built widget's manifest, or None when the widget was not built (`make assets` builds it)."""
    try:
        return WidgetBuild.model_validate(json.loads((directory / "manifest.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None


@router.get("/widget-demo", response_class=HTMLResponse)
def widget_demo(
    request: Request,
    settings: SettingsDep,
    campaign: Annotated[Slug | None, Query(description="The campaign the demo widget shows.")] = None,
) -> HTMLResponse:
    """The embed snippet names the public address merchants use; the live widget calls whatever served this page."""
    page: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        "pages/widget_demo.html",
        {
            "here": str(request.base_url).rstrip("/"),
            "public_base_url": settings.api.public_base_url.rstrip("/"),
            "script_path": SCRIPT_PATH,
            "build": widget_build(),
            "cors_origins": settings.api.cors_origins,
            "campaign": campaign or "",
        },
    )
    return page
