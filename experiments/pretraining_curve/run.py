"""Skill vs number of training sites, with and without synthetic pretraining (`kgml.compare.pretraining_curve.pretraining_curve`).

    python experiments/pretraining_curve/run.py [--quick] [--config curve.toml] [--out runs/pretraining_curve]

Writes ``metrics.json``, ``metrics.md`` and ``curve.png`` into ``--out``. ``--quick`` (quick.toml) is a smoke
run of a couple of minutes, not a result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tomllib

from kgml.cliopts import add_alias
from kgml.compare.pretraining_curve import CurveSizes, pretraining_curve

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (quick.toml): a smoke run")
    p.add_argument("--config", type=Path, help="sizes (TOML; default curve.toml, or quick.toml with --quick)")
    p.add_argument("--out", type=Path, default=Path("runs/pretraining_curve"), help="output directory")
    p.add_argument("--no-figures", action="store_true", help="skip curve.png")
    add_alias(p, "--no-figure", "no_figures", action="store_true")  # the old spelling
    args = p.parse_args(argv)
    path = args.config or HERE / ("quick.toml" if args.quick else "curve.toml")
    with path.open("rb") as f:
        sizes = CurveSizes.from_dict(tomllib.load(f))
    t0 = time.perf_counter()
    result = pretraining_curve(args.out, sizes, figure=not args.no_figures)
    print(result["table"])
    print(f"\nwrote {result['markdown']}, {result['json']}" + (f", {result['figure']}" if result["figure"] else ""))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
