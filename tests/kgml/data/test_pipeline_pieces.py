"""Normaliser (train-only, JSON), windowed batches with masks, the netCDF cache and ``kgml data summary``."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from kgml.cli import main as kgml_main
from kgml.data.batching import Batch, iterate_batches, make_windows, windows_to_dataset
from kgml.data.cache import cache_key, cached_dataset, write_netcdf_atomic
from kgml.data.normalisation import Normaliser
from kgml.data.splits import kfold_by_site
from kgml.data.summary import describe

from .fluxfiles import write_fluxnet


def _ds(n_sites=5, n_time=40, seed=0):
    rng = np.random.default_rng(seed)
    tair = rng.normal(10, 5, (n_sites, n_time)).astype(np.float32)
    nee = rng.normal(0, 2, (n_sites, n_time)).astype(np.float32)
    nee[:, ::3] = np.nan
    return xr.Dataset(
        {"tair": (("site", "time"), tair, {"units": "degC"}), "nee": (("site", "time"), nee, {"units": "gC m-2 d-1"})},
        coords={
            "site": [f"US-S{i:02d}" for i in range(n_sites)],
            "time": np.arange("2001-01-01", n_time, dtype="datetime64[D]").astype("datetime64[ns]"),
            "lat": ("site", np.linspace(30, 50, n_sites)),
        },
        attrs={"time_resolution": "DD"},
    )


def test_normaliser_train_only_roundtrip(tmp_path):
    ds = _ds()
    split = kfold_by_site(ds, k=5, seed=0)[0]
    norm = Normaliser.fit(ds, ["tair", "nee"], split=split)
    train = split.select(ds, "train")
    assert norm.mean["tair"] == pytest.approx(float(np.nanmean(train.tair.values.astype(np.float64))), rel=1e-6)
    assert norm.mean["tair"] != pytest.approx(float(np.nanmean(ds.tair.values)), rel=1e-9)
    z = norm.transform(ds)
    assert z.tair.attrs["units"] == "1"
    back = norm.inverse(z)
    np.testing.assert_allclose(back.tair.values, ds.tair.values, rtol=1e-5, atol=1e-4)
    assert back.tair.attrs["units"] == "degC"
    np.testing.assert_allclose(norm.inverse_array("nee", norm.transform_array("nee", jnp.ones(3))), 1.0, rtol=1e-6)
    path = norm.save(tmp_path / "norm.json")
    assert Normaliser.load(path) == norm and json.loads(path.read_text())["format_version"] == 1
    with pytest.raises(ValueError, match="training data only"):
        Normaliser.fit(split.select(ds, "test"))
    with pytest.raises(ValueError, match="fitted in"):
        norm.transform(ds.assign(tair=ds.tair.assign_attrs(units="K")))


def test_windows_masks_and_batches():
    ds = _ds(n_sites=3, n_time=25)
    w = make_windows(ds, ["tair"], ["nee"], window=10, static=["lat"])
    assert w.x.shape == (9, 10, 1) and w.static.shape == (9, 1)  # 3 windows per site, the last one padded
    assert not w.y_mask[0, 0, 0] and w.y_mask[0, 1, 0]  # every third NEE is missing
    assert (w.y[~w.y_mask] == 0).all() and not w.x_mask[2, 5:, 0].any()  # padding past the end is masked
    b = w.batch()
    assert isinstance(b, Batch) and b.x.dtype == jnp.float32 and b.y_mask.dtype == jnp.bool_
    assert jax.tree_util.tree_structure(b).num_leaves == 7
    first = [np.asarray(bb.site_index) for bb in iterate_batches(w, 4, key=jax.random.PRNGKey(3))]
    again = [np.asarray(bb.site_index) for bb in iterate_batches(w, 4, key=jax.random.PRNGKey(3))]
    assert all((a == b).all() for a, b in zip(first, again, strict=True)) and sum(len(a) for a in first) == 9
    pred = windows_to_dataset(np.where(w.y_mask, w.y, np.nan), w, ["nee"], units=["gC m-2 d-1"])
    observed = np.isfinite(ds.nee.values)
    np.testing.assert_allclose(pred.nee.values[observed], ds.nee.values[observed], rtol=1e-6)
    monthly = _ds(n_sites=2, n_time=30).assign_attrs(time_resolution="MM")
    assert make_windows(monthly, ["tair"], ["nee"], window=12, stride=6).resolution == "MM"


def test_cache_atomic_and_keyed_by_content(tmp_path):
    src = write_fluxnet(tmp_path, n=10)
    calls = []

    def build():
        calls.append(1)
        return _ds(n_sites=1, n_time=5)

    a = cached_dataset("towers", [src], build, directory=tmp_path / "cache")
    b = cached_dataset("towers", [src], build, directory=tmp_path / "cache")
    assert len(calls) == 1 and a.identical(b) and a.attrs["kgml_cache_name"] == "towers"
    key = cache_key("towers", [src])
    src.write_text(src.read_text().replace("2010", "2011", 1))
    assert cache_key("towers", [src]) != key
    cached_dataset("towers", [src], build, directory=tmp_path / "cache")
    assert len(calls) == 2
    assert cache_key("towers", [src], {"qc": 1}) != cache_key("towers", [src], {"qc": 2})
    files = os.listdir(tmp_path / "cache")
    assert len(files) == 2 and not any(f.startswith(".") for f in files)  # no temp files left behind

    bad = _ds(n_sites=1, n_time=5)
    bad.attrs["not_serialisable"] = {"a": 1}
    with pytest.raises((TypeError, ValueError)):
        write_netcdf_atomic(bad, tmp_path / "cache" / "bad.nc")
    assert not (tmp_path / "cache" / "bad.nc").exists() and len(os.listdir(tmp_path / "cache")) == 2


def test_describe_counts_within_each_site_record():
    ds = _ds(n_sites=2, n_time=20)
    ds["tair"][1, :10] = np.nan
    ds["nee"][1, :10] = np.nan
    d = describe(ds)
    assert d["n_units"] == 2 and d["years"] == (2001, 2001, 1) and d["coverage"]["tair"] == 1.0


def test_cli_summary_on_a_small_data_dir(tmp_path, capsys):
    tower = tmp_path / "my_towers"
    tower.mkdir()
    write_fluxnet(tower, site="US-Aa1")
    write_fluxnet(tower, site="US-Aa2", seed=1)
    (tower / "sites.csv").write_text("SITE_ID,LOCATION_LAT,LOCATION_LONG,IGBP\nUS-Aa1,41,-96,CRO\nUS-Aa2,42,-95,GRA\n")
    (tmp_path / "unknown_stuff").mkdir()
    (tmp_path / "unknown_stuff" / "readme.txt").write_text("nothing")
    code = kgml_main(["data", "summary", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "my_towers" in out and "2 sites" in out and "2010–2010" in out and "nee" in out
    assert "not recognised" in out and code == 1
    assert kgml_main(["data", "summary", "--data-dir", str(tmp_path), "--only", "my_towers"]) == 0
    assert kgml_main(["data", "summary", "--data-dir", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
@pytest.mark.realdata
def test_summary_lists_tower_datasets(data_dir, capsys):
    names = ["fluxnet2015_subset_dd_us-ne1", "fluxnet2020_warmwinter_fullset_dd", "agds_fluxnet2015_daily_4sites",
             "reddyproc_examples", "bigleaf_examples"]
    names = [n for n in names if (data_dir / n).is_dir()]
    if not names:
        pytest.skip("no tower dataset folders under the data directory")
    kgml_main(["data", "summary", "--data-dir", str(data_dir), "--only", *names])
    out = capsys.readouterr().out
    for n in names:
        assert n in out
    if "fluxnet2020_warmwinter_fullset_dd" in names:
        assert "6 sites" in out and "2017–2020" in out


@pytest.mark.parametrize("window,stride,min_targets", [(50, 50, 1), (60, 25, 3), (365, 365, 0), (30, 7, 10)])
def test_make_windows_equals_the_loop_over_sites_and_starts(window, stride, min_targets):
    """The vectorised cut gives the windows a loop over sites, then starts, gives (partial last window padded,
    windows with too few targets dropped), in the same order."""
    rng = np.random.default_rng(0)
    n_s, n_t = 7, 400
    y = np.where(rng.random((n_s, n_t)) < 0.7, np.nan, rng.normal(size=(n_s, n_t)))
    y[2] = np.nan
    ds = xr.Dataset({"a": (("site", "time"), rng.normal(size=(n_s, n_t))),
                     "b": (("site", "time"), np.where(rng.random((n_s, n_t)) < 0.1, np.nan, 1.0)),
                     "y": (("site", "time"), y)},
                    coords={"site": [f"s{i}" for i in range(n_s)], "time": np.arange(n_t)})
    w = make_windows(ds, ["a", "b"], ["y"], window=window, stride=stride, min_targets=min_targets)
    x_all = np.stack([ds.a.values, ds.b.values], -1)
    starts = list(range(0, n_t - window + 1, stride))
    if starts[-1] + window < n_t:
        starts.append(starts[-1] + stride)
    pad = max(starts[-1] + window - n_t, 0)
    x_all = np.pad(x_all, ((0, 0), (0, pad), (0, 0)), constant_values=np.nan)
    y_all = np.pad(y[..., None], ((0, 0), (0, pad), (0, 0)), constant_values=np.nan)
    ref = [(s, t0) for s in range(n_s) for t0 in starts if np.isfinite(y_all[s, t0:t0 + window]).sum() >= min_targets]
    assert [(int(s), int(t)) for s, t in zip(w.site_index, w.start, strict=True)] == ref
    for i, (s, t0) in enumerate(ref):
        xs = x_all[s, t0:t0 + window]
        np.testing.assert_array_equal(w.x[i], np.where(np.isfinite(xs), xs, 0.0).astype(np.float32))
        np.testing.assert_array_equal(w.x_mask[i], np.isfinite(xs))
        np.testing.assert_array_equal(w.y_mask[i], np.isfinite(y_all[s, t0:t0 + window]))
    assert w.x.dtype == np.float32 and w.site_index.dtype == np.int32 and w.start.dtype == np.int32
