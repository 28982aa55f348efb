"""Speed of marginal distribution sampling (MDS) for one site-year of half-hourly data (DE-Tha 1998, the
REddyProc example), against two references run in the same process:

* a straightforward per-gap loop of the same algorithm (`kgml.fluxsite.gapfill.mds_gapfill_loop`, a transcription of
  REddyProc's sFillLUT / sFillMDC loops) — results must be identical;
* hesseflux's MDS (``pip install hesseflux``; a widely used Python implementation with slightly different
  windows, so its fills agree only in part), when installed.

    python benchmarks/gapfill_speed.py [--repeats 5] [--data-dir DIR]

The last printed line is one JSON object with ``mds_s_per_site_year`` (gaps only, best of the repeats).
Speed is measured here and recorded in benchmarks/RESULTS.md, never asserted in tests.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import re
import sys
import time
import warnings

import numpy as np
import pandas as pd

from kgml.fluxsite.gapfill import mds_gapfill, mds_gapfill_loop
from kgml.paths import data_dir


def load_detha98(root) -> dict[str, np.ndarray]:
    path = root / "reddyproc_examples" / "Example_DETha98.txt"
    raw = pd.read_csv(path, sep="\t", skiprows=[1], lineterminator="\r").replace(-9999.0, np.nan)
    return {c: raw[c].to_numpy(dtype=float) for c in ("NEE", "Rg", "Tair", "VPD")}


def best_of(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def hesseflux_gapfill():
    """hesseflux.gapfill, or None. hesseflux 5.0 writes into ``DataFrame.to_numpy()`` views, which pandas ≥ 3
    (copy-on-write) returns read-only; the two lines that take those views are patched in memory to mark them
    writeable, nothing else changes."""
    try:
        import hesseflux  # noqa: F401
    except ImportError:
        return None
    module = sys.modules["hesseflux.gapfill"]
    source = inspect.getsource(module)
    if int(pd.__version__.split(".")[0]) >= 3:
        source = re.sub(
            r"^(\s*)(data_f|dflag_f)(\s*)= (\w+)\[hcol\]\.to_numpy\(\)",
            lambda m: f"{m.group(0)}\n{m.group(1)}{m.group(2)}.flags.writeable = True",
            source,
            flags=re.M,
        )
    namespace = dict(module.__dict__)
    exec(compile(source, module.__file__, "exec"), namespace)  # noqa: S102
    return namespace["gapfill"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (best is reported)")
    p.add_argument("--data-dir", default=None, help="real-data directory (default: $KGML_DATA or ../shared/data)")
    args = p.parse_args()
    load0 = [round(x, 2) for x in os.getloadavg()]
    d = load_detha98(data_dir(args.data_dir))
    nee, sw, ta, vpd = d["NEE"], d["Rg"], d["Tair"], d["VPD"]
    gaps = np.isnan(nee)
    rows = []

    t_fast, fast = best_of(lambda: mds_gapfill(nee, sw, ta, vpd), args.repeats)
    rows.append(("kgml mds_gapfill (gaps only)", t_fast, "reference output"))
    t_all, every = best_of(lambda: mds_gapfill(nee, sw, ta, vpd, fill_all=True), args.repeats)
    rows.append(("kgml mds_gapfill (fill_all: every step, for NEE_fsd)", t_all, "gap fills identical" if np.allclose(every.filled, fast.filled, rtol=1e-12, atol=1e-12, equal_nan=True) else "DIFFERENT"))
    t_loop, loop = best_of(lambda: mds_gapfill_loop(nee, sw, ta, vpd), max(1, args.repeats // 2))
    same = all(
        np.allclose(getattr(fast, f), getattr(loop, f), rtol=1e-10, atol=1e-10, equal_nan=True)
        for f in ("filled", "qc", "sd", "n", "method", "window")
    )
    rows.append(("per-gap loop (same algorithm)", t_loop, "identical" if same else "DIFFERENT"))
    hf = hesseflux_gapfill()
    t_hf = None
    if hf is not None:
        frame = pd.DataFrame(
            {k: np.where(np.isfinite(v), v, -9999.0) for k, v in zip(("NEE", "SW_IN", "TA", "VPD"), (nee, sw, ta, vpd), strict=True)},
            index=pd.date_range("1998-01-01 00:30", periods=nee.size, freq="30min"),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_hf, (filled_hf, _) = best_of(lambda: hf(frame, undef=-9999.0), max(1, args.repeats // 2))
        diff = np.abs(filled_hf["NEE"].to_numpy()[gaps] - fast.filled[gaps])
        rows.append(("hesseflux 5.0 gapfill", t_hf, f"{np.mean(diff < 1e-9):.0%} of fills identical, RMS diff {np.sqrt(np.mean(diff**2)):.2f}"))
    else:
        rows.append(("hesseflux (not installed: pip install hesseflux)", float("nan"), ""))

    print(f"MDS gap-filling, DE-Tha 1998: {nee.size} half-hours, {int(gaps.sum())} gaps")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, pandas {pd.__version__}")
    print(f"{'implementation':58s} {'seconds':>9s}  check")
    for name, seconds, check in rows:
        print(f"{name:58s} {seconds:9.3f}  {check}")
    result = {
        "mds_s_per_site_year": round(t_fast, 4),
        "mds_fill_all_s_per_site_year": round(t_all, 4),
        "loop_reference_s": round(t_loop, 4),
        "loop_identical": bool(same),
        "hesseflux_s": None if t_hf is None else round(t_hf, 4),
        "speedup_vs_hesseflux": None if t_hf is None else round(t_hf / t_fast, 1),
        "n_steps": int(nee.size),
        "n_gaps": int(gaps.sum()),
    }
    print(json.dumps(result))
    from record import append_result

    append_result("gapfill_speed", {k: v for k, v in result.items() if v is not None}, load_start=load0)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
