"""Revenue analytics from subscription snapshots taken at month boundaries.

A snapshot is one subscription's recurring fee at the boundary. Its monthly value (MRR) is the
fee for a monthly plan, fee / 12 for a yearly one and fee × 52 / 12 for a weekly one, rounded
half up to the minor unit per subscription, so that per-customer movements are integers and
add up exactly to the change in total MRR. One currency per call: MRR in two currencies does
not add up without an exchange rate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal

from pydantic import Field

from kiki.billing.catalog import Currency, FrozenModel, Interval
from kiki.billing.rounding import share
from kiki.errors import InvalidInput

_MONTHLY_SHARE = {Interval.MONTHLY: (1, 1), Interval.YEARLY: (1, 12), Interval.WEEKLY: (52, 12)}


class Snapshot(FrozenModel):
    customer: str = Field(min_length=1)
    amount_minor: int = Field(ge=0)
    interval: Interval
    currency: Currency


class MrrMovements(FrozenModel):
    """How MRR moved from one month to the next; every movement is a positive amount."""

    starting_mrr: int
    new: int
    expansion: int
    contraction: int
    churned: int
    reactivated: int
    ending_mrr: int

    @property
    def net_new(self) -> int:
        return self.new + self.expansion + self.reactivated - self.contraction - self.churned


def monthly_value(snapshot: Snapshot) -> int:
    """The snapshot's contribution to MRR, rounded half up."""
    part, whole = _MONTHLY_SHARE[snapshot.interval]
    return share(snapshot.amount_minor, part, whole)


def mrr_by_customer(snapshots: Iterable[Snapshot]) -> dict[str, int]:
    """Each paying customer's MRR (several subscriptions add up); customers at 0 left out."""
    per_customer: dict[str, int] = defaultdict(int)
    for snapshot in _one_currency(snapshots):
        per_customer[snapshot.customer] += monthly_value(snapshot)
    return {customer: mrr for customer, mrr in per_customer.items() if mrr}


def mrr(snapshots: Iterable[Snapshot]) -> int:
    return sum(mrr_by_customer(snapshots).values())


def arr(snapshots: Iterable[Snapshot]) -> int:
    return 12 * mrr(snapshots)


def arpu(snapshots: Iterable[Snapshot]) -> int:
    """MRR per paying customer, rounded half up; 0 without customers."""
    per_customer = mrr_by_customer(snapshots)
    return share(sum(per_customer.values()), 1, len(per_customer)) if per_customer else 0


def movements(
    previous: Sequence[Snapshot],
    current: Sequence[Snapshot],
    *,
    past_customers: Collection[str] = (),
) -> MrrMovements:
    """MRR movements between two months. A customer paying now and not last month is
    reactivated if in `past_customers` (those who paid in some earlier month), else new."""
    _one_currency([*previous, *current])
    before, after = mrr_by_customer(previous), mrr_by_customer(current)
    moves = dict.fromkeys(("new", "expansion", "contraction", "churned", "reactivated"), 0)
    for customer in before.keys() | after.keys():
        old, now = before.get(customer, 0), after.get(customer, 0)
        if not old:
            moves["reactivated" if customer in past_customers else "new"] += now
        elif not now:
            moves["churned"] += old
        elif now > old:
            moves["expansion"] += now - old
        else:
            moves["contraction"] += old - now
    return MrrMovements(starting_mrr=sum(before.values()), ending_mrr=sum(after.values()), **moves)


def net_revenue_retention(
    previous: Sequence[Snapshot], current: Sequence[Snapshot]
) -> Decimal | None:
    """Percent of last month's MRR that the same customers pay now (expansion included,
    new and reactivated customers not), to 2 places half up; None without last month's MRR."""
    _one_currency([*previous, *current])
    before, after = mrr_by_customer(previous), mrr_by_customer(current)
    starting = sum(before.values())
    if not starting:
        return None
    retained = sum(after.get(customer, 0) for customer in before)
    return Decimal(share(retained, 10_000, starting)).scaleb(-2)


def _one_currency(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    listed = list(snapshots)
    currencies = {snapshot.currency for snapshot in listed}
    if len(currencies) > 1:
        raise InvalidInput(f"analytics are per currency; got {sorted(currencies)}")
    return listed
