"""Schemathesis against the app's own OpenAPI document: no 5xx, and every answer is one the document declares.

Each operation gets its own copy of one seeded store, so what one operation does (erasing `cust-0042`, revoking
`ADA7K2`) never changes what the next one sees, and a run is the same whatever the order. The seeded records carry
the ids of the document's own examples (`cust-0042`, `spring-2024`, `ADA7K2`, `order-9001`, `spring-prosumers`,
`whatsapp-prosumer`, `run-20240601-0900`), so the examples phase reaches real records as well as missing ones.
No operation of the document is excluded: the unsubscribe pages, the SVG and the redirect are exercised like the
rest. Routes the document leaves out on purpose (the dashboard pages, `/landing/{code}`, `/docs`) are not
schemathesis' to reach; `test_api_pages.py` and `test_api_referrals.py` cover them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jsonschema_rs
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python.asgi import shutdown_lifespans

from api.app import create_app
from api.deps import ContactHolder, send_due
from api.schemas import CUSTOMER_EXAMPLE, FORECAST_EXAMPLE, RUN_EXAMPLE
from api.schemas_outreach import OUTREACH_EXAMPLE, TEMPLATE_EXAMPLE, OutreachCreate, TemplateChange, TemplateCreate
from api.schemas_program import CAMPAIGN_EXAMPLE, CODE_EXAMPLE, ORDER_EXAMPLE, CampaignCreate, OrderRequest
from engine.access import new_api_key
from engine.analysis import run_analysis
from engine.outreach import OutreachService
from engine.referrals import ReferralService
from engine.settings import ApiSettings, Settings
from graph.factory import open_store
from graph.generator import generate_network
from graph.model import Customer
from graph.program_store import Store
from tests.api_support import sqlite_url
from tests.factories import make_customer, make_influence

CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

SEEDED_AT: Final = datetime(2024, 4, 2, 9, 0, tzinfo=UTC)
"""The programme's records are as old as the document's examples say (`ADA7K2` was issued on 2 April 2024)."""

ApiCase = schemathesis.Case[Any]

FRIEND: Final = {"id": ORDER_EXAMPLE["customer_id"], "name": "Grace Hopper", "email": "grace@example.org"}


def contact_settings(folder: Path) -> dict[str, str]:
    return {"sqlite_path": str(folder / "contacts.db"), "maildir": str(folder / "mail")}


def seed(folder: Path) -> None:
    """200 generated customers and the documented ones, an analysis, the documented campaign, code and order
    (which earns Ada a reward), two templates and a launched outreach whose mail has gone out."""
    settings = Settings(store=sqlite_url(folder), contact=contact_settings(folder))
    store: Store = open_store(settings.store)
    contact = ContactHolder(settings)
    try:
        for batch in generate_network(200, seed=1):
            store.write_batch(batch)
        forecast_seeds = [make_customer(id=cid, name=f"Seed {cid}") for cid in FORECAST_EXAMPLE["seeds"][1:]]
        store.upsert_customers([Customer.model_validate(CUSTOMER_EXAMPLE), *forecast_seeds])
        store.add_influences([make_influence(CUSTOMER_EXAMPLE["id"], f"c{i:03d}") for i in range(0, 40, 4)])
        run = run_analysis(store)
        store.save_run(run.model_copy(update={"id": RUN_EXAMPLE["id"]}))

        referrals = ReferralService(store, settings.referral, clock=lambda: SEEDED_AT)
        referrals.create_campaign(CampaignCreate.model_validate(CAMPAIGN_EXAMPLE).campaign(created_at=SEEDED_AT))
        referrals.issue_code(CODE_EXAMPLE["customer_id"], CODE_EXAMPLE["campaign_id"], vanity=CODE_EXAMPLE["code"])
        order = OrderRequest.model_validate({**ORDER_EXAMPLE, "customer": FRIEND})
        referrals.process_order(order.order(), customer=order.customer)

        parts = contact.get()
        outreach = OutreachService(
            store, settings, limiter=parts.limiter, adapters=parts.adapters, renderer=parts.renderer
        )
        share = TemplateCreate.model_validate(TEMPLATE_EXAMPLE)
        outreach.save_template(share.template(share.id, updated_at=SEEDED_AT), by="seed")
        short = TemplateChange.model_validate(
            {"purpose": "message", "channel": "email", "subject": "Spring", "body": "{{ friend_offer }}: {{ link }}"}
        )
        outreach.save_template(short.template("spring-short", updated_at=SEEDED_AT), by="seed")
        plan = OutreachCreate.model_validate(OUTREACH_EXAMPLE).outreach(created_at=SEEDED_AT)
        outreach.create_outreach(plan)
        outreach.plan(plan.id)
        send_due(outreach, outreach_id=plan.id)

        record, key = new_api_key("schemathesis", ["admin"], now=SEEDED_AT)
        store.save_api_key(record)
        (folder / "api-key").write_text(key)
    finally:
        contact.close()
        store.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seeded")
    seed(folder)
    return folder


@pytest.fixture
def app(seeded: Path, tmp_path: Path) -> Iterator[FastAPI]:
    """A fresh copy of the seeded store and contact limiter for each operation."""
    for name in ("advocacy.db", "contacts.db"):
        shutil.copyfile(seeded / name, tmp_path / name)
    limits = ApiSettings(rate_limit_public="1000000/minute", rate_limit_key="1000000/minute")
    yield create_app(Settings(store=sqlite_url(tmp_path), contact=contact_settings(tmp_path), api=limits))
    shutdown_lifespans()  # schemathesis started the app's lifespan on the first request; this runs its shutdown


DOCUMENT: Final = create_app(Settings(store="sqlite:///unused.db")).openapi()
"""Read without starting the app, so no store is opened for it."""

BUDGET: Final = schemathesis.Config.from_dict({"phases": {"coverage": {"generation": {"mode": "positive"}}}})
"""The coverage phase's boundary values stay, its invalid ones go: about 2,200 one-field-wrong requests (and methods
the document does not list) that mostly exercise pydantic's validation would double the run. Invalid input still
comes from the fuzzing phase, which generates both kinds (it found the non-UTF-8 body)."""

schema = schemathesis.openapi.from_dict(DOCUMENT, config=BUDGET)

TUPLE_RESPONSES: Final = {
    "GET /v1/analysis/runs/{run_a}/compare/{run_b}",
    "GET /v1/targets",
    "POST /v1/forecasts",
}
"""Operations whose responses hold pairs (`tuple[int, int]` is `prefixItems` in OpenAPI 3.1). Schemathesis 4.32
rewrites `prefixItems` to draft 7's `items: [...]` and then builds a 2020-12 validator, which refuses it ("Invalid
Schema Object in response definition"): their bodies are checked by `conforms_by_hand` instead of
`response_schema_conformance`, and every other check still runs on them."""

BY_HAND_CHECKS: Final = [check for check in CHECKS if check is not response_schema_conformance]

REQUEST_TIMEOUT_S: Final = 60
"""Schemathesis' default of 10 s is less than a certain cascade (`p` = 1) takes `GET /v1/targets` on two busy cores."""

CHEAP_P: Final = 0.1
"""Above this cascade probability, IMM on the seeded network samples reverse-reachable sets of nearly everyone:
one `GET /v1/targets` then takes 5-45 s (a correct answer, only slow), so a generated `p` above it is scaled into
(0.01, 0.1] to keep the run short. The coverage phase still sends the boundary `p` = 1, which is not mapped."""


@schema.hook("map_query")
def _targets_within_budget(context: schemathesis.HookContext, query: dict[str, Any] | None) -> dict[str, Any] | None:
    operation = context.operation
    if query is None or operation is None or operation.label != "GET /v1/targets":
        return query
    p = query.get("p")
    if isinstance(p, float) and CHEAP_P < p <= 1:
        return {**query, "p": p * CHEAP_P}
    return query


def conforms_by_hand(case: ApiCase, response: schemathesis.Response) -> None:
    """The body against the schema the document declares for its status and media type, as JSON Schema 2020-12."""
    responses = DOCUMENT["paths"][case.path][case.operation.method.lower()]["responses"]
    declared = responses.get(str(response.status_code), {}).get("content", {})
    media_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    body_schema = declared.get(media_type, {}).get("schema")
    if body_schema is None:
        return  # an undeclared status or media type is status_code_conformance's or content_type_conformance's
    validator = jsonschema_rs.Draft202012Validator({**body_schema, "components": DOCUMENT["components"]})
    validator.validate(response.json())


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_every_operation_answers_as_its_openapi_description_says(case: ApiCase, app: FastAPI, seeded: Path) -> None:
    """As an admin key: the authorisation matrix is `test_api_auth.py`'s; here every operation's own logic runs."""
    headers = {"Authorization": f"Bearer {(seeded / 'api-key').read_text()}"}
    if case.operation.label not in TUPLE_RESPONSES:
        case.call_and_validate(app=app, checks=CHECKS, timeout=REQUEST_TIMEOUT_S, headers=headers)
        return
    response = case.call_and_validate(app=app, checks=BY_HAND_CHECKS, timeout=REQUEST_TIMEOUT_S, headers=headers)
    conforms_by_hand(case, response)


def _reaches_pairs(node: object, seen: set[str]) -> bool:
    """Whether a schema, or one it references, holds a `prefixItems` tuple."""
    if isinstance(node, list):
        return any(_reaches_pairs(item, seen) for item in node)
    if not isinstance(node, dict):
        return False
    if "prefixItems" in node:
        return True
    ref = node.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        seen.add(ref)
        if _reaches_pairs(DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[-1]], seen):
            return True
    return any(_reaches_pairs(value, seen) for value in node.values())


def test_exactly_the_operations_answering_pairs_are_checked_by_hand() -> None:
    """A new operation answering pairs fails here, not deep in schemathesis; one that stops leaves the list."""
    answering_pairs = {
        f"{method.upper()} {path}"
        for path, operations in DOCUMENT["paths"].items()
        for method, operation in operations.items()
        if _reaches_pairs(operation["responses"], set())
    }
    assert answering_pairs == TUPLE_RESPONSES
