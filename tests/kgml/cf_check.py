"""A CF check of a written netCDF file: every numeric variable has UDUNITS-2 units (cf-units parses them, and
they are not "no unit"), and ``Conventions`` and ``history`` are set (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr


def assert_cf_units(path: str | Path) -> list[str]:
    """Assert the CF requirements on ``path``; returns the names checked."""
    cf_units = pytest.importorskip("cf_units", reason="cf-units is in the test extra: pip install -e '.[test]'")
    checked = []
    with xr.open_dataset(path, decode_times=True) as ds:
        assert str(ds.attrs.get("Conventions", "")).startswith("CF-"), f"{path}: no CF Conventions attribute"
        assert str(ds.attrs.get("history", "")).strip(), f"{path}: no history attribute"
        for name, var in ds.variables.items():
            if var.dtype.kind not in "fiu" or name in ds.dims and var.dtype.kind in "iu":
                continue  # strings, times, and integer labels (year, month codes) carry no physical unit
            units = var.attrs.get("units")
            assert units is not None, f"{path}: variable {name!r} has no units attribute"
            try:
                unit = cf_units.Unit(units)
            except ValueError as err:
                raise AssertionError(f"{path}: variable {name!r} units {units!r} are not UDUNITS-2: {err}") from None
            assert not unit.is_no_unit() and not unit.is_unknown(), f"{path}: {name!r} units {units!r}"
            if "g m-2" in units and "d-1" in units:
                assert "carbon" in str(var.attrs.get("comment", "")) + str(var.attrs.get("long_name", "")), name
            checked.append(str(name))
    assert checked, f"{path}: no numeric variable"
    return checked


def flux_unit_spellings(path: str | Path) -> set[str]:
    """The units spellings of the carbon-flux variables (nee, gpp, reco, rsoil and their *_ variants)."""
    with xr.open_dataset(path) as ds:
        return {str(ds[v].attrs.get("units")) for v in ds.data_vars
                if str(v).split("_")[0] in ("nee", "gpp", "reco", "rsoil") and np.issubdtype(ds[v].dtype, np.floating)}
