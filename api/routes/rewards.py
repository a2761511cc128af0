"""Rewards and the ledger (`/v1/rewards`, `/v1/customers/{id}/ledger`), the fraud review queue (`/v1/fraud`) and
the leak scan (`/v1/codes/leaks/scan`): what a marketer reads and decides about money."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from api.auth import V1Route
from api.deps import PayingServiceDep, ServiceDep, StoreDep
from api.params import CustomerIdPath
from api.routes.conversions import MAX_PAGE, page_conversions
from api.schemas_program import (
    AdvanceResult,
    FraudCase,
    FraudCasePage,
    FulfilmentResult,
    LeakScan,
    Ledger,
    ReviewDecision,
    RewardList,
    program_problems,
)
from graph.program import Conversion, ConversionStatus, Reward, RewardState

router = APIRouter(prefix="/v1", route_class=V1Route)


@router.get(
    "/rewards",
    tags=["rewards"],
    summary="List rewards",
    description="By creation time, then id; filter by advocate or friend, campaign and state.",
    responses=program_problems(422, 503),
)
def list_rewards(
    store: StoreDep,
    customer_id: Annotated[str | None, Query(description="Only this customer's rewards.")] = None,
    campaign_id: Annotated[str | None, Query(description="Only rewards of this campaign.")] = None,
    state: Annotated[RewardState | None, Query(description="Only rewards in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many rewards.")] = 1000,
) -> RewardList:
    return RewardList(
        items=store.list_rewards(customer_id=customer_id, campaign_id=campaign_id, state=state, limit=limit)
    )


@router.get(
    "/rewards/{reward_id}",
    tags=["rewards"],
    summary="Read one reward",
    description="A reward's id is `<order id>:<rule id>`.",
    responses=program_problems(404, 503),
)
def get_reward(reward_id: Annotated[str, Path(examples=["order-9001:referrer-credit"])], store: StoreDep) -> Reward:
    return store.get_reward(reward_id)


@router.get(
    "/customers/{customer_id}/ledger",
    tags=["rewards"],
    summary="A customer's ledger entries and balances",
    description="Every move of every reward of the customer, in the order written, and the balance per currency "
    "and state they add up to. Rewards of erased people stay on the ledger under the id `erased`.",
    responses=program_problems(404, 503),
)
def get_ledger(customer_id: CustomerIdPath, store: StoreDep) -> Ledger:
    entries = store.ledger_entries(customer_id=customer_id)
    if not entries:
        store.get_customer(customer_id)  # an unknown customer is a 404, a known one without rewards is empty
    return Ledger(customer_id=customer_id, entries=entries, balances=store.balances(customer_id))


@router.post(
    "/rewards/advance",
    tags=["rewards"],
    summary="Let time move rewards on",
    description="Rewards past their hold period become `approved`; held rewards nobody reviewed in time become "
    "`rejected`. Workers run this on a schedule; calling it again is harmless.",
    responses=program_problems(422, 503),
)
def advance_rewards(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=100_000, description="At most this many rewards move.")] = 1000,
) -> AdvanceResult:
    return AdvanceResult(moved=service.advance(limit=limit))


@router.post(
    "/rewards/fulfil",
    tags=["rewards"],
    summary="Pay out approved rewards",
    description="Each approved reward goes to the fulfiller (with its id as the idempotency key) and is marked "
    "`fulfilled`. Rewards that fail are listed with the reason and stay approved for the next run.",
    responses=program_problems(422, 503),
)
def fulfil_rewards(
    service: PayingServiceDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many rewards are paid.")] = 100,
) -> FulfilmentResult:
    report = service.fulfil(limit=limit)
    return FulfilmentResult(fulfilled=report.fulfilled, failed=report.failed)


# --- fraud -------------------------------------------------------------------------------------------------
@router.get(
    "/fraud/cases",
    tags=["fraud"],
    summary="The review queue: held conversions and why they were held",
    description="In order-id order, one page at a time (pass `next` as `after`). A held conversion pays nothing "
    "until approved, and is rejected when nobody decides within its campaign's `review_days`.",
    responses=program_problems(422, 503),
)
def list_fraud_cases(
    store: StoreDep,
    campaign_id: Annotated[str | None, Query(description="Only cases of this campaign.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Cases per page.")] = 100,
    after: Annotated[str | None, Query(description="`next` from the previous page.")] = None,
) -> FraudCasePage:
    items, following = page_conversions(
        store, status=ConversionStatus.HELD, campaign_id=campaign_id, limit=limit, after=after
    )
    return FraudCasePage(items=[FraudCase.of(c) for c in items], next=following)


@router.post(
    "/fraud/cases/{order_id}/decision",
    tags=["fraud"],
    summary="Approve or reject a held conversion",
    description="Approve: the conversion becomes `attributed` and its rewards `pending` for the campaign's hold "
    "period. Reject: it becomes `rejected` and its rewards never pay. A conversion that is not held answers 409.",
    responses=program_problems(404, 409, 422, 503),
)
def decide_fraud_case(
    order_id: Annotated[str, Path(description="The held order's id.", examples=["order-9001"])],
    decision: Annotated[
        ReviewDecision,
        Body(
            openapi_examples={
                "reject": {
                    "summary": "Reject",
                    "value": {"approve": False, "reviewer": "maria", "note": "same card as the referrer"},
                },
                "approve": {"summary": "Approve", "value": {"approve": True, "reviewer": "maria"}},
            }
        ),
    ],
    service: ServiceDep,
) -> Conversion:
    return service.review(order_id, approve=decision.approve, reviewer=decision.reviewer, note=decision.note)


@router.post(
    "/codes/leaks/scan",
    tags=["fraud"],
    summary="Find codes that look posted publicly",
    description="Looks at every code's clicks in the last `days`: many visitors from many sites who rarely buy "
    "suggest a coupon site. Most suspicious first; pause or rotate the ones you agree with.",
    responses=program_problems(422, 503),
)
def scan_leaks(
    service: ServiceDep,
    days: Annotated[int, Query(ge=1, le=365, description="How far back to look.")] = 7,
) -> LeakScan:
    return LeakScan(days=days, items=service.scan_leaks(days=days))
