"""``kgml partition FILE --out OUT.nc``: u* filtering and flux partitioning of a half-hourly or hourly tower
record (REddyProc's order: u* threshold and filter, MDS gap-filling, partitioning), a thin wrapper over
`kgml.fluxsite.ustar`, `kgml.fluxsite.gapfill.mds_gapfill_dataset` and `kgml.fluxsite.partition.partition_dataset`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from kgml.cliopts import add_force

    p = subparsers.add_parser(
        "partition", help="u* filtering and night-time / daytime partitioning of NEE into GPP and Reco",
        description="Read a REddyProc table (Year DoY Hour NEE ... or DateTime CSV), the REddyProc example netCDF "
        "or a FLUXNET half-hourly/hourly file; estimate the u* threshold (moving-point test, Papale et al. 2006, as "
        "REddyProc sEstUstarThold) and drop night-time NEE below it; gap-fill NEE by MDS (Reichstein et al. 2005); "
        "partition by the night-time method (Reichstein et al. 2005) and/or the daytime light-response method "
        "(Lasslop et al. 2010). Writes a CF netCDF with nee, nee_f, gpp_*, reco_* (g m-2 d-1 of carbon) and the "
        "threshold.")
    p.add_argument("file", help="input record (REddyProc .txt/.csv, REddyProc .nc, FLUXNET HH/HR .csv)")
    p.add_argument("--out", required=True, metavar="FILE.nc", help="output netCDF")
    add_force(p)
    p.add_argument("--method", choices=("nighttime", "daytime", "both"), default="both",
                   help="partitioning method (default: both)")
    p.add_argument("--ustar", default="auto", metavar="auto|none|VALUE",
                   help="u* threshold: auto (estimate it), none (no filtering), or a value in m s-1 (default: auto)")
    p.add_argument("--site", default=None, help="site ID when the file name does not tell it")
    p.add_argument("--lat", type=float, default=None, help="latitude (°N) for potential radiation")
    p.add_argument("--lon", type=float, default=None, help="longitude (°E) for potential radiation")
    p.add_argument("--utc-offset", type=float, default=None, help="hours of local standard time ahead of UTC")
    p.add_argument("--seed", type=int, default=0, help="seed of the u* threshold's bootstrap (default 0)")
    p.set_defaults(handler=_partition)


def read_record(path: Path, site: str | None = None):
    """A (site, time) dataset of a half-hourly / hourly record, recognised by content whatever it is called:
    REddyProc table or netCDF, FLUXNET table or AmeriFlux BASE file. The site comes from the file name when it
    follows the FLUXNET / AmeriFlux / ICOS convention (or the netCDF's Site_ID), else ``site`` (``--site``), else
    the site table beside the file; a name and ``--site`` that disagree are an error."""
    from kgml.data import towers
    from kgml.data.formats import recognise, site_from_name
    from kgml.data.schema import DataValidationError

    kind = recognise(path)
    named = site_from_name(path)
    if named and site and named != site:
        raise DataValidationError(path, "site", f"the file name says site {named} but --site {site} was given")
    if kind == "reddyproc_nc":
        ds = towers.read_reddyproc_nc(path)
        if site and str(ds.site.values[0]) != site:
            raise DataValidationError(path, "site", f"the file says site {ds.site.values[0]} but --site {site} was given")
        return ds
    if kind == "reddyproc":
        return towers.read_reddyproc_table(path, site=named or site)
    if kind == "fluxnet":
        return towers.read_fluxnet_file(path, site=None if towers.parse_fluxnet_filename(path) else named or site)
    if kind == "ameriflux_base":
        return towers.read_ameriflux_base(path, site=named or site)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raise DataValidationError(path, None, f"not a tower record kgml can partition (recognised as {kind or 'nothing'}; "
                              "expected a REddyProc table or netCDF, a FLUXNET table or an AmeriFlux BASE file)")


def ustar_filtered(ds, choice: str, seed: int = 0):
    """``ds`` with night-time NEE below the u* threshold set missing, and the threshold (NaN: not filtered)."""
    import numpy as np

    from kgml.data.schema import DataValidationError
    from kgml.fluxsite.ustar import estimate_ustar_threshold, ustar_filter

    if choice == "none":
        return ds, float("nan"), {}
    source = ds.attrs.get("source", "<record>")
    if "ustar" not in ds:
        raise DataValidationError(source, "ustar", "u* filtering needs friction velocity; pass --ustar none to skip it")
    out = ds.copy()
    details = {}
    site = ds.site.values[0]
    get = lambda v: np.asarray(ds[v].sel(site=site).values, np.float64)  # noqa: E731
    if choice == "auto":
        est = estimate_ustar_threshold(get("nee"), get("tair"), get("ustar"), get("sw_in"), ds.time.values,
                                       n_boot=100, seed=seed, source=source, progress=True)
        threshold, details = est.threshold, {f"ustar_threshold_{k}": v for k, v in est.quantiles.items()}
    else:
        try:
            threshold = float(choice)
        except ValueError:
            raise ValueError(f"--ustar must be auto, none or a number (m s-1), got {choice!r}") from None
    bad = ustar_filter(get("ustar"), get("sw_in"), threshold)
    nee = get("nee")
    nee[bad] = np.nan
    out["nee"] = out["nee"].copy(data=nee[None, :].astype(out["nee"].dtype))
    out["nee"].attrs["comment"] = (f"night-time records with u* below {threshold:.3g} m s-1 removed "
                                   f"({int((bad & np.isfinite(get('nee'))).sum())} records)")
    return out, threshold, details


def _partition(args: argparse.Namespace) -> int:
    import numpy as np
    import xarray as xr

    from kgml.fluxsite.gapfill import mds_gapfill_dataset
    from kgml.fluxsite.partition import partition_dataset
    from kgml.io import guard_outputs, refuse_existing, write_netcdf_atomic

    path = Path(args.file)
    guard_outputs([args.out], [path])  # never the input (issue 16 item 1), before reading it
    refuse_existing([args.out], args.force)
    ds = read_record(path, args.site)
    if ds.sizes["site"] != 1:
        raise ValueError(f"{path}: one site per file, found {ds.sizes['site']}")
    for name, value in (("lat", args.lat), ("lon", args.lon), ("utc_offset", args.utc_offset)):
        if value is not None:
            units = {"lat": "degrees_north", "lon": "degrees_east", "utc_offset": "h"}[name]
            ds = ds.assign_coords({name: ("site", [value], {"units": units})})
    ds, threshold, details = ustar_filtered(ds, args.ustar, args.seed)
    filled = mds_gapfill_dataset(ds, "nee", progress=True)
    ds["nee_f"] = filled["nee_f"]
    parts = [ds[["nee", "nee_f"]]]
    methods = ("nighttime", "daytime") if args.method == "both" else (args.method,)
    for method in methods:
        parts.append(partition_dataset(ds, method, nee_filled="nee_f" if method == "nighttime" else None))
    out = xr.merge(parts, combine_attrs="override")
    for c in ("lat", "lon", "utc_offset"):
        if c in ds.coords:
            out = out.assign_coords({c: ds[c]})
    out.attrs = {"title": f"kgml partition: {path.name}", "source": str(path),
                 "ustar_threshold": threshold, "ustar_threshold_units": "m s-1",
                 "ustar_method": "moving-point test (Papale et al. 2006) as REddyProc sEstUstarThold"
                 if args.ustar == "auto" else f"given ({args.ustar})", **details,
                 "gapfill_method": "MDS (Reichstein et al. 2005) as REddyProc",
                 "partitioning": "; ".join(methods)}
    write_netcdf_atomic(out, args.out)
    site = ds.site.values[0]
    lines = [f"{site}: u* threshold {threshold:.3f} m s-1" if np.isfinite(threshold) else f"{site}: no u* filter"]
    for tag in ("nt", "dt"):
        if f"gpp_{tag}" in out:
            g = float(np.nanmean(out[f"gpp_{tag}"].values))
            r = float(np.nanmean(out[f"reco_{tag}"].values))
            lines.append(f"  {tag}: mean GPP {g:.2f}, Reco {r:.2f} gC m-2 d-1")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0
