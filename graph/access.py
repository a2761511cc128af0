"""Access control as values: marketer API keys and the records that make unsafe requests safe to retry.

The store keeps only what it must to check a credential: an API key's public id, its scopes and the SHA-256 of
its secret (the key itself is shown once, by `engine.access.new_api_key`). Customer tokens are not stored at all;
the store only remembers each token id (`jti`) it has accepted, until the token expires, so a one-time token
cannot be replayed. An `IdempotencyRecord` holds the response to a request sent with an `Idempotency-Key`, so a
client retrying after a timeout gets the first answer instead of a second order or reward.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from graph.errors import InvalidInput
from graph.model import UtcDatetime

_SCOPE: Final = re.compile(r"^[a-z]+(:[a-z]+)?$")


class _Model(BaseModel):
    # No whitespace stripping: a stored response body must come back byte for byte.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKey(_Model):
    """A marketer API key `adv_<id>_<secret>`: `id` is the public part, `secret_hash` the SHA-256 of the secret."""

    id: str = Field(pattern=r"^[a-z0-9]{8,32}$")
    name: str = Field(min_length=1, max_length=100)
    scopes: tuple[str, ...]
    """Sorted and unique (given in any order, they are normalised); each `word` or `word:word`."""
    secret_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None

    @field_validator("scopes")
    @classmethod
    def _sorted_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [scope for scope in value if not _SCOPE.match(scope)]
        if bad:
            raise ValueError(f"a scope is a lower-case word or word:word, not {bad[0]!r}")
        return tuple(sorted(set(value)))

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class IdempotencyState(StrEnum):
    IN_PROGRESS = "in_progress"
    DONE = "done"


class IdempotencyRecord(_Model):
    """The first request seen with one idempotency key, and once it is answered, its response.

    `key` is built by the caller as `<principal>:<method> <path>:<client key>`, so two clients (or two routes)
    never share a record; `fingerprint` is a hash of the request body, so the same key with another body is
    told apart from a retry.
    """

    key: str = Field(min_length=1, max_length=400)
    fingerprint: str = Field(min_length=1, max_length=128)
    state: IdempotencyState
    status: int | None = Field(default=None, ge=100, le=599)
    body: str = ""
    content_type: str = Field(default="application/json", min_length=1, max_length=200)
    created_at: UtcDatetime
    expires_at: UtcDatetime

    @model_validator(mode="after")
    def _answered_when_done(self) -> IdempotencyRecord:
        if (self.state is IdempotencyState.DONE) != (self.status is not None):
            raise ValueError("a done record has a response status and one in progress has none")
        return self


def check_response(status: int, content_type: str) -> None:
    """What `finish_idempotent` stores must read back as a valid `IdempotencyRecord`."""
    if not 100 <= status <= 599:
        raise InvalidInput(f"an HTTP status is between 100 and 599, not {status}")
    if not 1 <= len(content_type) <= 200:
        raise InvalidInput("a content type is 1-200 characters")


def new_claim(key: str, fingerprint: str, *, now: datetime, ttl: timedelta) -> IdempotencyRecord:
    """The `in_progress` record `begin_idempotent` stores for a new key; `InvalidInput` for a bad key or ttl."""
    if ttl <= timedelta(0):
        raise InvalidInput(f"an idempotency record must live a while, not {ttl}")
    try:
        return IdempotencyRecord(
            key=key, fingerprint=fingerprint, state=IdempotencyState.IN_PROGRESS, created_at=now, expires_at=now + ttl
        )
    except ValidationError as exc:
        raise InvalidInput(f"cannot store idempotency key {key[:100]!r}: {exc.errors()[0]['msg']}") from exc
