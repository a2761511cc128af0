"""Request and response bodies of `/v1/me`, `/v1/customer-tokens` and `/v1/api-keys`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from api.schemas import _In, _Out
from engine.access import Scope
from graph.access import ApiKey
from graph.model import CustomerId


class MeOut(_Out):
    """A customer token names its customer; a marketer key names itself and what it may do."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"kind": "customer", "customer_id": "cust-0042"}]})

    kind: Literal["customer", "marketer"]
    customer_id: str | None = None
    key_id: str | None = None
    name: str | None = None
    scopes: list[str] | None = None


class CustomerTokenIn(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"customer_id": "cust-0042", "ttl_s": 900}]})

    customer_id: CustomerId
    ttl_s: int = Field(default=900, ge=60, le=86400, description="Capped by the server's maximum (1 h by default).")


class CustomerTokenOut(_Out):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJjdXN0LTAwNDIifQ.sig",
                    "token_type": "Bearer",
                    "customer_id": "cust-0042",
                    "expires_at": "2026-11-26T10:15:00Z",
                }
            ]
        },
    )

    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name, not a secret
    customer_id: str
    expires_at: datetime


class ApiKeyCreate(_In):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "checkout backend", "scopes": ["orders:write", "tokens:issue"]}]}
    )

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))


class ApiKeyOut(_Out):
    """A key as listed: never its secret, which exists only in the response that created it."""

    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id, name=key.name, scopes=list(key.scopes), created_at=key.created_at, revoked_at=key.revoked_at
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="`adv_<id>_<secret>`: store it now, it is not shown again.")
