"""`/v1/customers`: list, read, upsert and erase customers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from api.auth import V1Route
from api.deps import ContactHolderDep, StoreDep
from api.params import CustomerIdPath
from api.schemas import CUSTOMER_EXAMPLE, CustomerDetail, CustomerPage, problem_responses
from engine import erasure, views
from graph.model import Customer, ErasureReport

router = APIRouter(prefix="/v1/customers", tags=["customers"], route_class=V1Route)


@router.get(
    "",
    summary="List customers, one page at a time",
    description="Customers in id order. Pass the returned `next_cursor` as `cursor` to get the next page; "
    "it is null on the last page. A cursor stays valid while customers are added or erased.",
    responses=problem_responses(422, 503),
)
def list_customers(
    store: StoreDep,
    cursor: Annotated[str | None, Query(description="`next_cursor` from the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE, description="Customers per page.")] = 100,
) -> CustomerPage:
    page = views.page_customers(store, cursor=cursor, limit=limit)
    return CustomerPage(items=page.items, next_cursor=page.next_cursor)


@router.get(
    "/{customer_id}",
    summary="Read a customer with their latest scores",
    description="The customer and, once an analysis has run, their segment, scores, community and the "
    "explanation in words.",
    responses=problem_responses(404, 503),
)
def get_customer(customer_id: CustomerIdPath, store: StoreDep) -> CustomerDetail:
    customer, scores = views.customer_with_scores(store, customer_id)
    return CustomerDetail(customer=customer, analysis=scores)


@router.put(
    "/{customer_id}",
    summary="Create or replace a customer",
    description="Upsert: every field is set as given. The body's `id` must equal the path's; unknown fields "
    "are refused with 422.",
    responses=problem_responses(422, 503),
)
def put_customer(
    customer_id: CustomerIdPath,
    customer: Annotated[
        Customer, Body(openapi_examples={"customer": {"summary": "A customer", "value": CUSTOMER_EXAMPLE}})
    ],
    store: StoreDep,
) -> Customer:
    return views.replace_customer(store, customer_id, customer)


@router.delete(
    "/{customer_id}",
    summary="Erase a customer (GDPR article 17)",
    description="Removes the person, their personal data, edges, events and scores, their messages and "
    "unsubscribes, and the contact limiter's record of when they were contacted. Only anonymous counts remain "
    "(see `/v1/stats`). A second erasure of the same id answers 404 (and completes the first, had it answered "
    "503 part-way).",
    responses=problem_responses(404, 503),
)
def erase_customer(customer_id: CustomerIdPath, store: StoreDep, contact: ContactHolderDep) -> ErasureReport:
    return erasure.erase_customer(store, contact.get().limiter, customer_id)
