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
    "kgml.calibrate_cli",
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
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: one line naming the problem)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


#: Exit status of a command refused for bad input (a file, a value, a path), as argparse uses for bad options.
EXIT_BAD_INPUT = 2


def error_line(err: BaseException) -> str:
    """One line for an error: its message (a KeyError's without the quotes repr adds), first line only."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = str(text).strip().splitlines()[0] if str(text).strip() else type(err).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line (before or after the subcommand)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    if debug:
        return int(args.handler(args) or 0)
    try:
        return int(args.handler(args) or 0)
    except SystemExit as err:
        if isinstance(err.code, str):  # a handler's own refusal, e.g. "not a run directory"
            print(f"kgml {args.command}: error: {err.code}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    except KeyboardInterrupt:
        print(f"kgml {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError, ImportError, TypeError) as err:
        # bad input (DataValidationError, ConfigError, UnsafeOutputError, CheckpointError, missing files …)
        print(f"kgml {args.command}: error: {error_line(err)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
