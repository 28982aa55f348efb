"""``kgml bench summary``: one compact table across the distribution-shift suites already run.

Reads ``OUT/<suite>/metrics.nc`` written by `kgml.compare.runner.run_suite` and prints, per suite, a row per
model with the lead metric of each (fold kind, target) as *median / bad tail* over held-out sites (NEE: R²
median / 10th percentile; other fluxes and yields: NSE median / 10th percentile, and RMSE median where
asked), the best median of each column in bold. Nothing is trained or re-scored here, so the README table is
a copy of what the runs wrote, not hand-typed numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["decomposition_table", "lead_metric", "suite_summary", "summary_markdown"]


def lead_metric(variable: str) -> str:
    """The metric a column leads with: R² for NEE (its mean near zero makes NSE/KGE blow up), NSE otherwise."""
    return "r2" if variable.split("_")[0] == "nee" else "nse"


_TAIL = {"r2": "r2_p10", "nse": "nse_p10", "kge": "kge_p10", "rmse": "rmse_p90"}
_NAME = {"r2": "R²", "nse": "NSE", "kge": "KGE", "rmse": "RMSE"}
_HIGHER_IS_BETTER = {"r2": True, "nse": True, "kge": True, "rmse": False}


def _num(x) -> str:
    x = float(x)
    return "–" if not math.isfinite(x) else f"{x:.2f}"


def suite_summary(metrics: xr.Dataset, *, metrics_by_variable: dict[str, Sequence[str]] | None = None) -> dict:
    """Columns (fold kind, variable, metric) and the per-model cells ``(median, tail)`` of ``metrics``
    (a suite's metrics.nc). ``metrics_by_variable`` overrides the lead metric per variable."""
    columns = []
    for kind in metrics.fold_kind.values:
        for var in metrics.variable.values:
            for metric in (metrics_by_variable or {}).get(str(var), (lead_metric(str(var)),)):
                columns.append((str(kind), str(var), metric))
    cells: dict[str, list[tuple[float, float]]] = {}
    for model in metrics.model.values:
        row = []
        for kind, var, metric in columns:
            sel = dict(model=model, fold_kind=kind, variable=var)
            row.append((float(metrics[f"{metric}_median"].sel(sel)), float(metrics[_TAIL[metric]].sel(sel))))
        cells[str(model)] = row
    n_sites = {}
    for kind in metrics.fold_kind.values:
        vals = metrics["n_sites"].sel(fold_kind=kind).values
        n_sites[str(kind)] = int(np.nanmax(vals)) if np.isfinite(vals).any() else 0
    return {"columns": columns, "cells": cells, "n_sites": n_sites}


def _table(summary: dict) -> list[str]:
    columns, cells = summary["columns"], summary["cells"]
    best = []
    for j, (_, _, metric) in enumerate(columns):
        meds = [row[j][0] for row in cells.values() if math.isfinite(row[j][0])]
        best.append((max(meds) if _HIGHER_IS_BETTER[metric] else min(meds)) if meds else None)
    head = ["model"] + [f"{kind} ({summary['n_sites'][kind]} sites): {var} {_NAME[metric]} med / "
                        f"{_TAIL[metric].split('_')[-1]}" for kind, var, metric in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, row in cells.items():
        out = [model]
        for j, (med, tail) in enumerate(row):
            text = f"{_num(med)} / {_num(tail)}"
            if best[j] is not None and math.isfinite(med) and round(med, 2) == round(best[j], 2):
                text = f"**{_num(med)}** / {_num(tail)}"
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    return lines


_COMPONENTS = (("site_mean", "site mean"), ("seasonal", "seasonal"), ("anomaly", "anomaly"), ("iav", "IAV"))


def decomposition_table(metrics: xr.Dataset, kind: str) -> list[str]:
    """Rows per model of the pooled R² / NSE of each scale component (site mean, seasonal cycle, anomalies,
    IAV; `kgml.evaluation.decompose`) of every target, for fold kind ``kind``, with the number of seeds and the
    min–max over seeds of the median lead metric; empty when ``metrics`` predates the decomposition."""
    if "anomaly_r2" not in metrics:
        return []
    variables = [str(v) for v in metrics.variable.values]
    head = ["model", "seeds"] + [f"{v} {_NAME[lead_metric(v)]} med over seeds" for v in variables] + \
           [f"{v} {label} R² / NSE" for v in variables for _, label in _COMPONENTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in metrics.model.values:
        sel = dict(model=model, fold_kind=kind)
        if not np.isfinite(metrics["r2_median"].sel(sel).values).any():
            continue
        n = metrics["n_seeds"].sel(sel).values
        cells = [str(model), str(int(np.nanmax(n))) if np.isfinite(n).any() else "–"]
        for v in variables:
            key = f"seed_{lead_metric(v)}_median"
            vals = metrics[key].sel({**sel, "variable": v}).values if key in metrics else np.array([])
            vals = vals[np.isfinite(vals)]
            cells.append(f"{_num(vals.min())}–{_num(vals.max())}" if vals.size > 1 else "–")
        for v in variables:
            at = {**sel, "variable": v}
            for comp, _ in _COMPONENTS:
                cells.append(f"{_num(metrics[f'{comp}_r2'].sel(at))} / {_num(metrics[f'{comp}_nse'].sel(at))}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_markdown(out: str | os.PathLike = "runs/bench", suites: Sequence[str] | None = None, *,
                     metrics_by_variable: dict[str, Sequence[str]] | None = None) -> str:
    """Markdown with one table per suite found under ``out`` (or the named ``suites``; a named suite
    without results is an error naming the file it looked for)."""
    out = Path(out)
    if suites is None:
        names = sorted(p.parent.name for p in out.glob("*/metrics.nc"))
        if not names:
            raise FileNotFoundError(f"no suite results under {out} (no {out}/<suite>/metrics.nc); run "
                                    "`kgml bench shift --suite NAME --out {out}` first")
    else:
        names = list(suites)
    lines = []
    for name in names:
        path = out / name / "metrics.nc"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no results for suite {name!r}; run `kgml bench shift --suite {name} "
                                    f"--out {out}` first")
        with xr.open_dataset(path) as m:
            if "fold_kind" not in m.dims or "r2_median" not in m:
                raise ValueError(f"{path}: not a kgml bench metrics file (no fold_kind dimension or r2_median)")
            loaded = m.load()
            summary = suite_summary(loaded, metrics_by_variable=metrics_by_variable)
            title = str(m.attrs.get("title", name))
        lines += [f"### {name}", "", f"{title}; source `{path}`", ""] + _table(summary) + [""]
        for kind in loaded.fold_kind.values:
            table = decomposition_table(loaded, str(kind))
            if table:
                lines += [f"Scale decomposition, {kind} (pooled over held-out sites; ensemble mean over seeds):", "",
                          *table, ""]
    return "\n".join(lines)
