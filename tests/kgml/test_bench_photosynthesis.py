"""Issue 20 item 4, lever "a light response that saturates": ``[model] photosynthesis`` picks the natural-vegetation
physics' GPP (`kgml.synthetic.world.PHOTOSYNTHESES`), and the ``hybrid_farquhar`` / ``hybrid_evergreen_farquhar``
slots train with big-leaf Farquhar C3 instead of MOD17 light-use efficiency; lever "cold-season acclimation":
``pmodel_acclimated`` down-regulates the evergreen share's P-model GPP by Mäkelä et al. (2004)'s state of
acclimation."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from kgml.config import ConfigError, ModelConfig
from kgml.synthetic.world import PHOTOSYNTHESES, build_model
from process_models.forcing import make_met
from process_models.photosynthesis import (
    AcclimatedPModel,
    FarquharC3,
    LightUseEfficiency,
    PModel,
    acclimation_factor,
    acclimation_state,
)


def test_photosynthesis_option_builds_the_named_physics_and_refuses_the_rest():
    assert build_model("grassland").photosynthesis.__class__ is LightUseEfficiency  # the default is unchanged
    assert isinstance(build_model("grassland", photosynthesis="farquhar_c3").photosynthesis, FarquharC3)
    assert isinstance(build_model("grassland", photosynthesis="pmodel").photosynthesis, PModel)
    names = {s.name for s in build_model("grassland", photosynthesis="farquhar_c3").parameter_specs}
    assert {"vcmax25", "jmax_vcmax_ratio", "ci_ratio_c3"} <= names and "lue_max" not in names
    with pytest.raises(ValueError, match="unknown photosynthesis 'c4'"):
        build_model("grassland", photosynthesis="c4")
    with pytest.raises(ValueError, match="natural vegetation"):
        build_model("maize", photosynthesis="farquhar_c3")
    assert ModelConfig(photosynthesis="farquhar_c3").photosynthesis == "farquhar_c3"
    with pytest.raises(ConfigError, match=r"\[model\] photosynthesis must be"):
        ModelConfig(photosynthesis="farquhar")
    assert set(PHOTOSYNTHESES) == {"lue", "farquhar_c3", "pmodel", "pmodel_acclimated"}


def test_experiment_process_model_follows_the_config():
    from kgml.config import ExperimentConfig
    from kgml.experiment import process_model

    cfg = ExperimentConfig()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, vegetation="grassland"),
                              model=dataclasses.replace(cfg.model, photosynthesis="farquhar_c3"))
    assert isinstance(process_model(cfg).photosynthesis, FarquharC3)


def test_farquhar_saturates_in_light_where_lue_does_not():
    """The reason for the lever: at full canopy, doubling the light from a bright day adds far less GPP under
    Farquhar (electron transport and Rubisco limit) than under MOD17 LUE (linear in absorbed light)."""
    sw = jnp.array([100.0, 200.0, 300.0, 400.0])  # W m-2, daily mean
    met = make_met(tmin=jnp.full(4, 15.0), tmax=jnp.full(4, 25.0), sw_in=sw, precip=jnp.zeros(4),
                   doy=jnp.full(4, 180), lat=45.0)
    lai = jnp.full(4, 4.0)
    gains = {}
    for name, cls in (("lue", LightUseEfficiency), ("farquhar_c3", FarquharC3)):
        p = cls()
        theta = {s.name: jnp.asarray(s.default) for s in p.parameter_specs}
        g = np.asarray(p(theta, met, lai, jnp.ones(4)))
        assert np.all(np.diff(g) > 0)
        gains[name] = (g[3] - g[2]) / (g[1] - g[0])
    assert gains["lue"] == pytest.approx(1.0, rel=1e-3)
    assert gains["farquhar_c3"] < 0.8


def test_photosynthesis_slots_are_known():
    from kgml.compare.runner import MODEL_LABELS, PHOTOSYNTHESIS_SLOTS, SLOTS, known_models

    for slot in PHOTOSYNTHESIS_SLOTS:
        assert slot in SLOTS and slot in MODEL_LABELS and slot in known_models()


@pytest.mark.slow
def test_farquhar_slot_trains_farquhar_physics(tmp_path, dataset_dir):
    """hybrid_evergreen_farquhar on fluxnet_mm (quick): the trained physics is Farquhar C3 with the evergreen
    phenology, its learned parameters include vcmax25, the held-out NEE is finite."""
    from .test_bench import _fold_context, _slot_and_run

    data = dataset_dir("fluxnet2015_subset_mm").parent
    ctx = _fold_context(tmp_path / "a", "fluxnet_mm", data, "site_kfold")
    pred, run = _slot_and_run(ctx, "hybrid_evergreen_farquhar")
    assert run.config.model.photosynthesis == "farquhar_c3" and run.config.model.phenology == "gsi_evergreen"
    assert isinstance(run.model.process.photosynthesis, FarquharC3) and "vcmax25" in run.model.learned
    assert np.isfinite(pred["nee"].values).any() and "theta_vcmax25" in pred


@pytest.mark.slow
def test_acclimated_slot_trains_the_acclimation_parameters(tmp_path, dataset_dir):
    """hybrid_evergreen_pmodel_acclimated on fluxnet_mm (quick): the physics is the acclimated P-model with the
    evergreen phenology, the parameter network predicts τ, X0 and S_max per site inside their bounds, the held-out
    NEE is finite."""
    from process_models.photosynthesis import ACCLIM_TAU_SPEC

    from .test_bench import _fold_context, _slot_and_run

    data = dataset_dir("fluxnet2015_subset_mm").parent
    ctx = _fold_context(tmp_path / "a", "fluxnet_mm", data, "site_kfold")
    pred, run = _slot_and_run(ctx, "hybrid_evergreen_pmodel_acclimated")
    assert run.config.model.photosynthesis == "pmodel_acclimated" and run.config.model.phenology == "gsi_evergreen"
    assert isinstance(run.model.process.photosynthesis, AcclimatedPModel)
    assert {"acclim_tau", "acclim_x0", "acclim_smax"} <= set(run.model.learned)
    tau = pred["theta_acclim_tau"].values
    assert np.isfinite(tau).all() and (tau >= ACCLIM_TAU_SPEC.lower).all() and (tau <= ACCLIM_TAU_SPEC.upper).all()
    assert np.isfinite(pred["nee"].values).any()


def test_a_run_with_other_models_says_which_models_its_metrics_drop(tmp_path, capsys):
    """`kgml.compare.runner._note_dropped_models`: a folder's metrics.nc scored rf and hybrid_global on two fold
    kinds; the new table holds hybrid_pmodel and rf on one: hybrid_global and the other fold kind are named on
    stderr; no old file or the same models and kinds: silent. (`carried_models` keeps every old model whose
    predictions are saved: tests/kgml/test_bench.py.)"""
    import xarray as xr

    from kgml.compare.runner import _note_dropped_models

    path = tmp_path / "metrics.nc"
    new = xr.Dataset(coords={"model": ["hybrid_pmodel", "rf"], "fold_kind": ["site_kfold"]})
    assert _note_dropped_models(path, new) == [] and capsys.readouterr().err == ""
    xr.Dataset({"x": (("model", "fold_kind"), [[1.0, 2.0], [3.0, 4.0]])},
               coords={"model": ["rf", "hybrid_global"], "fold_kind": ["site_kfold", "leave_igbp_out"]}).to_netcdf(path)
    assert _note_dropped_models(path, new) == ["hybrid_global", "fold kind leave_igbp_out"]
    err = capsys.readouterr().err
    assert "scored hybrid_global too," in err and "--models" in err and "--fold-kinds" in err
    same = xr.Dataset(coords={"model": ["rf", "hybrid_global"], "fold_kind": ["site_kfold", "leave_igbp_out"]})
    assert _note_dropped_models(path, same) == [] and capsys.readouterr().err == ""


def test_acclimation_state_is_the_first_order_delay_of_makela_2004():
    """S_1 = T_1, S_k = S_{k-1} + (T_k - S_{k-1})/tau, against the loop; per-site tau along (time, site); tau = 1
    follows the temperature; a step from -10 to +20 degC reaches 1 - (1 - 1/tau)^k of the way after k days."""
    rng = np.random.default_rng(0)
    tair = rng.normal(5.0, 8.0, (60, 3)).astype(np.float32)
    tau = np.array([1.0, 5.0, 13.0], np.float32)
    got = np.asarray(acclimation_state(tair, tau))
    want = np.empty_like(tair)
    want[0] = tair[0]
    for k in range(1, 60):
        want[k] = want[k - 1] + (tair[k] - want[k - 1]) / tau
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got[:, 0], tair[:, 0], atol=1e-5)
    step = np.r_[np.full(10, -10.0), np.full(30, 20.0)].astype(np.float32)
    s = np.asarray(acclimation_state(step, 5.0))
    np.testing.assert_allclose(s[10 + 9], -10.0 + 30.0 * (1.0 - 0.8 ** 10), rtol=1e-5)
    f = np.asarray(acclimation_factor(s, -5.0, 20.0))
    assert f[0] == 0.0 and f[-1] == pytest.approx(1.0) and np.all(np.diff(f) >= 0)
    assert f[12] == pytest.approx((s[12] + 5.0) / 20.0, rel=1e-5)


def _spring(evergreen, n_sites=None):
    """A cold winter and a sudden spring (daily; one site, time first, or ``n_sites`` shaped (site, time))."""
    tmin = np.r_[np.full(60, -15.0), np.full(60, 8.0)].astype(np.float32)
    shape = (120,) if n_sites is None else (n_sites, 120)
    tmin = np.broadcast_to(tmin, shape)
    return make_met(tmin=jnp.asarray(tmin), tmax=jnp.asarray(tmin + 10.0), sw_in=jnp.full(shape, 200.0),
                    precip=jnp.zeros(shape), doy=jnp.broadcast_to(jnp.arange(60, 180), shape), lat=60.0,
                    evergreen=evergreen)


def test_acclimated_pmodel_lags_spring_only_in_the_evergreen_share():
    """e = 0: the P-model exactly; e = 1: GPP is zero in the deep cold and recovers over days after the warming,
    below the plain P-model on the first warm days and equal to it once S_max is reached; e = 0.5 half-way. A
    missing evergreen share is an error; so is a day computed on the spot (the delay needs the series)."""
    plain, accl = PModel(), AcclimatedPModel()
    theta = {s.name: jnp.asarray(s.default) for s in accl.parameter_specs}
    lai = jnp.full(120, 3.0)
    g0 = np.asarray(plain(theta, _spring(0.0), lai, jnp.ones(120)))
    gpp = {e: np.asarray(accl(theta, met, lai, jnp.ones(120), accl.drivers(theta, met)))
           for e in (0.0, 0.5, 1.0) for met in [_spring(e)]}
    np.testing.assert_allclose(gpp[0.0], g0, rtol=1e-6)
    assert np.all(gpp[1.0][:60] == 0.0) and np.all(g0[30:60] > 0)  # the P-model's own phi0(T) never stops
    assert gpp[1.0][61] < 0.3 * g0[61] and gpp[1.0][61] < gpp[1.0][70] < gpp[1.0][90]
    np.testing.assert_allclose(gpp[0.5], 0.5 * (gpp[0.0] + gpp[1.0]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="evergreen canopy fraction"):
        accl.drivers(theta, _spring(None))
    with pytest.raises(ValueError, match="whole series"):
        accl(theta, _spring(1.0), lai, jnp.ones(120))
    model = build_model("grassland", photosynthesis="pmodel_acclimated", phenology="gsi_evergreen")
    with pytest.raises(ValueError, match="whole series"):
        model.step(model.default_parameters(), model.init_state(model.default_parameters()), _spring(1.0))


def test_acclimated_physics_simulates_with_finite_gradients_in_both_layouts():
    """Through `process_models.simulate.simulate_sites` (site-major and time-major equal), GPP of an evergreen
    site is lower in spring than with the plain P-model, and the gradient with respect to the three acclimation
    parameters is finite and non-zero."""
    import jax

    from process_models.simulate import simulate_sites

    model = build_model("grassland", photosynthesis="pmodel_acclimated", phenology="gsi_evergreen")
    plain = build_model("grassland", photosynthesis="pmodel", phenology="gsi_evergreen")
    met = _spring(jnp.array([[1.0], [0.0]]), n_sites=2)
    theta = model.default_parameters()
    out = simulate_sites(model, theta, met).outputs
    met_tm = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1) if x.ndim == 2 else x, met)
    out_tm = simulate_sites(model, theta, met_tm, time_major=True).outputs
    np.testing.assert_allclose(np.asarray(out.gpp), np.asarray(out_tm.gpp).T, rtol=1e-5, atol=1e-6)
    ref = simulate_sites(plain, plain.default_parameters(), met).outputs
    assert float(out.gpp[0, 60:75].sum()) < 0.7 * float(ref.gpp[0, 60:75].sum())
    np.testing.assert_allclose(np.asarray(out.gpp[1]), np.asarray(ref.gpp[1]), rtol=1e-5, atol=1e-6)

    def loss(t):
        return simulate_sites(model, {**theta, **t}, met).outputs.gpp[0, 55:90].sum()

    grads = jax.grad(loss)({k: theta[k] for k in ("acclim_tau", "acclim_x0", "acclim_smax")})
    for k, g in grads.items():
        assert np.isfinite(float(g)) and float(g) != 0.0, k
