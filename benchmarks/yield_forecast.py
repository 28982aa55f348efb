"""Yields in unseen years (issue 14): pooled RMSE, % of mean yield, ratio to the per-unit linear trend and
median NSE of every model a yield suite ran, over the seeds' output directories, and the forecast figure.

    python benchmarks/yield_forecast.py --suite il_corn_yield --out runs/bench [--seed-out runs/bench_seed1 ...]
"""

import argparse
import sys
from pathlib import Path

from kgml.compare.runner import MODELS, prepare_suite
from kgml.compare.suites import get_suite
from kgml.compare.yields import (
    floor_markdown,
    floor_rows,
    forecast_figure,
    validation_markdown,
    validation_rows,
    yield_markdown,
    yield_rows,
)
from kgml.io import write_text_atomic


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, choices=["il_corn_yield", "state_yield"])
    p.add_argument("--out", default="runs/bench", help="output directory of seed 0 (baselines and models)")
    p.add_argument("--seed-out", action="append", default=[], help="output directories of further seeds")
    p.add_argument("--fold-kinds", default="forecast,leave_years_out")
    p.add_argument("--figure-models", default="yield_unit_trend,yield_trend_rf,gbm,hybrid_trend")
    args = p.parse_args(argv)
    suite = get_suite(args.suite)
    ds, folds = prepare_suite(suite, fold_kinds=args.fold_kinds.split(","))
    dirs = [Path(args.out), *map(Path, args.seed_out)]
    rows = yield_rows(ds, folds, dirs, MODELS, suite.name)
    md = yield_markdown(rows, suite.name)
    val = validation_rows(folds, dirs, MODELS, suite.name)
    if val:  # the trend slots record their validation-years RMSE: variants are compared there
        md = f"{md}\n{validation_markdown(val, suite.name)}"
    if "forecast" in folds:  # how far the issue-14 target is: the hindsight line and the worst year
        models = [m for m in MODELS if m in {r["model"] for r in rows if r["fold_kind"] == "forecast"}]
        md = f"{md}\n{floor_markdown(floor_rows(ds, folds['forecast'], dirs, models, suite.name))}"
    out = Path(args.out) / suite.name
    write_text_atomic(md, out / "yield_forecast.md")
    if "forecast" in folds:
        fig = forecast_figure(ds, folds["forecast"], out, args.figure_models.split(","),
                              out / "yield_forecast.png", title=f"{suite.name}: forecast folds (mean over units)")
        print(f"wrote {fig}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
