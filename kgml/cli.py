"""The ``kgml`` command. Subcommands live in their own modules and register themselves here.

Each module in `_SUBCOMMAND_MODULES` has ``register(subparsers)``; handlers import heavy packages
(jax, xarray) lazily so that ``kgml --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kgml import __version__

_SUBCOMMAND_MODULES = (
    "kgml.bench.cli",
    "kgml.data.cli",
    "kgml.demo",
    "kgml.gapfill_cli",
    "kgml.map_cli",
    "kgml.partition_cli",
    "kgml.train_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kgml",
        description="Knowledge-guided hybrid process-ML modelling of terrestrial carbon fluxes and crop yields.",
    )
    parser.add_argument("--version", action="version", version=f"kgml {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
