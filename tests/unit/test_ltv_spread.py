"""The LTV histogram and deciles (kiki.engage.ltv_spread): every customer counted once, the
tail above the 99th percentile in the last bin, deciles highest first and summing to all."""

import numpy as np

from kiki.engage.ltv_spread import spread


def test_bins_count_everyone_once_and_the_tail_goes_in_the_last() -> None:
    values = np.array([500_000, 1_000_000, 2_000_000, 3_000_000] * 250 + [900_000_000] * 5)
    found = spread(values, bins=4)
    assert sum(b.customers for b in found.bins) == found.customers == 1005
    assert found.bins[-1].high_micros is None and found.bins[-1].customers == 255
    assert [b.low_micros for b in found.bins] == [500_000, 1_333_333, 2_166_666, 3_000_000]
    assert [b.customers for b in found.bins] == [500, 250, 0, 255]
    assert found.total_micros == int(values.sum()) and found.median_micros == 2_000_000


def test_deciles_run_from_the_most_valuable_down_and_share_the_total() -> None:
    found = spread(np.arange(1, 101) * 1_000_000)
    assert [d.decile for d in found.deciles] == list(range(1, 11))
    top, bottom = found.deciles[0], found.deciles[-1]
    assert (top.min_micros, top.max_micros, top.customers) == (91_000_000, 100_000_000, 10)
    assert (bottom.min_micros, bottom.max_micros) == (1_000_000, 10_000_000)
    assert abs(sum(d.share for d in found.deciles) - 1) < 1e-9
    assert top.share == 955 / 5050


def test_no_customers_is_an_empty_spread() -> None:
    assert spread(np.array([], dtype=np.int64)).customers == 0
