"""The flag conventions every ``kgml`` command shares (docs: Command line): list options, ``--force``, hidden
old spellings. Plain argparse, no kgml imports, so that any module registering a command can use it.
"""

from __future__ import annotations

import argparse

__all__ = ["KeyValueAction", "ListAction", "add_alias", "add_force"]


class ListAction(argparse.Action):
    """A list option, the same on every command: values separated by commas, spaces or both, and the option
    may be repeated (``--models rf,gbm``, ``--models rf gbm`` and ``--models rf --models gbm`` are the same
    list). Given on the line, it replaces the default list."""

    def __init__(self, option_strings, dest, nargs=None, **kwargs):
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        items = [] if current is None or current is self.default else list(current)
        for value in values:
            parts = [v.strip() for v in value.split(",")]
            if not all(parts):
                parser.error(f"{option_string}: empty item in {value!r}")
            items += parts
        setattr(namespace, self.dest, items)


class KeyValueAction(argparse.Action):
    """A list of ``KEY=VALUE`` items (the VALUE may hold commas): separated by spaces, and the option may be
    repeated. Given on the line, it replaces the default list."""

    def __init__(self, option_strings, dest, nargs=None, **kwargs):
        kwargs.setdefault("metavar", "KEY=VALUE")
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        items = [] if current is None or current is self.default else list(current)
        for value in values:
            if "=" not in value:
                parser.error(f"{option_string}: expected KEY=VALUE, got {value!r}")
            items.append(value)
        setattr(namespace, self.dest, items)


def add_force(p: argparse.ArgumentParser, extra: str = "") -> None:
    """``--force``: the one switch that lets a command replace outputs that exist (`kgml.io.refuse_existing`)."""
    p.add_argument("--force", action="store_true",
                   help="replace outputs that exist (default: refuse; inputs and a run's own files are never "
                        "replaced)" + extra)


def add_alias(p: argparse.ArgumentParser, old: str, dest: str, **kwargs) -> None:
    """An old spelling of an option, kept working for scripts and hidden from ``--help``."""
    kwargs.setdefault("default", argparse.SUPPRESS)  # the option's own default stands
    p.add_argument(old, dest=dest, help=argparse.SUPPRESS, **kwargs)
