"""Byte-level mutations of valid tower, COSORE and yield files (hypothesis): the reader returns a dataset or
raises `DataValidationError` — never another exception — and a loaded dataset never carries silently changed
values: every variable it shares with the unmutated file is equal on the common time axis, unless the change
is on record in the dataset's attributes (``warnings``, ``n_*_non_numeric``, ``n_*_out_of_range``).

Mutations: one byte replaced by a byte that cannot continue a number (so a changed value can never look like
another valid value), one separator or newline deleted, or the file cut at any byte (cut at a line boundary,
it is a valid shorter file: values may then be missing, never different)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgml.data.schema import DataValidationError, DataWarning
from kgml.data.soil_respiration import read_cosore_dataset
from kgml.data.towers import QCPolicy, read_fluxnet_file
from kgml.data.yields import read_nass_county

from .fluxfiles import fluxnet_frame, write_fluxnet
from .test_soil_respiration_readers import hourly_rows, write_cosore

#: Bytes that end or break a number: no digit, sign, point, exponent, or letter of nan/inf/NA/null/none.
POISON = b"gjkqwxyzGJKQWXYZ#$%&@!?~^|;\x00\x07\x7f\xff"
STRUCTURAL = b",\n"
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def mutations(draw, size: int):
    kind = draw(st.sampled_from(["replace", "delete", "cut"]))
    return kind, draw(st.integers(0, size - 1)), draw(st.sampled_from(list(POISON)))


def _mutate(data: bytes, mutation) -> bytes:
    kind, i, byte = mutation
    if kind == "replace":
        return data[:i] + bytes([byte]) + data[i + 1:]
    if kind == "delete":
        structural = [j for j in range(len(data)) if data[j] in STRUCTURAL]
        j = structural[i % len(structural)]
        return data[:j] + data[j + 1:]
    return data[:i]


def _recorded(ds) -> bool:
    a = ds.attrs
    return bool(a.get("warnings")) or any(
        k.startswith("n_") and (k.endswith("_non_numeric") or k.endswith("_out_of_range")) and a[k] for k in a)


def _read_or_error(read, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        try:
            return read(path)
        except DataValidationError as err:
            assert path.name in str(err) or str(path.parent) in str(err), str(err)
            return None


def _same_values(original, got, *, cut: bool) -> bool:
    """No label (time, year, county, site) that the file did not have, and equal values on the common ones
    (a file cut at a line boundary is a valid shorter file: there, values may be missing, never different)."""
    common = {}
    for dim in ("time", "year", "county", "site"):
        if dim in got.dims:
            if np.setdiff1d(got[dim].values, original[dim].values).size:
                return False
            common[dim] = np.intersect1d(original[dim].values, got[dim].values)
    for name in set(original.data_vars) & set(got.data_vars):
        a = original[name].sel(common).values
        b = got[name].sel(common).values
        if cut:
            b = np.where(np.isnan(b) & ~np.isnan(a), a, b)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            return False
    return True


def _check(read, path, data, mutation, original):
    path.write_bytes(_mutate(data, mutation))
    got = _read_or_error(read, path)
    if got is not None and not _recorded(got):
        assert _same_values(original, got, cut=mutation[0] == "cut"), f"silent change of values after {mutation}"


def _tower_read(path):
    return read_fluxnet_file(path, site_metadata=None, qc=QCPolicy(enabled=False))


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    path = write_fluxnet(tmp_path_factory.mktemp("tower"), frame=fluxnet_frame("DD", 12))
    data = path.read_bytes()
    return path, data, _read_or_error(_tower_read, path)


@SETTINGS
@given(data=st.data())
def test_mutated_tower_file(tower, data):
    path, raw, original = tower
    _check(_tower_read, path, raw, data.draw(mutations(len(raw))), original)


@pytest.fixture(scope="module")
def cosore(tmp_path_factory):
    folder = write_cosore(tmp_path_factory.mktemp("cosore") / "d_mut", hourly_rows()[:12], gz=False)
    path = folder / "data.csv"
    data = path.read_bytes()
    return path, data, _read_or_error(lambda p: read_cosore_dataset(p.parent), path)


@SETTINGS
@given(data=st.data())
def test_mutated_cosore_flux_table(cosore, data):
    path, raw, original = cosore
    _check(lambda p: read_cosore_dataset(p.parent), path, raw, data.draw(mutations(len(raw))), original)


def _nass_read(path):
    return read_nass_county(path, "soybean")


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    path = tmp_path_factory.mktemp("yield") / "yield.csv"
    rows = [[2000 + i % 4, 17, 1 + 2 * (i // 4), 30.0 + 1.5 * i] for i in range(16)]
    pd.DataFrame(rows, columns=["year", "state_fips", "county_fips", "soybean_yield_bu_per_acre"]).to_csv(
        path, index=False)
    data = path.read_bytes()
    return path, data, _read_or_error(_nass_read, path)


@SETTINGS
@given(data=st.data())
def test_mutated_county_yield_table(county, data):
    path, raw, original = county
    _check(_nass_read, path, raw, data.draw(mutations(len(raw))), original)


def test_the_originals_load():
    """The unmutated files are valid (else every mutation would trivially be an error)."""
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    assert _tower_read(write_fluxnet(d, frame=fluxnet_frame("DD", 12))).sizes["time"] == 12
