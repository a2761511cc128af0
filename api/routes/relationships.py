"""`/v1/customers/{id}/relationships` and `/v1/relationships`: who referred and influences whom, one customer at a
time, and batches of new referrals and influences (`engine.relationships`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from api.auth import V1Route
from api.deps import StoreDep
from api.params import CustomerIdPath
from api.schemas import problem_responses
from api.schemas_customers import (
    RELATIONSHIP_BATCH_EXAMPLE,
    RelationshipBatch,
    RelationshipBatchResult,
    RelationshipOut,
    RelationshipPage,
)
from engine.relationships import MAX_PAGE, Direction, page_relationships, write_relationships
from graph.model import EdgeType

router = APIRouter(prefix="/v1", tags=["relationships"], route_class=V1Route)


@router.get(
    "/customers/{customer_id}/relationships",
    summary="A customer's referrals and influences, in and out, one page at a time",
    description="Each relationship seen from this customer: `out` when they referred or influence the other, "
    "`in` when the other referred or influences them; referrals carry their status, influences their kind and "
    "weight. Ordered by type, direction and the other customer's id. Pass the returned `next` as `after` for the "
    "next page; it is null on the last page. An unknown customer answers 404.",
    responses=problem_responses(404, 422, 503),
)
def list_relationships(
    customer_id: CustomerIdPath,
    store: StoreDep,
    type: Annotated[EdgeType | None, Query(description="Only referrals or only influences.")] = None,
    direction: Annotated[Direction | None, Query(description="Only `out` or only `in`.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Relationships per page.")] = 100,
    after: Annotated[str | None, Query(max_length=1000, description="`next` from the previous page.")] = None,
) -> RelationshipPage:
    page = page_relationships(store, customer_id, edge_type=type, direction=direction, limit=limit, after=after)
    return RelationshipPage(customer_id=customer_id, items=[RelationshipOut.of(r) for r in page.items], next=page.next)


@router.post(
    "/relationships",
    summary="Create or update referrals and influences in one transaction",
    description="Every row is checked first: its fields, its natural key given once in the batch ((referrer, "
    "friend) for a referral, (source, target, kind) for an influence) and every customer it names stored. Any "
    "wrong row refuses the whole batch with 422, each problem naming its row in `errors`. Rows are upserted on "
    "their keys, so sending the same batch again changes nothing.",
    responses=problem_responses(422, 503),
)
def post_relationships(
    body: Annotated[
        RelationshipBatch,
        Body(
            openapi_examples={
                "both": {"summary": "A referral and an influence", "value": RELATIONSHIP_BATCH_EXAMPLE},
                "influences": {
                    "summary": "Influences only",
                    "value": {"influences": [{"source_id": "cust-0042", "target_id": "cust-0113"}]},
                },
            }
        ),
    ],
    store: StoreDep,
) -> RelationshipBatchResult:
    written = write_relationships(store, referrals=body.referrals, influences=body.influences)
    return RelationshipBatchResult(referrals=written.referrals, influences=written.influences)
