"""Shared fixtures: where the real data is, and a skip with a clear reason when it is absent."""

from __future__ import annotations

import jax
import pytest

from kgml.paths import find_data_dir

jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="session")
def data_dir():
    """The real-data directory (KGML_DATA or ../shared/data); tests using it skip when it is absent."""
    path = find_data_dir()
    if path is None:
        pytest.skip("real data not found: set KGML_DATA or place the data at ../shared/data")
    return path


@pytest.fixture(scope="session")
def dataset_dir(data_dir):
    """Factory: ``dataset_dir("cosore")`` is that dataset's folder, or the test skips naming what is missing."""

    def get(name):
        path = data_dir / name
        if not path.exists():
            pytest.skip(f"dataset {name!r} not found under {data_dir}")
        return path

    return get


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free JAX's compiled programs after each test module: the suite compiles hundreds of models in one
    process, and XLA's CPU backend crashed (segmentation fault while compiling) late in a run that kept them
    all; no test relies on a compilation cached by another module."""
    yield
    jax.clear_caches()
    import gc

    gc.collect()
