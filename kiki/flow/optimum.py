"""The offline optimum of a pacing run: from every auction the sandbox cleared, the cheapest
purchases that keep each campaign on its curve, as the yardstick for a controller's cost.

The schedule is cut into `windows` equal spans; in each, the optimum buys a campaign's auctions
cheapest first (per unit of its goal: a click, an expected conversion for a CPA goal, expected
conversion value for a ROAS goal) until the curve's share of the budget for that span is spent,
carrying what the market could not sell into the next span. It sees every auction in advance
and pays the highest competing bid (what a bid a micro above it costs at first and second
price alike), so no controller can beat it: spend within a span may sit anywhere in it, a
slightly looser curve than the controllers are held to. Auctions are kept as histograms of
price per unit of goal (log bins; the last bin bought is taken at its mean), not one by one.

At first price no bidder without foresight can reach it: a bid that wins an auction pays
itself, not the competing bid. `uniform_bid_cost_per_unit` is the reference for that: in each
span the one price per unit of goal (bid = price x what a click is worth, on every auction
of the campaign) that spends the span's share, chosen in hindsight, each first-price auction
won paying its bid. It knows each span's price level but no single competing bid: what a
pacer that shades by one multiplier per campaign can at best do, which is what the
controllers here are. At second price it is the optimum itself.
"""

from __future__ import annotations

import numpy as np

_LOW, _HIGH = 3.0, 9.0  # log10 of micros per unit of goal (normalised): the bins' range


class OfflineOptimum:
    """Collects a run's auctions; `cost_per_unit` then gives each campaign's optimum."""

    def __init__(
        self,
        unit_campaign: np.ndarray,
        unit_weight: np.ndarray,
        window_budgets: np.ndarray,
        bins: int = 300,
    ) -> None:
        """`unit_weight`: what one click of each unit is worth to its campaign's goal;
        `window_budgets[c, w]`: what campaign c's curve spends in window w (micros)."""
        campaigns, windows = window_budgets.shape
        self.unit_campaign = unit_campaign
        # Weights scaled to mean 1 within each campaign: the ranking inside a campaign is the
        # same and every campaign's prices per unit fall in one range of bins.
        mean = np.bincount(unit_campaign, unit_weight, campaigns) / np.maximum(
            np.bincount(unit_campaign, minlength=campaigns), 1
        )
        self.weight = unit_weight / np.where(mean > 0, mean, 1.0)[unit_campaign]
        self.window_budgets = window_budgets
        self.bins = bins
        # float32: four histograms of 1,000 campaigns x 20 spans x 300 bins stay at 96 MB.
        shape = (campaigns, windows, bins)
        self.cost, self.units = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        # The first-price auctions' part of each bin, for the uniform bid's reference.
        self.first_cost, self.first_units = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        # Each bin's upper edge, micros per unit of goal.
        self.edges = 10 ** (_LOW + (_HIGH - _LOW) * np.arange(1, bins + 1) / bins)

    def add(
        self, window: int, unit: np.ndarray, price: np.ndarray, first: np.ndarray | None = None
    ) -> None:
        """Auctions of `window`: the unit each was for, its highest competing bid, and
        whether it cleared at first price (None: none did)."""
        weight = self.weight[unit]
        sold = weight > 0
        unit, price, weight = unit[sold], price[sold].astype(float), weight[sold]
        per_unit = np.log10(np.maximum(price / weight, 1.0))
        b = np.clip(((per_unit - _LOW) / (_HIGH - _LOW) * self.bins).astype(int), 0, self.bins - 1)
        c = self.unit_campaign[unit]
        windows = self.cost.shape[1]
        flat = (c * windows + min(window, windows - 1)) * self.bins + b
        np.add.at(self.cost.reshape(-1), flat, price)
        np.add.at(self.units.reshape(-1), flat, weight)
        if first is not None:
            f = first[sold]
            np.add.at(self.first_cost.reshape(-1), flat[f], price[f])
            np.add.at(self.first_units.reshape(-1), flat[f], weight[f])

    def cost_per_unit(self) -> np.ndarray:
        """Per campaign: the optimum's micros per unit of goal (nan where it bought nothing)."""
        campaigns, windows, _ = self.cost.shape
        spent = np.zeros(campaigns)
        bought = np.zeros(campaigns)
        carry = np.zeros(campaigns)
        for w in range(windows):
            need = self.window_budgets[:, w] + carry
            cost, units = self.cost[:, w, :], self.units[:, w, :]
            before = np.cumsum(cost, axis=1) - cost  # spent on the cheaper bins
            take = np.clip((need[:, None] - before) / np.where(cost > 0, cost, 1.0), 0.0, 1.0)
            take = np.where(cost > 0, take, 0.0)
            got = (take * cost).sum(axis=1)
            spent += got
            bought += (take * units).sum(axis=1)
            carry = need - got
        return np.divide(spent, bought, out=np.full(campaigns, np.nan), where=bought > 0)

    def uniform_bid_cost_per_unit(self) -> np.ndarray:
        """Per campaign: micros per unit of goal of the best uniform price per unit in each
        span, in hindsight (module docstring). Spend at price p: the second-price auctions at
        or under p pay their competing bids, the first-price ones pay p x their units; p is
        interpolated between bin edges. nan where it bought nothing."""
        campaigns, windows, _ = self.cost.shape
        spent = np.zeros(campaigns)
        bought = np.zeros(campaigns)
        carry = np.zeros(campaigns)
        lower = np.concatenate([[0.0], self.edges[:-1]])
        for w in range(windows):
            need = self.window_budgets[:, w] + carry
            cost, units = self.cost[:, w, :].astype(float), self.units[:, w, :].astype(float)
            first_units = self.first_units[:, w, :].astype(float)
            second_cost = cost - self.first_cost[:, w, :]
            # Spend and units bought at each bin's upper edge, and at its lower edge.
            units_to = np.cumsum(units, axis=1)
            first_to = np.cumsum(first_units, axis=1)
            spend_to = np.cumsum(second_cost, axis=1) + self.edges * first_to
            spend_below = spend_to - second_cost - self.edges * first_units
            spend_below += (lower - self.edges) * (first_to - first_units)
            units_below = units_to - units
            # The first bin whose upper edge spends the need (the last one if none does).
            b = np.minimum((spend_to < need[:, None]).sum(axis=1), spend_to.shape[1] - 1)
            rows = np.arange(campaigns)
            lo, hi = spend_below[rows, b], spend_to[rows, b]
            t = np.clip((need - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
            got = lo + t * (hi - lo)
            spent += got
            bought += units_below[rows, b] + t * units[rows, b]
            carry = need - got
        return np.divide(spent, bought, out=np.full(campaigns, np.nan), where=bought > 0)

    def own_units(self, unit_clicks: np.ndarray) -> np.ndarray:
        """Per campaign: units of goal its own clicks were worth, on the optimum's scale."""
        campaigns = self.cost.shape[0]
        return np.bincount(self.unit_campaign, unit_clicks * self.weight, campaigns)
