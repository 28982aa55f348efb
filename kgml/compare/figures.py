"""Figures of a benchmark run (PNG): observed vs predicted on held-out sites, the CDF of per-site skill,
skill by region, and the map of detected regions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.compare.regions_detect import DetectedRegions, plot_region_map
from kgml.evaluation import metric_order, paired
from kgml.io import pyplot, write_png_atomic
from kgml.variables import units_label

__all__ = ["held_out_predictions", "prediction_path", "seed_suffix", "suite_figures"]


def _plt():
    return pyplot()


def _save(fig, path: Path) -> Path:
    return write_png_atomic(fig, path, dpi=110)


def _lead(var: str) -> str:
    return metric_order(var)[0]


def seed_suffix(seed: int) -> str:
    """File-name suffix of a seed's outputs: none for seed 0 (single-seed runs keep their layout), else
    ``_seed<k>``."""
    return "" if int(seed) == 0 else f"_seed{int(seed)}"


def prediction_path(fold_dir: Path, model: str, seed: int = 0) -> Path:
    """Held-out predictions of (fold, model, seed): ``<fold_dir>/<model>[_seed<k>].nc``."""
    return Path(fold_dir) / f"{model}{seed_suffix(seed)}.nc"


def held_out_predictions(directory: Path, kind: str, splits, model: str, seed: int = 0) -> xr.Dataset | None:
    """The engine's held-out predictions of (``model``, ``seed``) on every split of ``kind``, as one dataset
    (None when none is saved)."""
    preds = []
    for s in splits:
        p = prediction_path(directory / "folds" / kind / s.name, model, seed)
        if p.exists():
            with xr.open_dataset(p) as f:
                preds.append(f.load())
    if not preds:
        return None
    acc = preds[0]
    for p in preds[1:]:
        acc = acc.combine_first(p)
    return acc


def suite_figures(suite, ds: xr.Dataset, obs: xr.Dataset, folds: dict, directory: Path, models: Sequence[str],
                  site_scores: dict, seeds: Sequence[int] = (0,)) -> list[Path]:
    """Write the figures of a scored run into ``directory``; returns their paths. A model's panel shows the
    predictions of the first of ``seeds`` saved for it (a run of seed 2 alone has no seed-0 files)."""
    plt = _plt()
    paths = []
    var = suite.targets[0]
    ref = suite.observed_name(var)
    for kind, splits in folds.items():
        have = [m for m in models if (m, kind) in site_scores]
        if not have:
            continue
        # Observed vs predicted, one panel per model (held-out sites of every fold of this kind).
        n = len(have)
        cols = min(n, 5)
        rows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False, constrained_layout=True)
        for ax, m in zip(axes.ravel(), have, strict=False):
            pred = next((p for sd in seeds
                         if (p := held_out_predictions(directory, kind, splits, m, sd)) is not None), None)
            if pred is None:
                ax.set_visible(False)
                continue
            try:
                p, o = paired(pred, obs, var, ref, resolution=suite.resolution)
            except (KeyError, ValueError):
                ax.set_visible(False)
                continue
            pv, ov = p.values.ravel(), o.values.ravel()
            ok = np.isfinite(pv) & np.isfinite(ov)
            if ok.sum() > 5000:
                idx = np.random.default_rng(0).choice(np.flatnonzero(ok), 5000, replace=False)
                ok = np.zeros_like(ok)
                ok[idx] = True
            ax.scatter(ov[ok], pv[ok], s=3, alpha=0.3)
            if ok.any():
                lim = [min(ov[ok].min(), pv[ok].min()), max(ov[ok].max(), pv[ok].max())]
                ax.plot(lim, lim, "k-", lw=0.7)
            ax.set_title(m, fontsize=9)

            ax.set_xlabel(f"observed {ref}{units_label(ref)}", fontsize=8)
            ax.set_ylabel(f"predicted {var}{units_label(var)}", fontsize=8)
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        fig.suptitle(f"{suite.name} {kind}: held-out {var} ({suite.resolution})")
        paths.append(_save(fig, directory / f"obs_vs_pred_{kind}.png"))

        # CDF of per-site skill, one panel per target.
        fig, axes = plt.subplots(1, len(suite.targets), figsize=(4.2 * len(suite.targets), 3.4), squeeze=False,
                                 constrained_layout=True)
        for ax, v in zip(axes[0], suite.targets, strict=True):
            metric = _lead(v)
            for m in have:
                sc = site_scores[(m, kind)]
                if v not in sc.variable.values:
                    continue
                vals = np.sort(np.asarray(sc[metric].sel(variable=v).values, np.float64))
                vals = vals[np.isfinite(vals)]
                if vals.size:
                    ax.step(vals, np.arange(1, vals.size + 1) / vals.size, where="post", label=m)
            ax.set(xlabel=f"per-site {metric.upper()} of {v}", ylabel="share of held-out sites", title=v)
            if metric in ("nse", "kge"):
                ax.set_xlim(left=max(ax.get_xlim()[0], -2.0))
        axes[0][0].legend(fontsize=6)
        fig.suptitle(f"{suite.name} {kind}: per-site skill")
        paths.append(_save(fig, directory / f"skill_cdf_{kind}.png"))

        # Skill by region (median per-site lead metric of the first target in each region).
        region = suite.region
        if region in ds.coords:
            metric = _lead(var)
            labels = sorted(set(ds[region].values.astype(str).tolist()) - {""})
            fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(labels) * max(1, len(have)) / 3), 3.6),
                                   constrained_layout=True)
            width = 0.8 / max(len(have), 1)
            for i, m in enumerate(have):
                sc = site_scores[(m, kind)]
                if var not in sc.variable.values:
                    continue
                site_lab = ds[region].sel(site=sc.site.values).values.astype(str)
                vals = np.asarray(sc[metric].sel(variable=var).values, np.float64)
                med = [np.nanmedian(vals[site_lab == lab]) if np.isfinite(vals[site_lab == lab]).any() else np.nan
                       for lab in labels]
                ax.bar(np.arange(len(labels)) + i * width, med, width, label=m)
            ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
            ax.set(ylabel=f"median per-site {metric.upper()} of {var}", title=f"{suite.name} {kind}: skill by {region}")
            if metric in ("nse", "kge"):
                lo = ax.get_ylim()[0]
                ax.set_ylim(bottom=max(lo, -2.0))
            ax.legend(fontsize=6, ncol=2)
            paths.append(_save(fig, directory / f"skill_by_region_{kind}.png"))

    # Map of the detected regions of the first fold that has them.
    found = sorted((directory / "folds").glob("*/*/detected_regions.json"))
    if found:
        det = DetectedRegions.from_dict(json.loads(found[0].read_text()))
        path = directory / "detected_regions.png"
        plot_region_map(ds, det, path, title=f"{suite.name}: detected regions ({found[0].parent.name}, k={det.k})",
                        truth=suite.truth_region or suite.region)
        paths.append(path)
    return paths
