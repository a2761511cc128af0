"""OWASP API6, mass assignment: no request body sets a field its schema does not declare.

The walk takes every `/v1` operation with a JSON body from the app's own OpenAPI document, so a route added later
is covered without touching this file. Each documented example is sent with privileged-looking extras, at the top
and inside every nested object the schema closes; every one must come back as a 422 problem naming the field.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any, Final

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import POLICY
from engine.settings import Settings
from engine.webhooks import sign
from graph.model import utcnow
from tests.api_support import PROBLEM_JSON, as_customer, customer_token
from tests.security.support import seeded_app

SPEC: Final = create_app(Settings(store="sqlite:///unused.db")).openapi()
SCHEMAS: Final[dict[str, Any]] = SPEC["components"]["schemas"]
EXTRAS: Final[dict[str, Any]] = {"is_admin": True, "status": "fulfilled", "scopes": ["admin"]}
WEBHOOKS: Final = "/v1/webhooks/"


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def object_schema(schema: dict[str, Any], value: Any) -> dict[str, Any] | None:
    """The closed object schema `value` is checked against (through `$ref`, `anyOf` and `allOf`), if any."""
    schema = resolve(schema)
    if "properties" in schema:
        return schema
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found = object_schema(option, value)
            if found is not None and isinstance(value, dict) and set(value) <= set(found["properties"]):
                return found
    return None


def closed_objects(value: Any, schema: dict[str, Any], path: tuple[str | int, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The paths of every object in `value` whose schema lists its fields and allows no others."""
    if isinstance(value, dict):
        declared = object_schema(schema, value)
        if declared is None:
            return
        if declared.get("additionalProperties") is False:
            yield path
        for name, item in value.items():
            if name in declared["properties"]:
                yield from closed_objects(item, declared["properties"][name], (*path, name))
    elif isinstance(value, list):
        resolved = resolve(schema)
        items = resolved.get("items") or next((o.get("items") for o in resolved.get("anyOf", []) if "items" in o), None)
        if items is not None:
            for index, item in enumerate(value):
                yield from closed_objects(item, items, (*path, index))


def example_of(media: dict[str, Any]) -> Any:
    """The documented example of a request body: the operation's own, else its schema's."""
    if "examples" in media:
        return next(iter(media["examples"].values()))["value"]
    if "example" in media:
        return media["example"]
    schema = resolve(media["schema"])
    if "examples" not in schema:
        schema = next(resolve(o) for o in schema.get("anyOf", []) if "examples" in resolve(o))
    return schema["examples"][0]


def json_operations() -> list[tuple[str, str, Any, dict[str, Any]]]:
    out = []
    for path, operations in SPEC["paths"].items():
        if not path.startswith("/v1/") or path.startswith(WEBHOOKS):
            continue
        for method, operation in operations.items():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if media is not None:
                out.append((method.upper(), path, example_of(media), media["schema"]))
    return sorted(out, key=lambda op: (op[1], op[0]))


OPERATIONS: Final = json_operations()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "ada" if m.group(0) == "{customer_id}" else "x1", path)


def sources(response: Any) -> set[str]:
    return {error["source"] for error in response.json().get("errors", [])}


def dotted(path: tuple[str | int, ...], field: str) -> str:
    out = "body"
    for part in (*path, field):
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def place(body: Any, path: tuple[str | int, ...], extras: dict[str, Any]) -> Any:
    changed = copy.deepcopy(body)
    target = changed
    for part in path:
        target = target[part]
    target.update(extras)
    return changed


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with seeded_app(tmp_path_factory.mktemp("mass")) as c:
        yield c


def test_the_walk_covers_every_json_body_of_the_api() -> None:
    assert len(OPERATIONS) >= 20
    assert {("PUT", "/v1/customers/{customer_id}/preferences"), ("POST", "/v1/api-keys")} <= {
        (method, path) for method, path, _, _ in OPERATIONS
    }


@pytest.mark.parametrize(
    ("method", "path", "example", "schema"), OPERATIONS, ids=[f"{m} {p}" for m, p, _, _ in OPERATIONS]
)
def test_every_body_refuses_privileged_extras_at_the_top_naming_each(
    client: TestClient, method: str, path: str, example: Any, schema: dict[str, Any]
) -> None:
    declared = object_schema(schema, example)
    assert declared is not None
    assert declared.get("additionalProperties") is False, "the body schema is closed"
    extras = {name: value for name, value in EXTRAS.items() if name not in declared["properties"]}
    response = client.request(method, concrete(path), json={**example, **extras})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert {f"body.{name}" for name in extras} <= sources(response)


@pytest.mark.parametrize(
    ("method", "path", "example", "schema"), OPERATIONS, ids=[f"{m} {p}" for m, p, _, _ in OPERATIONS]
)
def test_every_nested_object_of_every_body_refuses_an_unknown_field(
    client: TestClient, method: str, path: str, example: Any, schema: dict[str, Any]
) -> None:
    for where in closed_objects(example, schema):
        if not where:
            continue
        response = client.request(method, concrete(path), json=place(example, where, {"is_admin": True}))
        assert response.status_code == 422, (where, response.text)
        assert dotted(where, "is_admin") in sources(response), (where, response.json())


def test_a_campaign_cannot_be_created_in_a_state_it_must_reach_through_its_lifecycle(client: TestClient) -> None:
    """`status` is a real campaign field: only the campaign states are accepted, never a reward's."""
    for status in ("fulfilled", "approved", "admin"):
        response = client.post("/v1/campaigns", json={"id": f"c-{status}", "name": "x", "status": status})
        assert response.status_code == 422, status
        assert "body.status" in sources(response)


CUSTOMER_BODIES: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("POST", "/v1/customers/ada/responses"): {"kind": "idea", "text": "Gift wrap"},
    ("POST", "/v1/customers/ada/invitations"): {"campaign_id": "spring", "email": "friend@example.org"},
    ("POST", "/v1/customers/ada/kit/more"): {"campaign_id": "spring"},
    ("PUT", "/v1/customers/ada/preferences"): {"consent": {"sms": True}},
}
ANOTHER_CUSTOMER: Final[tuple[dict[str, Any], ...]] = (
    {"customer_id": "bob"},
    {"advocate_id": "bob"},
    {"referrer_id": "bob"},
    {"id": "bob"},
    {"email": "leak-check-bob@example.org"},
    {"unsubscribed_at": "2000-01-01T00:00:00Z"},
    {"segment": "influencer"},
)


def test_customer_owned_routes_cover_every_customer_write_in_the_api() -> None:
    writes = {(m, p) for (m, p), rule in POLICY.items() if rule.customer_self and m in ("POST", "PUT")}
    assert {(m, p.replace("ada", "{customer_id}")) for m, p in CUSTOMER_BODIES} == writes


@pytest.mark.parametrize(("method", "path"), CUSTOMER_BODIES, ids=[f"{m} {p}" for m, p in CUSTOMER_BODIES])
def test_a_customer_cannot_act_for_someone_else_through_a_field_of_their_own_request(
    client: TestClient, method: str, path: str
) -> None:
    ada = as_customer(customer_token(client, "ada"))
    before = client.get("/v1/customers/bob/events").json(), client.get("/v1/customers/bob/preferences").json()
    for extra in ANOTHER_CUSTOMER:
        body = {**CUSTOMER_BODIES[(method, path)], **extra}
        if set(extra) <= set(CUSTOMER_BODIES[(method, path)]):
            continue
        response = TestClient(client.app, raise_server_exceptions=False).request(method, path, json=body, headers=ada)
        assert response.status_code == 422, (extra, response.text)
        assert {f"body.{name}" for name in extra} <= sources(response)
    after = client.get("/v1/customers/bob/events").json(), client.get("/v1/customers/bob/preferences").json()
    assert after == before


def test_extra_fields_in_a_signed_event_are_dropped_and_never_applied(client: TestClient) -> None:
    """Our envelope picks the fields it knows and drops the rest (docs/webhooks.md): nothing else is bound."""
    now = utcnow().isoformat()
    buyer = {"id": "mass-buyer", "name": "Mass Buyer", "scopes": ["admin"], "attributes": {"tier": "vip"}}
    data = {
        "order_id": "order-mass",
        "customer": buyer,
        "amount": "42.00",
        "currency": "EUR",
        "paid_at": now,
        "status": "fulfilled",
        "reward_ids": ["order-mass:referrer-credit"],
        "verdict": {"action": "allow"},
    }
    event = {"id": "evt-mass", "type": "order.paid", "created_at": now, "data": data, "is_admin": True}
    body = json.dumps(event).encode()
    secret = client.app.state.settings.referral.webhook_secret.get_secret_value()  # type: ignore[attr-defined]
    headers = {"X-Advocacy-Signature": sign(body, secret, timestamp=int(utcnow().timestamp()))}
    response = TestClient(client.app).post("/v1/webhooks/events", content=body, headers=headers)
    assert response.status_code == 202, response.text  # the envelope drops unknown fields; they are never applied
    conversion = client.get("/v1/conversions/order-mass").json()
    assert (conversion["status"], conversion["reward_ids"]) == ("unattributed", [])
    assert client.get("/v1/rewards", params={"customer_id": "mass-buyer"}).json()["items"] == []
    stored = client.get("/v1/customers/mass-buyer").json()["customer"]
    assert "scopes" not in stored
    assert stored["attributes"] == {}
