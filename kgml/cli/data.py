"""``kgml data …`` subcommands: ``kgml data summary --data-dir DIR``, ``kgml data build NAME --out FILE.nc``.

Heavy imports (xarray, pandas) happen inside the handler so ``kgml --help`` stays fast.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from kgml.cliopts import KeyValueAction, ListAction, add_force

    data = subparsers.add_parser("data", help="inspect the real-data directory", description=__doc__)
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    summary = sub.add_parser(
        "summary",
        help="list every dataset found under the data directory: sites, years, variables, coverage",
        description="Find every dataset kgml can read under DIR and print its sites, years, variables and "
        "coverage. DIR comes from --data-dir, the KGML_DATA environment variable, or ../shared/data.",
    )
    summary.add_argument("--data-dir", default=None, metavar="DIR",
                         help="data directory (default: $KGML_DATA or ../shared/data)")
    summary.add_argument("--only", action=ListAction, default=None, metavar="FOLDER",
                         help="only these dataset folders (commas or spaces)")
    summary.add_argument("--site", default=None,
                         help="site ID of single-site tower or station files whose names do not carry it (the "
                         "FLUXNET / AmeriFlux / ICOS convention, e.g. FLX_US-Ne1_..., US-Ne1_...) and whose folder "
                         "has no one-site table; needs --only")
    summary.add_argument(
        "--cache", nargs="?", const=True, default=False, metavar="DIR",
        help="keep processed COSORE and FLUXNET folders as netCDF and reuse them while their files are unchanged "
        "(in DIR, else $KGML_CACHE or ~/.cache/kgml)",
    )
    summary.set_defaults(handler=_summary)
    from kgml.data.assemble import BUILDERS

    build = sub.add_parser(
        "build",
        help="write a real-data builder's dataset as a kgml-layout (site, time) netCDF for `kgml train`",
        description="Run a dataset builder of kgml.data.assemble on the real data under DIR and write the "
        "(site, time) netCDF that a train config's [data] source can name. Builders: "
        + ", ".join(sorted(BUILDERS)) + ". A train config can also name the builder itself "
        "([data] source = NAME, data_dir, options).",
    )
    build.add_argument("name", choices=sorted(BUILDERS), metavar="NAME", help="builder: " + ", ".join(sorted(BUILDERS)))
    build.add_argument("--out", required=True, metavar="FILE.nc", help="netCDF file to write")
    add_force(build)
    build.add_argument("--data-dir", default=None, metavar="DIR",
                       help="data directory (default: $KGML_DATA or ../shared/data)")
    build.add_argument("--option", action=KeyValueAction, default=[],
                       help="builder keyword options, VALUE a TOML value, e.g. --option 'sites=[\"US-Ne1\"]' "
                       "min_days=90 (spaces, or repeat the option)")
    build.set_defaults(handler=_build)
    data.set_defaults(handler=lambda args: _help(data))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _summary(args) -> int:
    from kgml.data.summary import format_summary, summarise, summarise_folder
    from kgml.paths import DataNotFoundError, data_dir
    from kgml.progress import error_stream, is_quiet

    try:
        root = data_dir(args.data_dir)
    except DataNotFoundError as err:
        print(f"error: {err}", file=error_stream())
        return 2
    if args.site is not None and not args.only:
        raise ValueError("--site names the site of the folders given with --only")
    print(f"data directory: {root}\n")
    failures = 0
    if args.only:
        items = []
        for name in args.only:
            import time

            t0 = time.perf_counter()
            kind, result = summarise_folder(root / name, cache=args.cache, site=args.site)
            items.append((name, kind, result, time.perf_counter() - t0))
    else:
        items = summarise(root, cache=args.cache)
    for name, kind, result, seconds in items:
        failures += isinstance(result, str)
        print(format_summary(name, kind, result, seconds), flush=True)
        print()
        if isinstance(result, str) and is_quiet():  # the summary above is silenced; the failure is not
            print(f"kgml data summary: error: {name}: {result}", file=error_stream())
    return 1 if failures else 0


def parse_options(items) -> dict:
    """``KEY=VALUE`` strings → dict; VALUE is read as a TOML value (numbers, booleans, ["lists"]), else a string."""
    import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def _build(args) -> int:
    from kgml.data.assemble import build
    from kgml.io import guard_outputs, refuse_existing, write_netcdf_atomic
    from kgml.paths import data_dir

    guard_outputs([args.out], [data_dir(args.data_dir)])  # nothing written inside the data it reads (item 1)
    refuse_existing([args.out], args.force)
    options = parse_options(args.option)
    ds = build(args.name, args.data_dir, progress=True, **options)
    path = write_netcdf_atomic(ds, args.out)
    dims = ", ".join(f"{k} {v}" for k, v in ds.sizes.items())
    targets = [v for v in ("nee", "gpp", "reco", "rsoil", "crop_yield", "nee_monthly") if v in ds]
    print(f"wrote {path}: {args.name} ({dims}); targets {targets}")
    return 0
