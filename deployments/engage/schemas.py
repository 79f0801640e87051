"""SyncEngage's request and response models, and the shapes of its path and query
parameters: text that PostgreSQL would refuse (a NUL) is a 422 naming the field."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, Field

from deployments._serve import MoneyOut
from kiki.db.values import PgJson, PgText, refuse_nul
from kiki.engage import cohorts, retention, segments
from kiki.engage.crm.base import SourceName
from kiki.engage.risk import Reason
from kiki.engage.rules import Rule

CustomerPath = Annotated[
    str,
    Path(min_length=1, max_length=128, description="your customer id"),
    AfterValidator(refuse_nul),
]
AfterCustomer = Annotated[
    PgText | None, Query(max_length=128, description="customer_id to continue after")
]
SegmentPath = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,64}$")]
SourcePath = Annotated[SourceName, Path(description="hubspot, salesforce, shopify or postgres")]
RulePath = Annotated[str, Path(pattern=retention.RULE_ID)]
AsOf = Annotated[date | None, Query(description="the day to look from; default today (UTC)")]
Currency = Annotated[str, Query(min_length=3, max_length=3, description="ISO 4217")]


# --- churn risk and cohorts -------------------------------------------------------------------


class LTVView(BaseModel):
    value: MoneyOut
    horizon_days: int
    model_version: int


class AtRisk(BaseModel):
    customer_id: str
    churn_risk: float = Field(description="P(no purchase in the next horizon_days)")
    reasons: list[Reason]
    ltv: LTVView | None
    last_purchase: date


class ChurnRiskPage(BaseModel):
    as_of: date
    horizon_days: int
    threshold: float
    model_version: int
    scored_at: datetime = Field(
        description="when the book was scored: up to a minute old, or up to 15 while the "
        "next scoring runs"
    )
    total: int = Field(description="customers at or above the threshold")
    customers: list[AtRisk]
    next_offset: int | None
    ltv_unavailable: str | None = Field(None, description="why ltv is null, when it is")


class CohortView(BaseModel):
    cohort_id: str
    month: date
    customers: int
    active: list[int] = Field(description="customers with a purchase in month k (k = 0, 1, ...)")
    retention: list[float]
    revenue: dict[str, list[str]] = Field(description="per currency, month k, exact decimals")
    revenue_micros: dict[str, list[int]]

    @classmethod
    def of(cls, c: cohorts.Cohort) -> CohortView:
        return cls(
            cohort_id=c.cohort_id,
            month=c.month,
            customers=c.customers,
            active=c.active,
            retention=[round(r, 6) for r in c.retention],
            revenue={
                cur: [MoneyOut.of(m, cur).amount for m in months]
                for cur, months in c.revenue_micros.items()
            },
            revenue_micros=c.revenue_micros,
        )


class CohortList(BaseModel):
    as_of: date
    cohorts: list[CohortView]


# --- segments, CRM sources, retention rules ---------------------------------------------------


class SegmentCreate(segments.SegmentIn):
    segment_id: segments.SegmentId


class RuleQuery(BaseModel):
    rule: Rule


class SourceIn(BaseModel):
    config: Annotated[dict[str, Any], PgJson] = Field(
        description="the source's settings (see the README)"
    )
    enabled: bool = Field(True, description="synced by the engage actor on its schedule")


class RuleCreate(retention.RuleIn):
    rule_id: str = Field(pattern=retention.RULE_ID)
