"""``kgml data …`` subcommands: ``kgml data summary --data-dir DIR``.

Heavy imports (xarray, pandas) happen inside the handler so ``kgml --help`` stays fast.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect the real-data directory", description=__doc__)
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    summary = sub.add_parser(
        "summary",
        help="list every dataset found under the data directory: sites, years, variables, coverage",
        description="Find every dataset kgml can read under DIR and print its sites, years, variables and "
        "coverage. DIR comes from --data-dir, the KGML_DATA environment variable, or ../shared/data.",
    )
    summary.add_argument("--data-dir", default=None, help="data directory (default: $KGML_DATA or ../shared/data)")
    summary.add_argument("--only", nargs="*", default=None, help="only these dataset folders")
    summary.add_argument(
        "--cache", nargs="?", const=True, default=False, metavar="DIR",
        help="keep processed COSORE and FLUXNET folders as netCDF and reuse them while their files are unchanged "
        "(in DIR, else $KGML_CACHE or ~/.cache/kgml)",
    )
    summary.set_defaults(handler=_summary)
    data.set_defaults(handler=lambda args: _help(data))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _summary(args) -> int:
    from kgml.data.summary import format_summary, summarise, summarise_folder
    from kgml.paths import DataNotFoundError, data_dir

    try:
        root = data_dir(args.data_dir)
    except DataNotFoundError as err:
        print(f"error: {err}")
        return 2
    print(f"data directory: {root}\n")
    failures = 0
    if args.only:
        items = []
        for name in args.only:
            import time

            t0 = time.perf_counter()
            kind, result = summarise_folder(root / name, cache=args.cache)
            items.append((name, kind, result, time.perf_counter() - t0))
    else:
        items = summarise(root, cache=args.cache)
    for name, kind, result, seconds in items:
        failures += isinstance(result, str)
        print(format_summary(name, kind, result, seconds), flush=True)
        print()
    return 1 if failures else 0
