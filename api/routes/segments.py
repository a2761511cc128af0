"""`/v1/segments`: what each segment means, how many customers the latest analysis put in it, and who they are
with the reason for each (`engine.segment_catalog`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import V1Route
from api.deps import StoreDep
from api.schemas import problem_responses
from api.schemas_customers import SegmentList, SegmentMemberPage
from engine.segment_catalog import MAX_PAGE, page_segment, segment_overview
from graph.model import Segment

router = APIRouter(prefix="/v1", tags=["segments"], route_class=V1Route)


@router.get(
    "/segments",
    summary="Every segment with its count and definition",
    description="From the latest finished analysis run, or the run `run_id`: how many customers it put in each "
    "segment and what puts a customer there, in words, under the thresholds that run applied. Before any analysis "
    "every count is 0 and the definitions are the defaults'. An unknown `run_id` answers 404.",
    responses=problem_responses(404, 422, 503),
)
def list_segments(
    store: StoreDep,
    run_id: Annotated[str | None, Query(max_length=200, description="An analysis run; the latest by default.")] = None,
) -> SegmentList:
    return SegmentList.of(segment_overview(store, run_id=run_id))


@router.get(
    "/segments/{segment}/customers",
    summary="The customers of one segment, each with the analysis' explanation",
    description="Customers whose latest analysis put them in `segment`, in id order, each with their scores, "
    "community and the explanation in words. Pass the returned `next` as `after` for the next page; it is null on "
    "the last page. A segment name that does not exist answers 422 naming the ones that do.",
    responses=problem_responses(422, 503),
)
def list_segment_customers(
    segment: Annotated[Segment, Path(description="A segment's name.", examples=["influencer"])],
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Customers per page.")] = 100,
    after: Annotated[str | None, Query(max_length=128, description="`next` from the previous page.")] = None,
) -> SegmentMemberPage:
    page = page_segment(store, segment, limit=limit, after=after)
    return SegmentMemberPage(segment=segment, items=page.items, next=page.next)
