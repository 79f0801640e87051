"""The CDNOW transaction log shipped inside the `lifetimes` wheel: our benchmark data.

Read straight from the installed package: `lifetimes.datasets` needs `pkg_resources`, and
its split helpers break under pandas 3, so we never import it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd


def cdnow_path() -> Path:
    """Where `lifetimes` keeps CDNOW_master.txt (found without importing the package)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the lifetimes package (which ships CDNOW) is not installed")
    return Path(spec.origin).parent / "datasets" / "CDNOW_master.txt"


def load_cdnow() -> pd.DataFrame:
    """One row per purchase line as in the file (69,659 rows, 23,570 customers).

    Columns: customer_id (str), ts (datetime64, midnight), amount (float dollars),
    quantity (int). Same-day lines are kept apart; `features.transactions_to_daily` merges.
    """
    raw = pd.read_csv(
        cdnow_path(),
        sep=r"\s+",
        dtype={"customer_id": str, "date": str, "number_of_cds": "int64"},
    )
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"].astype(str),
            "ts": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "amount": raw["dollar_value"].astype("float64"),
            "quantity": raw["number_of_cds"].astype("int64"),
        }
    )


@dataclass(frozen=True)
class Split:
    """A benchmark's calibration/holdout split: `calibration` holds every purchase up to
    `calibration_end` and nothing later, the only data a model may fit on."""

    data: pd.DataFrame
    calibration: pd.DataFrame
    calibration_end: pd.Timestamp
    holdout_end: pd.Timestamp

    @property
    def holdout_days(self) -> int:
        return (self.holdout_end - self.calibration_end).days


def split(
    calibration_end: date | str, holdout_end: date | str, transactions: pd.DataFrame | None = None
) -> Split:
    """CDNOW (or `transactions`) split at calibration_end; the holdout runs to holdout_end."""
    data = load_cdnow() if transactions is None else transactions
    cal, end = pd.Timestamp(calibration_end).normalize(), pd.Timestamp(holdout_end).normalize()
    if end <= cal:
        raise ValueError("holdout_end must come after calibration_end")
    return Split(data, data.loc[data["ts"].dt.normalize() <= cal], cal, end)
