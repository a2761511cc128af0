"""`/v1/customers/{id}/events`: what a customer did (purchases, reviews, ideas, feedback, shares, ratings...), as
the merchant reports it, and their history newest first (`engine.events`).

`router` holds what only the merchant may do (report an event); `customer_router` what a customer may also call
for themself (read their own history).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from api.auth import V1Route
from api.deps import StoreDep
from api.params import CustomerIdPath
from api.schemas import problem_responses
from api.schemas_customers import EVENT_EXAMPLE, EventCreate, EventPage
from engine.events import MAX_PAGE, page_events, record_event
from graph.model import Event, EventKind

router = APIRouter(prefix="/v1", tags=["events"], route_class=V1Route)
customer_router = APIRouter(prefix="/v1", tags=["events"], route_class=V1Route)


@router.post(
    "/customers/{customer_id}/events",
    status_code=201,
    summary="Record one of the customer's events",
    description="Any kind the graph knows: `purchase` and `refund` (an amount in `value`), `review` (stars), "
    "`rating` (NPS 0-10), `idea`, `feedback`, `content`, `share`, `complaint`. The next analysis reads them. "
    "201 when the event is new; 200 with the stored event when the same event was sent before (a redelivery). "
    "An `id` already used for different content, another kind or another customer answers 409; an unknown "
    "customer 404.",
    responses=problem_responses(404, 409, 422, 503)
    | {200: {"description": "A redelivery: the event as stored the first time"}},
)
def post_event(
    customer_id: CustomerIdPath,
    response: Response,
    body: Annotated[
        EventCreate,
        Body(
            openapi_examples={
                "purchase": {"summary": "A purchase", "value": EVENT_EXAMPLE},
                "review": {
                    "summary": "A five-star review",
                    "value": {
                        "id": "review-5521",
                        "kind": "review",
                        "at": "2024-05-10T08:00:00Z",
                        "value": 5,
                        "attributes": {"product": "Trail shoes"},
                    },
                },
            }
        ),
    ],
    store: StoreDep,
) -> Event:
    recorded = record_event(store, body.event(customer_id))
    if not recorded.created:
        response.status_code = 200
    return recorded.event


@customer_router.get(
    "/customers/{customer_id}/events",
    summary="A customer's events, newest first, one page at a time",
    description="Pass the returned `next` as `after` for older events; it is null on the last page. An unknown "
    "customer answers 404.",
    responses=problem_responses(404, 422, 503),
)
def list_events(
    customer_id: CustomerIdPath,
    store: StoreDep,
    kind: Annotated[EventKind | None, Query(description="Only events of this kind.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Events per page.")] = 50,
    after: Annotated[str | None, Query(max_length=1000, description="`next` from the previous page.")] = None,
) -> EventPage:
    page = page_events(store, customer_id, kind=kind, limit=limit, after=after)
    return EventPage(customer_id=customer_id, items=page.items, next=page.next)
