"""Train/validation/test splits that hold out whole sites, regions or years — never random days.

Every `Split` has four parts: ``train``, ``val`` and ``test`` (in-distribution: same sites/regions/climate as
training) and ``ood`` (out-of-distribution: the held-out region, future years, the warmest sites, ...). A part
is a set of units (site or county IDs) and optionally a set of years, either shared by all its units
(``years``) or per unit (``unit_years``: each site's most anomalous year held out, `anomalous_year_out`).
Splits are deterministic from a seed and round-trip through JSON (`save_splits` / `load_splits`; the
``unit_years`` key is written only by parts that have it, so files without it read as before). No
(unit, year) ever falls in two parts.
"""

from __future__ import annotations

import calendar
import functools
import json
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.data.regions import _labels, _unit_dim, site_aridity, site_climate
from kgml.io import write_text_atomic

__all__ = [
    "OBSERVATION_BASES",
    "Part",
    "Split",
    "anomalous_year_out",
    "climate_extrapolation",
    "kfold_by_site",
    "leave_one_site_out",
    "leave_region_out",
    "load_splits",
    "mask_unit_years",
    "observation_variables",
    "restrict_years",
    "save_splits",
    "temporal_holdout",
    "years_kfold_within_sites",
]

_FORMAT_VERSION = 1
PART_NAMES = ("train", "val", "test", "ood")


#: Base names of observed (target) variables: a per-unit year restriction masks every data variable named
#: ``<base>``, ``<base>_<suffix>`` (``nee_monthly``, ``nee_monthly_qc``) or ``true_<base>...`` outside the
#: unit's years; drivers (tair, precip, ...) stay, as they are known when a year is predicted.
OBSERVATION_BASES = ("nee", "gpp", "reco", "rsoil", "crop_yield")


def observation_variables(ds: xr.Dataset) -> list[str]:
    """The data variables of ``ds`` that hold observations of a target (`OBSERVATION_BASES`)."""
    out = []
    for name in map(str, ds.data_vars):
        base = name[len("true_"):] if name.startswith("true_") else name
        if any(base == b or base.startswith(b + "_") for b in OBSERVATION_BASES):
            out.append(name)
    return out


@dataclass(frozen=True)
class Part:
    """Units (site/county IDs) and optionally the years they contribute: ``years`` for all units (None = all
    years), or ``unit_years`` (unit → its years, None = all) when the years differ by unit; not both."""

    units: tuple[str, ...] = ()
    years: tuple[int, ...] | None = None
    unit_years: tuple[tuple[str, tuple[int, ...] | None], ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "units", tuple(sorted(str(u) for u in self.units)))
        if self.years is not None:
            object.__setattr__(self, "years", tuple(sorted(int(y) for y in self.years)))
        if self.unit_years is not None:
            if self.years is not None:
                raise ValueError("a part has either years (all units) or unit_years (per unit), not both")
            items = dict(self.unit_years.items() if isinstance(self.unit_years, Mapping) else self.unit_years)
            norm = tuple(sorted((str(u), None if ys is None else tuple(sorted(int(y) for y in ys)))
                                for u, ys in items.items()))
            if {u for u, _ in norm} != set(self.units):
                extra = sorted({u for u, _ in norm} ^ set(self.units))
                raise ValueError(f"unit_years must name exactly the part's units; differing: {extra[:5]}")
            object.__setattr__(self, "unit_years", norm)

    def __len__(self) -> int:
        return len(self.units)

    @functools.cached_property
    def _by_unit(self) -> dict[str, tuple[int, ...] | None]:
        return dict(self.unit_years or ())

    def years_of(self, unit: str) -> tuple[int, ...] | None:
        """The years ``unit`` contributes (None = all)."""
        if self.unit_years is not None:
            return self._by_unit[str(unit)]
        return self.years

    def subset(self, units: Iterable[str]) -> Part:
        """This part limited to ``units`` (its years, shared or per unit, kept)."""
        keep = [u for u in self.units if u in set(map(str, units))]
        if self.unit_years is None:
            return Part(keep, self.years)
        return Part(keep, unit_years={u: self._by_unit[u] for u in keep})

    def union(self, other: Part) -> Part:
        """The units and years of both parts (a unit in both contributes the years of either)."""
        units = sorted(set(self.units) | set(other.units))
        if self.unit_years is None and other.unit_years is None:
            if self.years is None or (other.units and other.years is None):
                return Part(units)
            return Part(units, sorted(set(self.years) | set(other.years or ())))
        per = {}
        for u in units:
            ys = [p.years_of(u) for p in (self, other) if u in set(p.units)]
            per[u] = None if any(y is None for y in ys) else sorted(set().union(*ys))
        return Part(units, unit_years=per)

    def to_dict(self) -> dict:
        out = {"units": list(self.units), "years": None if self.years is None else list(self.years)}
        if self.unit_years is not None:
            out["unit_years"] = {u: None if ys is None else list(ys) for u, ys in self.unit_years}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Part:
        return cls(tuple(d.get("units", ())), None if d.get("years") is None else tuple(d["years"]),
                   d.get("unit_years"))


@dataclass(frozen=True)
class Split:
    """One train/val/test/ood partition. ``info`` records what was held out (fold, region, cutoff...)."""

    name: str
    strategy: str
    seed: int
    dim: str
    train: Part
    val: Part
    test: Part
    ood: Part
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        parts = {n: getattr(self, n) for n in PART_NAMES}
        names = list(parts)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = set(parts[a].units) & set(parts[b].units)
                if not shared:
                    continue
                clash = sorted(u for u in shared if (ya := parts[a].years_of(u)) is None
                               or (yb := parts[b].years_of(u)) is None or set(ya) & set(yb))
                if clash:
                    raise ValueError(
                        f"split {self.name!r}: units {clash[:5]} are in both {a!r} and {b!r} for the same years"
                    )

    def part(self, name: str) -> Part:
        if name not in PART_NAMES:
            raise KeyError(f"unknown part {name!r}; parts are {PART_NAMES}")
        return getattr(self, name)

    def select(self, ds: xr.Dataset, part: str) -> xr.Dataset:
        """The slice of ``ds`` belonging to ``part``; ``attrs["split_part"]`` records it (for the normaliser).

        A part limited to some years is restricted on *every* time axis the dataset has (daily ``time``,
        annual ``year``, monthly ``month`` codes), so that no value of another year reaches a training part
        (annual yields and monthly fluxes of test years must not enter means, scalers or losses). A part with
        per-unit years keeps every time step (the drivers of all years: the models run through them) and
        masks each unit's observations outside its years (`mask_unit_years`)."""
        p = self.part(part)
        dim = self.dim
        present = set(ds[dim].values.astype(str))
        missing = [u for u in p.units if u not in present]
        if missing:
            raise KeyError(f"split {self.name!r} part {part!r}: units not in dataset: {missing[:5]}")
        out = ds.sel({dim: list(p.units)})
        if p.years is not None:
            out = restrict_years(out, p.years)
        if p.unit_years is not None:
            out = mask_unit_years(out, p, dim)
        out.attrs = {**ds.attrs, "split_name": self.name, "split_part": part}
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "strategy": self.strategy,
            "seed": self.seed,
            "dim": self.dim,
            **{n: getattr(self, n).to_dict() for n in PART_NAMES},
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls(
            name=d["name"],
            strategy=d["strategy"],
            seed=int(d["seed"]),
            dim=d.get("dim", "site"),
            **{n: Part.from_dict(d[n]) for n in PART_NAMES},
            info=dict(d.get("info", {})),
        )


def restrict_years(ds: xr.Dataset, years: Iterable[int]) -> xr.Dataset:
    """``ds`` limited to ``years`` on every time axis it has: ``time`` (by calendar year of each label),
    ``year`` (the label) and ``month`` (codes ``year*12 + month-1``, the layout of `kgml.data.assemble`)."""
    keep = np.asarray(sorted(int(y) for y in years), dtype=np.int64)
    out = ds
    if "time" in out.dims:
        out = out.isel(time=np.isin(out["time"].dt.year.values, keep))
    if "year" in out.dims:
        out = out.isel(year=np.isin(np.asarray(out["year"].values).astype(np.int64), keep))
    if "month" in out.dims:
        codes = np.asarray(out["month"].values).astype(np.int64)
        out = out.isel(month=np.isin(codes // 12, keep))
    return out


def _step_years(ds: xr.Dataset, axis: str) -> np.ndarray:
    if axis == "time":
        return ds["time"].dt.year.values.astype(np.int64)
    if axis == "year":
        return np.asarray(ds["year"].values).astype(np.int64)
    return np.asarray(ds["month"].values).astype(np.int64) // 12  # month codes year*12 + month-1


def mask_unit_years(ds: xr.Dataset, part: Part, dim: str = "site") -> xr.Dataset:
    """``ds`` with each unit's observations (`observation_variables`) set to NaN outside the years ``part``
    gives that unit, on every time axis (``time``, ``year``, ``month``); units ``part`` does not name and all
    other variables are left as they are. Predictions are masked the same way before they are scored."""
    units = ds[dim].values.astype(str)
    named = set(part.units)
    out = ds.copy()
    for name in observation_variables(ds):
        da = ds[name]
        axes = [a for a in ("time", "year", "month") if a in da.dims]
        if dim not in da.dims or not axes:
            continue
        axis = axes[0]
        step_years = _step_years(ds, axis)
        keep = np.ones((len(units), len(step_years)), bool)
        for i, u in enumerate(units):
            ys = part.years_of(u) if u in named else None
            if ys is not None:
                keep[i] = np.isin(step_years, np.asarray(ys, np.int64))
        mask = xr.DataArray(keep, dims=(dim, axis), coords={dim: ds[dim], axis: ds[axis]})
        out[name] = da.where(mask)
        out[name].attrs = dict(da.attrs)
    return out


def save_splits(splits: Split | Sequence[Split], path: str | os.PathLike) -> Path:
    """Write splits as JSON (atomically: temp file + rename)."""
    splits = [splits] if isinstance(splits, Split) else list(splits)
    text = json.dumps({"format_version": _FORMAT_VERSION, "splits": [s.to_dict() for s in splits]}, indent=1)
    return write_text_atomic(text, path)


def load_splits(path: str | os.PathLike) -> list[Split]:
    """Read splits written by `save_splits`."""
    data = json.loads(Path(path).read_text())
    if data.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported split format version {data.get('format_version')!r}")
    return [Split.from_dict(d) for d in data["splits"]]


# --- helpers ------------------------------------------------------------------------------------------


def _units_of(data: xr.Dataset | Iterable[str], dim: str | None) -> tuple[list[str], str]:
    if isinstance(data, xr.Dataset):
        dim = dim or _unit_dim(data)
        return sorted(data[dim].values.astype(str).tolist()), dim
    units = sorted(str(u) for u in data)
    if len(set(units)) != len(units):
        raise ValueError("duplicate unit IDs")
    return units, dim or "site"


def _split_off(units: Sequence[str], fractions: Sequence[float], rng: np.random.Generator) -> list[list[str]]:
    """Shuffle ``units`` and cut off parts of the given fractions (each at least 1 unit when the fraction > 0
    and enough units remain); the remainder is returned last."""
    order = list(rng.permutation(np.asarray(units, dtype=object))) if units else []
    parts, start = [], 0
    for frac in fractions:
        n = int(round(frac * len(order)))
        if frac > 0 and n == 0 and len(order) - start > 1:
            n = 1
        n = min(n, max(len(order) - start - 1, 0))
        parts.append(sorted(order[start : start + n]))
        start += n
    parts.append(sorted(order[start:]))
    return parts


def _years_of(ds: xr.Dataset) -> list[int]:
    if "time" in ds.dims:
        return sorted(set(ds["time"].dt.year.values.tolist()))
    if "year" in ds.dims:
        return sorted(int(y) for y in ds["year"].values)
    raise ValueError("dataset has neither a time nor a year dimension")


# --- strategies ---------------------------------------------------------------------------------------


def kfold_by_site(
    data: xr.Dataset | Iterable[str], k: int = 5, *, seed: int = 0, val_fraction: float = 0.1, dim: str | None = None
) -> list[Split]:
    """Grouped k-fold over sites: fold i's sites are ``test``; ``val`` is a random ``val_fraction`` of the others.

    Held-out sites come from the same population as the training sites, so they are in-distribution ``test``;
    ``ood`` is empty.
    """
    units, dim = _units_of(data, dim)
    if not 2 <= k <= len(units):
        raise ValueError(f"k must be between 2 and the number of units ({len(units)}), got {k}")
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(np.asarray(units, dtype=object)))
    folds = [sorted(order[i::k]) for i in range(k)]
    out = []
    for i, fold in enumerate(folds):
        rest = [u for u in units if u not in set(fold)]
        val, train = _split_off(rest, [val_fraction], np.random.default_rng([seed, i]))
        out.append(
            Split(f"kfold{k}_fold{i}_seed{seed}", "kfold_by_site", seed, dim, Part(train), Part(val), Part(fold), Part(),
                  {"fold": i, "k": k})
        )
    return out


def leave_one_site_out(
    data: xr.Dataset | Iterable[str], *, seed: int = 0, val_fraction: float = 0.1, dim: str | None = None
) -> list[Split]:
    """One split per site: that site is ``test``; ``val`` is a random ``val_fraction`` of the others."""
    units, dim = _units_of(data, dim)
    out = []
    for i, unit in enumerate(units):
        rest = [u for u in units if u != unit]
        val, train = _split_off(rest, [val_fraction], np.random.default_rng([seed, i]))
        out.append(Split(f"loso_{unit}_seed{seed}", "leave_one_site_out", seed, dim, Part(train), Part(val),
                         Part([unit]), Part(), {"held_out": unit}))
    return out


def leave_region_out(
    ds: xr.Dataset,
    region: str = "region",
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_units: int = 1,
    regions: Iterable[str] | None = None,
) -> list[Split]:
    """One split per region: its sites are ``ood``; the other sites are shuffled into train/val/test.

    ``region`` is a coordinate on the site dimension (e.g. ``"region"`` from `set_region`, ``"igbp"``) or the
    name of a registered region map. Sites with an unknown ("") region are never held out. Regions with fewer
    than ``min_units`` sites are skipped.
    """
    dim = _unit_dim(ds)
    units = ds[dim].values.astype(str)
    labels = ds[region].values.astype(str) if region in ds.coords else _labels(ds, region)
    candidates = sorted(set(labels) - {""}) if regions is None else list(regions)
    out = []
    for i, reg in enumerate(candidates):
        held = sorted(units[labels == reg].tolist())
        if len(held) < min_units or len(held) == len(units):
            continue
        rest = sorted(units[labels != reg].tolist())
        val, test, train = _split_off(rest, [val_fraction, test_fraction], np.random.default_rng([seed, i]))
        out.append(Split(f"lro_{region}_{reg}_seed{seed}", "leave_region_out", seed, dim, Part(train), Part(val),
                         Part(test), Part(held), {"region_coord": region, "held_out_region": reg}))
    if not out:
        raise ValueError(f"no region of {region!r} can be held out (labels: {sorted(set(labels))})")
    return out


def temporal_holdout(
    ds: xr.Dataset,
    *,
    cutoff_year: int | None = None,
    ood_years: int = 2,
    val_years: int = 1,
    test_years: int = 1,
    seed: int = 0,
) -> Split:
    """Hold out the future: every site's years from ``cutoff_year`` (default: the last ``ood_years`` years) are
    ``ood``; among earlier years, ``val_years`` and ``test_years`` whole years are drawn at random (seeded) as
    in-distribution val/test for all sites; the rest is train.
    """
    dim = _unit_dim(ds)
    units = sorted(ds[dim].values.astype(str).tolist())
    years = _years_of(ds)
    if cutoff_year is None:
        if len(years) <= ood_years:
            raise ValueError(f"only {len(years)} years: cannot hold out the last {ood_years}")
        cutoff_year = years[-ood_years]
    future = [y for y in years if y >= cutoff_year]
    past = [y for y in years if y < cutoff_year]
    if not future or len(past) < 1 + val_years + test_years:
        raise ValueError(f"cutoff {cutoff_year} leaves {len(past)} training and {len(future)} held-out years")
    rng = np.random.default_rng(seed)
    drawn = sorted(rng.choice(past, size=val_years + test_years, replace=False).tolist())
    order = list(rng.permutation(drawn))
    val_y, test_y = sorted(order[:val_years]), sorted(order[val_years:])
    train_y = [y for y in past if y not in set(drawn)]
    return Split(f"temporal_{cutoff_year}_seed{seed}", "temporal_holdout", seed, dim, Part(units, train_y),
                 Part(units, val_y), Part(units, test_y), Part(units, future), {"cutoff_year": int(cutoff_year)})


#: ``by`` of `climate_extrapolation` → (the site variable it ranks, +1 to hold out the highest values, −1 the lowest).
_CLIMATE_AXES = {"warm": ("mat_degC", 1.0), "cold": ("mat_degC", -1.0), "dry": ("map_mm_yr", -1.0),
                 "wet": ("map_mm_yr", 1.0), "arid": ("aridity_index", -1.0), "humid": ("aridity_index", 1.0)}


def climate_extrapolation(
    ds: xr.Dataset,
    *,
    by: str = "warm",
    quantile: float = 0.25,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Hold out the sites at one climate extreme as ``ood``: ``by`` in warm/cold (MAT), dry/wet (MAP) or
    arid/humid (the aridity index P/PET, `kgml.data.regions.site_aridity`: water supply against evaporative
    demand, so a cold tundra with little rain is not "dry"), the ``quantile`` fraction of sites with known
    climate (from ``mat``/``map`` coordinates or the data, see `kgml.data.regions.site_climate`). Sites of
    unknown climate stay in-distribution.
    """
    if by not in _CLIMATE_AXES:
        raise ValueError(f"by must be warm, cold, dry, wet, arid or humid, got {by!r}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    dim = _unit_dim(ds)
    units = ds[dim].values.astype(str)
    variable, sign = _CLIMATE_AXES[by]
    if variable == "aridity_index":
        value = site_aridity(ds, dim)[0]
    else:
        value = site_climate(ds, dim)[0 if variable == "mat_degC" else 1]
    known = np.isfinite(value)
    if known.sum() < 2:
        raise ValueError(f"climate of fewer than 2 sites is known; cannot split by {by!r}")
    n_out = max(1, int(round(quantile * known.sum())))
    key = np.where(known, -sign * np.where(known, value, 0.0), np.inf)  # extreme first, unknown last
    order = np.argsort(key, kind="stable")
    held = sorted(units[order[:n_out]].tolist())
    threshold = float(value[order[n_out - 1]])
    rest = sorted(set(units.tolist()) - set(held))
    val, test, train = _split_off(rest, [val_fraction, test_fraction], np.random.default_rng(seed))
    return Split(f"climate_{by}{quantile:g}_seed{seed}", "climate_extrapolation", seed, dim, Part(train), Part(val),
                 Part(test), Part(held), {"by": by, "quantile": quantile, "threshold": threshold,
                                          "variable": variable})


def _target_variable(ds: xr.Dataset, target: str) -> str:
    for name in (f"{target}_monthly", target, f"{target}_annual"):
        if name in ds.data_vars:
            return name
    raise ValueError(f"anomalous_year_out: the dataset has no observed {target!r} "
                     f"(looked for {target}_monthly, {target}, {target}_annual)")


def _annual_table(da: xr.DataArray, dim: str, how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(years, value[unit, year], complete fraction[unit, year]) of a daily or monthly series: annual mean
    (``how="mean"``) or sum (``"sum"``) over the year's steps, and the fraction of its steps that are finite."""
    axis = next(a for a in ("time", "month") if a in da.dims)
    step_years = _step_years(da.to_dataset(name="_v"), axis)
    years = np.unique(step_years)
    x = da.transpose(dim, axis).values.astype(np.float64)
    value = np.full((x.shape[0], len(years)), np.nan)
    frac = np.zeros_like(value)
    for j, y in enumerate(years):
        cols = x[:, step_years == y]
        n_steps = 12 if axis == "month" else (366 if calendar.isleap(int(y)) else 365)
        finite = np.isfinite(cols)
        frac[:, j] = finite.sum(1) / n_steps
        with np.errstate(invalid="ignore"):
            mean = np.where(finite.any(1), np.nansum(cols, 1) / np.maximum(finite.sum(1), 1), np.nan)
        value[:, j] = mean * (n_steps if how == "sum" else 1.0)
    return years, value, frac


def anomalous_year_out(
    ds: xr.Dataset,
    *,
    by: str = "dry",
    target: str = "nee",
    min_years: int = 3,
    min_observed: float = 0.75,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> Split:
    """Hold out each site's most anomalous year, training on its other years (extreme-year extrapolation).

    ``by="dry"``: the year of the largest relative precipitation deficit, min over years of
    (P_y − P̄)/P̄ with P_y the annual precipitation (mm yr-1, the daily ``precip`` driver summed);
    ``by="hot"``: the year of the largest positive air-temperature anomaly, max of T_y − T̄ (°C, annual mean
    of ``tair``). Means are over the site's *eligible* years: years whose drivers are complete (≥ 360 days)
    and whose ``target`` is observed on ≥ ``min_observed`` of the year's steps (months or days); a site with
    fewer than ``min_years`` eligible years is never tested (it trains on all its years).

    A seeded ``val_fraction`` of all sites is ``val`` (all years; early stopping) and never tested; ``test``
    is every other eligible site with ``unit_years`` = its anomalous year; ``train`` is every non-val site with
    its other years. The test year's drivers stay in the data (they are known when the year is predicted);
    its observations are masked in every part but ``test`` (`Split.select`).
    """
    if by not in ("dry", "hot"):
        raise ValueError(f"anomalous_year_out: by must be 'dry' or 'hot', got {by!r}")
    dim = _unit_dim(ds)
    driver = "precip" if by == "dry" else "tair"
    if driver not in ds.data_vars or "time" not in ds[driver].dims:
        raise ValueError(f"anomalous_year_out: the dataset has no daily {driver!r} driver")
    units = ds[dim].values.astype(str)
    all_years = _years_of(ds)
    d_years, d_value, d_frac = _annual_table(ds[driver], dim, "sum" if by == "dry" else "mean")
    t_years, _, t_frac = _annual_table(ds[_target_variable(ds, target)], dim, "mean")
    observed = np.zeros_like(d_frac, bool)
    for j, y in enumerate(d_years):
        k = np.searchsorted(t_years, y)
        if k < len(t_years) and t_years[k] == y:
            observed[:, j] = t_frac[:, k] >= min_observed
    eligible = observed & (d_frac >= 360 / 366) & np.isfinite(d_value)
    rng = np.random.default_rng(seed)
    val, rest = _split_off(sorted(units.tolist()), [val_fraction], rng)
    anomalous, anomaly, held_val = {}, {}, set(val)
    for i, u in enumerate(units):
        ok = eligible[i]
        if u in held_val or ok.sum() < min_years:
            continue
        v = d_value[i, ok]
        ys = d_years[ok]
        mean = v.mean()
        score = (v - mean) / mean if by == "dry" else v - mean
        k = int(np.argmin(score) if by == "dry" else np.argmax(score))  # first extreme year on ties
        anomalous[u] = int(ys[k])
        anomaly[u] = float(score[k])
    if not anomalous:
        raise ValueError(f"anomalous_year_out: no site has {min_years} years with complete drivers and observed "
                         f"{target}")
    test = Part(sorted(anomalous), unit_years={u: (y,) for u, y in anomalous.items()})
    train = Part(rest, unit_years={u: [y for y in all_years if y != anomalous.get(u)] for u in rest})
    values = np.asarray(list(anomaly.values()))
    info = {"by": by, "driver": driver, "n_tested": len(anomalous),
            "anomaly": "relative precipitation deficit (P_y - P_mean)/P_mean" if by == "dry"
            else "air-temperature anomaly T_y - T_mean (degC)",
            "anomaly_median": round(float(np.median(values)), 4), "min_years": min_years}
    return Split(f"anomalous_{by}_year_seed{seed}", "anomalous_year_out", seed, dim, train, Part(val), test,
                 Part(), info)


def years_kfold_within_sites(
    ds: xr.Dataset,
    k: int = 5,
    *,
    target: str = "nee",
    min_years: int = 3,
    min_observed: float = 0.75,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> list[Split]:
    """Known sites, unseen years: ``k`` folds in each of which every tested site holds out a group of its own
    years, training on its other years and on every other training site.

    A site's *eligible* years are those whose ``target`` is observed on ≥ ``min_observed`` of the year's steps;
    a site with fewer than ``min_years`` of them is never tested (it trains on all its years). Each tested
    site's eligible years, in a seeded random order, are dealt round-robin into the ``k`` groups, so over the
    folds every eligible year of every tested site is predicted exactly once, by models that never saw it (a
    site with fewer eligible years than ``k`` is tested in that many folds). A seeded ``val_fraction`` of all
    sites is ``val`` (all years; early stopping) in every fold and never tested. The held-out years' drivers
    stay in the data; their observations are masked in every part but ``test`` (`Split.select`).

    Pooled over the folds this gives each tested site one out-of-sample series of its eligible years, whose
    anomalies and inter-annual variability can be scored like those of a held-out site (`kgml.evaluation.
    decompose`): the skill that the drivers carry when the site itself is known — an empirical reference for
    what the same models can reach at sites they have never seen.
    """
    if k < 2:
        raise ValueError(f"years_kfold_within_sites: k must be at least 2, got {k}")
    dim = _unit_dim(ds)
    units = ds[dim].values.astype(str)
    all_years = _years_of(ds)
    t_years, _, t_frac = _annual_table(ds[_target_variable(ds, target)], dim, "mean")
    rng = np.random.default_rng(seed)
    val, rest = _split_off(sorted(units.tolist()), [val_fraction], rng)
    held_val = set(val)
    groups: dict[str, list[list[int]]] = {}
    for i, u in enumerate(units):
        ys = [int(y) for y in t_years[t_frac[i] >= min_observed]]
        if u in held_val or len(ys) < min_years:
            continue
        order = np.random.default_rng([seed, zlib.crc32(str(u).encode())]).permutation(len(ys))
        groups[str(u)] = [sorted(ys[j] for j in order[g::k]) for g in range(k)]
    if not groups:
        raise ValueError(f"years_kfold_within_sites: no site has {min_years} years with observed {target}")
    out = []
    for g in range(k):
        tested = {u: gr[g] for u, gr in groups.items() if gr[g]}
        test = Part(sorted(tested), unit_years=tested)
        train = Part(rest, unit_years={u: [y for y in all_years if y not in set(tested.get(u, ()))] for u in rest})
        info = {"fold": g, "k": k, "n_tested": len(tested), "n_test_years": int(sum(map(len, tested.values()))),
                "min_years": min_years, "min_observed": min_observed}
        out.append(Split(f"years_kfold{k}_fold{g}_seed{seed}", "years_kfold_within_sites", seed, dim, train,
                         Part(val), test, Part(), info))
    return out
