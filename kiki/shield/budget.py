"""The per-campaign budget ledger: pure, event-sourced, and the one place the cap is held.

Every change is a `LedgerEvent`. `CampaignBudget.decide_*` looks at the current state and
returns the event a command would produce (or a `Denial`) without changing anything;
`apply(event)` changes the state. The budget actor decides, writes the events to PostgreSQL,
and only then acknowledges; after a restart it replays the same events through `apply`, so
live and rebuilt state are computed by the same code.

Invariant, for the total cap, the cap of each budget day and the cap of each platform:
committed + reserved <= cap. Only a platform reporting more spend than was reserved
(over-delivery) can break it; that is recorded as such and blocks further reservations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

from kiki.errors import Conflict, InvalidInput, NotFound
from kiki.shield.policy import PLATFORMS, Caps, Denial, Policy, Rule

DEFAULT_RESERVATION_TTL = timedelta(minutes=15)


class EventKind(StrEnum):
    BUDGET_SET = "budget_set"
    POLICY_SET = "policy_set"
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"
    UNBLOCKED = "unblocked"


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One row of the write-ahead ledger."""

    kind: EventKind
    at: datetime
    reservation_id: str | None = None
    platform: str | None = None
    amount_micros: int = 0
    budget_day: date | None = None
    idempotency_key: str | None = None
    # Reservations: what was asked for and when the hold lapses. Commits: the spend beyond
    # the reservation (over-delivery). Columns, not JSON, on the hot path.
    requested_micros: int = 0
    expires_at: datetime | None = None
    over_delivered_micros: int = 0
    # Budget and policy settings only.
    data: dict[str, Any] | None = None
    # Commits only: the platform report totals the commit charges; not a ledger column but
    # rows of platform_spend_marks, written in the same transaction (kiki.shield.store).
    reports: tuple[tuple, ...] = ()


def over_deliveries(events: Iterable[LedgerEvent]) -> int:
    """How many of `events` record spend beyond their reservation: over-delivery, the one
    way spend passes a budget (every reservation is held within it), so operators are told."""
    return sum(1 for e in events if e.over_delivered_micros > 0)


@dataclass(slots=True)
class Reservation:
    reservation_id: str
    platform: str
    amount_micros: int
    budget_day: date
    expires_at: datetime


class CampaignBudget:
    """State of one campaign's budget, rebuilt from its ledger events."""

    def __init__(self, campaign_id: str, currency: str) -> None:
        self.campaign_id = campaign_id
        self.currency = currency
        self.caps: Caps | None = None
        self.policy = Policy()
        self.committed = 0
        self.reserved = 0
        self.committed_by_day: dict[date, int] = defaultdict(int)
        self.reserved_by_day: dict[date, int] = defaultdict(int)
        self.committed_by_platform: dict[str, int] = defaultdict(int)
        self.reserved_by_platform: dict[str, int] = defaultdict(int)
        self.reservations: dict[str, Reservation] = {}
        self.over_delivered = 0
        self.blocked = False
        # Idempotency key → the event it produced, so a retry gets the original answer.
        self.applied: dict[str, LedgerEvent] = {}

    # --- reading ------------------------------------------------------------------------

    def budget_day(self, now: datetime) -> date:
        return now.astimezone(ZoneInfo(self.policy.timezone)).date()

    def headroom(self, platform: str, day: date) -> tuple[int, Rule]:
        """What may still be reserved on `platform` on `day`, and the cap that binds."""
        if self.caps is None:
            return 0, Rule.TOTAL_CAP
        limits = [(self.caps.total_micros - self.committed - self.reserved, Rule.TOTAL_CAP)]
        if self.caps.daily_micros is not None:
            used = self.committed_by_day.get(day, 0) + self.reserved_by_day.get(day, 0)
            limits.append((self.caps.daily_micros - used, Rule.DAILY_CAP))
        if platform in self.caps.platform_micros:
            used = self.committed_by_platform.get(platform, 0)
            used += self.reserved_by_platform.get(platform, 0)
            limits.append((self.caps.platform_micros[platform] - used, Rule.PLATFORM_CAP))
        room, rule = min(limits, key=lambda item: item[0])
        return max(0, room), rule

    def compliance(self, platform: str, now: datetime, bid_micros: int | None) -> list[Denial]:
        """Every rule a bid on `platform` now would break (empty: allowed)."""
        p = self.policy
        denials = []
        if p.status != "active":
            denials.append(Denial(Rule.NOT_ACTIVE, f"campaign is {p.status}"))
        if p.starts_at and now < p.starts_at:
            denials.append(Denial(Rule.BEFORE_START, f"schedule starts {p.starts_at.isoformat()}"))
        if p.ends_at and now >= p.ends_at:
            denials.append(Denial(Rule.AFTER_END, f"schedule ended {p.ends_at.isoformat()}"))
        if platform not in p.allowed_platforms:
            denials.append(
                Denial(
                    Rule.PLATFORM_NOT_ALLOWED,
                    f"{platform} is not among {list(p.allowed_platforms)}",
                )
            )
        if bid_micros is not None:
            if p.bid_min_micros is not None and bid_micros < p.bid_min_micros:
                denials.append(Denial(Rule.BID_BELOW_MIN, "bid is below the campaign's minimum"))
            if p.bid_max_micros is not None and bid_micros > p.bid_max_micros:
                denials.append(Denial(Rule.BID_ABOVE_MAX, "bid is above the campaign's maximum"))
        if self.blocked:
            denials.append(
                Denial(
                    Rule.OVER_DELIVERY_BLOCK,
                    f"a platform over-delivered {self.over_delivered} micros; "
                    "review and unblock the campaign",
                )
            )
        room, rule = self.headroom(platform, self.budget_day(now))
        if room <= 0:
            denials.append(Denial(rule, f"no budget left under the {rule.value.split('_')[0]} cap"))
        return denials

    # --- deciding (no state change) ------------------------------------------------------

    def decide_budget(self, caps: Caps, now: datetime, key: str | None) -> LedgerEvent:
        floor_total = self.committed + self.reserved
        if caps.total_micros < floor_total:
            raise Conflict(
                f"total budget cannot go below what is committed and reserved "
                f"({floor_total} micros); release reservations first"
            )
        if caps.daily_micros is not None:
            for day, used in self._used_by(self.committed_by_day, self.reserved_by_day).items():
                if caps.daily_micros < used:
                    raise Conflict(f"daily budget cannot go below {used} micros used on {day}")
        for platform, cap in caps.platform_micros.items():
            used = self.committed_by_platform.get(platform, 0)
            used += self.reserved_by_platform.get(platform, 0)
            if cap < used:
                raise Conflict(f"{platform} budget cannot go below its {used} micros used")
        return LedgerEvent(EventKind.BUDGET_SET, now, idempotency_key=key, data=caps.to_data())

    @staticmethod
    def _used_by(committed: dict, reserved: dict) -> dict:
        return {k: committed.get(k, 0) + reserved.get(k, 0) for k in set(committed) | set(reserved)}

    def decide_policy(self, policy: Policy, now: datetime, key: str | None) -> LedgerEvent:
        return LedgerEvent(EventKind.POLICY_SET, now, idempotency_key=key, data=policy.to_data())

    def decide_reserve(
        self,
        amount_micros: int,
        platform: str,
        now: datetime,
        key: str | None,
        *,
        bid_micros: int | None = None,
        allow_partial: bool = True,
        ttl: timedelta = DEFAULT_RESERVATION_TTL,
    ) -> LedgerEvent | Denial:
        if amount_micros <= 0:
            raise InvalidInput("a reservation must be for a positive amount")
        if platform not in PLATFORMS:
            raise InvalidInput(f"unknown platform {platform!r}; use one of {list(PLATFORMS)}")
        denials = self.compliance(platform, now, bid_micros)
        if denials:
            return denials[0]
        day = self.budget_day(now)
        room, rule = self.headroom(platform, day)
        granted = min(amount_micros, room)
        if granted < amount_micros and not allow_partial:
            return Denial(
                Rule.INSUFFICIENT,
                f"only {room} micros left under the {rule.value.split('_')[0]} cap",
            )
        return LedgerEvent(
            EventKind.RESERVED,
            now,
            reservation_id=str(uuid4()),
            platform=platform,
            amount_micros=granted,
            budget_day=day,
            idempotency_key=key,
            requested_micros=amount_micros,
            expires_at=now + ttl,
        )

    def _reservation(self, reservation_id: str) -> Reservation:
        found = self.reservations.get(reservation_id)
        if found is None:
            raise NotFound(
                f"reservation {reservation_id} is not open on campaign "
                f"{self.campaign_id} (committed, released, expired or unknown)"
            )
        return found

    def decide_commit(
        self,
        reservation_id: str,
        actual_micros: int,
        now: datetime,
        key: str | None,
        reports: tuple[tuple, ...] = (),
    ) -> LedgerEvent:
        if actual_micros < 0:
            raise InvalidInput("actual spend must not be negative")
        held = self._reservation(reservation_id)
        over = max(0, actual_micros - held.amount_micros)
        return LedgerEvent(
            EventKind.COMMITTED,
            now,
            reservation_id=reservation_id,
            platform=held.platform,
            amount_micros=actual_micros,
            budget_day=held.budget_day,
            idempotency_key=key,
            over_delivered_micros=over,
            reports=reports,
        )

    def decide_release(self, reservation_id: str, now: datetime, key: str | None) -> LedgerEvent:
        held = self._reservation(reservation_id)
        return LedgerEvent(
            EventKind.RELEASED,
            now,
            reservation_id=reservation_id,
            platform=held.platform,
            amount_micros=held.amount_micros,
            budget_day=held.budget_day,
            idempotency_key=key,
        )

    def decide_expiries(self, now: datetime) -> list[LedgerEvent]:
        return [
            LedgerEvent(
                EventKind.EXPIRED,
                now,
                reservation_id=r.reservation_id,
                platform=r.platform,
                amount_micros=r.amount_micros,
                budget_day=r.budget_day,
            )
            for r in self.reservations.values()
            if r.expires_at <= now
        ]

    def decide_unblock(self, now: datetime, key: str | None) -> LedgerEvent:
        if not self.blocked:
            raise Conflict(f"campaign {self.campaign_id} is not blocked")
        return LedgerEvent(EventKind.UNBLOCKED, now, idempotency_key=key)

    # --- applying ------------------------------------------------------------------------

    def apply(self, event: LedgerEvent) -> None:
        kind = event.kind
        if kind is EventKind.BUDGET_SET:
            self.caps = Caps.from_data(event.data)
        elif kind is EventKind.POLICY_SET:
            self.policy = Policy.from_data(event.data)
        elif kind is EventKind.RESERVED:
            self._apply_reserved(event)
        elif kind in (EventKind.COMMITTED, EventKind.RELEASED, EventKind.EXPIRED):
            self._close(event)
        elif kind is EventKind.UNBLOCKED:
            self.blocked = False
        if event.idempotency_key:
            self.applied[event.idempotency_key] = event

    def _apply_reserved(self, event: LedgerEvent) -> None:
        assert event.reservation_id and event.platform and event.budget_day
        if event.amount_micros <= 0:
            return  # a zero grant holds nothing; it is still remembered for its key
        self.reservations[event.reservation_id] = Reservation(
            event.reservation_id,
            event.platform,
            event.amount_micros,
            event.budget_day,
            event.expires_at,
        )
        self._add_reserved(event.platform, event.budget_day, event.amount_micros)

    def _add_reserved(self, platform: str, day: date, micros: int) -> None:
        self.reserved += micros
        self.reserved_by_day[day] += micros
        self.reserved_by_platform[platform] += micros

    def _close(self, event: LedgerEvent) -> None:
        held = self.reservations.pop(event.reservation_id or "", None)
        if held is None:
            return
        self._add_reserved(held.platform, held.budget_day, -held.amount_micros)
        if event.kind is EventKind.COMMITTED:
            self.committed += event.amount_micros
            self.committed_by_day[held.budget_day] += event.amount_micros
            self.committed_by_platform[held.platform] += event.amount_micros
            over = event.amount_micros - held.amount_micros
            if over > 0:
                self.over_delivered += over
                self.blocked = True

    def snapshot(self, now: datetime) -> dict[str, Any]:
        day = self.budget_day(now)
        platforms = sorted(
            set(self.committed_by_platform)
            | set(self.reserved_by_platform)
            | set(self.caps.platform_micros if self.caps else ())
        )
        return {
            "campaign_id": self.campaign_id,
            "currency": self.currency,
            "caps": self.caps.to_data() if self.caps else None,
            "policy": self.policy.to_data(),
            "committed": self.committed,
            "reserved": self.reserved,
            "remaining": max(
                0, (self.caps.total_micros if self.caps else 0) - self.committed - self.reserved
            ),
            "today": {
                "day": day.isoformat(),
                "committed": self.committed_by_day.get(day, 0),
                "reserved": self.reserved_by_day.get(day, 0),
            },
            "platforms": {
                p: {
                    "committed": self.committed_by_platform.get(p, 0),
                    "reserved": self.reserved_by_platform.get(p, 0),
                }
                for p in platforms
            },
            "open_reservations": len(self.reservations),
            "over_delivered": self.over_delivered,
            "blocked": self.blocked,
        }
