"""Accuracy of gap-filling on artificial gaps in real records: MDS against the machine-learning and hybrid fillers.

Records (../shared/data): half-hourly / hourly towers with measured NEE — DE-Tha 1998 and DE-Geb 2004–2006
(REddyProc examples), CA-Cbo 2010, US-Vcm 2010 (half-hourly) and US-Ne1 2010 (hourly) ONEFlux measured NEE;
daily towers — FLUXNET2015 US-Ne1 2001–2013 and the six ICOS Warm Winter 2020 sites (days with a QC fraction
below 0.8 count as gaps); daily COSORE chamber soil respiration with soil temperature (and moisture).

For each record, gap length (1 step, 1 day, 1 week, 1 month; daily records: 1 day, 1 week, 1 month) and
repetition, non-overlapping artificial gaps covering 10 % of the record are placed at random and filled:

* MDS — `kgml.fluxsite.gapfill.mds_gapfill` (towers: SW_IN, TA, VPD look-ups; without VPD SW_IN only, as REddyProc;
  COSORE: look-ups on soil temperature ± 1 °C, then neighbouring days);
* ML — `kgml.fluxsite.gapfill.ml_gapfill`: gradient boosting (towers) or random forest (COSORE) on the drivers and
  time features, trained on the record's remaining observations; σ calibrated on held-out days;
* Hybrid — `kgml.fluxsite.fluxhybrid.hybrid_gapfill` (towers only): NEE = Rb_NN · Q10^((TA−15)/10) − LUE_NN · SW_IN, a
  5-member deep ensemble conditioned on the drivers and the record's own observed NEE, σ calibrated on held-out days;
* NN (``--methods ... NN``) — the same inputs and training without physics (`FluxNeural`).

Reported per record, gap length and method: RMSE and bias on the removed observations (gC m-2 d-1), the error
of the annual sum caused by the artificial gaps (gC m-2 yr-1, mean ± sd over repetitions), the method's own
1-σ uncertainty of that sum (√Σσ², taken as independent), and the coverage of the method's per-step ±1σ and
90 % (±1.645σ) intervals on the removed observations. Writes a markdown table (--out).

    python benchmarks/gapfill_accuracy.py [--reps 3] [--quick] [--methods MDS ML Hybrid] [--out runs/gapfill_accuracy.md]

``--partition`` instead compares the hybrid's GPP and Reco with FLUXNET's night-time (NT) and daytime (DT)
partitioning in the bigleaf half-hourly months and the daily FLUXNET2015 / ICOS Warm Winter files:

    python benchmarks/gapfill_accuracy.py --partition --out runs/partition_hybrid.md
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

from kgml.fluxsite.gapfill import mds_gapfill, ml_gapfill
from kgml.paths import data_dir

GAP_FRACTION = 0.10
#: Half-width of a central 90 % normal interval in σ.
Z90 = 1.6448536269514722
METHODS = ("MDS", "ML", "Hybrid", "NN")


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
    from kgml.cli.gapfill import vpd_from_rh
    from kgml.data.soil_respiration import read_cosore_dataset
    from kgml.data.towers import QCPolicy, read_fluxnet_file, read_oneflux_qca, read_reddyproc_table

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
        if method in ("Hybrid", "NN"):
            if record.kind == "chamber":
                return None  # no SW_IN / GPP: the flux hybrid is for towers
            from kgml.fluxsite.fluxhybrid import HybridConfig, hybrid_gapfill

            res = hybrid_gapfill(y, record.drivers, record.times, model="hybrid" if method == "Hybrid" else "neural",
                                 config=HybridConfig(seed=seed))
            return res.filled, res.sd
        model = "rf" if record.kind == "chamber" else "gbm"
        res = ml_gapfill(y, record.drivers, record.times, model=model, seed=seed,
                         n_estimators=100 if model == "rf" else 200)
        return res.filled, res.sd


def evaluate(records: list[Record], reps: int, methods=("MDS", "ML", "Hybrid")):
    rows = []
    for rec in records:
        observed = np.isfinite(rec.y)
        dt_days = 1.0 / rec.steps_per_day
        for label, length in gap_scenarios(rec).items():
            per_method = {m: {"err": [], "sum_err": [], "sum_sd": [], "z": [], "seconds": 0.0} for m in methods}
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
                    out = fill(rec, y, m, rep)
                    if out is None:
                        continue
                    filled, sd = out
                    per_method[m]["seconds"] += time.perf_counter() - t0
                    ok = np.isfinite(filled[idx])
                    err = filled[idx][ok] - rec.y[idx][ok]
                    per_method[m]["err"].append(err)
                    per_method[m]["sum_err"].append(err.sum() * dt_days / rec.years)
                    s = sd[idx][ok]
                    per_method[m]["sum_sd"].append(np.sqrt(np.nansum(s**2)) * dt_days / rec.years)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        per_method[m]["z"].append(np.abs(err) / s)
                    per_method[m]["unfilled"] = int((~ok).sum())
            done = 0
            for m in methods:
                r = per_method[m]
                if not r["err"]:
                    continue
                err = np.concatenate(r["err"])
                z = np.concatenate(r["z"])
                z = z[np.isfinite(z)]
                rows.append({
                    "record": rec.name, "kind": rec.kind, "resolution": rec.resolution, "gap": label, "method": m,
                    "n": int(err.size), "rmse": float(np.sqrt(np.mean(err**2))), "bias": float(err.mean()),
                    "sum_err": float(np.mean(r["sum_err"])), "sum_err_sd": float(np.std(r["sum_err"])),
                    "sum_sigma": float(np.mean(r["sum_sd"])), "seconds": r["seconds"] / reps,
                    "cover68": float(np.mean(z < 1.0)) if z.size else float("nan"),
                    "cover90": float(np.mean(z < Z90)) if z.size else float("nan"),
                })
                done += 1
            print(f"  {rec.name:34s} {label:8s} " + "  ".join(
                f"{row['method']} RMSE {row['rmse']:.2f} ({row['seconds']:.1f} s)" for row in rows[len(rows) - done:]),
                flush=True)
    return rows


def markdown(rows, reps: int, methods=("MDS", "ML", "Hybrid")) -> tuple[str, dict]:
    methods = [m for m in methods if any(r["method"] == m for r in rows)]
    out = [f"Artificial gaps covering {GAP_FRACTION:.0%} of each record, {reps} repetition(s). RMSE and bias in "
           "gC m-2 d-1 on the removed observations; annual-sum error in gC m-2 yr-1 (mean ± sd over repetitions) "
           "and the method's own 1-σ for that sum; coverage of the per-step ±1σ and 90 % intervals. Bold: best RMSE.", ""]
    head = ["record", "gap"] + [f"{m} RMSE" for m in methods] + [f"{m} bias" for m in methods] + \
        [f"{m} Σ error ± sd (σ)" for m in methods] + [f"{m} cover ±1σ / 90 %" for m in methods]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    keyed = {(r["record"], r["gap"], r["method"]): r for r in rows}
    for record, gap in dict.fromkeys((r["record"], r["gap"]) for r in rows):
        got = [keyed.get((record, gap, m)) for m in methods]
        best = min(r["rmse"] for r in got if r is not None)
        cell = lambda r, f: "—" if r is None else f(r)  # noqa: E731
        out.append("| " + " | ".join(
            [record, gap]
            + [cell(r, lambda r, best=best: f"**{r['rmse']:.2f}**" if r["rmse"] == best else f"{r['rmse']:.2f}") for r in got]
            + [cell(r, lambda r: f"{r['bias']:+.2f}") for r in got]
            + [cell(r, lambda r: f"{r['sum_err']:+.0f} ± {r['sum_err_sd']:.0f} ({r['sum_sigma']:.0f})") for r in got]
            + [cell(r, lambda r: f"{r['cover68']:.0%} / {r['cover90']:.0%}") for r in got]
        ) + " |")
    others = [m for m in methods if m != "MDS"]
    out += ["", "Summary: mean RMSE over records (gC m-2 d-1), how often each method beats MDS, and the mean coverage of "
            "its ±1σ / 90 % intervals (nominal 68 % / 90 %).", ""]
    head = ["records", "gap"] + [f"{m} RMSE" for m in methods] + [f"{m} beats MDS" for m in others] + \
        [f"{m} cover" for m in methods]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    groups = {"half-hourly/hourly towers": lambda r: r["kind"] == "tower" and r["resolution"] != "DD",
              "daily towers": lambda r: r["kind"] == "tower" and r["resolution"] == "DD",
              "COSORE daily chambers": lambda r: r["kind"] == "chamber"}
    summary = {}
    for group, sel in groups.items():
        for gap in ("1 step", "1 day", "1 week", "1 month"):
            by = {m: {r["record"]: r for r in rows if sel(r) and r["gap"] == gap and r["method"] == m} for m in methods}
            if not by["MDS"]:
                continue
            entry, cells, wins, cover = {}, [], [], []
            for m in methods:
                common = [k for k in by["MDS"] if k in by[m]]
                if not common:
                    cells.append("—")
                    cover.append("—")
                    continue
                mean = float(np.mean([by[m][k]["rmse"] for k in common]))
                c68 = float(np.nanmean([by[m][k]["cover68"] for k in common]))
                c90 = float(np.nanmean([by[m][k]["cover90"] for k in common]))
                entry[f"{m.lower()}_rmse"] = round(mean, 3)
                entry[f"{m.lower()}_cover68"], entry[f"{m.lower()}_cover90"] = round(c68, 3), round(c90, 3)
                cells.append(f"{mean:.2f}")
                cover.append(f"{c68:.0%} / {c90:.0%}")
                if m != "MDS":
                    w = sum(by[m][k]["rmse"] < by["MDS"][k]["rmse"] for k in common)
                    entry[f"{m.lower()}_wins"] = f"{w}/{len(common)}"
                    wins.append(f"{w}/{len(common)}")
            if len(wins) < len(others):
                wins += ["—"] * (len(others) - len(wins))
            summary[f"{group} | {gap}"] = entry
            out.append("| " + " | ".join([group, gap, *cells, *wins, *cover]) + " |")
    return "\n".join(out) + "\n", summary


def _scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    ok = np.isfinite(pred) & np.isfinite(ref)
    if ok.sum() < 10:
        return {}
    p, r = pred[ok], ref[ok]
    return {"r2": float(np.corrcoef(p, r)[0, 1] ** 2), "rmse": float(np.sqrt(np.mean((p - r) ** 2))),
            "bias": float(np.mean(p - r)), "ref_mean": float(np.mean(r)), "n": int(ok.sum())}


def partition_records(root: Path, quick: bool):
    """(name, resolution, times, measured NEE, drivers, {reference name: series}) for records with FLUXNET GPP/Reco:
    the bigleaf half-hourly months (GPP_NT/RECO_NT_VUT_USTAR50) and the daily FLUXNET2015 US-Ne1 and ICOS Warm
    Winter files (GPP_NT/DT_VUT_REF, RECO_NT/DT_VUT_REF)."""
    from kgml.data.towers import NO_QC, QCPolicy, read_bigleaf_csv, read_fluxnet_file
    from process_models.constants import PAR_FRACTION_OF_SW, PAR_UMOL_PER_J

    warnings.simplefilter("ignore")
    out = []
    for name in ("DE_Tha_Jun_2014", "AT_Neu_Jul_2010", "FR_Pue_May_2012")[: 1 if quick else None]:
        path = root / "bigleaf_examples" / f"{name}.csv"
        measured, every = read_bigleaf_csv(path, qc=QCPolicy(max_flag=0)), read_bigleaf_csv(path, qc=NO_QC)
        drivers = {"sw_in": _values(every, "ppfd_in") / (PAR_FRACTION_OF_SW * PAR_UMOL_PER_J),
                   "tair": _values(every, "tair"), "vpd": _values(every, "vpd")}
        out.append((name.replace("_", " "), "HH", every.time.values, _values(measured, "nee"), drivers,
                    {"GPP_NT": _values(every, "gpp"), "RECO_NT": _values(every, "reco")}))
    daily = [root / "fluxnet2015_subset_dd_us-ne1" / "FLX_US-Ne1_FLUXNET2015_SUBSET_DD_2001-2013_1-4.csv"]
    daily += sorted((root / "fluxnet2020_warmwinter_fullset_dd").glob("FLX_*_DD_*.csv.gz"))
    for path in daily[: 2 if quick else None]:
        measured = read_fluxnet_file(path, qc=QCPolicy(min_fraction=0.8))
        every = read_fluxnet_file(path, qc=NO_QC)
        site = str(every.site.values[0])
        drivers = {k: _values(every, k) for k in ("sw_in", "tair", "vpd", "swc") if k in every}
        refs = {label: _values(every, v) for label, v in
                (("GPP_NT", "gpp"), ("GPP_DT", "gpp_dt"), ("RECO_NT", "reco"), ("RECO_DT", "reco_dt")) if v in every}
        out.append((f"{site} DD", "DD", every.time.values, _values(measured, "nee"), drivers, refs))
    return out


def evaluate_partitioning(root: Path, quick: bool, seed: int = 0):
    """Hybrid GPP/Reco vs each FLUXNET reference (R², RMSE, bias in gC m-2 d-1), and NT vs DT as a yardstick."""
    from kgml.fluxsite.fluxhybrid import HybridConfig
    from kgml.fluxsite.partition import hybrid_partition

    rows = []
    for name, res_, times, nee, drivers, refs in partition_records(root, quick):
        t0 = time.perf_counter()
        part = hybrid_partition(nee, drivers["tair"], drivers["sw_in"], times, vpd=drivers.get("vpd"),
                                swc=drivers.get("swc"), config=HybridConfig(seed=seed))
        seconds = time.perf_counter() - t0
        row = {"record": name, "resolution": res_, "q10": float(np.mean(part.q10)), "q10_sd": float(np.std(part.q10)),
               "seconds": seconds, "n_measured": int(np.isfinite(nee).sum())}
        for label, ref in refs.items():
            pred = part.gpp if label.startswith("GPP") else part.reco
            row[label] = _scores(pred, ref)
        for flux in ("GPP", "RECO"):
            if f"{flux}_NT" in refs and f"{flux}_DT" in refs:
                row[f"{flux}_DT_vs_NT"] = _scores(refs[f"{flux}_DT"], refs[f"{flux}_NT"])
        rows.append(row)
        print(f"  {name:18s} Q10 {row['q10']:.2f} ± {row['q10_sd']:.2f}  " + "  ".join(
            f"{k} R² {v['r2']:.2f} bias {v['bias']:+.2f}" for k, v in row.items() if isinstance(v, dict) and v), flush=True)
    return rows


def partition_markdown(rows) -> str:
    out = ["Hybrid partitioning (5-member ensemble trained on measured NEE only) against the FLUXNET partitioning in "
           "the same files; R², RMSE and bias (hybrid − reference) in gC m-2 d-1 over all steps; the last columns "
           "compare FLUXNET's own daytime (DT) with its night-time (NT) estimate as a yardstick.", ""]
    cols = ["GPP_NT", "GPP_DT", "RECO_NT", "RECO_DT", "GPP_DT_vs_NT", "RECO_DT_vs_NT"]
    out.append("| record | Q10 | " + " | ".join(c.replace("_vs_", " vs ") for c in cols) + " |")
    out.append("|---|---|" + "---|" * len(cols))
    fmt = lambda v: "—" if not v else f"{v['r2']:.2f} / {v['rmse']:.2f} / {v['bias']:+.2f}"  # noqa: E731
    for r in rows:
        out.append(f"| {r['record']} | {r['q10']:.2f} ± {r['q10_sd']:.2f} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    out += ["", "Cells: R² / RMSE / bias. Mean over records:", ""]
    for c in cols:
        got = [r[c] for r in rows if r.get(c)]
        if got:
            out.append(f"- {c.replace('_vs_', ' vs ')}: R² {np.mean([g['r2'] for g in got]):.2f}, RMSE "
                       f"{np.mean([g['rmse'] for g in got]):.2f}, bias {np.mean([g['bias'] for g in got]):+.2f} "
                       f"({len(got)} records)")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="repetitions per record and gap length")
    p.add_argument("--quick", action="store_true", help="a few records only (a smoke run)")
    p.add_argument("--out", default="runs/gapfill_accuracy.md", help="markdown table output")
    p.add_argument("--data-dir", default=None, help="real-data directory (default: $KGML_DATA or ../shared/data)")
    p.add_argument("--methods", nargs="+", default=["MDS", "ML", "Hybrid"], choices=METHODS,
                   help="fillers to compare (MDS is the reference and always included)")
    p.add_argument("--partition", action="store_true",
                   help="instead: hybrid partitioning against FLUXNET GPP/RECO NT and DT (bigleaf months, daily files)")
    args = p.parse_args()
    methods = tuple(dict.fromkeys(["MDS", *args.methods]))
    t0 = time.perf_counter()
    if args.partition:
        from kgml.io import write_text_atomic

        rows = evaluate_partitioning(data_dir(args.data_dir), args.quick)
        table = partition_markdown(rows)
        write_text_atomic(table, Path(args.out))
        print()
        print(table)
        print(f"written to {args.out} in {time.perf_counter() - t0:.0f} s")
        print(json.dumps({"partition": rows}))
        return 0
    records = load_records(data_dir(args.data_dir), args.quick)
    print(f"{len(records)} records; machine {platform.machine()}, {os.cpu_count()} cores", flush=True)
    rows = evaluate(records, args.reps, methods)
    table, summary = markdown(rows, args.reps, methods)
    out = Path(args.out)
    from kgml.io import write_text_atomic

    write_text_atomic(table, out)
    print()
    print(table)
    print(f"written to {out} in {time.perf_counter() - t0:.0f} s")
    print(json.dumps({"records": len(records), "reps": args.reps, "methods": methods, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
