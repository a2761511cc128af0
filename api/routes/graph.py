"""`/v1/stats`, `/v1/import` and `/v1/graph/view`: the network as a whole."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import Field

from api.auth import V1Route
from api.deps import StoreDep
from api.schemas import CUSTOMER_EXAMPLE, GraphView, ImportResult, problem_responses
from api.schemas_customers import BatchRows
from engine import views
from graph.model import Customer, Event, GraphBatch, GraphStats, Influence, Referral

router = APIRouter(prefix="/v1", tags=["graph"], route_class=V1Route)


class ImportBatch(GraphBatch):
    """A `GraphBatch` as one request may send it: at most `MAX_BATCH` rows per list (`BatchRows`).

    The cap is the API's (one request is one transaction holding the store's write lock), not `GraphBatch`'s: the
    CLI importer and the stores write batches of any size.
    """

    customers: BatchRows[Customer] = Field(default_factory=list)
    influences: BatchRows[Influence] = Field(default_factory=list)
    referrals: BatchRows[Referral] = Field(default_factory=list)
    events: BatchRows[Event] = Field(default_factory=list)


_BATCH_EXAMPLE: dict[str, Any] = {
    "customers": [CUSTOMER_EXAMPLE, {"id": "cust-0007", "name": "Grace Hopper", "consent": {"email": True}}],
    "influences": [{"source_id": "cust-0042", "target_id": "cust-0007", "kind": "follows", "weight": 1.0}],
    "referrals": [
        {
            "referrer_id": "cust-0042",
            "friend_id": "cust-0007",
            "code": "ADA-42",
            "status": "converted",
            "at": "2024-05-02T12:00:00Z",
        }
    ],
    "events": [],
}


@router.get("/stats", summary="Count customers, edges, events and erasures", responses=problem_responses(503))
def get_stats(store: StoreDep) -> GraphStats:
    return store.stats()


@router.post(
    "/import",
    summary="Import customers, edges and events in one transaction",
    description="Writes a `GraphBatch`: all of its rows or none. Edges and events may name customers of the "
    "same batch or already stored; a row naming an unknown customer refuses the whole batch with 422. "
    "Importing the same rows again changes nothing. At most 10,000 rows per list (422 naming the list): send "
    "several batches, or use `advocacy import` for files.",
    responses=problem_responses(422, 503),
)
def import_batch(
    batch: Annotated[
        ImportBatch, Body(openapi_examples={"batch": {"summary": "Two customers", "value": _BATCH_EXAMPLE}})
    ],
    store: StoreDep,
) -> ImportResult:
    store.write_batch(batch)
    return ImportResult.of(batch)


@router.get(
    "/graph/view",
    summary="A sample of the network to draw",
    description="The `limit` most influential customers (by the latest analysis, or by number of edges before "
    "any analysis) with segment, community and label, and the edges among them. The dashboard draws this.",
    responses=problem_responses(422, 503),
)
def get_graph_view(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=views.MAX_VIEW_NODES, description="How many customers to include.")] = 200,
) -> GraphView:
    return GraphView.model_validate(views.network_view(store, limit=limit), from_attributes=True)
