"""How much of the skill that held-out sites miss is their *level* (issue 15 item 4, issue 20 item 5): each model's
held-out predictions scored as they are and with each site's mean error removed — the prediction shifted so that
its mean over the site's paired steps equals the observed mean (an oracle of the site's level, which no model
has at an unseen site). Nothing is trained; it reads a `kgml bench shift` run's saved predictions.

    kgml bench shift --suite cosore_daily --models rf,neural,hybrid_global --seeds 3 --out runs/cosd
    python benchmarks/level_oracle.py --run runs/cosd --suite cosore_daily --models rf,neural,hybrid_global --seeds 3

The per-site R² (a squared correlation) is unchanged by the shift; NSE and KGE change. For positive fluxes whose
level is a multiplicative base rate (soil respiration, Reco, GPP) a second oracle scales the prediction so that its
mean is the observed one ("base rate known"). And one column without an oracle ("level transferred", `level_transfer`):
the prediction shifted to the site mean that a random forest of the training sites' observed means predicts from
what is known of the unseen site (static attributes, IGBP class, mean drivers) — a two-stage model that takes the
dynamics from the model and the level from the site attributes; "site-mean R²" is across the held-out sites, of the
model's own mean and of the transferred one. Cells: median over held-out
sites of the ensemble mean over the seeds; "p10" the 10th percentile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from kgml.bench.suites import get_suite

from kgml import evaluation as ev
from kgml.compare.figures import held_out_predictions
from kgml.compare.runner import _observations, prepare_suite, seed_mean
from kgml.metrics import kge, nse

#: Net fluxes: no base rate (NEE = Reco − GPP crosses zero; its level is a difference of two rates).
NET_FLUXES = ("nee",)


def site_features(ds, suite) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per site, what a model knows of an unseen site: the suite's static attributes, latitude and elevation where
    the data have them, the IGBP class (one-hot) and the mean of each driver over the site's record."""
    names, cols = [], []
    for c in (*suite.static, "lat", "elevation"):
        if c in ds.coords and c not in names:
            names.append(c)
            cols.append(np.asarray(ds[c].values, np.float64))
    if "igbp" in ds.coords:
        classes = sorted({str(v) for v in ds["igbp"].values})
        for k in classes:
            names.append(f"igbp_{k}")
            cols.append((ds["igbp"].values.astype(str) == k).astype(np.float64))
    for f in suite.features:
        if f in ds:
            names.append(f"mean_{f}")
            cols.append(np.asarray(ds[f].mean([d for d in ds[f].dims if d != "site"], skipna=True).values, np.float64))
    x = np.stack(cols, axis=1)
    return names, {str(s): x[i] for i, s in enumerate(ds.site.values)}


def level_transfer(ds, obs, suite, splits, var: str, obs_var: str, seed: int = 0) -> dict[str, float]:
    """Held-out site → its mean ``var`` predicted by a random forest (500 trees, leaves ≥ 3) of the fold's
    training and validation sites' observed means (over their observed steps) on `site_features`: a level that
    transfers to an unseen site only through what is known of it (no oracle)."""
    from sklearn.ensemble import RandomForestRegressor

    _, feats = site_features(ds, suite)
    o = ev.paired(obs, obs, obs_var, obs_var, resolution=suite.resolution)[1]
    means = {str(s): float(np.nanmean(o.sel(site=s).values)) for s in o.site.values
             if np.isfinite(o.sel(site=s).values).any()}
    out = {}
    for sp in splits:
        train = [str(u) for u in (*sp.train.units, *sp.val.units) if str(u) in means]
        held = [str(u) for u in sp.part(sp.info.get("heldout", "test")).units if str(u) in feats]
        rf = RandomForestRegressor(500, min_samples_leaf=3, random_state=seed, n_jobs=2)
        x = np.stack([feats[u] for u in train])
        fill = np.nanmean(x, axis=0)
        rf.fit(np.where(np.isfinite(x), x, fill), [means[u] for u in train])
        xh = np.stack([feats[u] for u in held])
        for u, v in zip(held, rf.predict(np.where(np.isfinite(xh), xh, fill)), strict=True):
            out[u] = float(v)
    return out


def level_scores(pred, obs, var: str, obs_var: str, resolution: str, levels: dict[str, float] | None = None
                 ) -> dict[str, np.ndarray]:
    """Per held-out site: NSE and KGE of the prediction as it is, with the site's mean error removed (shifted), and
    with its base rate known (scaled by observed / predicted mean: for positive fluxes whose level is a multiplicative
    rate, e.g. R_ref of R = R_ref f(T) g(θ); NaN for net fluxes, `NET_FLUXES`, and where either mean is ≤ 0)."""
    p, o = ev.paired(pred, obs, var, obs_var, resolution=resolution)
    out = {k: [] for k in ("nse", "kge", "nse_level", "kge_level", "nse_rate", "kge_rate", "mean_error",
                           "nse_transfer", "kge_transfer", "obs_mean", "pred_mean", "transfer_mean")}
    for s in p.site.values:
        pv, ov = np.asarray(p.sel(site=s).values, np.float64), np.asarray(o.sel(site=s).values, np.float64)
        ok = np.isfinite(pv) & np.isfinite(ov)
        if ok.sum() < 2:
            continue
        pv, ov = pv[ok], ov[ok]
        shifted = pv - pv.mean() + ov.mean()
        out["nse"].append(nse(pv, ov))
        out["kge"].append(kge(pv, ov))
        out["nse_level"].append(nse(shifted, ov))
        out["kge_level"].append(kge(shifted, ov))
        out["mean_error"].append(pv.mean() - ov.mean())
        # multiplicative (a base rate, R = R_ref f(T) g(θ)): scaled so that its mean is the observed mean
        rate = var not in NET_FLUXES and pv.mean() > 0 and ov.mean() > 0
        scaled = pv * (ov.mean() / pv.mean()) if rate else np.full_like(pv, np.nan)
        out["nse_rate"].append(nse(scaled, ov) if np.isfinite(scaled).all() else np.nan)
        out["kge_rate"].append(kge(scaled, ov) if np.isfinite(scaled).all() else np.nan)
        # the level of `level_transfer` (no oracle): shifted so that its mean is the transferred level
        lev = (levels or {}).get(str(s), np.nan)
        moved = pv - pv.mean() + lev
        out["nse_transfer"].append(nse(moved, ov) if np.isfinite(lev) else np.nan)
        out["kge_transfer"].append(kge(moved, ov) if np.isfinite(lev) else np.nan)
        out["obs_mean"].append(ov.mean())
        out["pred_mean"].append(pv.mean())
        out["transfer_mean"].append(lev)
    return {k: np.asarray(v) for k, v in out.items()}


def _med(x: np.ndarray) -> str:
    x = x[np.isfinite(x)]
    return f"{np.median(x):.2f} / {np.quantile(x, 0.1):.2f}" if x.size else "–"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="--out of the kgml bench shift run")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--fold-kind", default=None, help="default: the suite's first fold kind")
    ap.add_argument("--models", default="rf,neural,hybrid_global")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets", default=None, help="default: the suite's targets")
    ap.add_argument("--data-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    suite = get_suite(a.suite)
    ds, folds = prepare_suite(suite, data_dir=a.data_dir, fold_kinds=[a.fold_kind] if a.fold_kind else None)
    kind = a.fold_kind or next(iter(folds))
    obs = _observations(suite, ds)
    targets = a.targets.split(",") if a.targets else list(suite.targets)
    print(f"## {suite.name}, {kind}: median / p10 over held-out sites, ensemble mean of {a.seeds} seeds\n")
    head = ("| target | model | sites | NSE | NSE, site level known | NSE, base rate known | NSE, level transferred | "
            "KGE | KGE, site level known | KGE, base rate known | KGE, level transferred | |mean error| median | "
            "site-mean R²: model / transferred |")
    print(head)
    print("|---" * head.count(" | ") + "|---|")
    for var in targets:
        obs_var = suite.observed_name(var)
        levels = level_transfer(ds, obs, suite, folds[kind], var, obs_var)
        for m in a.models.split(","):
            preds = [p for s in range(a.seeds)
                     if (p := held_out_predictions(a.run / suite.name, kind, folds[kind], m, s)) is not None]
            if not preds:
                print(f"| {var} | {m} | no predictions in {a.run / suite.name} |" + " |" * 10)
                continue
            sc = level_scores(seed_mean(preds), obs, var, obs_var, suite.resolution, levels)
            r2 = [np.corrcoef(sc[k], sc["obs_mean"])[0, 1] ** 2 for k in ("pred_mean", "transfer_mean")]
            print(f"| {var} | {m} | {sc['nse'].size} | {_med(sc['nse'])} | {_med(sc['nse_level'])} | "
                  f"{_med(sc['nse_rate'])} | {_med(sc['nse_transfer'])} | {_med(sc['kge'])} | {_med(sc['kge_level'])} | "
                  f"{_med(sc['kge_rate'])} | {_med(sc['kge_transfer'])} | {np.median(np.abs(sc['mean_error'])):.2f} | "
                  f"{r2[0]:.2f} / {r2[1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
