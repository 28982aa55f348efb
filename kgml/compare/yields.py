"""Yields in unseen years: the issue-14 report of a yield suite's held-out predictions — pooled RMSE (and as
a share of the mean observed yield), its ratio to the per-unit linear trend, median per-unit NSE, spread
over seeds — and the figure of predicted vs observed yield over the years with training and forecast years
marked. Reads what `kgml bench shift` wrote (``<out>/<suite>/folds/<kind>/<split>/<model>.nc``), one
output directory per seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from kgml import evaluation as ev
from kgml.compare.figures import prediction_path
from kgml.data.splits import Split
from kgml.io import pyplot, write_png_atomic

__all__ = ["floor_markdown", "floor_rows", "forecast_figure", "validation_markdown", "validation_rows", "yield_markdown",
           "yield_rows"]

#: The per-unit linear trend every model is compared with (issue 14 target: ≤ 0.75 × its pooled RMSE).
REFERENCE = "yield_unit_trend"


def _seeds_saved(directory: Path, kind: str, splits: Sequence[Split], model: str) -> list[int]:
    """The seeds of ``model`` with a saved prediction on the first split of ``kind`` (``model.nc``: seed 0,
    ``model_seedN.nc``: seed N; `kgml.compare.figures.prediction_path`)."""
    if not splits:
        return []
    folder = directory / "folds" / kind / splits[0].name
    seeds = [0] if (folder / f"{model}.nc").exists() else []
    for p in folder.glob(f"{model}_seed*.nc"):
        tail = p.stem[len(model) + len("_seed"):]
        if tail.isdigit():
            seeds.append(int(tail))
    return sorted(seeds)


def _load(directory: Path, kind: str, splits: Sequence[Split], model: str, seed: int = 0) -> xr.Dataset | None:
    paths = [prediction_path(directory / "folds" / kind / s.name, model, seed) for s in splits]
    if not all(p.exists() for p in paths):
        return None
    acc = None
    for p in paths:
        with xr.open_dataset(p) as f:
            d = f[["crop_yield"]].load()
        acc = d if acc is None else acc.combine_first(d)
    return acc


def _scores(pred: xr.Dataset, obs: xr.Dataset) -> dict[str, float]:
    o = obs["crop_yield"].reindex_like(pred["crop_yield"])
    both = np.isfinite(pred["crop_yield"].values) & np.isfinite(o.values)
    summ = ev.summarise(ev.score_sites(pred, obs, {"crop_yield": "crop_yield"}, resolution="annual"))
    e = summ["variables"]["crop_yield"]
    return {"pooled_rmse": float(e["pooled"]["rmse"]), "nse_median": float(e["median"]["nse"]),
            "pooled_nse": float(e["pooled"]["nse"]), "mean_obs": float(o.values[both].mean()),
            "n": int(both.sum()), "n_sites": int(e["n_sites"])}


def yield_rows(ds: xr.Dataset, folds: dict[str, list[Split]], directories: Sequence[Path], models: Sequence[str],
               suite: str) -> list[dict]:
    """One row per (fold kind, model): mean and spread over the seeds (``directories``) that have every fold
    of the kind for the model."""
    obs = ds[["crop_yield"]]
    rows = []
    for kind, splits in folds.items():
        for m in models:
            per_seed = []
            for d in directories:  # every seed saved in each directory is one member
                for sd in _seeds_saved(Path(d) / suite, kind, splits, m):
                    pred = _load(Path(d) / suite, kind, splits, m, sd)
                    if pred is not None:
                        per_seed.append(_scores(pred, obs))
            if not per_seed:
                continue
            row = {"fold_kind": kind, "model": m, "n_seeds": len(per_seed), "n_sites": per_seed[0]["n_sites"],
                   "mean_obs": per_seed[0]["mean_obs"]}
            for k in ("pooled_rmse", "nse_median", "pooled_nse"):
                v = np.array([s[k] for s in per_seed])
                row[k], row[f"{k}_sd"] = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan
            rows.append(row)
    for r in rows:
        ref = next((q for q in rows if q["fold_kind"] == r["fold_kind"] and q["model"] == REFERENCE), None)
        r["rmse_pct_mean"] = 100 * r["pooled_rmse"] / r["mean_obs"]
        r["ratio_to_unit_trend"] = r["pooled_rmse"] / ref["pooled_rmse"] if ref else math.nan
    return rows


def validation_rows(folds: dict[str, list[Split]], directories: Sequence[Path], models: Sequence[str],
                    suite: str, target: str = "crop_yield") -> list[dict]:
    """One row per (fold kind, model) whose saved predictions carry the validation RMSE of every fold
    (attribute ``val_rmse_<target>``, `kgml.compare.runner.with_val_rmse`): the RMSE pooled over the folds'
    validation years (root of the mean of the folds' squared RMSEs), mean ± sd over the seeds. This, not the
    test years, is where variants of a model are compared."""
    rows = []
    for kind, splits in folds.items():
        for m in models:
            per_seed = []
            for d in directories:
                for sd in _seeds_saved(Path(d) / suite, kind, splits, m):
                    values = []
                    for split in splits:
                        p = prediction_path(Path(d) / suite / "folds" / kind / split.name, m, sd)
                        if not p.exists():
                            break
                        with xr.open_dataset(p) as f:
                            v = f.attrs.get(f"val_rmse_{target}")
                        if v is None:
                            break
                        values.append(float(v))
                    if len(values) == len(splits):
                        per_seed.append(math.sqrt(float(np.mean(np.square(values)))))
            if per_seed:
                v = np.array(per_seed)
                rows.append({"fold_kind": kind, "model": m, "n_seeds": v.size, "val_rmse": float(v.mean()),
                             "val_rmse_sd": float(v.std(ddof=1)) if v.size > 1 else math.nan})
    return rows


def validation_markdown(rows: list[dict], suite: str, units: str = "t ha-1") -> str:
    """Tables per fold kind of `validation_rows`."""
    lines = []
    for kind in dict.fromkeys(r["fold_kind"] for r in rows):
        where = "the last two training years of each fold" if kind == "forecast" else "each fold's validation part"
        lines += [f"#### {suite} — {kind}: validation years ({where})", "",
                  f"| model | seeds | pooled validation RMSE ({units}) |", "|---|---|---|"]
        for r in [r for r in rows if r["fold_kind"] == kind]:
            sd = f" ± {_f(r['val_rmse_sd'], '.2f')}" if r["n_seeds"] > 1 else ""
            lines.append(f"| {r['model']} | {r['n_seeds']} | {_f(r['val_rmse'], '.3f')}{sd} |")
        lines.append("")
    return "\n".join(lines)


def _f(x, fmt=".3g") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, fmt)


def yield_markdown(rows: list[dict], suite: str, units: str = "t ha-1") -> str:
    """Tables per fold kind: pooled RMSE (± sd over seeds), % of the mean observed yield, × per-unit trend,
    median and pooled NSE."""
    lines = []
    for kind in dict.fromkeys(r["fold_kind"] for r in rows):
        lines += [f"#### {suite} — {kind}", "",
                  f"| model | seeds | units | pooled RMSE ({units}) | % of mean yield | × per-unit trend | "
                  "NSE median | pooled NSE |", "|---|---|---|---|---|---|---|---|"]
        for r in [r for r in rows if r["fold_kind"] == kind]:
            sd = f" ± {_f(r['pooled_rmse_sd'], '.2f')}" if r["n_seeds"] > 1 else ""
            nsd = f" ± {_f(r['nse_median_sd'], '.2f')}" if r["n_seeds"] > 1 else ""
            lines.append(f"| {r['model']} | {r['n_seeds']} | {r['n_sites']} | {_f(r['pooled_rmse'], '.3f')}{sd} | "
                         f"{_f(r['rmse_pct_mean'], '.1f')} | {_f(r['ratio_to_unit_trend'], '.2f')} | "
                         f"{_f(r['nse_median'], '.3f')}{nsd} | {_f(r['pooled_nse'], '.3f')} |")
        lines.append("")
    return "\n".join(lines)


def _test_mask(obs: xr.DataArray, splits: Sequence[Split]) -> np.ndarray:
    """(site, year) cells held out as test years in any of ``splits`` where a yield was observed."""
    years = [int(y) for y in obs.year.values]
    col = {y: j for j, y in enumerate(years)}
    row = {str(s): i for i, s in enumerate(obs.site.values)}
    mask = np.zeros(obs.shape, bool)
    for split in splits:
        for u in split.test.units:
            ys = split.test.years_of(u)
            for y in (years if ys is None else ys):
                if u in row and int(y) in col:
                    mask[row[u], col[int(y)]] = True
    return mask & np.isfinite(obs.values)


def _hindsight_lines(obs: xr.DataArray) -> np.ndarray:
    """Each unit's least-squares line over *all* its observed years, forecast years included: the best any
    per-unit trend could do, knowing the future (a floor for trend-only forecasts, not a forecast)."""
    years = obs.year.values.astype(float)
    out = np.full(obs.shape, np.nan)
    for i, y in enumerate(obs.values):
        ok = np.isfinite(y)
        if ok.sum() >= 2:
            out[i] = np.polyval(np.polyfit(years[ok], y[ok], 1), years)
    return out


def floor_rows(ds: xr.Dataset, splits: Sequence[Split], directories: Sequence[Path], models: Sequence[str],
               suite: str, *, target_pct: float = 10.0) -> dict:
    """Why a pooled-RMSE target on forecast years is or is not in reach (issue 14): the hindsight per-unit
    line's pooled RMSE on the forecast years (`_hindsight_lines`), the forecast year furthest below it (the
    largest mean deficit over units: the drought year), the share of the variance about the hindsight line a
    model would have to explain from weather to reach ``target_pct`` % of the mean yield, 1 − (target / RMSE)²,
    with and without that year; and for every model (ensemble mean over the seeds in ``directories``) its
    pooled RMSE as % of the mean yield, without the worst year, the worst year's share of its squared error
    and the correlation of its departures from the hindsight line with the observed ones."""
    obs = ds["crop_yield"].transpose("site", "year")
    y = obs.values
    test = _test_mask(obs, splits)
    if not test.any():
        raise ValueError(f"{suite}: no observed yield in the forecast folds' test years")
    line = _hindsight_lines(obs)
    years = obs.year.values.astype(int)
    n = test.sum(axis=0)
    per_year = np.where(n > 0, np.where(test, y - line, 0.0).sum(axis=0) / np.maximum(n, 1), np.inf)
    worst = int(years[np.argmin(per_year)])
    keep = test & (years != worst)[None, :]

    def pct(pred, mask):
        return 100 * float(np.sqrt(np.mean((pred - y)[mask] ** 2))) / float(y[mask].mean())

    def needed(mask):
        r = float(np.sqrt(np.mean((line - y)[mask] ** 2)))
        return 100 * max(0.0, 1 - (target_pct / 100 * float(y[mask].mean()) / r) ** 2)

    out = {"suite": suite, "worst_year": worst, "worst_year_deficit": float(per_year.min()),
           "n_cells": int(test.sum()), "n_worst": int((test & (years == worst)[None, :]).sum()),
           "mean_obs": float(y[test].mean()), "target_pct": target_pct,
           "hindsight_pct": pct(line, test), "hindsight_pct_without_worst": pct(line, keep),
           "needed_pct": needed(test), "needed_pct_without_worst": needed(keep), "models": []}
    for m in models:
        members = []
        for d in directories:
            for sd in _seeds_saved(Path(d) / suite, "forecast", splits, m):
                pred = _load(Path(d) / suite, "forecast", splits, m, sd)
                if pred is not None:
                    members.append(pred["crop_yield"].reindex_like(obs).transpose("site", "year").values)
        if not members:
            continue
        p = np.mean(members, axis=0)
        if not np.isfinite(p[test]).all():
            raise ValueError(f"{suite}: {m} has no finite crop_yield prediction for some forecast-year cells")
        e2 = (p - y) ** 2
        dp, dy = (p - line)[test], (y - line)[test]
        r = float(np.corrcoef(dp, dy)[0, 1]) if dp.std() > 0 and dy.std() > 0 else math.nan  # a line: no r
        out["models"].append({
            "model": m, "n_seeds": len(members), "pct": pct(p, test), "pct_without_worst": pct(p, keep),
            "worst_share": (100 * float(e2[test & (years == worst)[None, :]].sum() / e2[test].sum())
                            if e2[test].sum() > 0 else math.nan),
            "corr_hindsight_residual": r})
    return out


def floor_markdown(f: dict, units: str = "t ha-1") -> str:
    """The table of `floor_rows`."""
    w, t = f["worst_year"], f["target_pct"]
    lines = [f"#### {f['suite']} — forecast years: how far {t:g} % of the mean yield is", "",
             f"{f['n_cells']} forecast unit-years, mean observed {f['mean_obs']:.2f} {units}; worst year {w} "
             f"({f['n_worst']} units, mean departure from the hindsight line {f['worst_year_deficit']:+.2f} {units}).",
             "",
             f"| | pooled RMSE, % of mean yield | without {w} | {w}'s share of the squared error | "
             "r with the departures from the hindsight line |", "|---|---|---|---|---|",
             f"| hindsight per-unit line (fitted to every year, forecast years included) | {f['hindsight_pct']:.1f} | "
             f"{f['hindsight_pct_without_worst']:.1f} | – | – |"]
    for r in f["models"]:
        lines.append(f"| {r['model']} (ensemble of {r['n_seeds']}) | {r['pct']:.1f} | {r['pct_without_worst']:.1f} | "
                     f"{_f(r['worst_share'], '.0f')} % | {_f(r['corr_hindsight_residual'], '.2f')} |")
    lines += ["", f"To reach {t:g} % a model that knew each unit's trend exactly would still have to explain "
              f"{f['needed_pct']:.0f} % of the yield variance about it from the weather ({f['needed_pct_without_worst']:.0f} % "
              f"without {w}).", ""]
    return "\n".join(lines)


def forecast_figure(ds: xr.Dataset, splits: Sequence[Split], directory: Path, models: Sequence[str], path: Path,
                    *, title: str = "") -> Path:
    """Mean over units of observed and predicted yield per year, one panel per forecast origin: training
    years shaded grey, validation years light grey, forecast years white with each model's forecast."""
    plt = pyplot()
    obs = ds["crop_yield"]
    years = obs.year.values
    fig, axes = plt.subplots(len(splits), 1, figsize=(8, 2.6 * len(splits)), sharex=True, squeeze=False)
    for ax, split in zip(axes[:, 0], splits, strict=True):
        tr, va, te = split.train.years, split.val.years or (), split.test.years
        ax.axvspan(min(tr) - 0.5, max(tr) + 0.5, color="0.85", lw=0, label="training years")
        if va:
            ax.axvspan(min(va) - 0.5, max(va) + 0.5, color="0.93", lw=0, label="validation years")
        ax.plot(years, obs.mean("site").values, "k.-", lw=1, label="observed (mean of units)")
        for m in models:
            p = Path(directory) / "folds" / "forecast" / split.name / f"{m}.nc"
            if not p.exists():
                continue
            with xr.open_dataset(p) as f:
                pr = f["crop_yield"].load()
            pr = pr.sel(year=[y for y in pr.year.values if int(y) in set(te)])
            o = obs.sel(site=pr.site.values, year=pr.year.values)
            mean_pr = pr.where(np.isfinite(o)).mean("site")
            ax.plot(pr.year.values, mean_pr.values, "o-", ms=3, lw=1.2, label=m)
        ax.set_ylabel(f"yield ({obs.attrs.get('units', 't ha-1')})")
        ax.set_title(f"train ≤ {split.info.get('origin')}, forecast {te[0]}–{te[-1]}", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=2, loc="upper left")
    axes[-1, 0].set_xlabel("year")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return write_png_atomic(fig, path)
