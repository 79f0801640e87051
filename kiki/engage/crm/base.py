"""One interface for every CRM: pages of contacts and of orders changed since a cursor.

A source yields pages as the vendor pages them; the sync (kiki.engage.crm.sync) upserts each
page and, once every page is in, keeps the latest `updated_at` it saw as the next cursor.
Cursors are inclusive (`>=`): a record changed in the cursor's own second is read again
rather than missed, and the upserts make reading it twice harmless.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from kiki.money import decimal_to_micros, normalize_currency, to_decimal

SourceName = Literal["hubspot", "salesforce", "shopify", "postgres"]
SOURCES: tuple[SourceName, ...] = ("hubspot", "salesforce", "shopify", "postgres")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def clean_email(value: str | None) -> str | None:
    """The address lower-cased, or None when it is not one (CRMs hold typos)."""
    text = (value or "").strip().lower()
    return text if EMAIL.match(text) and len(text) <= 254 else None


def clean_phone(value: str | None) -> str | None:
    """E.164 once spaces, dashes, dots and parentheses are gone, or None: a number without
    its country code cannot be dialled safely."""
    text = re.sub(r"[\s().-]", "", value or "")
    return text if E164.match(text) else None


Email = Annotated[str | None, AfterValidator(clean_email)]


class CrmContact(BaseModel):
    model_config = ConfigDict(frozen=True)

    external_id: str = Field(min_length=1, max_length=100)
    email: Email
    phone: Annotated[str | None, AfterValidator(clean_phone)]
    first_name: Annotated[str | None, AfterValidator(lambda v: (v or "").strip()[:100] or None)]
    updated_at: datetime


class CrmOrder(BaseModel):
    """An order, its buyer named by the source's contact id or, failing that, by email."""

    model_config = ConfigDict(frozen=True)

    external_id: str = Field(min_length=1, max_length=100)
    contact_id: str | None
    email: Email
    occurred_at: datetime
    amount_micros: int = Field(ge=0)
    currency: str
    updated_at: datetime

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return normalize_currency(value)


def micros(amount: str | int | Decimal) -> int:
    """A vendor's decimal amount ("12.50", or a JSON number parsed as Decimal) in micros."""
    return decimal_to_micros(to_decimal(amount))


class CrmSource(ABC):
    name: SourceName

    @abstractmethod
    def contacts(self, since: datetime | None) -> AsyncIterator[list[CrmContact]]:
        """Pages of contacts changed at or after `since` (all of them when None)."""

    @abstractmethod
    def orders(self, since: datetime | None) -> AsyncIterator[list[CrmOrder]]:
        """Pages of orders changed at or after `since` (all of them when None)."""
