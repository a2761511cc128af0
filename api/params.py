"""Path parameters shared by the routers, declared once so the OpenAPI document describes them one way."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

CustomerIdPath = Annotated[str, Path(description="The merchant's customer id.", examples=["cust-0042"])]
CampaignIdPath = Annotated[str, Path(description="A campaign's id.", examples=["spring-2024"])]
CodePath = Annotated[
    str, Path(description="A referral code; case and the separators `-` and `_` do not matter.", examples=["ADA7K2"])
]
