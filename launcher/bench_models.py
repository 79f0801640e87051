"""`kiki bench ltv` and `kiki bench churn`: the CDNOW backtests of the two models against
their classic baselines (benchmarks/ltv.py, benchmarks/churn.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def cdnow_options(holdout_help: str, choose_help: str, predictions_help: str) -> Any:
    """The options every CDNOW benchmark takes: the split, the seed, blind configuration
    choice, per-customer output and JSON."""
    options = [
        click.option(
            "--calibration-end",
            type=click.DateTime(["%Y-%m-%d"]),
            default="1997-09-30",
            show_default=True,
            help="Last day the models may learn from.",
        ),
        click.option(
            "--holdout-end",
            type=click.DateTime(["%Y-%m-%d"]),
            default="1998-06-30",
            show_default=True,
            help=holdout_help,
        ),
        click.option("--seed", default=0, show_default=True),
        click.option("--choose-config", is_flag=True, help=choose_help),
        click.option("--predictions-out", type=click.Path(path_type=Path), help=predictions_help),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]

    def apply(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@click.command("ltv")
@cdnow_options(
    holdout_help="Last day of the spend being predicted.",
    choose_help="First pick the network on the last window before the calibration end.",
    predictions_help="Write one row per customer: actual and each model's predicted spend.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Customer bootstrap resamples for the share in which ours beats BG/NBD + "
    "Gamma-Gamma on each column (0: skip).",
)
def bench_ltv(
    calibration_end: Any,
    holdout_end: Any,
    seed: int,
    choose_config: bool,
    predictions_out: Path | None,
    as_json: bool,
    resamples: int,
) -> None:
    """Our ZILN model vs BG/NBD + Gamma-Gamma (lifetimes) and a naive run rate on CDNOW:
    normalized Gini, Spearman, MAE, RMSE, decile MAPE and total-spend error of each
    customer's holdout spend. Trains on data up to --calibration-end only; ours takes the
    geometric mean of its book total and BG/NBD + Gamma-Gamma's, and shares it by itself.
    A paired customer bootstrap says how firm each column's win or loss is: near 100% or 0%
    it holds whichever customers are in the book, near 50% a handful decide it."""
    import pandas as pd

    from benchmarks import ltv as ltv_bench
    from kiki.value.cdnow import load_cdnow

    data, config = load_cdnow(), None
    cut = calibration_end.date()
    if choose_config:
        config, scored = ltv_bench.choose_config(
            data.loc[data["ts"] <= pd.Timestamp(cut)], cut, seed=seed
        )
        if not as_json:
            for loss, candidate in scored:
                click.echo(f"  validation ZILN loss {loss:.4f}  {candidate.model_dump_json()}")
    result = ltv_bench.run_ltv_benchmark(
        cut, holdout_end.date(), config, seed, data, resamples=resamples
    )
    if predictions_out:
        result.predictions.to_csv(predictions_out, index_label="customer_id")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "calibration_end": str(result.calibration_end),
                    "holdout_end": str(result.holdout_end),
                    "customers": result.customers,
                    "metrics": result.metrics,
                    "fit_seconds": result.fit_seconds,
                    "resamples": resamples,
                    "ziln_beats_bgnbd_gg": result.win_share,
                }
            )
        )
        return
    click.echo(
        f"CDNOW: calibration to {result.calibration_end}, holdout {result.holdout_days} "
        f"days to {result.holdout_end}, {result.customers:,} customers\n{result.table()}"
    )


@click.command("churn")
@cdnow_options(
    holdout_help="Churned = no purchase from the day after --calibration-end to this day.",
    choose_help="First pick the trees on the last 90 days before the calibration end.",
    predictions_help=(
        "Write one row per customer: churned, each model's score, days since last purchase."
    ),
)
def bench_churn(
    calibration_end: Any,
    holdout_end: Any,
    seed: int,
    choose_config: bool,
    predictions_out: Path | None,
    as_json: bool,
) -> None:
    """Our churn model (XGBoost on BG/NBD's prior) vs BG/NBD (lifetimes) and a recency rule on
    CDNOW: ROC AUC, PR AUC, Brier score and calibration by decile. Trains on data up to
    --calibration-end only."""
    import pandas as pd

    from benchmarks import churn as churn_bench
    from kiki.value.cdnow import load_cdnow

    data, config = load_cdnow(), None
    cut = calibration_end.date()
    if choose_config:
        config, scored = churn_bench.choose_config(
            data.loc[data["ts"] <= pd.Timestamp(cut)], cut, seed=seed
        )
        if not as_json:
            for loss, candidate in scored:
                click.echo(f"  validation log loss {loss:.5f}  {candidate.model_dump_json()}")
    result = churn_bench.run_churn_benchmark(cut, holdout_end.date(), config, seed, data)
    if predictions_out:
        result.predictions.to_csv(predictions_out, index_label="customer_id")
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    click.echo(
        f"CDNOW churn: calibration to {result.calibration_end}, holdout {result.holdout_days} "
        f"days to {result.holdout_end}, {result.customers:,} customers, "
        f"{result.churn_rate:.1%} churned\n{result.table()}"
    )
