"""Old module names kept importable after the package took the layout of the architecture map.

The modules moved into folders by layer (``kgml.bench`` → ``kgml.compare``, ``kgml.hybrid`` →
``kgml.models.hybrid``, …; docs/architecture.md). Scripts that import an old name get the very same module
object as the new name (so ``kgml.bench.suites.get_suite`` and a monkeypatch of ``kgml.hybrid.x`` keep
working): a finder on ``sys.meta_path`` answers for the old names only and loads nothing itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

#: old dotted name → new dotted name (a package's submodules follow their package).
MOVED = {
    "kgml.bench.cli": "kgml.cli.bench",
    "kgml.data.cli": "kgml.cli.data",
    "kgml.gapfill_cli": "kgml.cli.gapfill",
    "kgml.map_cli": "kgml.cli.map",
    "kgml.partition_cli": "kgml.cli.partition",
    "kgml.train_cli": "kgml.cli.train",
    "kgml.bench": "kgml.compare",
    "kgml.baselines": "kgml.compare.baselines",
    "kgml.studies": "kgml.compare.studies",
    "kgml.demo": "kgml.compare.demo",
    "kgml.hybrid": "kgml.models.hybrid",
    "kgml.neural": "kgml.models.neural",
    "kgml.losses": "kgml.models.losses",
    "kgml.constraints": "kgml.models.constraints",
    "kgml.nn": "kgml.models.nn",
    "kgml.drivers": "kgml.data.drivers",
    "kgml.gapfill": "kgml.fluxsite.gapfill",
    "kgml.partition": "kgml.fluxsite.partition",
    "kgml.fluxhybrid": "kgml.fluxsite.fluxhybrid",
    "kgml.fluxfeatures": "kgml.fluxsite.features",
    "kgml.ustar": "kgml.fluxsite.ustar",
    "kgml.mapping": "kgml.spatial.mapping",
    "kgml.attribution": "kgml.spatial.attribution",
    "kgml.scenarios": "kgml.spatial.scenarios",
}


def new_name(old: str) -> str | None:
    """The module's name in the current layout, or None when ``old`` was not moved."""
    if old in MOVED:
        return MOVED[old]
    head, _, tail = old.rpartition(".")
    while head:
        if head in MOVED:
            return f"{MOVED[head]}.{old[len(head) + 1:]}"
        head, _, tail = head.rpartition(".")
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=False)

    def create_module(self, spec):
        return None  # a blank module, replaced below

    def exec_module(self, module):
        # the import system hands out whatever sys.modules holds under the name once this returns
        sys.modules[module.__name__] = importlib.import_module(new_name(module.__name__))


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # before the path finder, which would load a second copy
