"""Property-based tests (hypothesis) of the FLUXNET reader: any plausible table round-trips exactly (after the
documented unit conversions), -9999 becomes NaN exactly where it was, and shuffled rows are always rejected."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kgml.data.schema import DataValidationError  # noqa: E402
from kgml.data.towers import QCPolicy, read_fluxnet_file  # noqa: E402
from kgml.variables import UMOL_CO2_M2_S_TO_GC_M2_D  # noqa: E402

from .fluxfiles import fluxnet_frame, fluxnet_name, write_fluxnet  # noqa: E402

META = {"US-Syn": {"lat": 41.0, "lon": -96.0}}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(
    resolution=st.sampled_from(["HH", "HR", "DD", "MM"]),
    n=st.integers(2, 40),
    seed=st.integers(0, 10_000),
    missing=st.lists(st.integers(0, 39), max_size=10),
)
def test_roundtrip_and_missing(tmp_path_factory, resolution, n, seed, missing):
    directory = tmp_path_factory.mktemp("prop")
    frame = fluxnet_frame(resolution, n, seed=seed)
    holes = sorted({m for m in missing if m < n})
    frame.loc[holes, "TA_F"] = -9999
    frame.loc[0, "NEE_VUT_REF"] = 1.5  # keep at least one NEE
    path = write_fluxnet(directory, frame=frame, name=fluxnet_name("US-Syn", resolution))
    ds = read_fluxnet_file(path, qc=QCPolicy(enabled=False), site_metadata=META)
    assert ds.attrs["time_resolution"] == resolution and ds.sizes["time"] == n
    tair = ds.tair.values[0] if "tair" in ds else np.full(n, np.nan)
    assert np.isnan(tair[holes]).all()
    keep = np.setdiff1d(np.arange(n), holes)
    np.testing.assert_allclose(tair[keep], frame.TA_F.to_numpy()[keep], rtol=1e-6)
    factor = UMOL_CO2_M2_S_TO_GC_M2_D if resolution in ("HH", "HR") else 1.0
    np.testing.assert_allclose(ds.nee.values[0], frame.NEE_VUT_REF * factor, rtol=1e-6)


@SETTINGS
@given(n=st.integers(3, 30), seed=st.integers(0, 10_000), data=st.data())
def test_shuffled_rows_rejected(tmp_path_factory, n, seed, data):
    frame = fluxnet_frame("DD", n, seed=seed)
    order = data.draw(st.permutations(list(range(n))))
    if list(order) == sorted(order):
        order = order[1:] + order[:1]
    path = write_fluxnet(tmp_path_factory.mktemp("shuffle"), frame=frame.iloc[list(order)].reset_index(drop=True))
    with pytest.raises(DataValidationError) as info:
        read_fluxnet_file(path, site_metadata=META)
    assert info.value.variable == "TIMESTAMP" and path.name in str(info.value)
