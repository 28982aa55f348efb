"""``kgml demo``: the main job on the built-in synthetic default (no data needed).

1. Process model: synthetic Midwest-like sites in three states, each with maize, soybean and grassland,
   driven by the weather generator fitted on the Ames, Iowa record (table, netCDF, figure).
2. Hybrid: pretrain the hybrid (maize) on a synthetic corpus drawn from the parameter priors, fine-tune
   it on a few noisy "towers" and yields of another synthetic world whose parameters shift between the
   states in a known way, and compare on held-out sites: the process model alone (at its defaults, and
   calibrated as one global parameter set on the same towers), one global model, per-state models, the
   global model without pretraining, a pure-neural model of the same size, and skill against the number of
   training sites. (`kgml.compare.pretraining_curve` is the longer study of skill vs training sites, with seeds.)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kgml.cliopts import add_alias, add_force


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the main job on the built-in synthetic default (no data needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output directory (default: runs/demo)")
    add_force(p)
    p.add_argument("--sites-per-state", type=int, default=8, help="process-model table: sites per state and vegetation")
    p.add_argument("--years", type=int, default=4, help="process-model table: simulated years per site")
    p.add_argument("--seed", type=int, default=0, help="random seed (weather, parameters, networks)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    add_alias(p, "--no-figure", "no_figures", action="store_true")
    p.add_argument("--no-hybrid", action="store_true", help="only the process-model part")
    p.add_argument("--quick", action="store_true", help="tiny hybrid sizes (a smoke run, not a result)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from kgml.compare.demo import DemoSizes, run_demo
    from kgml.io import guard_outputs, refuse_existing
    from kgml.paths import find_data_dir

    # the demo reads the real weather station files: its outputs must not land on them
    guard_outputs([Path(args.out)], [find_data_dir()])
    refuse_existing([Path(args.out)], args.force)
    t0 = time.perf_counter()
    result = run_demo(
        out_dir=Path(args.out),
        sites_per_state=args.sites_per_state,
        years=args.years,
        seed=args.seed,
        figure=not args.no_figures,
        hybrid=not args.no_hybrid,
        sizes=DemoSizes.quick() if args.quick else DemoSizes(),
    )
    print(result["table"])
    print(f"\nwrote {result['netcdf']}" + (f" and {result['figure']}" if result.get("figure") else ""))
    if "hybrid" in result:
        print("\n" + result["hybrid"]["table"])
        print(f"\nwrote {result['hybrid']['markdown']}, {', '.join(str(f) for f in result['hybrid']['figures'])}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


