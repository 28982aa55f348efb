"""How much of the NEE anomalies and inter-annual variability (IAV) is within reach (issue 20 items 1 and 5):
the same models on the same towers and years, once for towers they have never seen (``site_kfold``) and once
for years they have never seen at towers they know (``years_within_sites``: every eligible year of a tested
tower predicted once, trained on its other years), beside the ceiling that the towers' own measurement error
leaves (`kgml.evaluation.noise_ceiling`, from FLUXNET2015's NEE_VUT_REF_RANDUNC and the u*-threshold spread).
Nothing is trained here: it reads the predictions of two `kgml bench shift` runs.

    kgml bench shift --suite fluxnet_mm --fold-kinds years_within_sites \\
        --models site_climatology,rf,neural,hybrid_global --seeds 3 --out runs/known
    kgml bench shift --suite fluxnet_mm --fold-kinds site_kfold --models rf,neural,hybrid_global --seeds 3 \\
        --out runs/unseen
    python benchmarks/anomaly_ceiling.py --known runs/known --unseen runs/unseen --seeds 3

Both are scored on the same site-years: the towers tested in ``years_within_sites`` and, at each, its
eligible years (≥ 75 % of the months observed); ``site_kfold`` predictions are masked to them. Cells are the
skill of the ensemble mean over the seeds with [min–max over single seeds].
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from kgml.bench.suites import get_suite

from kgml import evaluation as ev
from kgml.compare.figures import held_out_predictions, prediction_path
from kgml.compare.runner import all_years_path, prepare_suite, seed_mean
from kgml.data.assemble import fluxnet_monthly_uncertainty

COLUMNS = ("NEE R² med", "NEE NSE med", "site mean R²", "month departure r", "month departure NSE",
           "year departure r", "year departure NSE")
DEC = ("anomaly R² (decomposition)", "IAV R² (decomposition)")


def tested_years(splits) -> dict[str, set[int]]:
    """Tower → the years held out for it over the folds of a per-site-years fold kind."""
    out: dict[str, set[int]] = {}
    for sp in splits:
        for u in sp.test.units:
            out.setdefault(str(u), set()).update(sp.test.years_of(u) or ())
    return out


def fold_years(split) -> dict[str, tuple[int, ...]]:
    return {str(u): ys for u, ys in (split.test.unit_years or ()) if ys}


def restrict(pred: xr.Dataset, years: dict[str, set[int]]) -> xr.Dataset:
    """``pred`` on the towers of ``years``, NaN outside each tower's years (monthly variables)."""
    pred = pred.sel(site=[s for s in pred.site.values.astype(str) if s in years])
    keep = np.stack([np.isin(pred.month.values // 12, sorted(years[str(s)])) for s in pred.site.values])
    mask = xr.DataArray(keep, dims=("site", "month"), coords={"site": pred.site, "month": pred.month})
    return pred.map(lambda v: v.where(mask) if {"site", "month"} <= set(v.dims) else v)


def pooled_departures(preds_all: list[xr.Dataset], splits, obs, obs_name) -> dict[str, float]:
    """Departures of each fold's test years, from that fold's predictions of every year, pooled over folds."""
    parts = [ev.departures(p, obs, "nee", obs_name, test_years=fold_years(sp), resolution="monthly")
             for p, sp in zip(preds_all, splits, strict=True)]
    return ev.departure_scores({k: np.concatenate([d[k] for d in parts]) for k in parts[0]})


def skill(scored: xr.Dataset, preds_all: list[xr.Dataset], splits, obs, obs_name, years) -> dict[str, float]:
    scored = restrict(scored, years)
    per_site = ev.score_sites(scored, obs, {"nee": obs_name}, resolution="monthly", metrics=("r2", "nse"))
    dec = ev.decomposition_scores(scored, obs, "nee", obs_name, resolution="monthly", metrics=("r2",))
    dep = pooled_departures(preds_all, splits, obs, obs_name)
    vals = [float(np.nanmedian(per_site["r2"].values)), float(np.nanmedian(per_site["nse"].values)),
            dec["site_mean"]["r2"], dep["departure_corr"], dep["departure_nse"], dep["year_departure_corr"],
            dep["year_departure_nse"], dec["anomaly"]["r2"], dec["iav"]["r2"]]
    return dict(zip(COLUMNS + DEC, vals, strict=True))


def model_row(root: Path, kind: str, folds: dict, model: str, seeds, years, obs, obs_name) -> dict | None:
    """Skill of ``model`` (ensemble mean and each seed) on the tested site-years. ``kind`` years_within_sites:
    each fold's model predicts its own test years (departures from its predictions of every year); site_kfold:
    the tower was never seen, so its full-record prediction gives the departures of every fold's test years."""
    yw = folds["years_within_sites"]
    per_seed = []
    for sd in seeds:
        if not all(prediction_path(root / "folds" / kind / sp.name, model, sd).exists() for sp in folds[kind]):
            continue  # a seed counts only once every fold of the kind has its predictions
        scored = held_out_predictions(root, kind, folds[kind], model, sd)
        if kind == "years_within_sites":
            every = [xr.open_dataset(all_years_path(root / "folds" / kind / sp.name, model, sd)).load() for sp in yw]
        else:
            every = [scored] * len(yw)
        per_seed.append((scored, every))
    if not per_seed:
        return None
    ens_scored = seed_mean([s for s, _ in per_seed])
    ens_every = [seed_mean([e[j] for _, e in per_seed]) for j in range(len(yw))]
    out = {"ensemble": skill(ens_scored, ens_every, yw, obs, obs_name, years), "n_seeds": len(per_seed)}
    out["seeds"] = [skill(s, e, yw, obs, obs_name, years) for s, e in per_seed] if len(per_seed) > 1 else []
    return out


def noise_departure_ceiling(obs, obs_name, unc, splits, years, draws: int = 5, seed: int = 0) -> dict[str, float]:
    """NSE of the departures that the true flux itself would score, estimated by Monte Carlo: prediction =
    observation + an independent draw of the published error (random per month, u* shared by a year's
    months), so dep(pred) − dep(obs) has the distribution of dep(truth) − dep(obs). Mean over ``draws``."""
    o = restrict(obs[[f"{obs_name}_monthly"]], years)
    rand = unc["nee_randunc"].reindex_like(o[f"{obs_name}_monthly"])
    ustar = unc["nee_ustar_sd"].reindex_like(o[f"{obs_name}_monthly"])
    known = np.isfinite(rand) & np.isfinite(ustar)
    o = o.where(known)
    rng = np.random.default_rng(seed)
    yr = o.month.values // 12
    cols = np.searchsorted(np.unique(yr), yr)
    res = []
    for _ in range(draws):
        z = rng.normal(size=(o.site.size, np.unique(yr).size))[:, cols]
        e = rand.values * rng.normal(size=rand.shape) + ustar.values * z
        pred = o.copy()
        pred[f"{obs_name}_monthly"] = o[f"{obs_name}_monthly"] + e
        res.append(pooled_departures([pred] * len(splits), splits, o, obs_name))
    return {k: float(np.mean([r[k] for r in res])) for k in ("departure_nse", "year_departure_nse",
                                                               "departure_corr", "year_departure_corr")}


def _cell(r: dict, col: str) -> str:
    v = r["ensemble"][col]
    if not np.isfinite(v):
        return "–"
    digits = 3 if "decomposition" in col else 2
    s = np.asarray([x[col] for x in r["seeds"]], float)
    s = s[np.isfinite(s)]
    spread = f" [{s.min():.{digits}f}–{s.max():.{digits}f}]" if s.size > 1 else ""
    return f"{v:.{digits}f}{spread}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--known", type=Path, required=True, help="bench --out of the years_within_sites run")
    ap.add_argument("--unseen", type=Path, required=True, help="bench --out of the site_kfold run")
    ap.add_argument("--models", default="site_climatology,rf,neural,hybrid_global")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--suite", default="fluxnet_mm", help="a FLUXNET monthly suite with both fold kinds")
    args = ap.parse_args(argv)
    suite = get_suite(args.suite)
    ds, folds = prepare_suite(suite, data_dir=args.data_dir, fold_kinds=["site_kfold", "years_within_sites"])
    years = tested_years(folds["years_within_sites"])
    obs_name = suite.observed_name("nee")
    seeds = list(range(args.seeds))
    head = ("model", "towers", "seeds", *COLUMNS, *DEC)
    lines = [f"{len(years)} towers, {sum(map(len, years.values()))} tower-years (each tower's eligible years); "
             "ensemble mean of the seeds [min–max over single seeds]", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for model in args.models.split(","):
        for label, root, kind in (("unseen (site_kfold)", args.unseen, "site_kfold"),
                                  ("known, unseen years", args.known, "years_within_sites")):
            r = model_row(root / suite.name, kind, folds, model, seeds, years, ds, obs_name)
            if r is None:
                continue
            # the climatology's own departures are zero by construction
            cells = [_cell(r, c) if model != "site_climatology" or "departure" not in c else "0" for c in COLUMNS]
            cells += [_cell(r, c) if kind == "site_kfold" else "–" for c in DEC]
            lines.append(f"| {model} | {label} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    unc = fluxnet_monthly_uncertainty(args.data_dir, sites=sorted(years))
    masked = restrict(ds[[f"{obs_name}_monthly"]], years)
    plain = ev.noise_ceiling(masked, obs_name, unc["nee_randunc"])
    joint = ev.noise_ceiling(masked, obs_name, unc["nee_randunc"], coherent=unc["nee_ustar_sd"])
    mc = noise_departure_ceiling(ds, obs_name, unc, folds["years_within_sites"], years)
    lines.append("| the true flux (measurement-noise ceiling: random + u* error) | – | – | – | – | – | "
                 f"{mc['departure_corr']:.2f} | {mc['departure_nse']:.2f} | {mc['year_departure_corr']:.2f} | "
                 f"{mc['year_departure_nse']:.2f} | {joint['anomaly']:.3f} | {joint['iav']:.3f} |")
    lines += ["", f"Measurement-noise ceiling of the decomposition: random error alone anomaly {plain['anomaly']:.3f}, "
              f"IAV {plain['iav']:.3f}; with the year-coherent u* error {joint['anomaly']:.3f} / {joint['iav']:.3f} "
              f"(analytic, `kgml.evaluation.noise_ceiling`); departures by Monte Carlo (5 draws). Observed anomaly "
              f"sd {joint['anomaly_sd']:.3f}, IAV sd {joint['iav_sd']:.3f} gC m-2 d-1 ({joint['n_steps']} "
              f"tower-months, {joint['n_site_years']} tower-years); {100 * joint['share_unknown']:.1f} % of the "
              "observed months have no published uncertainty and are left out of the ceiling."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
