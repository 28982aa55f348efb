"""How long a full read of the monthly FLUXNET folder and of COSORE takes on this machine, against plain
``pandas.read_csv`` of the same files in the same process (no validation, no unit conversion, no QC, no daily
aggregation), and the same reads again from the netCDF cache. The last printed line is one JSON object.

    python benchmarks/data_read_speed.py [--data-dir DIR] [--repeats 3]

Rows are the data rows of the raw files (one per site-month, or one per chamber measurement). Speed is measured
here and recorded in benchmarks/RESULTS.md ("Data reading"), never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="data directory (default: $KGML_DATA or ../shared/data)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each read (best and median reported)")
    return p.parse_args()


def _time(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def _summary(name: str, rows: int, kgml_s: list[float], pandas_s: list[float], cached_s: list[float], extra: dict) -> dict:
    best, ref, hit = min(kgml_s), min(pandas_s), min(cached_s)
    return {
        "dataset": name,
        "rows": rows,
        "kgml_s_best": round(best, 3),
        "kgml_s_median": round(statistics.median(kgml_s), 3),
        "kgml_rows_per_s": round(rows / best),
        "pandas_read_csv_s_best": round(ref, 3),
        "pandas_rows_per_s": round(rows / ref),
        "kgml_over_pandas": round(best / ref, 2),
        "cached_s_best": round(hit, 3),
        "cached_rows_per_s": round(rows / hit),
        **extra,
    }


def bench_fluxnet_mm(folder: Path, repeats: int, cache: Path) -> dict:
    from kgml.data.towers import parse_fluxnet_filename, read_fluxnet_dir

    files = sorted(p for p in folder.iterdir() if parse_fluxnet_filename(p) is not None)

    def reference():
        return [pd.read_csv(p) for p in files]

    def kgml():
        return read_fluxnet_dir(folder, invalid="drop")

    pandas_s, frames = _time(reference, repeats)
    rows = sum(len(f) for f in frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kgml_s, ds = _time(kgml, repeats)
        read_fluxnet_dir(folder, invalid="drop", cache=cache)  # fill the cache
        cached_s, _ = _time(lambda: read_fluxnet_dir(folder, invalid="drop", cache=cache), repeats)
    return _summary("fluxnet2015_subset_mm", rows, kgml_s, pandas_s, cached_s,
                    {"files": len(files), "sites": int(ds.sizes["site"]), "months": int(ds.sizes["time"])})


def bench_cosore(folder: Path, repeats: int, cache: Path) -> dict:
    from kgml.data.soil_respiration import read_cosore

    files = sorted((folder / "datasets").glob("*/data.csv.gz"))

    def reference():
        return [pd.read_csv(p, low_memory=False) for p in files]

    def kgml():
        return read_cosore(folder)

    pandas_s, frames = _time(reference, repeats)
    rows = sum(len(f) for f in frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kgml_s, ds = _time(kgml, repeats)
        read_cosore(folder, cache=cache)
        cached_s, _ = _time(lambda: read_cosore(folder, cache=cache), repeats)
    return _summary("cosore", rows, kgml_s, pandas_s, cached_s,
                    {"files": len(files), "sites": int(ds.sizes["site"]), "days": int(ds.sizes["time"])})


def main() -> None:
    args = _parse()
    load0 = [round(x, 2) for x in os.getloadavg()]
    from kgml.paths import data_dir

    root = data_dir(args.data_dir)
    results = []
    with tempfile.TemporaryDirectory(prefix="kgml-bench-cache-") as cache:
        for name, bench in (("fluxnet2015_subset_mm", bench_fluxnet_mm), ("cosore", bench_cosore)):
            if not (root / name).is_dir():
                print(f"{name}: not found under {root}; skipped", file=sys.stderr)
                continue
            r = bench(root / name, args.repeats, Path(cache))
            results.append(r)
            print(
                f"{name:24s} {r['rows']:>9d} rows  kgml {r['kgml_s_best']:6.2f} s ({r['kgml_rows_per_s']:>9d} rows/s)  "
                f"pandas.read_csv {r['pandas_read_csv_s_best']:6.2f} s ({r['pandas_rows_per_s']:>9d} rows/s)  "
                f"ratio {r['kgml_over_pandas']:5.2f}  cached {r['cached_s_best']:5.3f} s",
                flush=True,
            )
    out = {
        "benchmark": "data_read_speed",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "repeats": args.repeats,
        "results": results,
    }
    print(json.dumps(out))
    from record import append_result

    figures = {f"{r['dataset']}_{k}": v for r in results for k, v in r.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    append_result("data_read_speed", figures, load_start=load0)


if __name__ == "__main__":
    main()
