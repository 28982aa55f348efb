"""Validation of the one clean schema every reader hands to the rest of kgml.

`validate_dataset` checks dimension layout, ``units`` attributes against the registry (kgml.variables),
valid ranges with unit-mistake hints, a unique increasing time axis and that no variable is all missing.
Every failure is a `DataValidationError` that names the file (source), the variable and the problem.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterable

import numpy as np
import xarray as xr

from kgml.variables import VARIABLES, normalise_units
from process_models.constants import PA_PER_HPA, PA_PER_KPA
from process_models.forcing import saturation_vapour_pressure

__all__ = [
    "DataValidationError",
    "DataWarning",
    "LAYOUTS",
    "register_layout",
    "validate_dataset",
    "validate_variable",
]

#: Allowed dimension layouts (name → dims in canonical order). Users may add their own with register_layout.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "site_time": ("site", "time"),
    "site_year": ("site", "year"),
    "county_year": ("county", "year"),
    "state_year": ("state", "year"),
    "grid": ("lat", "lon", "time"),
}

_INDEX_DIMS = ("time", "year")


class DataValidationError(ValueError):
    """A dataset or file breaks the schema. ``source``, ``variable`` and ``problem`` are kept as attributes."""

    def __init__(self, source: object, variable: str | None, problem: str):
        self.source = str(source) if source is not None else "<dataset>"
        self.variable = variable
        self.problem = problem
        where = f"variable {variable!r}: " if variable else ""
        super().__init__(f"{self.source}: {where}{problem}")


class DataWarning(UserWarning):
    """Something looks wrong but not certainly (a possible unit mistake, a skipped file)."""


def skip_or_raise(err: DataValidationError, errors: str, skipped: list[str], what: str, label: str) -> None:
    """The folder readers' policy for one bad file: re-raise it (``errors="raise"``), or warn and record
    ``"label: problem"`` in ``skipped`` so that the other files still load. Call it from an ``except``."""
    if errors == "raise":
        raise err
    warnings.warn(f"{what} skipped: {err}", DataWarning, stacklevel=3)
    skipped.append(f"{label}: {err.problem}")


def check_field_counts(source: object, raw: bytes, sep: str = ",") -> None:
    """Every non-empty line of a delimited table (``raw`` bytes, header first) has as many fields as the
    header. pandas pads a short row with NaN and shifts nothing back, so a lost separator or a row cut in two
    would otherwise load as wrong values in the wrong columns. Quoted fields are parsed with `csv`; plain
    tables are counted with numpy (fast for millions of rows)."""
    if not raw:
        return
    if b'"' in raw:
        rows = csv.reader(io.StringIO(raw.decode("utf-8", errors="replace")), delimiter=sep)
        counts = np.array([len(r) for r in rows if r], dtype=np.int64)
        lines = None
    else:
        buf = np.frombuffer(raw, dtype=np.uint8)
        ends = np.flatnonzero(buf == ord("\n"))
        if raw[-1:] != b"\n":
            ends = np.append(ends, len(buf))
        starts = np.concatenate([[0], ends[:-1] + 1])
        seps = np.cumsum(np.concatenate([[0], (buf == ord(sep)).astype(np.int64)]))
        counts = seps[ends] - seps[starts] + 1
        stripped = np.array([raw[a:b].strip() != b"" for a, b in zip(starts, ends, strict=True)]) if (
            ends - starts <= 1).any() else np.ones(counts.size, bool)
        counts, lines = counts[stripped], np.flatnonzero(stripped) + 1
    if counts.size < 2:
        return
    bad = np.flatnonzero(counts[1:] != counts[0]) + 1
    if bad.size:
        k = int(bad[0])
        line = int(lines[k]) if lines is not None else k + 1
        raise DataValidationError(source, None, f"{bad.size} row(s) with another number of fields than the header "
                                  f"(line {line} has {int(counts[k])}, the header {int(counts[0])}): a lost "
                                  "separator or a broken row would shift values into other columns")


def register_layout(name: str, dims: Iterable[str]) -> None:
    """Allow a new dimension layout (e.g. ``register_layout("plot_date", ("plot", "time"))``)."""
    LAYOUTS[name] = tuple(dims)


def _layout_of(ds: xr.Dataset, source: str, layout: str | None) -> tuple[str, ...]:
    data_dims = {d for v in ds.data_vars.values() for d in v.dims}
    if layout is not None:
        if layout not in LAYOUTS:
            raise DataValidationError(source, None, f"unknown layout {layout!r}; known: {sorted(LAYOUTS)}")
        candidates = [LAYOUTS[layout]]
    else:
        candidates = sorted(LAYOUTS.values(), key=len)
    for dims in candidates:
        if data_dims <= set(dims) and all(d in ds.dims for d in dims):
            return dims
    wanted = " | ".join(",".join(d) for d in candidates)
    raise DataValidationError(
        source, None, f"dimensions {sorted(data_dims) or sorted(ds.dims)} match no allowed layout ({wanted})"
    )


def _example_location(da: xr.DataArray, mask: np.ndarray) -> str:
    idx = np.argwhere(mask)[0]
    parts = []
    for dim, i in zip(da.dims, idx, strict=True):
        label = da[dim].values[i] if dim in da.coords else i
        if isinstance(label, np.datetime64):
            label = np.datetime_as_string(label, unit="D")
        parts.append(f"{dim}={label}")
    return ", ".join(parts)


def _check_index(ds: xr.Dataset, dim: str, source: str) -> None:
    if dim not in ds.coords:
        raise DataValidationError(source, dim, f"dimension {dim!r} has no coordinate values")
    values = ds[dim].values
    if dim == "time" and not np.issubdtype(values.dtype, np.datetime64):
        raise DataValidationError(source, "time", f"time must be datetime64, got {values.dtype}")
    if dim == "year" and not np.issubdtype(values.dtype, np.integer):
        raise DataValidationError(source, "year", f"year must be integer, got {values.dtype}")
    if values.size > 1:
        steps = np.diff(values)
        zero = np.zeros((), dtype=steps.dtype)
        if np.any(steps == zero):
            dup = values[1:][steps == zero][0]
            raise DataValidationError(source, dim, f"duplicate {dim} values (first: {_fmt(dup)})")
        if np.any(steps < zero):
            bad = values[1:][steps < zero][0]
            raise DataValidationError(source, dim, f"{dim} is not monotonic increasing (goes back at {_fmt(bad)})")


def _fmt(value) -> str:
    if isinstance(value, np.datetime64):
        return np.datetime_as_string(value, unit="m")
    return str(value)


def validate_dataset(
    ds: xr.Dataset,
    source: object | None = None,
    *,
    layout: str | None = None,
    require: Iterable[str] = (),
    allow_unregistered: bool = True,
    warn_suspicious: bool = True,
) -> xr.Dataset:
    """Check ``ds`` against the kgml schema and return it unchanged; raise `DataValidationError` otherwise.

    Checks, in order:

    * layout: every data variable's dims are a subset of one allowed layout (site×time, county×year,
      lat×lon×time, ...) whose dims all exist; empty dimensions (no sites, no times) are errors;
    * index: ``time`` is datetime64 (``year`` integer), unique and increasing; ``site`` labels unique;
    * units: every data variable has a ``units`` attribute; registered variables (kgml.variables) must be
      in the canonical units;
    * values: a registered variable's finite values lie in [valid_min, valid_max] (the error names the count,
      an example site/time, and the likely unit mistake); a *certain* unit mistake (e.g. ``swc`` as a 0–1
      fraction) is an error even in range; possible ones warn (`DataWarning`) when ``warn_suspicious``;
    * no variable with a time/year dimension is all-NaN; ``require`` lists variables that must be present;
    * coordinates ``lat``/``lon`` (if present) lie in [-90, 90] / [-180, 360].

    ``source`` names the file or dataset in messages (default: ``ds.attrs["source"]``). Unregistered
    variables are allowed (with units) unless ``allow_unregistered=False``.
    """
    src = str(source if source is not None else ds.attrs.get("source", "<dataset>"))
    for name in require:
        if name not in ds.data_vars:
            raise DataValidationError(src, name, f"required variable missing (present: {sorted(ds.data_vars)})")
    if not ds.data_vars:
        raise DataValidationError(src, None, "dataset has no data variables")
    dims = _layout_of(ds, src, layout)
    for dim in dims:
        if ds.sizes[dim] == 0:
            raise DataValidationError(src, dim, f"dimension {dim!r} is empty")
    for dim in dims:
        if dim in _INDEX_DIMS:
            _check_index(ds, dim, src)
    for label_dim in ("site", "county", "state"):
        if label_dim in ds.dims and label_dim in ds.coords:  # a label coordinate on another dim may repeat
            labels = ds[label_dim].values
            uniq, counts = np.unique(labels, return_counts=True)
            if np.any(counts > 1):
                raise DataValidationError(src, label_dim, f"duplicate {label_dim} labels: {list(uniq[counts > 1][:5])}")
    for coord, (lo, hi) in {"lat": (-90.0, 90.0), "lon": (-180.0, 360.0)}.items():
        if coord in ds.coords:
            vals = np.asarray(ds[coord].values, dtype=float)
            bad = np.isfinite(vals) & ((vals < lo) | (vals > hi))
            if np.any(bad):
                raise DataValidationError(src, coord, f"coordinate outside [{lo}, {hi}]: {vals[bad][:3].tolist()}")

    for name in ds.data_vars:
        validate_variable(
            ds, str(name), src, allow_unregistered=allow_unregistered, warn_suspicious=warn_suspicious
        )
    check_vpd_against_tair(ds, src)
    return ds


#: VPD = e°(T) (1 − RH) ≤ e°(T). A record of at least `VPD_MIN_PAIRS` values whose VPD never exceeds this
#: fraction of e°(tair) has no day with RH below 90 %: it is VPD in kPa labelled hPa (10× too small).
VPD_KPA_MAX_RATIO = 0.1
VPD_MIN_PAIRS = 30


def check_vpd_against_tair(ds: xr.Dataset, source: object = None) -> None:
    """VPD in kPa given as hPa, caught through the saturation vapour pressure at the air temperature (FAO-56
    eq. 11, `process_models.forcing.saturation_vapour_pressure`) rather than by a fixed threshold, so that it
    is found at any site, not only where VPD stays below 1: raises `DataValidationError`."""
    if "vpd" not in ds.data_vars or "tair" not in ds.data_vars:
        return

    vpd, tair = xr.broadcast(ds["vpd"], ds["tair"])
    v, t = np.asarray(vpd.values, float).ravel(), np.asarray(tair.values, float).ravel()
    ok = np.isfinite(v) & np.isfinite(t)
    if ok.sum() < VPD_MIN_PAIRS:
        return
    es_hpa = np.asarray(saturation_vapour_pressure(t[ok])) * (PA_PER_KPA / PA_PER_HPA)
    ratio = float(np.max(v[ok] / es_hpa))
    if ratio < VPD_KPA_MAX_RATIO:
        raise DataValidationError(
            source if source is not None else ds.attrs.get("source"), "vpd",
            f"vpd never exceeds {ratio:.1%} of the saturation vapour pressure at tair (no day drier than "
            f"RH {1 - ratio:.0%}): it looks like kPa; convert with convert_units(x, 'kPa', 'hPa') (× 10)")


def validate_variable(
    ds: xr.Dataset,
    name: str,
    source: object | None = None,
    *,
    allow_unregistered: bool = True,
    warn_suspicious: bool = True,
) -> None:
    """Check one data variable of ``ds`` (units, range, unit mistakes, not all-NaN); raise `DataValidationError`."""
    src = str(source if source is not None else ds.attrs.get("source", "<dataset>"))
    da = ds[name]
    if "units" not in da.attrs:
        raise DataValidationError(src, name, "no 'units' attribute")
    var = VARIABLES.get(name)
    if var is None:
        if not allow_unregistered:
            raise DataValidationError(src, name, "not a registered variable (kgml.variables)")
        return
    if normalise_units(da.attrs["units"]) != normalise_units(var.units):
        raise DataValidationError(src, name, f"units {da.attrs['units']!r} but the registry expects {var.units!r}")
    values = np.asarray(da.values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        if any(d in da.dims for d in _INDEX_DIMS):
            raise DataValidationError(src, name, "all values are missing (NaN / -9999)")
        return
    mask = var.out_of_range(values)
    if np.any(mask):
        hint = var.diagnose(finite)
        raise DataValidationError(
            src,
            name,
            f"{int(mask.sum())} value(s) outside the valid range [{var.valid_min}, {var.valid_max}] {var.units} "
            f"(found min {values[~np.isnan(values)].min():.4g}, max {values[~np.isnan(values)].max():.4g}; first at "
            f"{_example_location(da, mask)})"
            + (f". Likely unit mistake: {hint}" if hint else ""),
        )
    certain = var.diagnose(finite, certain_only=True)
    if certain:
        raise DataValidationError(src, name, f"values in range but implausible: {certain}")
    if warn_suspicious:
        edges = np.array([var.valid_min, var.valid_max])
        for mistake in var.mistakes:
            # hints that also fire on the range edges are advice for range errors, not in-range warnings
            if not mistake.certain and mistake.applies(finite) and not mistake.applies(edges):
                warnings.warn(f"{src}: variable {name!r}: {mistake.advice}", DataWarning, stacklevel=3)
                break
