"""Accuracy of gap-filling on artificial gaps in real records: MDS against the machine-learning filler.

Records (../shared/data): half-hourly / hourly towers with measured NEE — DE-Tha 1998 and DE-Geb 2004–2006
(REddyProc examples), CA-Cbo 2010, US-Vcm 2010 (half-hourly) and US-Ne1 2010 (hourly) ONEFlux measured NEE;
daily towers — FLUXNET2015 US-Ne1 2001–2013 and the six ICOS Warm Winter 2020 sites (days with a QC fraction
below 0.8 count as gaps); daily COSORE chamber soil respiration with soil temperature (and moisture).

For each record, gap length (1 step, 1 day, 1 week, 1 month; daily records: 1 day, 1 week, 1 month) and
repetition, non-overlapping artificial gaps covering 10 % of the record are placed at random and filled:

* MDS — `kgml.gapfill.mds_gapfill` (towers: SW_IN, TA, VPD look-ups; without VPD SW_IN only, as REddyProc;
  COSORE: look-ups on soil temperature ± 1 °C, then neighbouring days);
* ML — `kgml.gapfill.ml_gapfill`: gradient boosting (towers) or random forest (COSORE) on the drivers and
  time features, trained on the record's remaining observations.

Reported per record, gap length and method: RMSE and bias on the removed observations (gC m-2 d-1), the error
of the annual sum caused by the artificial gaps (gC m-2 yr-1, mean ± sd over repetitions) and the method's own
1-σ uncertainty of that sum (√Σσ², taken as independent). Writes a markdown table (--out).

    python benchmarks/gapfill_accuracy.py [--reps 3] [--quick] [--out runs/gapfill_accuracy.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kgml.gapfill import mds_gapfill, ml_gapfill
from kgml.paths import data_dir

GAP_FRACTION = 0.10


@dataclass
class Record:
    name: str
    kind: str  # "tower" | "chamber"
    resolution: str  # HH | HR | DD
    times: np.ndarray
    y: np.ndarray  # gC m-2 d-1, NaN = not observed
    drivers: dict[str, np.ndarray]

    @property
    def steps_per_day(self) -> int:
        return {"HH": 48, "HR": 24, "DD": 1}[self.resolution]

    @property
    def years(self) -> float:
        return self.y.size / self.steps_per_day / 365.25


def _values(ds, name):
    return None if name not in ds else ds[name].values[0].astype(float)


def load_records(root: Path, quick: bool) -> list[Record]:
    from kgml.data.soil_respiration import read_cosore_dataset
    from kgml.data.towers import QCPolicy, read_fluxnet_file, read_oneflux_qca, read_reddyproc_table
    from kgml.gapfill_cli import vpd_from_rh

    records = []
    warnings.simplefilter("ignore")
    rp = root / "reddyproc_examples"
    ds = read_reddyproc_table(rp / "Example_DETha98.txt")
    records.append(Record("DE-Tha 1998", "tower", "HH", ds.time.values, _values(ds, "nee"),
                          {k: _values(ds, k) for k in ("sw_in", "tair", "vpd")}))
    if not quick:
        ds = read_reddyproc_table(rp / "DEGebExample_DE-Geb_2004-2006_halfhourly.csv", site="DE-Geb")
        records.append(Record("DE-Geb 2004-06", "tower", "HH", ds.time.values, _values(ds, "nee"), {
            "sw_in": _values(ds, "sw_in"), "tair": _values(ds, "tair"),
            "vpd": vpd_from_rh(_values(ds, "tair"), _values(ds, "rh"))}))
    qca = root / "oneflux_qca_ustar_hourly"
    for site in ("CA-Cbo", "US-Vcm", "US-Ne1")[: 1 if quick else 3]:
        ds = read_oneflux_qca(qca / site / f"{site}_qca_ustar_2010.csv.gz")
        records.append(Record(f"{site} 2010", "tower", ds.attrs["time_resolution"], ds.time.values, _values(ds, "nee"),
                              {"sw_in": _values(ds, "sw_in"), "tair": _values(ds, "tair")}))
    daily = [root / "fluxnet2015_subset_dd_us-ne1" / "FLX_US-Ne1_FLUXNET2015_SUBSET_DD_2001-2013_1-4.csv"]
    daily += sorted((root / "fluxnet2020_warmwinter_fullset_dd").glob("FLX_*_DD_*.csv.gz"))
    for path in daily[: 2 if quick else None]:
        ds = read_fluxnet_file(path, variables=("nee", "sw_in", "tair", "vpd"), qc=QCPolicy(min_fraction=0.8))
        site = str(ds.site.values[0])
        years = ds.time.values.astype("datetime64[Y]").astype(int) + 1970
        records.append(Record(f"{site} DD {years.min()}-{str(years.max())[2:]}", "tower", "DD", ds.time.values,
                              _values(ds, "nee"), {k: _values(ds, k) for k in ("sw_in", "tair", "vpd")}))
    cosore = ("d20190626_VARGAS", "d20200212_KAYE_UNE", "d20200417_ARAIN_TP74", "d20190504_SAVAGE_hf006-05",
              "d20190424_ZHANG_oak", "d20200108_HE")
    for name in cosore[: 2 if quick else None]:
        ds = read_cosore_dataset(root / "cosore" / "datasets" / name, aggregate_ports=True)
        rs = ds["rsoil"].values
        i = int(np.argmax(np.isfinite(rs).sum(axis=1)))  # the port group with most days
        igbp = str(ds["igbp"].values[i]) if "igbp" in ds.coords else ""
        drivers = {k: ds[k].values[i].astype(float) for k in ("tsoil", "swc", "tair") if k in ds}
        records.append(Record(f"COSORE {name.split('_', 1)[1]} ({igbp})", "chamber", "DD", ds.time.values,
                              rs[i].astype(float), drivers))
    return records


def gap_scenarios(record: Record) -> dict[str, int]:
    spd = record.steps_per_day
    if spd == 1:
        return {"1 day": 1, "1 week": 7, "1 month": 30}
    return {"1 step": 1, "1 day": spd, "1 week": 7 * spd, "1 month": 30 * spd}


def place_gaps(n: int, length: int, rng) -> np.ndarray:
    """Indices of non-overlapping gaps of ``length`` covering GAP_FRACTION of n steps (at least one gap)."""
    slots = n // length
    k = max(1, min(slots, round(GAP_FRACTION * n / length)))
    shift = int(rng.integers(0, length)) if slots * length + length <= n else 0
    chosen = rng.choice(slots, size=k, replace=False)
    return (shift + chosen[:, None] * length + np.arange(length)[None, :]).ravel()


def fill(record: Record, y: np.ndarray, method: str, seed: int):
    spd = record.steps_per_day
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "MDS":
            if record.kind == "chamber":
                res = mds_gapfill(y, record.drivers.get("tsoil", record.drivers.get("tair")), steps_per_day=spd,
                                  sw_in_tolerance=1.0, sw_in_tolerance_min=1.0)
            else:
                d = record.drivers
                res = mds_gapfill(y, d["sw_in"], d.get("tair"), d.get("vpd"), steps_per_day=spd)
            return res.filled, res.sd
        model = "rf" if record.kind == "chamber" else "gbm"
        res = ml_gapfill(y, record.drivers, record.times, model=model, seed=seed,
                         n_estimators=100 if model == "rf" else 200)
        return res.filled, res.sd


def evaluate(records: list[Record], reps: int, methods=("MDS", "ML")):
    rows = []
    for rec in records:
        observed = np.isfinite(rec.y)
        dt_days = 1.0 / rec.steps_per_day
        for label, length in gap_scenarios(rec).items():
            per_method = {m: {"err": [], "sum_err": [], "sum_sd": [], "seconds": 0.0} for m in methods}
            for rep in range(reps):
                rng = np.random.default_rng(1000 * rep + length)
                idx = place_gaps(rec.y.size, length, rng)
                idx = idx[observed[idx]]
                if idx.size == 0:
                    continue
                y = rec.y.copy()
                y[idx] = np.nan
                for m in methods:
                    t0 = time.perf_counter()
                    filled, sd = fill(rec, y, m, rep)
                    per_method[m]["seconds"] += time.perf_counter() - t0
                    ok = np.isfinite(filled[idx])
                    err = filled[idx][ok] - rec.y[idx][ok]
                    per_method[m]["err"].append(err)
                    per_method[m]["sum_err"].append(err.sum() * dt_days / rec.years)
                    s = sd[idx][ok]
                    per_method[m]["sum_sd"].append(np.sqrt(np.nansum(s**2)) * dt_days / rec.years)
                    per_method[m]["unfilled"] = int((~ok).sum())
            for m in methods:
                r = per_method[m]
                if not r["err"]:
                    continue
                err = np.concatenate(r["err"])
                rows.append({
                    "record": rec.name, "kind": rec.kind, "resolution": rec.resolution, "gap": label, "method": m,
                    "n": int(err.size), "rmse": float(np.sqrt(np.mean(err**2))), "bias": float(err.mean()),
                    "sum_err": float(np.mean(r["sum_err"])), "sum_err_sd": float(np.std(r["sum_err"])),
                    "sum_sigma": float(np.mean(r["sum_sd"])), "seconds": r["seconds"] / reps,
                })
            print(f"  {rec.name:34s} {label:8s} " + "  ".join(
                f"{row['method']} RMSE {row['rmse']:.2f}" for row in rows[-len(methods):]), flush=True)
    return rows


def markdown(rows, reps: int) -> str:
    out = [f"Artificial gaps covering {GAP_FRACTION:.0%} of each record, {reps} repetition(s). RMSE and bias in "
           "gC m-2 d-1 on the removed observations; annual-sum error in gC m-2 yr-1 (mean ± sd over repetitions) "
           "and the method's own 1-σ for that sum.", ""]
    out.append("| record | gap | MDS RMSE | ML RMSE | MDS bias | ML bias | MDS Σ error ± sd (σ) | ML Σ error ± sd (σ) |")
    out.append("|---|---|---|---|---|---|---|---|")
    keyed = {(r["record"], r["gap"], r["method"]): r for r in rows}
    for record, gap in dict.fromkeys((r["record"], r["gap"]) for r in rows):
        a, b = keyed.get((record, gap, "MDS")), keyed.get((record, gap, "ML"))
        if a is None or b is None:
            continue
        better = lambda x, y: f"**{x:.2f}**" if x < y else f"{x:.2f}"  # noqa: E731
        out.append(
            f"| {record} | {gap} | {better(a['rmse'], b['rmse'])} | {better(b['rmse'], a['rmse'])} | {a['bias']:+.2f} | "
            f"{b['bias']:+.2f} | {a['sum_err']:+.0f} ± {a['sum_err_sd']:.0f} ({a['sum_sigma']:.0f}) | "
            f"{b['sum_err']:+.0f} ± {b['sum_err_sd']:.0f} ({b['sum_sigma']:.0f}) |"
        )
    out += ["", "Summary: mean RMSE over records (gC m-2 d-1) and how often ML beats MDS.", ""]
    out.append("| records | gap | MDS | ML | ML better in |")
    out.append("|---|---|---|---|---|")
    groups = {"half-hourly/hourly towers": lambda r: r["kind"] == "tower" and r["resolution"] != "DD",
              "daily towers": lambda r: r["kind"] == "tower" and r["resolution"] == "DD",
              "COSORE daily chambers": lambda r: r["kind"] == "chamber"}
    summary = {}
    for group, sel in groups.items():
        for gap in ("1 step", "1 day", "1 week", "1 month"):
            mds = [r for r in rows if sel(r) and r["gap"] == gap and r["method"] == "MDS"]
            ml = {r["record"]: r for r in rows if sel(r) and r["gap"] == gap and r["method"] == "ML"}
            pairs = [(a, ml[a["record"]]) for a in mds if a["record"] in ml]
            if not pairs:
                continue
            m1 = float(np.mean([a["rmse"] for a, _ in pairs]))
            m2 = float(np.mean([b["rmse"] for _, b in pairs]))
            wins = sum(b["rmse"] < a["rmse"] for a, b in pairs)
            summary[f"{group} | {gap}"] = {"mds_rmse": round(m1, 3), "ml_rmse": round(m2, 3), "ml_wins": wins, "records": len(pairs)}
            out.append(f"| {group} | {gap} | {m1:.2f} | {m2:.2f} | {wins}/{len(pairs)} |")
    return "\n".join(out) + "\n", summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="repetitions per record and gap length")
    p.add_argument("--quick", action="store_true", help="a few records only (a smoke run)")
    p.add_argument("--out", default="runs/gapfill_accuracy.md", help="markdown table output")
    p.add_argument("--data-dir", default=None, help="real-data directory (default: $KGML_DATA or ../shared/data)")
    args = p.parse_args()
    t0 = time.perf_counter()
    records = load_records(data_dir(args.data_dir), args.quick)
    print(f"{len(records)} records; machine {platform.machine()}, {os.cpu_count()} cores", flush=True)
    rows = evaluate(records, args.reps)
    table, summary = markdown(rows, args.reps)
    out = Path(args.out)
    from kgml.io import write_text_atomic

    write_text_atomic(table, out)
    print()
    print(table)
    print(f"written to {out} in {time.perf_counter() - t0:.0f} s")
    print(json.dumps({"records": len(records), "reps": args.reps, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
