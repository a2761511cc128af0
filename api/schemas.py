"""Response shapes of the HTTP API, with examples so the OpenAPI document teaches by showing.

Graph values (`Customer`, `CustomerScores`, `AnalysisRun`, `GraphStats`, `ErasureReport`) are returned as the
`graph.model` classes themselves: one definition of a customer, so the API cannot drift from the stores.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graph.model import AnalysisRun, Customer, CustomerScores, GraphBatch, Segment

CUSTOMER_EXAMPLE: dict[str, Any] = {
    "id": "cust-0042",
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "phone": None,
    "locale": "en-GB",
    "timezone": "Europe/London",
    "consent": {"email": True, "sms": False},
    "attributes": {"plan": "pro", "lifetime_value": 1830.5},
    "created_at": "2024-03-01T09:30:00Z",
}

SCORES_EXAMPLE: dict[str, Any] = {
    "customer_id": "cust-0042",
    "run_id": "run-20240601-0900",
    "segment": "influencer",
    "explanation": "Reaches about 38 customers through 12 direct followers; two of her referrals converted.",
    "scores": {"influence": 38.2, "pagerank": 0.0041, "nps": 10.0},
    "community": 3,
}

RUN_EXAMPLE: dict[str, Any] = {
    "id": "run-20240601-0900",
    "started_at": "2024-06-01T09:00:00Z",
    "finished_at": "2024-06-01T09:00:41Z",
    "status": "finished",
    "params": {"seed": 7},
    "timings": {"load": 3.1, "communities": 12.4},
    "summary": {"customers": 10000, "segments": {"influencer": 120, "advocate": 860}},
}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ProblemRow(_Out):
    """One wrong input field or row: where it is and why."""

    source: str = Field(description="Where: a field path such as `body.email`, or a file and row.")
    line: int | None = Field(default=None, description="The row's line number when the input was a file.")
    reason: str
    kind: str | None = Field(default=None, description="A machine-readable error kind for request validation.")


class Problem(_Out):
    """RFC 9457 problem details, sent as `application/problem+json` for every error."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:advocacy:problem:not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "no customer with id 'cust-9999'",
                    "instance": "/v1/customers/cust-9999",
                }
            ]
        },
    )

    type: str = Field(description="A URN naming the kind of problem; `about:blank` for plain HTTP errors.")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The path of the request that failed.")
    errors: list[ProblemRow] | None = None
    dependency: str | None = Field(default=None, description="On 503: which dependency is not answering.")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry documenting error statuses as problem details."""
    described = {
        401: "No valid credentials: send `Authorization: Bearer <API key or customer token>`",
        403: "The credential may not do this (missing scope, or another customer's data)",
        404: "Not found",
        409: "Refused by policy or in conflict",
        422: "Invalid input (unknown or malformed fields, mismatched ids, bad cursor)",
        429: "Too many requests; retry after `Retry-After` seconds",
        503: "The store is not answering; retry after `Retry-After` seconds",
    }
    return {
        status: {
            "model": Problem,
            "description": described.get(status, "Error"),
            # `model` also lists the shape under application/json; the body is sent as problem+json, so the
            # schema goes there too, or nothing that reads the document would check a problem's shape.
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


class CustomerPage(_Out):
    """One page of customers in id order; pass `next_cursor` back as `cursor` for the next page."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"items": [CUSTOMER_EXAMPLE], "next_cursor": "eyJhZnRlciI6ImN1c3QtMDA0MiJ9"}]},
    )

    items: list[Customer]
    next_cursor: str | None = Field(description="Opaque; absent (null) on the last page.")


class CustomerDetail(_Out):
    """A customer and what the latest analysis concluded about them (null before any analysis)."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"customer": CUSTOMER_EXAMPLE, "analysis": SCORES_EXAMPLE}]}
    )

    customer: Customer
    analysis: CustomerScores | None


class ImportResult(_Out):
    """How many rows of each kind one import wrote (all in one transaction)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"customers": 2, "influences": 1, "referrals": 1, "events": 0}]},
    )

    customers: int
    influences: int
    referrals: int
    events: int

    @classmethod
    def of(cls, batch: GraphBatch) -> ImportResult:
        return cls(
            customers=len(batch.customers),
            influences=len(batch.influences),
            referrals=len(batch.referrals),
            events=len(batch.events),
        )


class RunList(_Out):
    """Analysis runs, most recent first."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"items": [RUN_EXAMPLE]}]})

    items: list[AnalysisRun]


class GraphNode(_Out):
    id: str
    label: str = Field(description="The customer's name, or their id when they have none.")
    segment: Segment | None = Field(description="From the latest analysis; null when not analysed yet.")
    community: int | None
    influence: float | None = Field(description="Influence score from the latest analysis, if any.")
    degree: int = Field(description="Edges to other nodes of this sample.")


class GraphEdge(_Out):
    source: str
    target: str
    type: Literal["REFERRED", "INFLUENCES"]
    label: str = Field(description="The influence kind or the referral status.")
    weight: float


class GraphView(_Out):
    """A sample of the network small enough to draw: the top customers and the edges among them."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "nodes": [
                        {
                            "id": "cust-0042",
                            "label": "Ada Lovelace",
                            "segment": "influencer",
                            "community": 3,
                            "influence": 38.2,
                            "degree": 2,
                        },
                        {
                            "id": "cust-0007",
                            "label": "cust-0007",
                            "segment": "advocate",
                            "community": 3,
                            "influence": 4.0,
                            "degree": 1,
                        },
                    ],
                    "edges": [
                        {
                            "source": "cust-0042",
                            "target": "cust-0007",
                            "type": "INFLUENCES",
                            "label": "follows",
                            "weight": 1.0,
                        }
                    ],
                    "ranked_by": "influence",
                    "run_id": "run-20240601-0900",
                    "total_customers": 10000,
                    "total_edges": 48210,
                }
            ]
        },
    )

    nodes: list[GraphNode]
    edges: list[GraphEdge]
    ranked_by: Literal["influence", "degree"] = Field(
        description="`influence` when the latest analysis scored customers, else `degree`."
    )
    run_id: str | None
    total_customers: int
    total_edges: int


class Health(_Out):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class Readiness(_Out):
    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"status": "ready", "store": "sqlite:////srv/advocacy.db"}]}
    )

    status: Literal["ready"] = "ready"
    store: str = Field(description="Where the store is (no password).")


class _In(BaseModel):
    """Request input: unknown fields are refused (422), so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _TextIn(_In):
    """Request input of typed-in text (names, templates): surrounding whitespace is dropped."""

    model_config = ConfigDict(str_strip_whitespace=True)


ANALYSIS_PARAMS_EXAMPLE: dict[str, Any] = {"seed": 7, "resolution": 1.0, "top_n": 10}

FORECAST_EXAMPLE: dict[str, Any] = {
    "seeds": ["cust-0042", "cust-0007", "cust-0113"],
    "conversion_rate": 0.12,
    "reward_per_referral": 10.0,
    "friend_reward": 5.0,
    "model": "ic",
    "p": 0.01,
}


class TargetQuery(_In):
    """`GET /v1/targets` query: the parameters of `engine.targeting.choose_targets` (and `advocacy targets`)."""

    k: int = Field(ge=1, le=10_000, description="How many customers to ask.", examples=[5])
    model: Literal["ic", "wc"] = Field(
        default="ic", description="Diffusion model: independent cascade (`ic`) or weighted cascade (`wc`)."
    )
    p: float = Field(default=0.01, gt=0, le=1, description="Independent cascade probability per influence edge.")
    exclude_segment: list[Segment] = Field(
        default_factory=list, description="Never choose this segment (repeatable); `do_not_ask` always is."
    )
    max_per_community: int | None = Field(default=None, ge=1, description="At most this many targets per community.")
    only_consenting: bool = Field(default=True, description="Choose only customers with consent on some channel.")
    method: Literal["imm", "degree", "pagerank", "degree_discount"] = Field(
        default="imm", description="How to choose; the other selectors are reported as baselines."
    )
    seed: int | None = Field(default=None, ge=0, description="Seed for a reproducible choice; drawn when absent.")
    mc_runs: int = Field(default=10_000, ge=100, le=100_000, description="Monte Carlo simulations per spread estimate.")


class ForecastRequest(_In):
    """What if we ask `seeds`: the parameters of `engine.targeting.forecast_campaign`."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [FORECAST_EXAMPLE]})

    seeds: list[str] = Field(min_length=1, max_length=10_000, description="Customers to ask (duplicates count once).")
    conversion_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Chance that a reached friend converts; by default the store's referral history.",
    )
    reward_per_referral: float = Field(default=0.0, ge=0, description="Paid to the referrer per converted referral.")
    friend_reward: float = Field(default=0.0, ge=0, description="Paid to the friend per converted referral.")
    model: Literal["ic", "wc"] = Field(default="ic", description="Diffusion model, as for `/v1/targets`.")
    p: float = Field(default=0.01, gt=0, le=1, description="Independent cascade probability per influence edge.")
    runs: int = Field(default=10_000, ge=100, le=100_000, description="Monte Carlo simulations.")
    seed: int | None = Field(default=None, ge=0, description="Seed for a reproducible simulation.")
