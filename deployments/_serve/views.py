"""Response models every app shares."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from kiki.auth import Grant, Scope
from kiki.money import Money


class MoneyOut(BaseModel):
    """An amount at the public edge: exact decimal string, integer micros and currency."""

    amount: str = Field(description="exact decimal in major units")
    micros: int
    currency: str

    @classmethod
    def of(cls, micros: int, currency: str) -> MoneyOut:
        return cls(**Money(micros, currency).to_json())


class HealthReport(BaseModel):
    status: str
    service: str
    version: str
    checks: dict[str, str]


class WhoAmI(BaseModel):
    tenant_id: str
    tenant: str
    service: str
    key_prefix: str
    scopes: list[Scope]
    expires_at: datetime | None

    @classmethod
    def of(cls, grant: Grant, service: str) -> WhoAmI:
        return cls(
            tenant_id=str(grant.tenant.id),
            tenant=grant.tenant.name,
            service=service,
            key_prefix=grant.prefix,
            scopes=list(grant.scopes),
            expires_at=grant.expires_at,
        )
