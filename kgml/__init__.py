"""kgml: knowledge-guided hybrid process–ML models of terrestrial carbon fluxes and crop yields."""

__version__ = "0.1.0"
