"""Operations: request ids in responses and logs, redaction of secrets, Prometheus metrics from requests, tasks
and the store."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
from celery import Celery, signals
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.observability import StoreCollector, install_observability
from api.problems import install_problem_handlers
from engine.access import new_api_key
from engine.observability import (
    TASK_HEADER,
    _redact_all,
    configure_logging,
    current_request_id,
    log_options,
    redact_text,
    request_context,
    serve_worker_metrics,
)
from engine.settings import ApiSettings, Settings
from graph.errors import StoreUnavailable, Unauthorized
from graph.factory import open_store
from graph.outreach import HoldReason, MessageStatus
from graph.program_store import Store
from tests.api_support import api_client, sqlite_url
from tests.contract.conftest import convert, save_outreach_plan, set_scene
from tests.factories import BASE_TIME, make_customer
from tests.outreach_factories import make_message

API_KEY = "adv_" + "k3yMaterial0123456789abcdefXYZ_-"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjdXN0b21lcjpjMSJ9.c2lnbmF0dXJlLWJ5dGVz"
UNSUBSCRIBE_TOKEN = "eyJwIjoiYyJ9Zm9v.c2ln"


def app_of(client: TestClient) -> FastAPI:
    """The app under test: `create_app` installed the request ids, the access log and `/metrics`."""
    return cast(FastAPI, client.app)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with api_client(sqlite_url(tmp_path)) as client:
        yield client


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything the process logs, as our JSON lines, for the duration of the test."""
    out = io.StringIO()
    configure_logging(log_format="json", level="INFO", stream=out)
    try:
        yield out
    finally:
        configure_logging()


def json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


# --- request ids --------------------------------------------------------------------------------------------------
def test_a_request_without_an_id_gets_a_fresh_one_in_the_response(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]

    assert len(first) == 32
    assert int(first, 16) >= 0
    assert first != second


def test_a_sane_client_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.42_b"})

    assert response.headers["x-request-id"] == "edge-7f3a.42_b"


@pytest.mark.parametrize("bad", ["a" * 65, "has space", "semi;colon", "<script>", "", 'quote"d'])
def test_an_unsafe_or_overlong_request_id_is_replaced(client: TestClient, bad: str) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]

    assert echoed != bad
    assert len(echoed) == 32
    assert int(echoed, 16) >= 0


def test_every_log_line_of_a_request_is_json_with_its_request_id(client: TestClient, json_log: io.StringIO) -> None:
    app = app_of(client)

    def probe() -> dict[str, str]:
        logging.getLogger("tests.probe").info("handled inside the route")
        return {"ok": "yes"}

    app.add_api_route("/test-probe", probe)
    client.get("/test-probe", headers={"X-Request-ID": "req-42"})
    client.get("/healthz", headers={"X-Request-ID": "req-43"})

    lines = json_lines(json_log)
    inside = [line for line in lines if line["logger"] == "tests.probe"]
    access = {line["request_id"]: line for line in lines if line["logger"] == "advocacy.access"}
    assert [line["request_id"] for line in inside] == ["req-42"]
    assert access["req-42"]["route"] == "/test-probe"
    assert access["req-42"]["status"] == 200
    assert access["req-43"]["route"] == "/healthz"
    assert access["req-43"]["level"] == "INFO"


def test_a_server_error_keeps_the_problem_answer_and_carries_the_request_id(
    client: TestClient, json_log: io.StringIO
) -> None:
    app = app_of(client)

    def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/test-explode", explode)
    response = client.get("/test-explode", headers={"X-Request-ID": "req-500"})

    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "req-500"
    errors = [line for line in json_lines(json_log) if line["level"] == "ERROR"]
    assert errors
    assert all(line["request_id"] == "req-500" for line in errors)
    assert "RuntimeError: boom" in errors[0]["exc"]


def test_an_app_observed_before_it_serves_answers_its_errors_with_the_request_id(tmp_path: Path) -> None:
    app = create_app(Settings(store=sqlite_url(tmp_path)))

    def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/test-explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/test-explode", headers={"X-Request-ID": "req-early"})

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-early"


def test_a_streamed_response_arrives_whole_with_its_request_id(client: TestClient) -> None:
    app = app_of(client)

    def stream() -> StreamingResponse:
        return StreamingResponse((f"chunk {n}\n" for n in range(50)), media_type="text/plain")

    app.add_api_route("/test-stream", stream)
    response = client.get("/test-stream", headers={"X-Request-ID": "req-stream"})

    assert response.text == "".join(f"chunk {n}\n" for n in range(50))
    assert response.headers["x-request-id"] == "req-stream"


def test_log_options_follow_the_api_settings() -> None:
    configured = Settings(api=ApiSettings(log_format="json", log_level="debug"))

    assert log_options(configured) == ("json", "DEBUG")
    assert log_options(Settings()) == ("text", "INFO")


# --- redaction ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("message", "secret", "kept"),
    [
        (f"calling with Authorization: Bearer {API_KEY}", API_KEY, "Authorization"),
        (f"key {API_KEY} used", API_KEY[4:], "used"),
        (f"customer token {JWT}", JWT.split(".")[1], "customer"),
        ("store at neo4j://neo4j:s3cr3t-pw@db.internal:7687", "s3cr3t-pw", "db.internal:7687"),
        ("POST /login?user=ada&password=hunter2&next=/", "hunter2", "user=ada"),
        ("config {'webhook_secret': 'whsec_abc123', 'port': 8000}", "whsec_abc123", "'port': 8000"),
        (f"GET /u/{UNSUBSCRIBE_TOKEN} 200", UNSUBSCRIBE_TOKEN, "GET /u/"),
    ],
)
def test_secrets_never_reach_the_log_output(message: str, secret: str, kept: str, json_log: io.StringIO) -> None:
    logging.getLogger("tests.secrets").warning("%s", message)

    written = json_log.getvalue()
    assert secret not in written
    assert kept in json_lines(json_log)[-1]["message"]


def test_secrets_in_extra_fields_and_tracebacks_are_redacted(json_log: io.StringIO) -> None:
    try:
        raise ValueError(f"upstream refused Bearer {API_KEY}")
    except ValueError:
        logging.getLogger("tests.secrets").exception(
            "call failed", extra={"headers": {"Authorization": f"Bearer {JWT}", "Accept": "text/html"}, "pwd": "x1"}
        )

    written = json_log.getvalue()
    line = json_lines(json_log)[-1]
    assert API_KEY not in written
    assert JWT not in written
    assert line["headers"] == {"Authorization": "***", "Accept": "text/html"}
    assert "ValueError: upstream refused Bearer ***" in line["exc"]


def test_an_issued_api_key_is_masked_but_its_id_kept(json_log: io.StringIO) -> None:
    record, key = new_api_key("ci", ["read"], now=BASE_TIME)
    logging.getLogger("tests.secrets").info("created key %s for ci", key)

    assert key.rsplit("_", 1)[1] not in json_log.getvalue()
    assert json_lines(json_log)[-1]["message"] == f"created key adv_{record.id}_*** for ci"


SECRET_SHAPES = [
    *("://", "u:p@h", "adv_", "0123456789abcdef", "_", "eyJ", ".", "/u/", " ", "=", ": ", "'", '"'),
    *("Bearer ", "bEaReR ", "password", "PassWD", "secret", "token", "api-key", "APIKEY", "authorization", "cookie"),
    *("credential", "neo4j", "x", "K", "\u017f", "\u212a"),
]


@given(st.lists(st.sampled_from(SECRET_SHAPES) | st.text(max_size=6), max_size=14).map("".join))
def test_a_line_skipped_as_holding_no_secret_would_have_come_out_of_every_pattern_unchanged(text: str) -> None:
    """`redact_text` runs the patterns only on lines where one of them could match; it must never skip a secret."""
    assert redact_text(text) == _redact_all(text)


def test_cookie_names_and_request_ids_are_not_mistaken_for_secrets(json_log: io.StringIO) -> None:
    logging.getLogger("tests.secrets").info("set adv_click and adv_visitor cookies")

    assert json_lines(json_log)[-1]["message"] == "set adv_click and adv_visitor cookies"


# --- metrics ------------------------------------------------------------------------------------------------------
def test_metrics_count_requests_by_route_template_and_status_class(client: TestClient) -> None:
    for code in ("NOSUCHCODE1", "NOSUCHCODE2"):
        client.get(f"/r/{code}")
    client.get("/healthz")
    client.get("/no/such/page")
    client.request("BREW", "/healthz")

    response = client.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    requests = "advocacy_http_requests_total"
    assert sample(found, requests, method="GET", route="/r/{code}", status="4xx") == 2
    assert sample(found, requests, method="GET", route="/healthz", status="2xx") == 1
    assert sample(found, requests, method="GET", route="<unmatched>", status="4xx") == 1
    assert sample(found, requests, method="OTHER", route="/healthz", status="4xx") == 1
    assert sample(found, "advocacy_http_request_duration_seconds_count", method="GET", route="/r/{code}") == 2
    assert "NOSUCHCODE" not in response.text
    assert "BREW" not in response.text


def test_metrics_report_contacts_sent_and_held_back_and_rewards_from_the_store(
    tmp_path: Path, client: TestClient
) -> None:
    store = open_store(sqlite_url(tmp_path))
    try:
        scene = set_scene(store)
        convert(store, scene, amount_minor=5000)
        outreach = save_outreach_plan(store)
        customers = [make_customer() for _ in range(3)]
        store.upsert_customers(customers)
        messages = [make_message(outreach, customer) for customer in customers]
        store.enqueue_messages(messages)
        outcomes: list[tuple[MessageStatus, HoldReason | None]] = [
            (MessageStatus.SENT, None),
            (MessageStatus.HELD, HoldReason.CAP),
            (MessageStatus.HELD, HoldReason.QUIET_HOURS),
        ]
        for message, (status, reason) in zip(messages, outcomes, strict=True):
            store.claim_message(message.key, at=BASE_TIME, lease_s=30)
            store.finish_message(message.key, status, at=BASE_TIME + timedelta(seconds=1), reason=reason)
        currency = store.list_rewards()[0].currency
    finally:
        store.close()

    found = samples(client.get("/metrics").text)

    assert sample(found, "advocacy_store_up") == 1
    assert sample(found, "advocacy_customers") == 5
    assert sample(found, "advocacy_outreach_messages", status="sent") == 1
    assert sample(found, "advocacy_outreach_messages", status="held") == 2
    assert sample(found, "advocacy_outreach_held", reason="cap") == 1
    assert sample(found, "advocacy_outreach_held", reason="quiet_hours") == 1
    assert sample(found, "advocacy_outreach_held", reason="unsubscribed") == 0
    assert sample(found, "advocacy_conversions", status="attributed") == 1
    assert sample(found, "advocacy_rewards_amount_minor", currency=currency, state="pending") == 1500


def test_clicks_a_process_has_not_yet_written_are_on_metrics(client: TestClient) -> None:
    clicks = client.app.state.clicks  # type: ignore[attr-defined]
    clicks.max_delay_s = 60.0  # the batch waits: the click stays in memory until flushed
    store = client.app.state.store_holder.get()  # type: ignore[attr-defined]
    scene = set_scene(store)

    assert client.get(f"/r/{scene.code.code}", follow_redirects=False).status_code == 302
    assert sample(samples(client.get("/metrics").text), "advocacy_clicks_waiting") == 1
    assert clicks.flush(5)
    assert sample(samples(client.get("/metrics").text), "advocacy_clicks_waiting") == 0


def test_metrics_can_be_guarded_like_any_route() -> None:
    def deny() -> None:
        raise Unauthorized("credentials required")

    app = FastAPI()
    install_problem_handlers(app)
    install_observability(app, dependencies=[Depends(deny)])
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/metrics")

    assert response.status_code == 401
    assert "advocacy_http_requests_total" not in response.text


class CountingStore:
    """Hands out a real store and counts how often the collector asked for it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0

    def __call__(self) -> Store:
        self.calls += 1
        return self.store


def collected(collector: StoreCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {(s.name, frozenset(s.labels.items())): s.value for family in registry.collect() for s in family.samples}


def test_the_store_collector_reads_the_store_at_most_once_per_ttl(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    now = [100.0]
    source = CountingStore(store)
    collector = StoreCollector(source, ttl_s=5.0, clock=lambda: now[0])
    try:
        collected(collector)
        now[0] += 4.9
        collected(collector)
        assert source.calls == 1
        now[0] += 0.2
        store.upsert_customers([make_customer()])
        assert sample(collected(collector), "advocacy_customers") == 1
        assert source.calls == 2
    finally:
        store.close()


def test_a_closed_store_reports_down_and_keeps_the_last_numbers(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    store.upsert_customers([make_customer(), make_customer()])
    now = [0.0]
    collector = StoreCollector(lambda: store, ttl_s=5.0, clock=lambda: now[0])
    assert sample(collected(collector), "advocacy_store_up") == 1
    store.close()
    now[0] += 10

    found = collected(collector)

    assert sample(found, "advocacy_store_up") == 0
    assert sample(found, "advocacy_customers") == 2


def test_a_store_that_never_opened_reports_only_that_it_is_down() -> None:
    def unreachable() -> Store:
        raise StoreUnavailable("neo4j is not answering")

    found = collected(StoreCollector(unreachable))

    assert found == {("advocacy_store_up", frozenset()): 0}


# --- Celery: the request id in headers, task outcomes -----------------------------------------------------------
@pytest.fixture
def eager_app() -> Iterator[Celery]:
    from engine.celery_app import make_celery

    app = make_celery(Settings())
    app.conf.task_always_eager = True
    try:
        yield app
    finally:
        app.close()


def test_publishing_inside_a_request_puts_its_id_in_the_task_headers() -> None:
    headers: dict[str, Any] = {}
    with request_context("req-publish"):
        signals.before_task_publish.send(sender="advocacy.any", body=(), headers=headers, exchange="", routing_key="")
    outside: dict[str, Any] = {}
    signals.before_task_publish.send(sender="advocacy.any", body=(), headers=outside, exchange="", routing_key="")

    assert headers[TASK_HEADER] == "req-publish"
    assert TASK_HEADER not in outside


def test_a_task_runs_under_the_request_id_of_its_headers_and_leaves_none_behind(eager_app: Celery) -> None:
    seen: list[str | None] = []

    @eager_app.task(name="tests.observability.header_probe")  # type: ignore[untyped-decorator]
    def header_probe() -> None:
        seen.append(current_request_id())

    header_probe.push_request(id="t-1", **{TASK_HEADER: "req-from-header"})
    try:
        signals.task_prerun.send(sender=header_probe, task_id="t-1", task=header_probe, args=(), kwargs={})
        header_probe.run()
        signals.task_postrun.send(sender=header_probe, task_id="t-1", task=header_probe, args=(), kwargs={})
    finally:
        header_probe.pop_request()

    assert seen == ["req-from-header"]
    assert current_request_id() is None


def test_task_outcomes_are_counted_by_name(eager_app: Celery) -> None:
    @eager_app.task(name="tests.observability.ok")  # type: ignore[untyped-decorator]
    def ok() -> int:
        return 1

    @eager_app.task(name="tests.observability.broken")  # type: ignore[untyped-decorator]
    def broken() -> None:
        raise ValueError("no")

    def count(task: str, outcome: str) -> float:
        return REGISTRY.get_sample_value("advocacy_celery_tasks_total", {"task": task, "outcome": outcome}) or 0.0

    before = count("tests.observability.ok", "success"), count("tests.observability.broken", "failure")
    ok.delay()
    ok.delay()
    broken.delay()

    assert count("tests.observability.ok", "success") == before[0] + 2
    assert count("tests.observability.broken", "failure") == before[1] + 1


def test_a_worker_serves_its_task_counts_over_http(eager_app: Celery) -> None:
    @eager_app.task(name="tests.observability.served")  # type: ignore[untyped-decorator]
    def served() -> None:
        return None

    served.delay()
    server, thread = serve_worker_metrics(0, addr="127.0.0.1")
    try:
        text = httpx2.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        thread.join(timeout=5)

    assert sample(samples(text), "advocacy_celery_tasks_total", task="tests.observability.served", outcome="success")
