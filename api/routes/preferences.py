"""`/v1/customers/{id}/preferences`: a customer's contact preferences, which they read and change themselves
(`engine.preferences`). Everything here is on `customer_router`: a customer's own data, nobody else's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from api.auth import Customer, PrincipalDep, V1Route
from api.deps import ClockDep, StoreDep
from api.params import CustomerIdPath
from api.schemas import problem_responses
from api.schemas_customers import Preferences
from engine.preferences import PreferenceChange, change_preferences, read_preferences

customer_router = APIRouter(prefix="/v1", tags=["preferences"], route_class=V1Route)


@customer_router.get(
    "/customers/{customer_id}/preferences",
    summary="A customer's contact preferences",
    description="Consent per channel, whether and when they unsubscribed (from everything, or from one channel "
    "through its own link), and the language and time zone messages follow. An unknown customer answers 404.",
    responses=problem_responses(404, 503),
)
def get_preferences(customer_id: CustomerIdPath, store: StoreDep) -> Preferences:
    return Preferences.of(read_preferences(store, customer_id))


@customer_router.put(
    "/customers/{customer_id}/preferences",
    summary="Change a customer's contact preferences",
    description="Sets what the body names and keeps the rest, so a customer is never re-subscribed by a field "
    "left out. `unsubscribed: true` stops every message on every channel, as the one-click link does, and clears "
    "every consent. Only the customer themself (their own token or session) can undo an unsubscribe: "
    "`unsubscribed: false`, or consent to any channel, after an unsubscribe from everything lifts it and sets "
    "consent to exactly the channels named; consent to a channel left through its own link lifts that one. "
    "Asked with a marketer's key, such a request answers 403 and changes nothing. Asking to unsubscribe and to "
    "consent at once answers 422. Repeating a change changes nothing.",
    responses=problem_responses(404, 422, 503),
)
def put_preferences(
    customer_id: CustomerIdPath,
    body: Annotated[
        PreferenceChange,
        Body(
            openapi_examples={
                "consent": {"summary": "Email yes, SMS no", "value": {"consent": {"email": True, "sms": False}}},
                "unsubscribe": {"summary": "Stop everything", "value": {"unsubscribed": True}},
                "locale": {
                    "summary": "French, Montreal time",
                    "value": {"locale": "fr-CA", "timezone": "America/Toronto"},
                },
            }
        ),
    ],
    store: StoreDep,
    clock: ClockDep,
    principal: PrincipalDep,
) -> Preferences:
    by_customer = isinstance(principal, Customer) and principal.customer_id == customer_id
    return Preferences.of(change_preferences(store, customer_id, body, clock=clock, by_customer=by_customer))
