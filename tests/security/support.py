"""What the security tests share: people with distinctive contact details, a campaign, and leak detectors.

The distinctive values are easy to grep for in raw bodies, headers and log lines: if one turns up where it should
not, the test names which one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from graph.store import GraphStore
from tests.api_support import api_client, campaign_body, sqlite_url
from tests.factories import make_customer

ADA_EMAIL = "leak-check-ada@example.org"
ADA_PHONE = "+33 6 99 99 99 99"
BOB_EMAIL = "leak-check-bob@example.org"
BOB_PHONE = "+33 6 88 88 88 88"
FRIEND_EMAIL = "leak-check-friend@example.org"

PERSONAL: Mapping[str, str] = {
    "ada's email": ADA_EMAIL,
    "ada's phone": ADA_PHONE,
    "ada's phone, normalised": "+33699999999",
    "bob's email": BOB_EMAIL,
    "bob's phone": BOB_PHONE,
    "bob's phone, normalised": "+33688888888",
    "a friend's email": FRIEND_EMAIL,
}

CAMPAIGN: Mapping[str, Any] = campaign_body()


def seed_people(store: GraphStore) -> None:
    """ada (an advocate) and bob (her friend), each with an address and a phone number nobody else has."""
    store.upsert_customers(
        [
            make_customer(id="ada", name="Ada Lovelace", email=ADA_EMAIL, phone=ADA_PHONE),
            make_customer(id="bob", name="Bob Stone", email=BOB_EMAIL, phone=BOB_PHONE),
        ]
    )


def store_of(client: TestClient) -> Any:
    """The app's store, once the clicks its redirects took are written (they go in batches)."""
    state = client.app.state  # type: ignore[attr-defined]
    assert state.clicks is None or state.clicks.flush(5)
    return state.store_holder.get()


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`ADVOCACY_*` settings for the apps built inside the block (`Settings()` reads the environment)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield


def contact_env(directory: Path) -> dict[str, str]:
    """Keep the contact limiter's file and the Maildir in `directory`, not in the working directory."""
    return {
        "ADVOCACY_CONTACT__SQLITE_PATH": str(directory / "contacts.db"),
        "ADVOCACY_CONTACT__MAILDIR": str(directory / "mail"),
    }


@contextmanager
def seeded_app(directory: Path, *, campaign: bool = True, env: Mapping[str, str] | None = None) -> Iterator[TestClient]:
    """An admin-signed app over a fresh SQLite store in `directory`, with ada and bob and (unless `campaign` is
    False) the `spring` campaign; `env` adds settings."""
    with environment({**contact_env(directory), **(env or {})}), api_client(sqlite_url(directory)) as client:
        seed_people(store_of(client))
        if campaign:
            assert client.post("/v1/campaigns", json=dict(CAMPAIGN)).status_code == 201
        yield client


def anonymous(client: TestClient) -> TestClient:
    """Another browser on the same running app: no API key, its own cookie jar."""
    return TestClient(client.app, raise_server_exceptions=False, follow_redirects=False)


def exposed(response: httpx2.Response) -> str:
    """Everything a response tells its reader: status line, every header and the raw body."""
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
    return f"{response.status_code}\n{headers}\n\n{response.content.decode('utf-8', 'replace')}"


def leaks(text: str, secrets: Mapping[str, str]) -> list[str]:
    """The names of the secrets found in `text` (case-insensitive)."""
    lowered = text.lower()
    return [name for name, value in secrets.items() if value and value.lower() in lowered]
