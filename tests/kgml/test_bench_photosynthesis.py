"""Issue 20 item 4, lever "a light response that saturates": ``[model] photosynthesis`` picks the natural-vegetation
physics' GPP (`kgml.synthetic.world.PHOTOSYNTHESES`), and the ``hybrid_farquhar`` / ``hybrid_evergreen_farquhar``
slots train with big-leaf Farquhar C3 instead of MOD17 light-use efficiency."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from kgml.config import ConfigError, ModelConfig
from kgml.synthetic.world import PHOTOSYNTHESES, build_model
from process_models.forcing import make_met
from process_models.photosynthesis import FarquharC3, LightUseEfficiency, PModel


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
    assert set(PHOTOSYNTHESES) == {"lue", "farquhar_c3", "pmodel"}


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


def test_a_run_with_other_models_says_which_models_its_metrics_drop(tmp_path, capsys):
    """`kgml.compare.runner._note_dropped_models`: a folder's metrics.nc scored rf and hybrid_global; the new table
    holds hybrid_pmodel and rf: hybrid_global is named on stderr; no old file or the same models: silent."""
    import xarray as xr

    from kgml.compare.runner import _note_dropped_models

    path = tmp_path / "metrics.nc"
    new = xr.Dataset(coords={"model": ["hybrid_pmodel", "rf"]})
    assert _note_dropped_models(path, new) == [] and capsys.readouterr().err == ""
    xr.Dataset({"x": ("model", [1.0, 2.0])}, coords={"model": ["rf", "hybrid_global"]}).to_netcdf(path)
    assert _note_dropped_models(path, new) == ["hybrid_global"]
    err = capsys.readouterr().err
    assert "scored hybrid_global too;" in err and "--models" in err
    assert _note_dropped_models(path, xr.Dataset(coords={"model": ["rf", "hybrid_global"]})) == []
