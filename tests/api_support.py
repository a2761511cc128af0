"""What the API tests share: an app over a SQLite store in a temp file, and a small seeded network."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from engine.access import issue_customer_token, new_api_key, token_keys
from engine.settings import Settings
from graph.factory import open_store
from graph.model import Segment, utcnow
from graph.store import GraphStore
from tests.factories import make_customer, make_influence, make_referral, make_run, make_scores

PROBLEM_JSON = "application/problem+json"

SEGMENT_OF = {
    "ada": Segment.INFLUENCER,
    "bob": Segment.PROSUMER,
    "cy": Segment.ADVOCATE,
    "dee": Segment.PASSIVE,
    "eve": Segment.DO_NOT_ASK,
    "fay": Segment.ADVOCATE,
}


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'advocacy.db'}"


@contextmanager
def api_client(store_url: str, *, scopes: tuple[str, ...] = ("admin",)) -> Iterator[TestClient]:
    """The real app, lifespan included, signed in with a fresh API key holding `scopes` (no scopes: anonymous).

    Server errors come back as responses, as a client would see them.
    """
    app = create_app(Settings(store=store_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        if scopes:
            sign_in(client, scopes)
        yield client


def grant_key(client: TestClient, scopes: tuple[str, ...] = ("admin",), *, name: str = "test key") -> str:
    """Create an API key in the app's store, as `advocacy keys create` would, and return the key."""
    record, key = new_api_key(name, scopes, now=utcnow())
    client.app.state.store_holder.get().save_api_key(record)  # type: ignore[attr-defined]
    return key


def sign_in(client: TestClient, scopes: tuple[str, ...] = ("admin",)) -> TestClient:
    """Send a new key with `scopes` on every request of `client`."""
    client.headers["Authorization"] = f"Bearer {grant_key(client, scopes)}"
    return client


def customer_token(client: TestClient, customer_id: str, *, ttl_s: int = 900, now: datetime | None = None) -> str:
    """A customer token signed with the app's current key, as the merchant's backend would sign it."""
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    keys = token_keys(settings)
    token, _ = issue_customer_token(
        keys, settings.api.customer_token_kid, customer_id, now=now or utcnow(), ttl=timedelta(seconds=ttl_s)
    )
    return token


def as_customer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def opened(store_url: str) -> Iterator[GraphStore]:
    store = open_store(store_url)
    try:
        yield store
    finally:
        store.close()


def seed_network(store: GraphStore, *, analysed: bool = True) -> None:
    """Six customers in two communities, linked by influence and referrals; scored by one run if `analysed`."""
    names = {"ada": "Ada Lovelace", "bob": "Bob", "cy": "Cy", "dee": "Dee", "eve": "Eve", "fay": "Fay"}
    store.upsert_customers([make_customer(id=cid, name=name) for cid, name in names.items()])
    store.add_influences(
        [
            make_influence("ada", "bob"),
            make_influence("ada", "cy"),
            make_influence("ada", "dee"),
            make_influence("bob", "cy"),
            make_influence("eve", "fay"),
        ]
    )
    store.add_referrals([make_referral("ada", "bob"), make_referral("cy", "dee"), make_referral("fay", "eve")])
    if analysed:
        pagerank = {"ada": 0.4, "bob": 0.2, "cy": 0.15, "dee": 0.1, "eve": 0.08, "fay": 0.07}
        run = make_run(id="run-seed")
        store.save_run(run)
        store.write_scores(
            [
                make_scores(
                    cid,
                    run_id=run.id,
                    segment=SEGMENT_OF[cid],
                    scores={"pagerank": pagerank[cid]},
                    community=1 if cid in ("ada", "bob", "cy", "dee") else 2,
                    explanation=f"{names[cid]} explained.",
                )
                for cid in names
            ]
        )


def campaign_body(**overrides: Any) -> dict[str, Any]:
    """A `POST /v1/campaigns` body: the spring campaign, 10 EUR credit to the referrer and 5 EUR off for the friend."""
    body: dict[str, Any] = {
        "id": "spring",
        "name": "Spring referral",
        "friend_offer": "5 EUR off your first order",
        "rewards": [
            {"id": "referrer-credit", "side": "referrer", "kind": "credit", "amount_minor": 1000},
            {"id": "friend-discount", "side": "friend", "kind": "discount", "amount_minor": 500},
        ],
        "hold_days": 14,
        "review_days": 7,
    }
    body.update(overrides)
    return body
