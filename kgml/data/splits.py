"""Train/validation/test splits that hold out whole sites, regions or years — never random days.

Every `Split` has four parts: ``train``, ``val`` and ``test`` (in-distribution: same sites/regions/climate as
training) and ``ood`` (out-of-distribution: the held-out region, future years, the warmest sites, ...). A part
is a set of units (site or county IDs) and optionally a set of years. Splits are deterministic from a seed and
round-trip through JSON (`save_splits` / `load_splits`). No (unit, year) ever falls in two parts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.data.regions import _labels, _unit_dim, site_climate
from kgml.io import write_text_atomic

__all__ = [
    "Part",
    "Split",
    "climate_extrapolation",
    "kfold_by_site",
    "leave_one_site_out",
    "leave_region_out",
    "load_splits",
    "restrict_years",
    "save_splits",
    "temporal_holdout",
]

_FORMAT_VERSION = 1
PART_NAMES = ("train", "val", "test", "ood")


@dataclass(frozen=True)
class Part:
    """Units (site/county IDs) and optionally the years they contribute (None = all years)."""

    units: tuple[str, ...] = ()
    years: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "units", tuple(sorted(str(u) for u in self.units)))
        if self.years is not None:
            object.__setattr__(self, "years", tuple(sorted(int(y) for y in self.years)))

    def __len__(self) -> int:
        return len(self.units)

    def to_dict(self) -> dict:
        return {"units": list(self.units), "years": None if self.years is None else list(self.years)}

    @classmethod
    def from_dict(cls, d: dict) -> Part:
        return cls(tuple(d.get("units", ())), None if d.get("years") is None else tuple(d["years"]))


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
                ya, yb = parts[a].years, parts[b].years
                if ya is None or yb is None or set(ya) & set(yb):
                    raise ValueError(
                        f"split {self.name!r}: units {sorted(shared)[:5]} are in both {a!r} and {b!r} for the same years"
                    )

    def part(self, name: str) -> Part:
        if name not in PART_NAMES:
            raise KeyError(f"unknown part {name!r}; parts are {PART_NAMES}")
        return getattr(self, name)

    def select(self, ds: xr.Dataset, part: str) -> xr.Dataset:
        """The slice of ``ds`` belonging to ``part``; ``attrs["split_part"]`` records it (for the normaliser).

        A part limited to some years is restricted on *every* time axis the dataset has (daily ``time``,
        annual ``year``, monthly ``month`` codes), so that no value of another year reaches a training part
        (annual yields and monthly fluxes of test years must not enter means, scalers or losses)."""
        p = self.part(part)
        dim = self.dim
        present = set(ds[dim].values.astype(str))
        missing = [u for u in p.units if u not in present]
        if missing:
            raise KeyError(f"split {self.name!r} part {part!r}: units not in dataset: {missing[:5]}")
        out = ds.sel({dim: list(p.units)})
        if p.years is not None:
            out = restrict_years(out, p.years)
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


def climate_extrapolation(
    ds: xr.Dataset,
    *,
    by: str = "warm",
    quantile: float = 0.25,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Hold out the sites at one climate extreme as ``ood``: ``by`` in warm/cold (MAT) or dry/wet (MAP), the
    ``quantile`` fraction of sites with known climate (from ``mat``/``map`` coordinates or the data, see
    `kgml.data.regions.site_climate`). Sites of unknown climate stay in-distribution.
    """
    if by not in ("warm", "cold", "dry", "wet"):
        raise ValueError(f"by must be warm, cold, dry or wet, got {by!r}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    dim = _unit_dim(ds)
    units = ds[dim].values.astype(str)
    mat, map_mm = site_climate(ds, dim)
    value = mat if by in ("warm", "cold") else map_mm
    known = np.isfinite(value)
    if known.sum() < 2:
        raise ValueError(f"climate of fewer than 2 sites is known; cannot split by {by!r}")
    sign = 1.0 if by in ("warm", "wet") else -1.0
    n_out = max(1, int(round(quantile * known.sum())))
    key = np.where(known, -sign * np.where(known, value, 0.0), np.inf)  # extreme first, unknown last
    order = np.argsort(key, kind="stable")
    held = sorted(units[order[:n_out]].tolist())
    threshold = float(value[order[n_out - 1]])
    rest = sorted(set(units.tolist()) - set(held))
    val, test, train = _split_off(rest, [val_fraction, test_fraction], np.random.default_rng(seed))
    return Split(f"climate_{by}{quantile:g}_seed{seed}", "climate_extrapolation", seed, dim, Part(train), Part(val),
                 Part(test), Part(held), {"by": by, "quantile": quantile, "threshold": threshold,
                                          "variable": "mat_degC" if by in ("warm", "cold") else "map_mm_yr"})
