"""Issue 20 item 4, lever "IGBP as a static input": `kgml.compare.suites.igbp_indicators` marks each site's
vegetation class, the ``fluxnet_mm_igbp`` suite hands the indicators to every model slot (hybrid, same-size
network, RF/GBM, LSTM) and ``fluxnet_mm`` (the default) stays without them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr

from kgml.compare import runner
from kgml.compare.suites import IGBP_INDICATORS, get_suite, igbp_indicators

CLASSES = ["ENF", "CSH", "SNO", "GRA", "", " cro", "DBF", "OSH"]


def _sites(classes):
    return xr.Dataset(coords={"site": [f"S{i}" for i in range(len(classes))], "igbp": ("site", classes)})


def test_igbp_indicators_one_hot_with_merged_and_unmarked_classes():
    ds = igbp_indicators(_sites(CLASSES))
    flags = np.stack([ds[k].values for k in IGBP_INDICATORS], axis=-1)
    assert flags.dtype == np.float32 and set(np.unique(flags)) <= {0.0, 1.0}
    np.testing.assert_array_equal(flags.sum(axis=-1), [1, 1, 0, 1, 0, 1, 1, 1])  # SNO and "" unmarked
    assert ds["igbp_enf"].values.tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert ds["igbp_sh"].values.tolist() == [0, 1, 0, 0, 0, 0, 0, 1]  # closed and open shrubland
    assert ds["igbp_cro"].values[5] == 1.0  # case and blanks do not matter
    assert ds["igbp_gra"].attrs["units"] == "1"
    with pytest.raises(KeyError, match="no 'igbp' site coordinate"):
        igbp_indicators(xr.Dataset(coords={"site": ["a"]}))


def test_the_igbp_suite_and_only_it_gives_every_model_the_indicators():
    with_igbp, default = get_suite("fluxnet_mm_igbp"), get_suite("fluxnet_mm")
    assert with_igbp.static == ("mat", "map", *IGBP_INDICATORS)
    assert not set(IGBP_INDICATORS) & set(default.static)  # default unchanged
    assert runner.base_config(with_igbp).data.static == with_igbp.static  # hybrid, neural, process
    assert runner.base_config(default).data.static == ("mat", "map")
    assert with_igbp.folds_name == "fluxnet_mm" and with_igbp.targets == default.targets
    assert with_igbp.features == default.features and with_igbp.vegetation == default.vegetation


@pytest.fixture(scope="module")
def corpus():
    """A tiny synthetic monthly corpus with half of its sites evergreen forest, half grassland, and a planted
    class effect: monthly NEE 3 gC m-2 d-1 higher at the forests."""
    from kgml.synthetic import CorpusSpec, make_corpus

    ds = make_corpus(CorpusSpec(sites_per_block=2, years=1, monthly_fraction=1.0))
    forest = np.arange(ds.sizes["site"]) % 2 == 0
    ds = ds.assign(nee_monthly=ds["nee_monthly"] + xr.DataArray(3.0 * forest, dims="site"))
    return igbp_indicators(ds.assign_coords(igbp=("site", np.where(forest, "ENF", "GRA"))))


def _flip(ds: xr.Dataset, sites=None) -> xr.Dataset:
    """``ds`` with the evergreen-forest sites (of ``sites``, default all) relabelled grassland and vice versa
    (indicators only)."""
    which = xr.DataArray(np.isin(ds.site.values.astype(str), ds.site.values.astype(str) if sites is None else sites),
                         dims="site")
    return ds.assign_coords(igbp_enf=xr.where(which, 1.0 - ds["igbp_enf"], ds["igbp_enf"]),
                            igbp_gra=xr.where(which, 1.0 - ds["igbp_gra"], ds["igbp_gra"]))


def test_hybrid_and_network_windows_carry_the_indicators(corpus):
    """The hybrid's (and the same-size network's) static input gets one column per indicator, and a site's
    column values follow its class."""
    from kgml.experiment import prepare, windows

    suite = get_suite("fluxnet_mm_igbp")
    cfg = runner.base_config(suite, quick=True)
    cfg = runner._replace(cfg, data={"features": ("tair", "sw_in", "vpd", "precip")})
    prepared = prepare(corpus, cfg)
    assert prepared.dims["n_static"] == len(suite.static) == 12
    st = windows(corpus, cfg, prepared, require_targets=False).inputs.static
    flipped = windows(_flip(corpus), cfg, prepared, require_targets=False).inputs.static
    j_enf, j_gra = suite.static.index("igbp_enf"), suite.static.index("igbp_gra")
    other = [j for j in range(st.shape[-1]) if j not in (j_enf, j_gra)]
    assert not np.allclose(st[..., j_enf], flipped[..., j_enf])
    np.testing.assert_array_equal(st[..., other], flipped[..., other])
    default = runner.base_config(get_suite("fluxnet_mm"), quick=True)
    default = runner._replace(default, data={"features": ("tair", "sw_in", "vpd", "precip")})
    assert prepare(corpus, default).dims["n_static"] == 2


@pytest.mark.parametrize("slot", ["rf", "lstm"])
def test_baseline_slots_read_the_indicators(slot, corpus, tmp_path):
    """The benchmark's rf and lstm slots on the IGBP suite: their inputs hold the indicators (flipping a
    held-out site's class changes the prediction); the same slots on the default suite ignore them."""
    from kgml.data.splits import Part, Split

    sites = corpus.site.values.astype(str).tolist()
    split = Split("t", "site_kfold", 0, "site", Part(sites[2:]), Part(), Part(sites[:2]), Part(),
                  {"heldout": "test"})

    def run(suite_name, ds):
        suite = dataclasses.replace(get_suite(suite_name), features=("tair", "sw_in", "vpd", "precip"))
        cfg = runner.base_config(suite, quick=True)
        ctx = runner.FoldContext(suite, ds, split, tmp_path / suite_name / "folds" / "k" / "t", cfg, True, "")
        return runner.SLOTS[slot](ctx)["nee_monthly"].values

    heldout = sites[:2]
    base, flipped = run("fluxnet_mm_igbp", corpus), run("fluxnet_mm_igbp", _flip(corpus, heldout))
    assert np.isfinite(base).any() and not np.allclose(base, flipped, equal_nan=True)
    np.testing.assert_array_equal(run("fluxnet_mm", corpus), run("fluxnet_mm", _flip(corpus, heldout)))


@pytest.mark.realdata
def test_igbp_suite_marks_every_tower_of_the_frozen_folds(dataset_dir):
    """On the FLUXNET towers: every tower of a class with an indicator has exactly that indicator set, the
    others none, and every indicator marks at least 3 towers of the frozen site list."""
    from kgml.compare.suites import fold_units, load_folds

    suite = get_suite("fluxnet_mm_igbp")
    root = dataset_dir(suite.dataset_folder).parent
    ds = suite.load(root, False, None)
    assert sorted(ds.site.values.astype(str)) == fold_units(load_folds(suite))
    flags = np.stack([ds[k].values for k in IGBP_INDICATORS], axis=-1)
    marked = np.isin(ds["igbp"].values.astype(str), [c for cs in IGBP_INDICATORS.values() for c in cs])
    np.testing.assert_array_equal(flags.sum(axis=-1), marked.astype(float))
    assert (flags.sum(axis=0) >= 3).all()
