"""FLUXNET2015 / ONEFlux / ICOS readers (FULLSET and SUBSET, HH to YY) and FLUXNET-column tables; several
sites combined into one dataset."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from kgml.data.cache import cached_read
from kgml.data.formats import files_of, site_from_name
from kgml.data.schema import DataValidationError, DataWarning, validate_dataset
from kgml.data.sitemeta import (
    attach_site_metadata,
    site_table_files,
)
from kgml.data.towers.common import (
    _FLUXNET_NAME,
    _SITE_PREFIX,
    RESOLUTIONS,
    QCPolicy,
    _apply_partitioned_qc,
    _build_site_dataset,
    _check_monotonic,
    _finish,
    _fluxnet_mapping,
    _infer_resolution,
    _missing_column_error,
    _parse_stamp,
    _parse_table,
    _read_text,
    _resolve_metadata,
    parse_fluxnet_filename,
)

# --- FLUXNET2015 / ONEFlux / ICOS ---------------------------------------------------------------------


_FLUXNET_REQUIRED = ("nee", "tair")


def read_fluxnet_file(
    path: str | os.PathLike,
    *,
    site: str | None = None,
    resolution: str | None = None,
    variables: Iterable[str] | None = None,
    require: Iterable[str] | str = "auto",
    qc: QCPolicy = QCPolicy(),
    keep_qc: bool = False,
    site_metadata="auto",
    bad_rows: str = "raise",
    validate: bool = True,
    invalid: str = "raise",
) -> xr.Dataset:
    """Read one FLUXNET2015 / ONEFlux / ICOS-style file (any of HH, HR, DD, WW, MM, YY; .csv or .csv.gz).

    The resolution is taken from the file name (``..._DD_...``) and checked against the timestamps; for files
    without a FLUXNET name (e.g. ``CH-Dav_daily.csv`` with FLUXNET columns) pass ``site=`` or start the name
    with the site ID, and the resolution comes from the timestamps (or ``resolution=``). ``variables`` limits
    the canonical variables read (default: every registered variable whose FLUXNET column is present).
    ``require="auto"`` requires nee and tair in FULLSET/SUBSET files (these products always have the columns,
    so their absence means a renamed or broken column; GPP/RECO may legitimately be all -9999 when partitioning
    failed, e.g. DK-Gds 2020); pass a tuple to choose. A non-required variable that is all missing is omitted. ``site_metadata`` is a
    table (path/DataFrame/mapping), None, or "auto" (the ``sites.csv`` next to the file).
    Output: dims (site=1, time); see the module docstring for units and coordinates.
    """
    path = Path(path)
    info = parse_fluxnet_filename(path)
    if site is None:
        site = info.site if info else _site_from_name(path, site_metadata)
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {list(RESOLUTIONS)}, got {resolution!r}")
    if info and resolution and info.resolution != resolution:
        raise DataValidationError(path, None, f"file name says {info.resolution} but resolution={resolution!r} was asked for")
    text = _read_text(path)
    frame = _parse_table(
        path,
        text.splitlines(),
        text_columns=("TIMESTAMP", "TIMESTAMP_START", "TIMESTAMP_END"),
        na_strings=("NA", "NaN", "nan", "") if info is None else (),
        bad_rows=bad_rows,
    )
    columns = list(frame.columns)
    if "TIMESTAMP" in columns:
        times, length = _parse_stamp(path, "TIMESTAMP", frame["TIMESTAMP"])
        ends, stamp_col = None, "TIMESTAMP"
    elif "TIMESTAMP_START" in columns:
        times, length = _parse_stamp(path, "TIMESTAMP_START", frame["TIMESTAMP_START"])
        ends = _parse_stamp(path, "TIMESTAMP_END", frame["TIMESTAMP_END"])[0] if "TIMESTAMP_END" in columns else None
        stamp_col = "TIMESTAMP_START"
    else:
        raise _missing_column_error(path, "time", ("TIMESTAMP", "TIMESTAMP_START"), columns)
    _check_monotonic(path, stamp_col, times)
    found = _infer_resolution(path, stamp_col, times, length, ends)
    declared = info.resolution if info else resolution
    if declared and declared != found:
        raise DataValidationError(
            path, stamp_col, f"file name / argument says {declared} ({RESOLUTIONS[declared]}) but the timestamps are {found} ({RESOLUTIONS[found]})"
        )
    resolution = found
    if isinstance(require, str):
        if require != "auto":
            raise ValueError("require must be 'auto' or a sequence of variable names")
        require = _FLUXNET_REQUIRED if info and info.dataset in ("FULLSET", "SUBSET") else ()
    require = tuple(require)
    wanted = None if variables is None else tuple(dict.fromkeys([*variables, *require]))
    mapping, qc_columns, missing = _fluxnet_mapping(columns, resolution, wanted)
    for name in require:
        if name in missing:
            raise _missing_column_error(path, name, missing[name], columns)
    _apply_partitioned_qc(qc_columns, qc, columns)
    attrs = {"product": f"{info.product} {info.dataset}".strip() if info else "FLUXNET-format table"}
    ds = _build_site_dataset(
        path, frame, times, site=site, resolution=resolution, mapping=mapping, qc_columns=qc_columns, qc=qc,
        require=require, keep_qc=keep_qc, attrs=attrs,
    )
    return _finish(ds, path, site_metadata, validate, invalid=invalid, require=require)


def _site_from_name(path: Path, site_metadata=None) -> str:
    """The site code at the start of the file name (FLUXNET / AmeriFlux / ICOS convention: ``US-Ne1_...``), else
    the one site of the site table (``site_metadata``, "auto": the table beside the file), else an error asking
    for the site."""
    match = _SITE_PREFIX.match(path.name)
    if not match and site_metadata is not None:
        table = _resolve_metadata(site_metadata, path)
        if table is not None and len(table.index) == 1:
            return str(table.index[0])
    if not match:
        raise DataValidationError(
            path, "site", "cannot tell the site from the file name (expected e.g. FLX_US-Ne1_... or US-Ne1_...) and "
            "no site table names it; pass site= (--site on the command line)"
        )
    return match.group("site")


def combine_sites(datasets: Sequence[xr.Dataset], *, source: object = None) -> xr.Dataset:
    """Stack single- or multi-site datasets (same resolution) on ``site`` over the union of their times."""
    if not datasets:
        raise DataValidationError(source, None, "no datasets to combine")
    res = {d.attrs.get("time_resolution") for d in datasets}
    if len(res) > 1:
        raise DataValidationError(
            source, "time", f"mixed time resolutions {sorted(map(str, res))}: read them separately or aggregate_to() first"
        )
    sites = [str(s) for d in datasets for s in d["site"].values]
    dup = sorted({s for s in sites if sites.count(s) > 1})
    if dup:
        files = [str(d.attrs.get("source")) for d in datasets if set(map(str, d["site"].values)) & set(dup)]
        raise DataValidationError(source, "site", f"site(s) {dup} appear in more than one file: {files}")
    times = np.unique(np.concatenate([d["time"].values for d in datasets]))
    names = list(dict.fromkeys(str(v) for d in datasets for v in d.data_vars))
    arrays = {n: np.full((len(sites), times.size), np.nan, dtype=np.float32) for n in names}
    row = 0
    for d in datasets:
        idx = np.searchsorted(times, d["time"].values)
        for n in names:
            if n in d:
                var = d.variables[n]  # the bare variable: building a DataArray per site and name is slow
                arrays[n][row : row + d.sizes["site"], idx] = (var if var.dims == ("site", "time") else var.transpose("site", "time")).values
        row += d.sizes["site"]
    attrs_of = {n: next(d[n].attrs for d in datasets if n in d) for n in names}
    coords: dict[str, object] = {"site": ("site", sites), "time": ("time", times, datasets[0]["time"].attrs)}
    for cname in datasets[0].coords:
        if cname in ("site", "time") or datasets[0][cname].dims != ("site",):
            continue
        if all(cname in d.coords for d in datasets):
            coords[cname] = ("site", np.concatenate([d[cname].values for d in datasets]), datasets[0][cname].attrs)
    attrs = dict(datasets[0].attrs)
    attrs["source"] = str(source) if source is not None else attrs.get("source", "")
    return xr.Dataset({n: (("site", "time"), arrays[n], attrs_of[n]) for n in names}, coords=coords, attrs=attrs)


def _read_many(
    files: Sequence[Path],
    reader: Callable[[Path], xr.Dataset],
    *,
    errors: str,
    source: Path,
    progress: bool,
) -> tuple[list[xr.Dataset], list[str]]:
    if errors not in ("raise", "warn", "ignore"):
        raise ValueError(f"errors must be 'raise', 'warn' or 'ignore', got {errors!r}")
    good, skipped = [], []
    iterator: Iterable[Path] = files
    if progress:
        iterator = tqdm(files, desc=f"reading {source.name}", unit="file")
    for f in iterator:
        try:
            good.append(reader(f))
        except DataValidationError as err:
            if errors == "raise":
                raise
            skipped.append(str(err))
            if errors == "warn":
                warnings.warn(f"skipped: {err}", DataWarning, stacklevel=3)
    if not good:
        detail = "; ".join(skipped[:3]) if skipped else "no matching files"
        raise DataValidationError(source, None, f"no file could be read ({detail})")
    return good, skipped


def read_fluxnet_dir(
    directory: str | os.PathLike,
    *,
    pattern: str | None = None,
    resolution: str | None = None,
    dataset: str | None = None,
    sites: Iterable[str] | None = None,
    variables: Iterable[str] | None = None,
    require: Iterable[str] | str = "auto",
    qc: QCPolicy = QCPolicy(),
    keep_qc: bool = False,
    site_metadata="auto",
    errors: str = "warn",
    bad_rows: str = "raise",
    invalid: str = "raise",
    progress: bool = False,
    cache: bool | str | os.PathLike = False,
) -> xr.Dataset:
    """Read every FLUXNET-style file in ``directory`` into one ``(site, time)`` dataset.

    Files are those whose name parses as FLUXNET (``FLX_<SITE>_FLUXNET2015_...``), or match ``pattern`` (a glob,
    e.g. ``"*_daily.csv"`` for FLUXNET-column tables named ``<SITE>_...``). ``resolution`` and ``dataset``
    (FULLSET/SUBSET) select among them; several resolutions without ``resolution=`` is an error naming them.
    ``site_metadata="auto"`` uses the directory's ``sites.csv``. Bad files follow ``errors`` (module docstring):
    skipped files are listed, one message per line, in ``ds.attrs["skipped_files"]``. ``invalid`` decides what
    happens to a non-required variable that fails validation in one file (out of range, unit mistake):
    "raise" (the file is bad, see ``errors``), "drop" (that variable is dropped for that site, with a warning) or
    "mask" (out-of-range values → NaN, with a warning). ``cache`` (True, or a folder; see `kgml.data.cache`)
    keeps the result as netCDF, reused while the files read, the site table and every option are unchanged.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataValidationError(directory, None, "directory does not exist")
    if pattern is not None:
        files = sorted(p for p in directory.glob(pattern) if p.is_file())
    else:  # FLUXNET tables recognised by their columns (kgml.data.formats), whatever they are called, and files
        # named in the FLUXNET convention that are not (read, so that a broken one is reported, not passed over)
        files = files_of(directory, "fluxnet", named=_FLUXNET_NAME)
    infos = {p: parse_fluxnet_filename(p) for p in files}
    if resolution is not None:
        files = [p for p in files if infos[p] is None or infos[p].resolution == resolution]
    if dataset is not None:
        files = [p for p in files if infos[p] is not None and infos[p].dataset == dataset]
    if sites is not None:
        wanted = set(sites)
        files = [p for p in files if (infos[p].site if infos[p] else site_from_name(p)) in wanted]
    if not files:
        raise DataValidationError(directory, None, f"no FLUXNET files found (pattern={pattern!r}, resolution={resolution!r})")
    named = {infos[p].resolution for p in files if infos[p] is not None}
    if len(named) > 1:
        counts = {r: sum(1 for p in files if infos[p] and infos[p].resolution == r) for r in sorted(named)}
        raise DataValidationError(
            directory, "time", f"mixed resolutions in one directory {counts}; pass resolution= to choose one"
        )
    meta = _resolve_metadata(site_metadata, directory)

    def reader(p: Path) -> xr.Dataset:
        return read_fluxnet_file(
            p, resolution=resolution, variables=variables, require=require, qc=qc, keep_qc=keep_qc,
            site_metadata=None, bad_rows=bad_rows, validate=True, invalid=invalid,
        )

    def build() -> xr.Dataset:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no lat/lon for site.*", category=DataWarning)
            good, skipped = _read_many(files, reader, errors=errors, source=directory, progress=progress)
        res = {d.attrs["time_resolution"] for d in good}
        if len(res) > 1:
            raise DataValidationError(directory, "time", f"files have mixed resolutions {sorted(res)}; pass resolution=")
        ds = combine_sites(good, source=directory)
        ds.attrs["source_files"] = "\n".join(str(d.attrs["source"]) for d in good)
        ds.attrs["skipped_files"] = "\n".join(skipped)
        ds = attach_site_metadata(ds, meta, source=directory)
        return validate_dataset(ds, directory)

    if not cache:
        return build()

    sources = list(files)
    if isinstance(site_metadata, (str, os.PathLike)) and not (isinstance(site_metadata, str) and site_metadata == "auto"):
        sources.append(Path(site_metadata))
    elif isinstance(site_metadata, str):
        sources.extend(site_table_files(directory))
    options = {
        "reader": "read_fluxnet_dir", "pattern": pattern, "resolution": resolution, "dataset": dataset,
        "sites": None if sites is None else sorted(sites), "variables": None if variables is None else list(variables),
        "require": require if isinstance(require, str) else list(require), "qc": qc.to_json(), "keep_qc": keep_qc,
        "errors": errors, "bad_rows": bad_rows, "invalid": invalid,
        "site_metadata": None if meta is None or isinstance(site_metadata, (str, os.PathLike)) else meta.to_csv(),
    }
    return cached_read(f"fluxnet-{directory.name}", sources, build, cache=cache, options=options)


