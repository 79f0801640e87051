from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from kiki.errors import InvalidInput
from kiki.value.transactions import from_frame, read_csv

HEADER = "order_id,customer_id,occurred_at,amount,currency,quantity\n"


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(header + body)
    return path


def test_good_rows_are_exact_and_dates_mean_midnight_utc(tmp_path: Path) -> None:
    rows = read_csv(
        write(tmp_path, "o1,c1,2026-01-05,12.34,eur,2\no2,c1,2026-01-06T10:00:00+01:00,0.1,,\n")
    )
    assert rows[0].amount_micros == 12_340_000 and rows[0].currency == "EUR"
    assert rows[0].occurred_at == datetime(2026, 1, 5, tzinfo=UTC) and rows[0].quantity == 2
    assert rows[1].amount_micros == 100_000 and rows[1].currency == "USD"
    assert rows[1].occurred_at == datetime(2026, 1, 6, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("o1,c1,2026-01-05,abc,,\n", "line 2, field 'amount'"),
        ("o1,c1,2026-01-05,1,,\no2,c1,2026-13-01,3,,\n", "line 3, field 'occurred_at'"),
        ("o1,c1,2026-01-05,-1,,\n", "line 2, field 'amount'"),
        ("o1,c1,2026-01-05,0.0000001,,\n", "6 decimal places"),
        ("o1,,2026-01-05,1,,\n", "line 2, field 'customer_id'"),
        ("o1,c1,2026-01-05,1,US,\n", "line 2, field 'currency'"),
        ("o1,c1,2026-01-05,1,USD,1,extra\n", "line 2: more fields"),
    ],
)
def test_a_bad_row_names_its_line_and_field_and_nothing_loads(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(InvalidInput, match=expected):
        read_csv(write(tmp_path, body))


def test_header_and_file_problems(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="lacks amount"):
        read_csv(write(tmp_path, "o1,c1,2026-01-05\n", header="order_id,customer_id,occurred_at\n"))
    with pytest.raises(InvalidInput, match="unknown column"):
        read_csv(
            write(
                tmp_path,
                "o1,c1,2026-01-05,1,x\n",
                header="order_id,customer_id,occurred_at,amount,colour\n",
            )
        )
    with pytest.raises(InvalidInput, match="cannot read"):
        read_csv(tmp_path / "missing.csv")


def test_frames_convert_through_the_shortest_decimal() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["00001"],
            "ts": [pd.Timestamp("1997-01-01")],
            "amount": [11.77],
            "quantity": [1],
        }
    )
    (row,) = from_frame(frame, "cdnow-")
    assert row.amount_micros == 11_770_000 and row.order_id == "cdnow-0"
