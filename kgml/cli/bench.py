"""``kgml bench shift``: run (or resume) a distribution-shift suite on its frozen folds and write metrics
(netCDF + markdown), figures and a dated block in benchmarks/RESULTS.md. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kgml.progress import error_stream


def register(subparsers) -> None:
    from kgml.cliopts import KeyValueAction, ListAction, add_alias

    p = subparsers.add_parser("bench", help="benchmarks (distribution shift)",
                              description="Benchmark suites; see benchmarks/README.md.")
    sub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    s = sub.add_parser("shift", help="run a distribution-shift suite on its frozen folds",
                       description="Every model (feature baselines, LSTM, process model, neural network, the hybrid "
                       "in four scopes) on the frozen folds benchmarks/folds/SUITE.json; held-out predictions are "
                       "written per (model, fold) and skipped when present, so an interrupted run resumes.")
    add_arguments(s)
    s.set_defaults(handler=_shift)
    t = sub.add_parser("summary", help="one compact table across the suites already run",
                       description="Per suite found under --bench-dir, a row per model with the lead metric (NEE: "
                       "R²; others: NSE) of each fold kind and target as median / bad tail over held-out sites, "
                       "read from DIR/SUITE/metrics.nc (nothing is trained or written).")
    t.add_argument("--bench-dir", default="runs/bench", metavar="DIR",
                   help="where `kgml bench shift --out DIR` wrote the suites (default: runs/bench)")
    add_alias(t, "--out", "bench_dir")
    t.add_argument("--suites", action=ListAction, default=None, metavar="SUITE",
                   help="suites (commas or spaces; default: every one found)")
    t.add_argument("--metric", action=KeyValueAction, default=[], metavar="VARIABLE=M1[,M2]",
                   help="metrics shown for a target, from r2, nse, kge, rmse (e.g. nee=r2,rmse gpp=nse)")
    t.set_defaults(handler=_summary)
    p.set_defaults(handler=lambda args: (p.print_help(), 0)[1])


def add_arguments(s: argparse.ArgumentParser) -> None:
    from kgml.cliopts import ListAction
    from kgml.compare.suites import SUITES

    s.add_argument("--suite", required=True, choices=sorted(SUITES), help="which suite")
    s.add_argument("--data-dir", default=None, metavar="DIR",
                   help="real-data directory (default: $KGML_DATA or ../shared/data)")
    s.add_argument("--out", default="runs/bench", metavar="DIR",
                   help="output directory, a sub-directory per suite (default: runs/bench); a run there resumes: "
                        "finished (model, fold, seed) fits are kept, never replaced")
    s.add_argument("--quick", action="store_true", help="tiny: few sites, one fold of two kinds, a few steps")
    s.add_argument("--models", action=ListAction, default=None, metavar="MODEL",
                   help="model slots, commas or spaces (default: all): rf, gbm, lstm, process_global, "
                        "process_per_region, neural, hybrid_global, hybrid_per_region, hybrid_finetune, "
                        "hybrid_region_aware, hybrid_pretrained (pretrained on synthetic data of the suite's "
                        "physics once per suite, fine-tuned per fold), hybrid_trend, hybrid_per_region_trend, "
                        "neural_trend and process_trend (with the technology trend; yield suites), yield_unit_mean, "
                        "yield_unit_trend, yield_region_trend, yield_trend_rf (naive yield baselines), "
                        "hybrid_trend_site_embedding, hybrid_trend_site_rate, hybrid_trend_site_level, "
                        "hybrid_trend_site_level_rate (trended hybrid + per-unit embedding / rate / level; held-out "
                        "years of known units), "
                        "hybrid_anomaly_w1, hybrid_anomaly_w3, hybrid_anomaly_w10 (hybrid_global + the anomaly-aware "
                        "loss of that weight; monthly suites); a+b[+c] is the multi-model mean of those slots, "
                        "seed by seed (they run first; nothing else is trained for it)")
    s.add_argument("--fold-kinds", action=ListAction, default=None, metavar="KIND",
                   help="fold kinds to run, commas or spaces (default: all)")
    s.add_argument("--max-folds", type=int, default=None, help="at most this many folds of each kind")
    s.add_argument("--signature", default=None,
                   help="region-detection signature: theta, cycle, response or joined by + (default per suite)")
    s.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    s.add_argument("--seeds", type=int, default=1,
                   help="run every model slot with this many seeds (--seed, --seed+1, ...); tables score the "
                        "ensemble mean and show the min-max over seeds; each (fold, model, seed) resumes alone")
    s.add_argument("--ablate", action="store_true",
                   help="ablation table of the global hybrid: also run (without --models: only) the slots that "
                        "remove or add one knowledge component (physics layer, learned parameters, location "
                        "encoding, static attributes, site attention, residual heads, synthetic pretraining)")
    s.add_argument("--intervals", action="store_true",
                   help="calibrated 50/80/90 %% predictive intervals of every slot: 20 %% of each fold's training "
                        "sites are held back as calibration sites (split-conformal by site; seed spread with "
                        "--seeds >= 2), coverage, width and CRPS on the held-out sites, the random forest's "
                        "quantile forest as reference; in year-held-out folds (leave-years-out, forecast) "
                        "calibration years instead (whole years, at least 9; forecast: the last known years), "
                        "and the yield of all units of a year (the state's) as an aggregate; the models then "
                        "differ from the default run, so all is written under OUT/SUITE/intervals")
    s.add_argument("--calibration-fraction", type=float, default=0.2,
                   help="with --intervals: share of each fold's training sites (years) held back for calibration "
                        "(default 0.2; at least 2 sites; a finite 90 %% interval needs at least 9; years: raised to "
                        "9 where 4 training years are left)")
    s.add_argument("--freeze-folds", action="store_true",
                   help="(re)generate benchmarks/folds/SUITE.json from the full data first")
    s.add_argument("--add-fold-kinds", action="store_true",
                   help="append the suite's fold kinds missing from its frozen folds (existing folds unchanged)")
    s.add_argument("--folds-dir", default=None, metavar="DIR", help="where the frozen folds are (default: benchmarks/folds)")
    s.add_argument("--results", default=None,
                   help="markdown file to append the dated block to (default: benchmarks/RESULTS.md; "
                        "none with --quick)")
    s.add_argument("--no-results", action="store_true", help="do not append to a results file")
    s.add_argument("--no-figures", action="store_true", help="skip PNG figures")
    s.add_argument("--score-only", action="store_true",
                   help="train nothing: score the (model, fold) results already written (partial runs)")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress bar (results are still printed; --quiet prints nothing but errors)")
    s.add_argument("--train-towers", default=None, metavar="N[,N...]",
                   help="few-towers curve (kgml.compare.towers_curve): per selected fold, derived fold kinds "
                        "KIND_towersN whose training part is N towers drawn by the seed from the fold's training "
                        "towers (val and test towers unchanged; 'all' = the fold itself), e.g. 5,10,20,40,all; "
                        "default models rf, neural, hybrid_global, hybrid_pretrained, hybrid_pretrained_towers; the slots "
                        "hybrid_pretrained_towers and hybrid_pretrained_towers_ss (tower-like corpus, its steady-state "
                        "variant) run only with this option")


def _shift(args: argparse.Namespace) -> int:
    from kgml.compare.runner import RESULTS_MD, command_line, run_suite
    from kgml.compare.suites import SuiteUnavailable
    from kgml.io import guard_outputs
    from kgml.paths import DataNotFoundError, data_dir

    if args.seeds < 1:
        print(f"kgml bench shift: --seeds must be >= 1, got {args.seeds}", file=error_stream())
        return 2
    if not 0.0 < args.calibration_fraction < 1.0:
        print(f"kgml bench shift: --calibration-fraction must be in (0, 1), got {args.calibration_fraction}",
              file=sys.stderr)
        return 2
    results = None
    if not args.no_results:
        results = args.results or (None if args.quick else RESULTS_MD)
    try:
        data = data_dir(args.data_dir)
    except DataNotFoundError:  # no data here: run_suite says which suite cannot run, and why
        data = None
    guard_outputs([Path(args.out), Path(args.out) / args.suite, results], [data, args.folds_dir])
    if getattr(args, "train_towers", None):
        return _towers(args, results)
    try:
        res = run_suite(
            args.suite, data_dir=args.data_dir, out=args.out, quick=args.quick,
            models=args.models or None,
            progress=not args.no_progress, results_md=results, folds_dir=args.folds_dir,
            freeze=args.freeze_folds, add_fold_kinds=args.add_fold_kinds, max_folds=args.max_folds,
            fold_kinds=args.fold_kinds or None,
            signature=args.signature, seed=args.seed, command=command_line(getattr(args, "argv", None)),
            figures=not args.no_figures, score_only=args.score_only, seeds=args.seeds, ablate=args.ablate,
            intervals=args.intervals, calibration_fraction=args.calibration_fraction,
        )
    except SuiteUnavailable as err:
        print(f"suite {args.suite!r} cannot run here: {err}", file=error_stream())
        return 2
    print(res.markdown)
    print(f"wrote {res.directory}")
    return 0


def _towers(args: argparse.Namespace, results) -> int:
    """``--train-towers``: the few-towers curve (`kgml.compare.towers_curve.run_towers_curve`)."""
    from kgml.compare.runner import command_line
    from kgml.compare.suites import SuiteUnavailable
    from kgml.compare.towers_curve import parse_train_towers, run_towers_curve

    try:
        towers = parse_train_towers(args.train_towers)
    except ValueError as err:
        print(f"kgml bench shift: {err}", file=error_stream())
        return 2
    try:
        res = run_towers_curve(args.suite, towers, data_dir=args.data_dir, out=args.out, quick=args.quick,
                               models=args.models or None, progress=not args.no_progress, results_md=results,
                               folds_dir=args.folds_dir, max_folds=args.max_folds,
                               fold_kinds=args.fold_kinds or None, seed=args.seed, seeds=args.seeds,
                               command=command_line(getattr(args, "argv", None)), figures=not args.no_figures,
                               score_only=args.score_only)
    except SuiteUnavailable as err:
        print(f"suite {args.suite!r} cannot run here: {err}", file=error_stream())
        return 2
    except ValueError as err:
        print(f"kgml bench shift --train-towers: {err}", file=error_stream())
        return 2
    print(res.markdown)
    print(f"wrote {res.directory}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from kgml.compare.summary import summary_markdown

    by_var = {}
    for item in args.metric:
        var, sep, metrics = item.partition("=")
        chosen = [m.strip() for m in metrics.split(",") if m.strip()]
        bad = [m for m in chosen if m not in ("r2", "nse", "kge", "rmse")]
        if not sep or not chosen or bad:
            print(f"--metric {item!r}: expected VARIABLE=M1[,M2] with metrics from r2, nse, kge, rmse", file=error_stream())
            return 2
        by_var[var.strip()] = chosen
    try:
        md = summary_markdown(args.bench_dir, args.suites or None,
                              metrics_by_variable=by_var)
    except (FileNotFoundError, ValueError) as err:
        print(f"kgml bench summary: {err}", file=error_stream())
        return 2
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/shift.py --suite NAME ...`` (same options as ``kgml bench shift``)."""
    parser = argparse.ArgumentParser(prog="benchmarks/shift.py", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = parser.parse_args(argv)
    args.argv = ["bench", "shift", *(sys.argv[1:] if argv is None else argv)]
    if args.quiet:
        from kgml.progress import quiet_output

        with quiet_output():
            return _shift(args)
    return _shift(args)
