"""The ``kgml`` command. Subcommands live in their own modules and register themselves here.

Each module in `_SUBCOMMAND_MODULES` has ``register(subparsers)``; handlers import heavy packages
(jax, xarray) lazily so that ``kgml --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kgml import __version__
from kgml.cliopts import KeyValueAction, ListAction, add_alias, add_force  # noqa: F401 (public here too)

_SUBCOMMAND_MODULES = (
    "kgml.cli.bench",
    "kgml.cli.calibrate",
    "kgml.cli.completion",
    "kgml.cli.data",
    "kgml.cli.demo",
    "kgml.cli.gapfill",
    "kgml.cli.map",
    "kgml.cli.partition",
    "kgml.cli.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kgml",
        description="Knowledge-guided hybrid process-ML modelling of terrestrial carbon fluxes and crop yields.",
    )
    parser.add_argument("--version", action="version", version=f"kgml {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: one line naming the problem)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors (progress, notes, results)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for _, sub in iter_commands(parser):
        if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            add_common_options(sub)
    return parser


def add_common_options(p: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--debug``, on every command (`main` reads them anywhere on the line)."""
    group = p.add_argument_group("output")
    group.add_argument("--quiet", action="store_true",
                       help="print nothing but errors: no progress bars, notes or results on the terminal "
                            "(the files are written as usual)")
    group.add_argument("--debug", action="store_true",
                       help="show the full traceback of an error (default: one line naming the problem)")


def iter_commands(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()):
    """(command words, parser) of every subcommand under ``parser`` (default: `build_parser`), depth first:
    ``(("bench",), p)``, ``(("bench", "shift"), p)``, … — for the documentation's command reference and
    the test of the flag conventions."""
    parser = build_parser() if parser is None else parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from iter_commands(sub, (*prefix, name))


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
    # --debug and --quiet are accepted anywhere on the line (before or after the subcommand)
    debug, quiet = "--debug" in argv, "--quiet" in argv
    argv = [a for a in argv if a not in ("--debug", "--quiet")]
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0

    def call() -> int:
        if not quiet:
            return int(args.handler(args) or 0)
        from kgml.progress import quiet_output

        with quiet_output():
            return int(args.handler(args) or 0)

    if debug:
        return call()
    try:
        return call()
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
