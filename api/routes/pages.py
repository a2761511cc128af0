"""Server-rendered pages for marketers. Each route loads one read model and renders one template."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.deps import StoreDep
from engine import views
from graph.model import Segment

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, store: StoreDep) -> HTMLResponse:
    summary = views.dashboard_summary(store, top=10)
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, "pages/dashboard.html", {"summary": summary, "segments": list(Segment)}
    )
    return response
