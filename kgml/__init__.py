"""kgml: knowledge-guided hybrid process–ML models of terrestrial carbon fluxes and crop yields."""

from kgml import _moved

__version__ = "0.1.0"

_moved.install()
