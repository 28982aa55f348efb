"""``kgml data summary``: find every dataset kgml can read under a data directory and describe it.

A *dataset kind* knows how to recognise a folder (``detect``) and read it into one or more datasets
(``load``). Tower kinds are built in; the soil-respiration, yield, station, DSSAT and gridded readers are
looked up lazily by module and function name, so a missing or failing reader is reported, never fatal.
Add a kind with `register_dataset_kind`. `load_folder` gives the datasets themselves (tests, benchmarks).
"""

from __future__ import annotations

import importlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import files_of, head, site_from_name
from kgml.data.schema import DataValidationError, skip_or_raise
from kgml.data.sitemeta import read_site_metadata, site_table_files
from kgml.data.towers import (
    combine_sites,
    parse_fluxnet_filename,
    read_bigleaf_csv,
    read_fluxnet_dir,
    read_fluxnet_file,
    read_oneflux_qca_dir,
    read_reddyproc_nc,
    read_reddyproc_table,
)
from kgml.data.yields import read_county_locations
from kgml.variables import VARIABLES

__all__ = [
    "DatasetKind",
    "describe",
    "find_kind",
    "format_summary",
    "load_folder",
    "register_dataset_kind",
    "summarise",
    "summarise_folder",
]

Loaded = list[tuple[str, xr.Dataset]]


@dataclass(frozen=True)
class DatasetKind:
    """``detect(folder) -> bool``; ``load(folder) -> [(label, Dataset), ...]``.

    A ``cacheable`` kind's ``load`` also accepts ``cache=`` (False, True or a cache folder), passed on to readers
    that keep their processed result as netCDF (`kgml.data.cache`); a ``single_site`` kind's ``load`` accepts
    ``site=`` for files whose name does not carry their site.
    """

    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., Loaded]
    cacheable: bool = False
    single_site: bool = False  #: ``load`` accepts ``site=`` (``--site``) for files that do not name their site


_KINDS: list[DatasetKind] = []


def register_dataset_kind(kind: DatasetKind, *, first: bool = False) -> None:
    """Add a dataset kind; kinds are tried in order and the first whose ``detect`` matches reads the folder."""
    _KINDS.insert(0, kind) if first else _KINDS.append(kind)


def _call(module: str, function: str, *args, **kwargs):
    fn = getattr(importlib.import_module(module), function)
    return fn(*args, **kwargs)


# Every kind below recognises its files by content (kgml.data.formats), whatever they are called; file names are
# used only as labels and for what the content cannot say (a tower's site code, a crop, a SoyFACE year).


def _files(*formats: str) -> Callable[[Path], bool]:
    return lambda folder: bool(files_of(folder, *formats))


def _sub_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- tower kinds --------------------------------------------------------------------------------------


def _fluxnet_files(folder: Path) -> list[Path]:
    """FLUXNET tables (by content) that are also named in the FLUXNET / ONEFlux / ICOS convention."""
    return [p for p in files_of(folder, "fluxnet") if parse_fluxnet_filename(p) is not None]


def _is_fluxnet_dir(folder: Path) -> bool:
    tables = files_of(folder, "fluxnet")
    return bool(tables) and all(parse_fluxnet_filename(p) is not None for p in tables)


def _load_fluxnet(folder: Path, cache=False, site=None) -> Loaded:
    if site is not None:
        named = sorted({parse_fluxnet_filename(p).site for p in _fluxnet_files(folder)})
        if named != [site]:
            raise DataValidationError(folder, "site", f"the file names say site(s) {named[:5]} but --site {site} was given")
    resolutions = sorted({parse_fluxnet_filename(p).resolution for p in _fluxnet_files(folder)})
    return [(f"{res}", read_fluxnet_dir(folder, resolution=res, invalid="drop", cache=cache)) for res in resolutions]


def fluxnet_table_files(folder: Path) -> list[Path]:
    """Tables with FLUXNET columns whatever they are called: a header starting with ``TIMESTAMP`` that names
    at least one standard FLUXNET variable (kgml.variables), as CSV or gzipped CSV (`kgml.data.formats`)."""
    return files_of(folder, "fluxnet")


def _is_fluxnet_table_dir(folder: Path) -> bool:
    return bool(fluxnet_table_files(folder))


def _load_fluxnet_tables(folder: Path, site: str | None = None) -> Loaded:
    """Each table read by `kgml.data.towers.read_fluxnet_file`: the site comes from the file name when it
    holds a site code in the FLUXNET / AmeriFlux / ICOS convention (``US-Ne1``, anywhere in the name), else from
    ``site`` (``--site``), else from the folder's site table when it lists one site; else that file's error asks
    for it. A site code in the name that differs from ``site`` is an error. Unreadable tables are skipped
    (``skipped_files``), the others kept."""
    tables = site_table_files(folder)
    only_site = None
    if len(tables) == 1:
        listed = list(read_site_metadata(tables[0]).index)
        only_site = listed[0] if len(listed) == 1 else None
    parts, skipped = [], []
    for p in fluxnet_table_files(folder):
        named = site_from_name(p)
        if named and site and named != site:
            raise DataValidationError(p, "site", f"the file name says site {named} but --site {site} was given")
        chosen = named or site or only_site
        try:
            parts.append(read_fluxnet_file(p, site=chosen, site_metadata="auto", invalid="drop"))
        except DataValidationError as err:
            skip_or_raise(err, "warn", skipped, f"tower table {p.name}", p.name)
    if not parts:
        raise DataValidationError(folder, None, f"no FLUXNET-column table could be read ({'; '.join(skipped[:3])})")
    ds = combine_sites(parts, source=folder)
    ds.attrs["skipped_files"] = "\n".join(skipped)
    return [(str(parts[0].attrs.get("time_resolution", "tables")), ds)]


def _qca_folders(folder: Path) -> list[Path]:
    """The folder itself when it holds qca_ustar files (by content), else its sub-folders that do."""
    if files_of(folder, "qca_ustar"):
        return [folder]
    return [p for p in _sub_folders(folder) if files_of(p, "qca_ustar")]


def _load_qca(folder: Path) -> Loaded:
    out = []
    for site_dir in _qca_folders(folder):
        ds = read_oneflux_qca_dir(site_dir, invalid="drop")
        label = site_dir.name if site_dir != folder else ", ".join(map(str, ds["site"].values))
        out.append((label, ds))
    return out


def _meta_table(folder: Path):
    """Site coordinates for example data without their own table: the site tables (by content) of the folder's
    siblings."""

    tables = [read_site_metadata(p) for sib in _sub_folders(folder.parent) for p in site_table_files(sib)]
    if not tables:
        return None
    merged = pd.concat(tables)
    return merged[~merged.index.duplicated()]


def _load_reddyproc(folder: Path) -> Loaded:
    meta = _meta_table(folder)
    out = []
    # REddyProc's own tab-separated tables first, then DateTime CSVs, then the netCDF (each by name)
    for p in sorted(files_of(folder, "reddyproc"), key=lambda p: (head(p).sep != "\t", p.name)):
        out.append((p.name, read_reddyproc_table(p, site_metadata=meta, invalid="drop")))
    for p in files_of(folder, "reddyproc_nc"):
        out.append((p.name, read_reddyproc_nc(p, site_metadata=meta, invalid="drop")))
    return out


def _is_bigleaf(folder: Path) -> bool:
    return bool(files_of(folder, "bigleaf"))


def _load_bigleaf(folder: Path) -> Loaded:
    meta = _meta_table(folder)
    parts = [read_bigleaf_csv(p, site_metadata=meta, invalid="drop") for p in files_of(folder, "bigleaf")]
    return [("HH", combine_sites(parts, source=folder))]


# --- kinds read by other modules (looked up lazily) ----------------------------------------------------


def _is_cosore(folder: Path) -> bool:
    return bool(_call("kgml.data.soil_respiration", "is_cosore_root", folder))


def _load_cosore(folder: Path, cache=False) -> Loaded:
    return [("daily", _call("kgml.data.soil_respiration", "read_cosore", folder, progress=True, cache=cache))]


def _load_srdb(folder: Path) -> Loaded:
    return [(p.name, _call("kgml.data.soil_respiration", "read_srdb", p)) for p in files_of(folder, "srdb")]


def _load_agridat(folder: Path) -> Loaded:
    out = []
    for p in files_of(folder, "nass_state"):
        out.append((p.name, _call("kgml.data.yields", "read_nass_state", p)))  # crop from the name (nass.corn.txt)
    for p in files_of(folder, "thompson"):
        out.append((p.name, _call("kgml.data.yields", "read_thompson", p)))
    for p in files_of(folder, "wallace"):
        out.append((p.name, _call("kgml.data.yields", "read_wallace_iowa", p)))
    return out


def _load_you2017(folder: Path) -> Loaded:
    return [("soybean county", _call("kgml.data.yields", "read_you2017_soybean", folder))]


def _load_khaki(folder: Path) -> Loaded:
    return [(p.name, _call("kgml.data.yields", "read_khaki_corn", p)) for p in files_of(folder, "khaki")]


def _dssat_folders(folder: Path, fmt: str) -> list[Path]:
    return [p for p in [folder, *_sub_folders(folder)] if files_of(p, fmt)]


def _is_dssat(folder: Path) -> bool:
    return bool(_dssat_folders(folder, "dssat_experiment") or _dssat_folders(folder, "dssat_weather"))


def _load_dssat(folder: Path) -> Loaded:
    out = []
    for label, fmt, reader in (("experiments", "dssat_experiment", "read_dssat_experiments"),
                               ("weather", "dssat_weather", "read_dssat_weather")):
        found = _dssat_folders(folder, fmt)
        for sub in found:
            name = label if len(found) == 1 else f"{label} ({sub.name})"
            out.append((name, _call("kgml.data.dssat", reader, sub)))
    return out


def _load_apsim(folder: Path, site: str | None = None) -> Loaded:
    return [(p.name, _call("kgml.data.stations", "read_apsim_met", p, site=site))
            for p in _call("kgml.data.stations", "apsim_met_files", folder)]


def _load_biocro_weather(folder: Path, site: str | None = None) -> Loaded:
    stations = importlib.import_module("kgml.data.stations")
    if folder.name == stations.CHAMPAIGN_DATASET and site is None:  # the project's Champaign station (its location)
        return [("hourly → daily", stations.read_champaign_il(folder.parent))]
    out = []
    for p in stations.biocro_hourly_files(folder):
        if site is None:
            raise DataValidationError(p, "site", "hourly weather without a station name or location: pass --site")
        out.append((p.name, stations.read_biocro_hourly_weather(p, site=site, lat=np.nan, lon=np.nan)))
    return out


def _county_locations(folder: Path):
    """County centroids for county datasets without their own: every county centroid table (by content) beside
    ``folder``."""

    tables = [read_county_locations(p) for sib in _sub_folders(folder.parent) for p in files_of(sib, "county_locations")]
    if not tables:
        return None
    merged = pd.concat(tables)
    return merged[~merged.index.duplicated()]


def _load_soyface(folder: Path) -> Loaded:
    ds = _call("kgml.data.soyface", "read_soyface_biomass", folder, locations=_county_locations(folder))
    return [("biomass by organ", ds)]


def _load_nldas_county(folder: Path) -> Loaded:
    ds = _call("kgml.data.nldas_county", "read_nldas_county", folder, locations=_county_locations(folder))
    return [("weather + soil + GPP by crop", ds)]


def _load_netcdf_grids(folder: Path) -> Loaded:
    """One dataset per product: monthly grids (GHCN-CAMS, BCSD: the time step decides, not the name) file by file;
    other files of one grid and time axis (one variable per file, as WFDE5) are opened together so that derived
    variables (vpd from specific humidity and air temperature) exist; files that do not share the grid are
    described one by one."""
    files = files_of(folder, "netcdf_grid")
    out = []
    for p in list(files):
        if _call("kgml.data.gridded", "is_monthly_grid", p):
            out.append((p.name, _call("kgml.data.gridded", "read_monthly_grid", p)))
            files.remove(p)
    if len(files) > 1:
        try:
            merged = _call("kgml.data.gridded", "read_gridded", files)
            return [*out, (f"{len(files)} files, one grid", merged)]
        except DataValidationError as err:
            if "differs" not in err.problem and "second source" not in err.problem:
                raise
    for p in files:
        out.append((p.name, _call("kgml.data.gridded", "read_gridded", p)))
    return out


for _kind in (
    DatasetKind("FLUXNET / ONEFlux / ICOS tower files", _is_fluxnet_dir, _load_fluxnet, cacheable=True,
                single_site=True),
    DatasetKind("FLUXNET-column daily tables", _is_fluxnet_table_dir, _load_fluxnet_tables, single_site=True),
    DatasetKind("ONEFlux measured NEE (qca_ustar)", lambda f: bool(_qca_folders(f)), _load_qca),
    DatasetKind("REddyProc example tables", _files("reddyproc", "reddyproc_nc"), _load_reddyproc),
    DatasetKind("bigleaf example tables", _is_bigleaf, _load_bigleaf),
    DatasetKind("COSORE chamber soil respiration", _is_cosore, _load_cosore, cacheable=True),
    DatasetKind("SRDB soil respiration database", _files("srdb"), _load_srdb),
    DatasetKind("NASS / agridat yield tables", _files("nass_state", "thompson", "wallace"), _load_agridat),
    DatasetKind("NASS county yields (You et al. 2017)", _files("you2017_yield"), _load_you2017),
    DatasetKind("county corn yield + weekly Daymet", _files("khaki"), _load_khaki),
    DatasetKind("DSSAT experiments and weather", _is_dssat, _load_dssat),
    DatasetKind("APSIM .met weather", _files("apsim_met"), _load_apsim, single_site=True),
    DatasetKind("BioCro hourly weather", _files("biocro_hourly"), _load_biocro_weather, single_site=True),
    DatasetKind("SoyFACE soybean biomass by organ", _files("soyface"), _load_soyface),
    DatasetKind("county NLDAS-2 weather + SLOPE GPP (KGML-DA)", _files("nldas_weather", "slope_gpp"),
                _load_nldas_county),
    DatasetKind("gridded netCDF", _files("netcdf_grid"), _load_netcdf_grids),
):
    register_dataset_kind(_kind)


# --- description --------------------------------------------------------------------------------------


def describe(ds: xr.Dataset) -> dict:
    """Units (site/county/... count), year span, variables with their coverage (fraction of finite values)."""
    unit_dim = next((d for d in ("site", "county", "state", "plot", "record") if d in ds.dims), None)
    if unit_dim is None and {"lat", "lon"} <= set(ds.dims):
        unit_dim = "grid"
        n_units = int(ds.sizes["lat"] * ds.sizes["lon"])
    else:
        n_units = int(ds.sizes[unit_dim]) if unit_dim else 1
    years: list[int] = []
    if "time" in ds.coords and np.issubdtype(ds["time"].dtype, np.datetime64) and ds.sizes.get("time", 0):
        years = sorted(set(ds["time"].dt.year.values.tolist()))
    elif "year" in ds.coords:
        years = sorted({int(y) for y in np.ravel(ds["year"].values) if np.isfinite(y)})
    coverage = _grid_coverage(ds) if unit_dim == "grid" else _coverage(ds, unit_dim if unit_dim in ds.dims else None)
    return {
        "unit_dim": unit_dim,
        "n_units": n_units,
        "units": [str(u) for u in ds[unit_dim].values][:8] if unit_dim in ds.coords else [],
        "years": (years[0], years[-1], len(years)) if years else None,
        "resolution": ds.attrs.get("time_resolution") or ds.attrs.get("resolution", ""),
        "coverage": coverage,
        "skipped": [s for s in str(ds.attrs.get("skipped_files", "")).split("\n") if s],
    }


def _coverage(ds: xr.Dataset, unit_dim: str | None) -> dict[str, float]:
    """Fraction of finite values per variable, counted within each unit's own record (first to last time with
    any finite value), so sites with short records on a long shared time axis do not look sparse."""
    names = [str(n) for n, da in ds.data_vars.items() if np.issubdtype(da.dtype, np.number) and da.size]
    span = None
    if unit_dim and "time" in ds.dims and names:
        dims = (unit_dim, "time")

        usable = [n for n in names if set(ds[n].dims) == set(dims) and n in VARIABLES]
        if usable:
            any_finite = np.zeros((ds.sizes[unit_dim], ds.sizes["time"]), dtype=bool)
            for n in usable:
                any_finite |= np.isfinite(ds[n].transpose(*dims).values)
            first = np.argmax(any_finite, axis=1)
            last = ds.sizes["time"] - 1 - np.argmax(any_finite[:, ::-1], axis=1)
            t = np.arange(ds.sizes["time"])
            span = (t >= first[:, None]) & (t <= last[:, None]) & any_finite.any(axis=1)[:, None]
    out = {}
    for n in names:
        values = ds[n]
        if span is not None and set(values.dims) == {unit_dim, "time"}:
            finite = np.isfinite(values.transpose(unit_dim, "time").values)
            out[n] = float((finite & span).sum() / max(span.sum(), 1))
        else:
            out[n] = float(np.isfinite(values.values).mean())
    return out


def _grid_coverage(ds: xr.Dataset) -> dict[str, float]:
    """Fraction of finite values per variable over the grid cells that hold any data (land-only products
    would otherwise look sparse)."""
    names = [str(n) for n, da in ds.data_vars.items() if np.issubdtype(da.dtype, np.number) and da.size]
    cells = np.zeros((ds.sizes["lat"], ds.sizes["lon"]), dtype=bool)
    for n in names:
        if {"lat", "lon"} <= set(ds[n].dims):
            other = [d for d in ds[n].dims if d not in ("lat", "lon")]
            cells |= np.isfinite(ds[n].transpose("lat", "lon", *other).values).reshape(cells.shape + (-1,)).any(axis=-1)
    out = {}
    for n in names:
        da = ds[n]
        if {"lat", "lon"} <= set(da.dims) and cells.any():
            other = [d for d in da.dims if d not in ("lat", "lon")]
            values = da.transpose("lat", "lon", *other).values.reshape(cells.shape + (-1,))[cells]
            out[n] = float(np.isfinite(values).mean())
        else:
            out[n] = float(np.isfinite(da.values).mean())
    return out


def find_kind(folder: Path) -> DatasetKind | None:
    """The first registered dataset kind whose ``detect`` matches ``folder``, or None."""
    for kind in _KINDS:
        try:
            if kind.detect(folder):
                return kind
        except OSError:
            continue
    return None


def load_folder(folder: str | os.PathLike, *, cache=False, quiet: bool = True, site: str | None = None
                ) -> tuple[str, Loaded]:
    """Read one dataset folder with its kind's readers: (kind name, [(label, Dataset), ...]).

    Raises what the reader raises; ``LookupError`` when no kind recognises the folder. ``cache`` goes to the
    kinds whose readers cache their result (COSORE, FLUXNET folders). ``quiet`` silences reader warnings (what
    was skipped is in each dataset's ``skipped_files`` attribute). ``site`` names the site of single-site files
    whose name does not follow the FLUXNET / AmeriFlux / ICOS convention (``--site``); a kind whose files name
    their units themselves (COSORE, yields, grids, ...) refuses it.
    """
    folder = Path(folder)
    kind = find_kind(folder)
    if kind is None:
        raise LookupError(f"{folder}: not recognised (no reader for these files)")
    options = {"cache": cache} if kind.cacheable and cache else {}
    if site is not None:
        if not kind.single_site:
            raise DataValidationError(folder, "site", f"--site applies to single-site tower and station files, not to "
                                      f"{kind.name} (their files name their sites or units)")
        options["site"] = site
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        return kind.name, kind.load(folder, **options)


def summarise_folder(folder: Path, *, cache=False, site: str | None = None) -> tuple[str, list[tuple[str, dict]] | str]:
    """(kind name, [(label, description), ...]) for one folder, or (kind, error text) when reading failed."""
    kind = find_kind(Path(folder))
    if kind is None:
        return "", "not recognised (no reader for these files)"
    try:
        _, loaded = load_folder(folder, cache=cache, **({"site": site} if site is not None else {}))
    except Exception as err:  # report every failure, keep going with the other datasets
        return kind.name, f"{type(err).__name__}: {err}"
    return kind.name, [(label, describe(ds)) for label, ds in loaded]


def summarise(data_dir: str | os.PathLike, *, cache=False) -> Iterator[tuple[str, str, list[tuple[str, dict]] | str, float]]:
    """Yield (folder name, kind, descriptions or error, seconds) for every sub-folder of ``data_dir``."""
    for folder in sorted(p for p in Path(data_dir).iterdir() if p.is_dir() and not p.name.startswith(".")):
        t0 = time.perf_counter()
        kind, result = summarise_folder(folder, cache=cache)
        yield folder.name, kind, result, time.perf_counter() - t0


def format_summary(name: str, kind: str, result, seconds: float, *, max_vars: int = 40) -> str:
    """Human-readable lines for one folder."""
    lines = [f"{name}  [{kind or '?'}]  ({seconds:.1f} s)"]
    if isinstance(result, str):
        lines.append(f"    {result}")
        return "\n".join(lines)
    for label, d in result:
        singular, plural = {"county": ("county", "counties"), "grid": ("grid cell", "grid cells"), None: ("series", "series")}.get(
            d["unit_dim"], (d["unit_dim"], f"{d['unit_dim']}s"))
        unit = singular if d["n_units"] == 1 else plural
        span = f"{d['years'][0]}–{d['years'][1]} ({d['years'][2]} year{'s' * (d['years'][2] != 1)})" if d["years"] else "no time axis"
        res = f", {d['resolution']}" if d["resolution"] else ""
        lines.append(f"  {label}: {d['n_units']} {unit}{res}, {span}")
        if d["units"]:
            more = " …" if d["n_units"] > len(d["units"]) else ""
            lines.append(f"    {plural}: {', '.join(d['units'])}{more}")
        cov = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(d["coverage"].items())[:max_vars])
        lines.append(f"    variables (coverage): {cov}")
        for s in d["skipped"]:
            lines.append(f"    skipped: {s}")
    return "\n".join(lines)
