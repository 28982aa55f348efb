"""Synthetic corpora: structure, the truth they carry, the observation model (noise, gaps), reproducibility."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr

from kgml import synthetic as syn
from kgml.synthetic.observation import _tower_mask

SPEC = syn.CorpusSpec(vegetation=("maize", "grassland"), sites_per_block=3, years=2, seed=3, monthly_fraction=0.34)


@pytest.fixture(scope="module")
def corpus():
    return syn.make_corpus(SPEC)


def test_structure_and_units(corpus):
    ds = corpus
    assert ds.sizes["site"] == 3 * 2 * 3
    assert ds.sizes["time"] == 2 * 365 and ds.sizes["year"] == 2
    for name in (*syn.DRIVERS, *syn.FLUXES, "crop_yield"):
        assert "units" in ds[name].attrs, name
    assert ds.nee.attrs["units"] == "gC m-2 d-1" and ds.crop_yield.attrs["units"] == "t ha-1"
    assert set(ds.state.values) == {"IA", "IL", "NE"}
    assert set(ds.vegetation.values) == {"maize", "grassland"}
    assert ds.crop_yield.dims == ("site", "year")
    # a 365-day calendar starting on 1 January
    assert int(ds.time.dt.dayofyear[0]) == 1 and int(ds.time.dt.dayofyear[-1]) == 365


def test_true_parameters_in_bounds_and_varying(corpus):
    from process_models.ecosystem import NaturalEcosystem

    for spec in NaturalEcosystem().parameter_specs:
        v = corpus[f"theta_{spec.name}"].values
        v = v[np.isfinite(v)]
        assert v.size and np.all((v >= spec.lower) & (v <= spec.upper)), spec.name
        assert corpus[f"theta_{spec.name}"].attrs["units"] == spec.units
    rref = corpus.theta_rref_rh.values
    assert np.std(np.log(rref)) > 0.1  # site-varying
    # crop parameters are NaN at grassland sites and vice versa
    grass = corpus.vegetation.values == "grassland"
    assert np.all(np.isnan(corpus.theta_maize_hi_max.values[grass]))
    assert np.all(np.isfinite(corpus.theta_maize_hi_max.values[~grass]))


def test_carbon_identity_in_truth_and_observations(corpus):
    ds = corpus
    np.testing.assert_allclose(ds.true_nee, ds.true_reco - ds.true_gpp, atol=1e-5)
    ok = np.isfinite(ds.nee.values)
    np.testing.assert_allclose(ds.nee.values[ok], (ds.reco - ds.gpp).values[ok], atol=1e-4)
    # towers share gaps across nee, gpp, reco
    np.testing.assert_array_equal(np.isfinite(ds.gpp.values), ok)


def test_yields_only_for_crops(corpus):
    grass = corpus.vegetation.values == "grassland"
    assert np.all(np.isnan(corpus.crop_yield.values[grass]))
    y = corpus.true_crop_yield.values[~grass]
    assert np.all((y > 1.0) & (y < 20.0))


def test_monthly_towers(corpus):
    ds = corpus
    monthly = ds.monthly_tower.values
    assert 0 < monthly.sum() < ds.sizes["site"]
    assert np.all(np.isnan(ds.nee.values[monthly]))  # their daily values are removed
    assert np.isfinite(ds.nee_monthly.values[monthly]).mean() > 0.5
    assert np.all(np.isnan(ds.nee_monthly.values[~monthly]))


def test_reproducible_and_seeded():
    small = dataclasses.replace(SPEC, vegetation=("grassland",), states=syn.STATES[:1], monthly_fraction=0.0)
    a, b = syn.make_corpus(small), syn.make_corpus(small)
    xr.testing.assert_identical(a, b)
    c = syn.make_corpus(dataclasses.replace(small, seed=4))
    assert not np.allclose(a.tair.values, c.tair.values)


def test_observation_noise_is_heteroscedastic_and_gaps_as_configured():
    rng = np.random.default_rng(0)
    n_sites, n_days = 40, 365
    nee = np.tile(np.linspace(-10.0, 5.0, n_days), (n_sites, 1))
    reco = np.full_like(nee, 3.0)
    truth = {"nee": nee, "reco": reco, "rsoil": reco / 2, "crop_yield": np.full((n_sites, 1), 10.0)}
    doy = np.arange(1, n_days + 1)
    obs = syn.observe(truth, doy, rng, syn.NoiseModel(), syn.GapModel.none())
    err = obs["nee"] - nee
    small, large = np.abs(nee) < 1.0, np.abs(nee) > 8.0
    # σ = 0.25 + 0.15 |NEE|: ≈ 0.3 near zero, ≈ 1.6 at |NEE| ≈ 9
    assert 0.2 < err[small].std() < 0.45
    assert 1.2 < err[large].std() < 2.0
    assert np.all(np.isfinite(obs["nee"])) and np.all(np.isfinite(obs["rsoil"]))
    gaps = syn.GapModel(tower_p_day=0.2, tower_gaps_per_year=0.0)
    obs = syn.observe(truth, doy, rng, syn.NoiseModel().scaled(0.0), gaps)
    frac = np.isfinite(obs["nee"]).mean()
    assert abs(frac - 0.8) < 0.02
    np.testing.assert_allclose(obs["nee"][np.isfinite(obs["nee"])], nee[np.isfinite(obs["nee"])])  # noise-free
    # chambers: weekly, in season only
    measured = np.isfinite(obs["rsoil"])
    assert not measured[:, doy < 90].any() and not measured[:, doy > 300].any()
    assert 0.08 < measured[:, (doy >= 90) & (doy <= 300)].mean() < 0.16


def test_multiday_gaps():
    rng = np.random.default_rng(1)
    gaps = syn.GapModel(tower_p_day=0.0, tower_gaps_per_year=5.0, tower_gap_days=(10, 10))
    ok = _tower_mask(rng, 50, 365, gaps)
    missing = ~ok
    # every gap is a run of ≥ 10 consecutive days (runs may merge)
    runs = []
    for row in missing:
        edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        runs += list(ends - starts)
    assert runs and min(runs) >= 10
    assert 3.0 < len(runs) / 50 < 6.0


def test_covariate_predicts_parameter():
    import jax

    from process_models.ecosystem import NaturalEcosystem

    model = NaturalEcosystem()
    cov = np.random.default_rng(0).normal(size=200).astype(np.float32)
    theta = syn.sample_parameters(model, 200, jax.random.PRNGKey(0), covariate=cov, covariate_params=("rref_rh",),
                                  covariate_corr=1.0, prior_sd=0.5)
    spec = {s.name: s for s in model.parameter_specs}["rref_rh"]
    u = np.asarray(spec.to_unconstrained(theta["rref_rh"]))
    np.testing.assert_allclose(u, spec.default_unconstrained + 0.5 * cov, atol=1e-3)
    # parameters outside `varying` stay at the defaults
    assert float(theta["q10_ra"]) == pytest.approx(spec_default(model, "q10_ra"))
    with pytest.raises(KeyError, match="not declared"):
        syn.sample_parameters(model, 3, jax.random.PRNGKey(0), fixed={"vcmax25": 50.0})


def spec_default(model, name):
    return {s.name: s for s in model.parameter_specs}[name].default


def test_netcdf_round_trip_and_met(corpus, tmp_path):
    path = tmp_path / "corpus.nc"
    syn.save_corpus(corpus, path)
    with xr.open_dataset(path) as back:
        back = back.load()
    np.testing.assert_array_equal(back.nee.values, corpus.nee.values)
    np.testing.assert_array_equal(back.theta_rref_rh.values, corpus.theta_rref_rh.values)
    assert back.time.dt.calendar == "noleap"
    met = syn.met_from_dataset(back)
    np.testing.assert_allclose(met.tair, corpus.tair.values, atol=1e-6)
    np.testing.assert_allclose(met.doy[0, :3], [1, 2, 3])
    np.testing.assert_allclose(met.lat[:, 0], corpus.lat.values)


def test_unknown_vegetation():
    with pytest.raises(ValueError, match="unknown vegetation"):
        syn.build_model("forest")
