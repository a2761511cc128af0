"""The marketer dashboard, rendered on the server: KPIs, segments, top influencers, placeholders, assets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api_support import api_client, opened, seed_network, sqlite_url
from tests.factories import make_customer, make_scores


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with api_client(url) as c:
        yield c


def kpi(html: str, name: str) -> str:
    match = re.search(rf'data-kpi="{name}">\s*(.*?)\s*</dd>', html, re.S)
    assert match, name
    return re.sub(r"<[^>]+>", " ", match.group(1)).split()[0]


def test_dashboard_shows_the_counts_segments_and_top_influencers(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store)
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert kpi(html, "customers") == "6"
    assert kpi(html, "referred") == "3"
    assert kpi(html, "influences") == "5"
    assert "run-seed" in html
    assert re.search(r'data-segment="advocate">2<', html)
    assert re.search(r'data-segment="influencer">1<', html)
    rows = re.findall(r'data-focus-node="([^"]+)"', html)
    assert rows == ["ada", "bob", "cy", "dee", "eve", "fay"]
    assert "Ada Lovelace explained." in html


def test_dashboard_before_any_data_says_so_instead_of_showing_numbers(client: TestClient) -> None:
    html = client.get("/").text
    assert kpi(html, "customers") == "0"
    assert "No analysis has scored customers yet" in html
    assert "None yet" in html
    assert "data-focus-node" not in html


def test_future_features_are_marked_slots_without_fake_data(client: TestClient) -> None:
    html = client.get("/").text
    for slot in ("campaign-builder", "kit-previews", "fraud-queue"):
        block = re.search(rf'data-slot="{slot}".*?</article>', html, re.S)
        assert block, slot
        assert "Not available yet" in block.group(0)
        assert not re.search(r"\d", re.sub(r"<[^>]+>", "", block.group(0))), slot


def test_customer_names_are_escaped(client: TestClient, url: str) -> None:
    with opened(url) as store:
        store.upsert_customers([make_customer(id="x1", name="<script>alert(1)</script>")])
        store.write_scores([make_scores("x1", explanation="<img src=x onerror=alert(2)>")])
    html = client.get("/").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_page_is_accessible_in_structure(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store)
    html = client.get("/").text
    assert '<html lang="en">' in html
    for landmark in ("<header", "<main", "<nav", "<footer"):
        assert landmark in html
    assert 'href="#main"' in html
    assert html.count("<h1") == 1
    assert 'role="status"' in html
    assert re.search(r'id="network"[^>]*tabindex="0"', html)
    assert re.search(r'id="network"[^>]*aria-label="[^"]+"', html)
    assert "<caption" in html


def test_the_page_loads_its_scripts_from_this_server_only(client: TestClient) -> None:
    html = client.get("/").text
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert sources
    sources = [src for src in sources if not src.startswith("data:")]
    assert all(src.startswith("/") for src in sources), sources
    for src in sources:
        assert client.get(src).status_code == 200, src
    vendor = client.get("/static/vendor/vis-network.min.js")
    assert vendor.status_code == 200
    assert "javascript" in vendor.headers["content-type"]
    assert len(vendor.content) > 100_000


def test_the_api_reference_is_served_from_vendored_files(client: TestClient) -> None:
    html = client.get("/docs").text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/vendor/"), asset
        assert client.get(asset).status_code == 200, asset
    assert "/openapi.json" in html
