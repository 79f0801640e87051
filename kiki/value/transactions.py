"""Customers' purchases: validation, CSV parsing, idempotent loading, and history reads.

A load is all or nothing: a file with one bad row loads no row, and the error names the line
and the field. Rows are keyed by the tenant's `order_id`, so loading a file twice (or an
overlapping file) inserts each purchase once. Rows of a customer who was erased (GDPR) are
dropped and counted, never stored.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated
from uuid import UUID

import asyncpg
import pandas as pd
from pydantic import BaseModel, Field, ValidationError, field_validator

from kiki.db.values import PgText
from kiki.errors import InvalidInput, KikiError
from kiki.gdpr import Suppressions
from kiki.money import MAX_AMOUNT, DecimalAmount, decimal_to_micros, normalize_currency

Identifier = Annotated[PgText, Field(min_length=1, max_length=128)]
CSV_COLUMNS = ("order_id", "customer_id", "occurred_at", "amount", "currency", "quantity")
REQUIRED_COLUMNS = ("order_id", "customer_id", "occurred_at", "amount")


class TransactionIn(BaseModel):
    """One purchase. A date without a time is midnight UTC; a time without an offset is UTC."""

    order_id: Identifier
    customer_id: Identifier
    occurred_at: datetime
    amount: DecimalAmount = Field(
        ge=0, le=MAX_AMOUNT, description="what the customer paid, in major units"
    )
    currency: PgText = Field("USD", min_length=3, max_length=3)
    quantity: int = Field(1, ge=0, le=1_000_000)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _as_utc(cls, value: object) -> object:
        if isinstance(value, str) and len(value.strip()) == 10:
            value = date.fromisoformat(value.strip())
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time(), UTC)
        return value

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @field_validator("amount")
    @classmethod
    def _not_negative(cls, value):  # type: ignore[no-untyped-def]
        if value < 0:
            raise ValueError("must not be negative (record refunds as their own adjustments)")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        try:
            return normalize_currency(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None


@dataclass(frozen=True, slots=True)
class Transaction:
    """A validated purchase, money in micros."""

    order_id: str
    customer_id: str
    occurred_at: datetime
    amount_micros: int
    currency: str
    quantity: int

    @classmethod
    def of(cls, row: TransactionIn) -> Transaction:
        return cls(
            row.order_id,
            row.customer_id,
            row.occurred_at,
            decimal_to_micros(row.amount),
            row.currency,
            row.quantity,
        )


def _describe(exc: ValidationError | KikiError) -> tuple[str, str]:
    if isinstance(exc, KikiError):
        return "amount", exc.message
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "row"
    return field, f"{first['msg']} (got {first.get('input')!r})"


def from_frame(frame: pd.DataFrame, order_prefix: str, currency: str = "USD") -> list[Transaction]:
    """Rows of a frame with customer_id, ts (naive UTC), amount (float dollars) and quantity,
    numbered `<order_prefix><row>`; amounts go through their shortest decimal form, exactly."""
    return [
        Transaction(
            order_id=f"{order_prefix}{i}",
            customer_id=str(r.customer_id),
            occurred_at=r.ts.to_pydatetime().replace(tzinfo=UTC),
            amount_micros=decimal_to_micros(Decimal(repr(float(r.amount)))),
            currency=currency,
            quantity=int(r.quantity),
        )
        for i, r in enumerate(frame.itertuples(index=False))
    ]


def validate_rows(rows: Iterable[tuple[int, dict[str, str]]]) -> Iterator[Transaction]:
    """Validate (line number, raw fields) pairs; the first bad row raises InvalidInput that
    names its line and field."""
    for line, raw in rows:
        try:
            yield Transaction.of(TransactionIn.model_validate(raw))
        except (ValidationError, KikiError) as exc:
            field, reason = _describe(exc)
            raise InvalidInput(f"line {line}, field '{field}': {reason}") from None


def read_csv(path: Path) -> list[Transaction]:
    """Every row of a CSV with the header `order_id,customer_id,occurred_at,amount` (and
    optionally `currency`, `quantity`), validated; nothing is returned if any row is bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InvalidInput(
            f"{path}: the header lacks {', '.join(missing)}; expected "
            f"{','.join(CSV_COLUMNS)} (currency and quantity optional)"
        )
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise InvalidInput(f"{path}: unknown column(s) {', '.join(unknown)}")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for raw in reader:
            if None in raw:
                raise InvalidInput(f"line {reader.line_num}: more fields than the header names")
            # Optional columns left empty take their defaults.
            yield reader.line_num, {k: v for k, v in raw.items() if v not in (None, "")}

    return list(validate_rows(rows()))


@dataclass(frozen=True, slots=True)
class Loaded:
    inserted: int  # new rows
    suppressed: int  # rows of erased customers, dropped


async def insert(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    rows: list[Transaction],
    suppressions: Suppressions,
    progress: Callable[[int], None] | None = None,
    chunk: int = 10_000,
) -> Loaded:
    """Insert in the caller's transaction; rows whose order_id is already there are skipped,
    rows of erased customers dropped. `progress(n)` is told as each chunk of n rows is sent
    (or dropped)."""
    rows, suppressed = await suppressions.keep(conn, tenant_id, rows, lambda r: r.customer_id)
    if progress and suppressed:
        progress(suppressed)
    if not rows:
        return Loaded(0, suppressed)
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS incoming_transactions (
               order_id text, customer_id text, occurred_at timestamptz, amount_micros bigint,
               currency char(3), quantity integer) ON COMMIT DELETE ROWS"""
    )
    await conn.execute("TRUNCATE incoming_transactions")
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        await conn.copy_records_to_table(
            "incoming_transactions",
            records=[
                (r.order_id, r.customer_id, r.occurred_at, r.amount_micros, r.currency, r.quantity)
                for r in part
            ],
        )
        if progress:
            progress(len(part))
    status = await conn.execute(
        """INSERT INTO transactions (tenant_id, order_id, customer_id, occurred_at,
                                     amount_micros, currency, quantity)
           SELECT DISTINCT ON (order_id) $1::uuid, order_id, customer_id, occurred_at,
                  amount_micros, currency, quantity
           FROM incoming_transactions ORDER BY order_id
           ON CONFLICT (tenant_id, order_id) DO NOTHING""",
        tenant_id,
    )
    return Loaded(int(status.rsplit(" ", 1)[1]), suppressed)


async def history(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    as_of: datetime,
    customer_ids: list[str] | None = None,
) -> pd.DataFrame:
    """Purchases up to `as_of` (inclusive) as a frame of customer_id, ts (UTC, naive),
    amount (major units, float for the model), quantity."""
    rows = await conn.fetch(
        """SELECT customer_id, occurred_at, amount_micros, quantity FROM transactions
           WHERE tenant_id = $1 AND occurred_at <= $2
             AND ($3::text[] IS NULL OR customer_id = ANY($3))
           ORDER BY customer_id, occurred_at""",
        tenant_id,
        as_of,
        customer_ids,
    )
    frame = pd.DataFrame(
        [(r[0], r[1], r[2], r[3]) for r in rows],
        columns=["customer_id", "ts", "amount_micros", "quantity"],
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_localize(None)
    frame["amount"] = frame.pop("amount_micros").astype("float64") / 1_000_000
    return frame


def end_of(day: date) -> datetime:
    """The last instant of `day` in UTC: `history(..., end_of(day))` includes that day."""
    return datetime.combine(day, time.max, UTC)


async def summary(conn: asyncpg.Connection, tenant_id: UUID) -> dict[str, object]:
    row = await conn.fetchrow(
        """SELECT COUNT(*) AS purchases, COUNT(DISTINCT customer_id) AS customers,
                  MIN(occurred_at) AS first, MAX(occurred_at) AS last
           FROM transactions WHERE tenant_id = $1""",
        tenant_id,
    )
    return dict(row)


async def any_purchases(conn: asyncpg.Connection, tenant_id: UUID) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM transactions WHERE tenant_id = $1)", tenant_id
    )
