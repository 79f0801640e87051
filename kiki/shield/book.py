"""A budget book: the campaigns one budget actor holds, and the commands it executes.

Pure logic: `execute()` turns one command into a result and the ledger events to persist,
applying them to memory at once so later commands in the same batch see them. The actor
persists the events before it returns any result, and on a failed write rebuilds the touched
campaigns from the ledger (`forget()` + replay).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal, get_args
from uuid import UUID

from kiki.errors import Conflict, InvalidInput, KikiError, NotFound, Unavailable
from kiki.money import MAX_MICROS, normalize_currency
from kiki.shield.budget import DEFAULT_RESERVATION_TTL, CampaignBudget, EventKind, LedgerEvent
from kiki.shield.policy import Caps, Denial, Policy

_ERRORS_BY_CODE = {e.code: e for e in (Conflict, InvalidInput, NotFound, Unavailable)}
_ERRORS_BY_CODE["deadline_exceeded"] = Unavailable  # a shard that did not answer in time
CampaignKey = tuple[str, str]  # (tenant_id, campaign_id)
OpKind = Literal["allocate", "policy", "reserve", "commit", "release", "unblock", "status", "check"]
OP_KINDS = frozenset(get_args(OpKind))
_SETTINGS = frozenset({EventKind.BUDGET_SET, EventKind.POLICY_SET})
# The writes an idempotency key replays, and the ledger events each may have produced.
_REPLAYS: dict[str, frozenset[EventKind]] = {
    "allocate": _SETTINGS,
    "policy": _SETTINGS,
    "reserve": frozenset({EventKind.RESERVED}),
    "commit": frozenset({EventKind.COMMITTED}),
    "release": frozenset({EventKind.RELEASED}),
    "unblock": frozenset({EventKind.UNBLOCKED}),
}
logger = logging.getLogger("kiki.budget")


def shard_of(tenant_id: str, campaign_id: str, shards: int) -> int:
    """Stable across processes and restarts (unlike hash()), so a campaign stays on its actor."""
    digest = hashlib.blake2b(f"{tenant_id}:{campaign_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True, slots=True)
class BudgetOp:
    """One command for one campaign. Plain dataclass: cheap to send in batches to an actor."""

    kind: OpKind
    tenant_id: str
    campaign_id: str
    idempotency_key: str | None = None
    amount_micros: int = 0
    platform: str | None = None
    reservation_id: str | None = None
    bid_micros: int | None = None
    allow_partial: bool = True
    currency: str | None = None
    # Partial updates, merged onto the campaign's current caps / policy (see Caps.to_data and
    # Policy.to_data for the keys); a new campaign needs at least caps {"total": ...}.
    caps_patch: dict[str, Any] | None = None
    policy_patch: dict[str, Any] | None = None
    # Commits in the live market: the platform report totals (per platform, ad group and day)
    # whose spend this commit charges, persisted in the same transaction (kiki.flow.live).
    reports: tuple[tuple, ...] = ()

    def __reduce__(self) -> tuple:
        return BudgetOp, _op_fields(self)


@dataclass(slots=True)
class OpResult:
    """What a command did. Errors travel as data so one bad command never fails a batch."""

    outcome: Literal[
        "granted", "partial", "denied", "committed", "released", "set", "status", "check", "error"
    ]
    campaign_id: str
    currency: str | None = None
    reservation_id: str | None = None
    amount_micros: int = 0
    requested_micros: int = 0
    over_delivered_micros: int = 0
    rule: str | None = None
    message: str | None = None
    error_code: str | None = None
    replayed: bool = False
    snapshot: dict[str, Any] | None = None
    denials: list[tuple[str, str]] = field(default_factory=list)

    def __reduce__(self) -> tuple:
        return OpResult, _result_fields(self)

    def raise_for_error(self) -> None:
        if self.outcome == "error":
            error = _ERRORS_BY_CODE.get(self.error_code or "", KikiError)
            retry = 1.0 if error is Unavailable else None  # a shard restarting or overloaded
            raise error(self.message or "", code=self.error_code, retry_after_s=retry)


# Batches of ops and results cross the actor boundary every tick: pickled as constructor
# arguments (one C call), not by dataclass pickling's walk over fields() for every object.
_op_fields = attrgetter(*(f.name for f in fields(BudgetOp)))
_result_fields = attrgetter(*(f.name for f in fields(OpResult)))


_TEXT_LIMITS = {"tenant_id": 64, "campaign_id": 128, "idempotency_key": 200,
                "reservation_id": 200, "platform": 32, "currency": 3}  # fmt: skip
_MICROS = ("amount_micros", "bid_micros")


def check_op(op: BudgetOp) -> None:
    """Refuse a command whose fields could not be executed or written to the ledger (wrong
    types, text PostgreSQL cannot store, amounts beyond a BIGINT) before it touches state."""
    if not isinstance(op.kind, str) or op.kind not in OP_KINDS:
        raise InvalidInput(f"unknown budget command {op.kind!r}; use one of {sorted(OP_KINDS)}")
    for name, limit in _TEXT_LIMITS.items():
        value = getattr(op, name)
        if value is None and name not in ("tenant_id", "campaign_id"):
            continue
        if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
            raise InvalidInput(f"{name} must be text of 1 to {limit} characters, without NUL")
    try:
        UUID(op.tenant_id)
    except ValueError:
        raise InvalidInput(f"tenant_id {op.tenant_id!r} is not a UUID") from None
    for name in _MICROS:
        value = getattr(op, name)
        if value is None and name == "bid_micros":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MICROS:
            raise InvalidInput(f"{name} must be whole micros between 0 and {MAX_MICROS}")
    if not isinstance(op.allow_partial, bool):
        raise InvalidInput("allow_partial must be true or false")
    for name in ("caps_patch", "policy_patch"):
        if getattr(op, name) is not None and not isinstance(getattr(op, name), dict):
            raise InvalidInput(f"{name} must be an object")
    if not isinstance(op.reports, tuple) or not all(_report_ok(r) for r in op.reports):
        raise InvalidInput(
            "reports must be (platform, ad group ref, ISO day, spend, clicks, conversions, "
            "value) rows, with whole non-negative amounts"
        )


def _report_ok(row: object) -> bool:
    if not isinstance(row, tuple) or len(row) != 7:
        return False
    platform, ref, day, *amounts = row
    texts_ok = all(
        isinstance(t, str) and 0 < len(t) <= 128 and "\x00" not in t for t in (platform, ref)
    )
    try:
        date.fromisoformat(day)
    except (TypeError, ValueError):
        return False
    return texts_ok and all(
        isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= MAX_MICROS for a in amounts
    )


@dataclass
class NewCampaign:
    tenant_id: str
    campaign_id: str
    currency: str


class BudgetBook:
    def __init__(self, reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL) -> None:
        self.campaigns: dict[CampaignKey, CampaignBudget] = {}
        self.reservation_ttl = reservation_ttl

    def load(self, tenant_id: str, campaign_id: str, currency: str) -> CampaignBudget:
        budget = CampaignBudget(campaign_id, currency)
        self.campaigns[(tenant_id, campaign_id)] = budget
        return budget

    def forget(self, keys: set[CampaignKey]) -> None:
        for key in keys:
            self.campaigns.pop(key, None)

    def execute(
        self,
        op: BudgetOp,
        now: datetime,
        events: list[tuple[CampaignKey, LedgerEvent]],
        created: list[NewCampaign],
    ) -> OpResult:
        """Run one command; append the events it produced (already applied) to `events`."""
        key = (op.tenant_id, op.campaign_id)
        new = None
        try:
            check_op(op)
            budget = self.campaigns.get(key)
            if budget is None:
                if op.kind != "allocate":
                    raise NotFound(f"campaign {op.campaign_id} has no budget: allocate one first")
                new = NewCampaign(op.tenant_id, op.campaign_id, normalize_currency(op.currency))
                budget = CampaignBudget(op.campaign_id, new.currency)
            first = budget.applied.get(op.idempotency_key) if op.kind in _REPLAYS else None
            if first is not None:
                return self._replay(budget, op, first, now)
            result, new_events = self._decide(budget, op, now)
        except KikiError as exc:
            return OpResult("error", str(op.campaign_id), message=exc.message, error_code=exc.code)
        except Exception as exc:  # a bug: refuse this command only, change nothing
            logger.exception("budget command failed", extra={"op": repr(op)[:500]})
            return OpResult(
                "error",
                str(op.campaign_id),
                message=f"internal error on this command ({exc.__class__.__name__}); nothing "
                "was changed",
                error_code="internal",
            )
        if new is not None:
            self.campaigns[key] = budget
            created.append(new)
        for event in new_events:
            budget.apply(event)
            events.append((key, event))
        result.campaign_id, result.currency = op.campaign_id, budget.currency
        if result.outcome == "set":
            result.snapshot = budget.snapshot(now)  # the state after this command
        return result

    def _decide(
        self, budget: CampaignBudget, op: BudgetOp, now: datetime
    ) -> tuple[OpResult, list[LedgerEvent]]:
        k = op.idempotency_key
        match op.kind:
            case "allocate" | "policy":
                return self._set(budget, now), self._settings_events(budget, op, now)
            case "unblock":
                return self._set(budget, now), [budget.decide_unblock(now, k)]
            case "reserve":
                decided = budget.decide_reserve(
                    op.amount_micros,
                    op.platform or "",
                    now,
                    k,
                    bid_micros=op.bid_micros,
                    allow_partial=op.allow_partial,
                    ttl=self.reservation_ttl,
                )
                if isinstance(decided, Denial):
                    return OpResult(
                        "denied",
                        op.campaign_id,
                        requested_micros=op.amount_micros,
                        rule=decided.rule.value,
                        message=decided.message,
                    ), []
                return self._granted(decided), [decided]
            case "commit":
                event = budget.decide_commit(
                    op.reservation_id or "", op.amount_micros, now, k, op.reports
                )
                return self._closed(event), [event]
            case "release":
                event = budget.decide_release(op.reservation_id or "", now, k)
                return self._closed(event), [event]
            case "status":
                return self._set(budget, now, "status"), []
            case "check":
                denials = budget.compliance(op.platform or "", now, op.bid_micros)
                room, _ = budget.headroom(op.platform or "", budget.budget_day(now))
                return OpResult(
                    "check",
                    op.campaign_id,
                    amount_micros=room,
                    denials=[(d.rule.value, d.message) for d in denials],
                ), []
        raise InvalidInput(f"unknown budget command {op.kind!r}")

    @staticmethod
    def _settings_events(budget: CampaignBudget, op: BudgetOp, now: datetime) -> list[LedgerEvent]:
        """The caps and policy an allocate or policy command sets, merged onto the current."""
        k = op.idempotency_key
        if op.currency and normalize_currency(op.currency) != budget.currency:
            raise InvalidInput(
                f"campaign {op.campaign_id} is budgeted in {budget.currency}, not {op.currency}"
            )
        events = []
        if op.caps_patch is not None or budget.caps is None:
            current = budget.caps.to_data() if budget.caps else {}
            merged = {**current, **(op.caps_patch or {})}
            if merged.get("total") is None:
                raise InvalidInput("a new campaign needs a total budget")
            events.append(budget.decide_budget(Caps.from_data(merged), now, k))
        if op.policy_patch:
            merged = {**budget.policy.to_data(), **op.policy_patch}
            # The key marks the first event; later ones ride in the same batch.
            policy = Policy.from_data(merged)
            events.append(budget.decide_policy(policy, now, None if events else k))
        return events

    @staticmethod
    def _set(budget: CampaignBudget, now: datetime, outcome: str = "set") -> OpResult:
        snapshot = budget.snapshot(now) if outcome == "status" else None  # "set": after apply
        return OpResult(outcome, budget.campaign_id, snapshot=snapshot)  # type: ignore[arg-type]

    @staticmethod
    def _granted(event: LedgerEvent) -> OpResult:
        requested = event.requested_micros
        return OpResult(
            "granted" if event.amount_micros == requested else "partial",
            campaign_id="",
            reservation_id=event.reservation_id,
            amount_micros=event.amount_micros,
            requested_micros=requested,
        )

    @staticmethod
    def _closed(event: LedgerEvent) -> OpResult:
        outcome = "committed" if event.kind is EventKind.COMMITTED else "released"
        return OpResult(
            outcome,
            campaign_id="",
            reservation_id=event.reservation_id,
            amount_micros=event.amount_micros,
            over_delivered_micros=event.over_delivered_micros,
        )

    def _replay(
        self, budget: CampaignBudget, op: BudgetOp, event: LedgerEvent, now: datetime
    ) -> OpResult:
        """The answer the first execution of this idempotency key gave; a key first used for
        another kind of command is a conflict, never that command's answer."""
        if event.kind not in _REPLAYS[op.kind]:
            raise Conflict(
                f"idempotency key {op.idempotency_key!r} was already used for a "
                f"{event.kind.value} command on campaign {op.campaign_id}; use a new key"
            )
        if event.kind is EventKind.RESERVED:
            result = self._granted(event)
        elif event.kind in (EventKind.COMMITTED, EventKind.RELEASED):
            result = self._closed(event)
        else:
            result = OpResult("set", budget.campaign_id, snapshot=budget.snapshot(now))
        result.campaign_id, result.currency = budget.campaign_id, budget.currency
        result.replayed = True
        return result

    def expire(self, now: datetime, events: list[tuple[CampaignKey, LedgerEvent]]) -> None:
        for key, budget in self.campaigns.items():
            for event in budget.decide_expiries(now):
                budget.apply(event)
                events.append((key, event))
