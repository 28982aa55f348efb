"""Tests of process_models.photosynthesis: properties over random drivers and parameters, gradients against finite
differences, golden values (Bernacchi et al. 2001 table, pyrealm P-model, independent numpy C3/C4 leaf models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models import constants as C
from process_models import photosynthesis as P
from process_models import radiation
from process_models.forcing import Met
from process_models.parameters import collect_specs, default_parameters

VARIANTS = [P.LightUseEfficiency, P.FarquharC3, P.CollatzC4, P.PModel]
IDS = [v.__name__ for v in VARIANTS]
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "pmodel_pyrealm.json"


def make_met(n=None, **overrides) -> Met:
    """A summer day at a mid-latitude site (scalars, or shape (n,) when n is given); overrides by name."""
    fields = dict(
        tair=22.0, tmin=15.0, tmax=29.0, sw_in=280.0, vpd=10.0, precip=0.0, tsoil=20.0,
        co2=400.0, patm=C.P_STANDARD, doy=190.0, lat=42.0,
    )
    fields.update(overrides)
    shape = () if n is None else (n,)
    return Met(**{k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), shape) for k, v in fields.items()})


def random_met(rng: np.random.Generator, n: int) -> Met:
    """Drivers spanning the plausible range, including night (sw_in = 0), frost, heat, dry air, high altitude."""
    tmin = rng.uniform(-30.0, 30.0, n)
    tmax = tmin + rng.uniform(0.0, 20.0, n)
    sw_in = rng.uniform(0.0, 400.0, n)
    sw_in[: n // 8] = 0.0
    return Met(
        tair=jnp.asarray((tmin + tmax) / 2, jnp.float32),
        tmin=jnp.asarray(tmin, jnp.float32),
        tmax=jnp.asarray(tmax, jnp.float32),
        sw_in=jnp.asarray(sw_in, jnp.float32),
        vpd=jnp.asarray(rng.uniform(0.0, 60.0, n), jnp.float32),
        precip=jnp.zeros(n, jnp.float32),
        tsoil=jnp.asarray((tmin + tmax) / 2, jnp.float32),
        co2=jnp.asarray(rng.uniform(150.0, 1000.0, n), jnp.float32),
        patm=jnp.asarray(rng.uniform(60000.0, 105000.0, n), jnp.float32),
        doy=jnp.asarray(rng.integers(1, 367, n), jnp.float32),
        lat=jnp.asarray(rng.uniform(-80.0, 80.0, n), jnp.float32),
    )


def random_theta(rng: np.random.Generator, specs, n: int) -> dict:
    """Parameters uniform within their bounds, with the first two draws at the lower and upper bounds."""
    out = {}
    for s in specs:
        v = rng.uniform(s.lower, s.upper, n)
        v[0], v[1] = s.lower, s.upper
        out[s.name] = jnp.asarray(v, jnp.float32)
    return out


def gpp_fn(cls):
    """(theta, met, lai, water_stress) -> GPP for one site-day, vmapped over a leading axis of everything."""
    return jax.jit(jax.vmap(cls(), in_axes=(0, 0, 0, 0)))


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


def test_specs_are_consistent_and_share_k_ext():
    specs = collect_specs(*(v.parameter_specs for v in VARIANTS))  # raises on conflicting duplicates
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for v in VARIANTS:
        assert radiation.K_EXT_SPEC in v.parameter_specs
        assert all(s.reference for s in v.parameter_specs)
    with pytest.raises(TypeError):
        P.Photosynthesis()  # abstract


def test_lue_threshold_bounds_cannot_cross():
    specs = {s.name: s for s in P.LightUseEfficiency.parameter_specs}
    assert specs["tmin_close"].upper < specs["tmin_open"].lower
    assert specs["vpd_open"].upper < specs["vpd_close"].lower


# ---------------------------------------------------------------------------------------------
# Properties over random drivers and parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_gpp_nonnegative_finite_and_zero_cases(cls):
    rng = np.random.default_rng(0)
    n = 256
    met = random_met(rng, n)
    theta = random_theta(rng, cls.parameter_specs, n)
    lai = jnp.asarray(rng.uniform(0.0, 8.0, n), jnp.float32)
    stress = jnp.asarray(rng.uniform(0.0, 1.0, n), jnp.float32)
    f = gpp_fn(cls)
    gpp = np.asarray(f(theta, met, lai, stress))
    assert np.all(np.isfinite(gpp)) and np.all(gpp >= 0.0)
    assert np.all(gpp[: n // 8] == 0.0)  # night-like: no radiation
    assert np.max(gpp) > 1.0  # not trivially zero
    assert np.all(np.asarray(f(theta, met, jnp.zeros(n), stress)) == 0.0)  # no leaves
    assert np.all(np.asarray(f(theta, met, lai, jnp.zeros(n))) == 0.0)  # full water stress
    full = np.asarray(f(theta, met, lai, jnp.ones(n)))
    np.testing.assert_allclose(gpp, full * np.asarray(stress), rtol=1e-5, atol=1e-6)  # β multiplies GPP


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_polar_night_is_zero(cls):
    theta = default_parameters(cls.parameter_specs)
    met = make_met(lat=80.0, doy=355.0, sw_in=0.0, tair=-20.0, tmin=-25.0, tmax=-15.0)
    assert radiation.daylength(80.0, 355.0) == 0.0
    assert float(cls()(theta, met, 3.0, 1.0)) == 0.0
    if cls in (P.FarquharC3, P.CollatzC4):  # daylength-based integration: inconsistent sw_in > 0 still gives 0
        met = make_met(lat=80.0, doy=355.0, sw_in=50.0)
        gpp = cls()(theta, met, 3.0, 1.0)
        assert float(gpp) == 0.0
        grads = jax.grad(lambda th: cls()(th, met, 3.0, 1.0))(theta)
        assert all(np.isfinite(float(g)) for g in grads.values())


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_monotone_in_radiation_and_lai(cls):
    rng = np.random.default_rng(1)
    f = jax.jit(jax.vmap(cls(), in_axes=(None, 0, 0, None)))
    for k in range(3):
        theta = {name: v[k + 2] for name, v in random_theta(rng, cls.parameter_specs, 5).items()}
        sw = jnp.linspace(0.0, 400.0, 41)
        gpp_sw = np.asarray(f(theta, make_met(41, sw_in=sw), jnp.full(41, 3.0), 1.0))
        assert np.all(np.diff(gpp_sw) >= -1e-5 * gpp_sw.max()) and gpp_sw[-1] > gpp_sw[1] > 0.0
        lai = jnp.linspace(0.0, 8.0, 41)
        gpp_lai = np.asarray(f(theta, make_met(41), lai, 1.0))
        assert np.all(np.diff(gpp_lai) >= -1e-5 * gpp_lai.max()) and gpp_lai[-1] > gpp_lai[1] > 0.0


def test_co2_response_c3_strong_c4_saturating():
    co2 = jnp.array([350.0, 700.0])
    met = make_met(2, co2=co2, tair=25.0)
    out = {}
    for cls in (P.FarquharC3, P.CollatzC4, P.PModel):
        f = jax.vmap(cls(), in_axes=(None, 0, None, None))
        gpp = np.asarray(f(default_parameters(cls.parameter_specs), met, 4.0, 1.0))
        out[cls] = gpp[1] / gpp[0] - 1.0
    assert out[P.FarquharC3] > 0.25  # C3 under CO2 doubling: tens of percent (Ainsworth & Long 2005)
    assert out[P.PModel] > 0.25
    assert 0.0 < out[P.CollatzC4] < 0.05  # C4: CO2-saturated at ambient ci
    # monotone for C4 over a wide CO2 range
    co2 = jnp.linspace(100.0, 1000.0, 19)
    f = jax.vmap(P.CollatzC4(), in_axes=(None, 0, None, None))
    gpp = np.asarray(f(default_parameters(P.CollatzC4.parameter_specs), make_met(19, co2=co2), 4.0, 1.0))
    assert np.all(np.diff(gpp) > 0.0)
    assert gpp[-1] - gpp[-2] < 0.1 * (gpp[1] - gpp[0])  # saturating


def test_realistic_days():
    # Midsummer maize day (e.g. US-Ne1, 41 °N, July): 24-h mean SW 300 W m-2, T 25 °C, LAI 4.5
    maize = make_met(tair=25.0, tmin=18.0, tmax=31.0, sw_in=300.0, vpd=12.0, lat=41.2, doy=190.0)
    # Temperate C3 forest midsummer day (45 °N): 24-h mean SW 250 W m-2, T 20 °C, LAI 5
    forest = make_met(tair=20.0, tmin=13.0, tmax=25.0, sw_in=250.0, vpd=8.0, lat=45.0, doy=190.0)
    gpp = {
        cls: (
            float(cls()(default_parameters(cls.parameter_specs), maize, 4.5, 1.0)),
            float(cls()(default_parameters(cls.parameter_specs), forest, 5.0, 1.0)),
        )
        for cls in VARIANTS
    }
    assert 10.0 <= gpp[P.CollatzC4][0] <= 30.0, gpp
    assert 10.0 <= gpp[P.LightUseEfficiency][0] <= 30.0, gpp  # MOD17 cropland BPLUT
    for cls in (P.FarquharC3, P.PModel, P.LightUseEfficiency):
        assert 5.0 <= gpp[cls][1] <= 15.0, (cls, gpp)


def test_lue_scalars_follow_mod17_ramps():
    theta = default_parameters(P.LightUseEfficiency.parameter_specs)
    model = P.LightUseEfficiency()
    base = make_met(tmin=20.0, vpd=2.0)
    full = float(model(theta, base, 100.0, 1.0))
    par_mj = 280.0 * 0.45 * 0.0864
    np.testing.assert_allclose(full, 1.3 * par_mj, rtol=1e-5)  # fAPAR → 1, both scalars 1
    assert float(model(theta, make_met(tmin=-8.5), 3.0, 1.0)) == 0.0
    assert float(model(theta, make_met(vpd=45.0), 3.0, 1.0)) == 0.0  # 4500 Pa closes (BPLUT cropland)
    half_t = float(model(theta, make_met(tmin=(12.02 - 8.0) / 2, vpd=2.0), 100.0, 1.0))
    np.testing.assert_allclose(half_t, full / 2, rtol=1e-5)
    half_v = float(model(theta, make_met(tmin=20.0, vpd=(6.5 + 45.0) / 2), 100.0, 1.0))
    np.testing.assert_allclose(half_v, full / 2, rtol=1e-5)


def test_colimitation_root():
    a = jnp.array([0.0, 0.0, 1.0, 5.0, 3.0, 1e-6])
    b = jnp.array([0.0, 2.0, 1.0, 2.0, 300.0, 1e3])
    x = np.asarray(P.colimitation(a, b, 0.83))
    an, bn = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = (an + bn - np.sqrt((an + bn) ** 2 - 4 * 0.83 * an * bn)) / (2 * 0.83)
    np.testing.assert_allclose(x[1:], ref[1:], rtol=1e-4, atol=1e-9)
    assert x[0] == 0.0
    assert np.all(x <= np.minimum(an, bn) + 1e-7)
    np.testing.assert_allclose(P.colimitation(a, b, 1.0), np.minimum(an, bn), rtol=1e-5, atol=1e-7)
    g = jax.grad(lambda u: P.colimitation(u[0], u[1], 0.9))(jnp.zeros(2))
    assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------------------------------------
# Gradients: finite and equal to finite differences, at the defaults and at the bounds (float64)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_gradients_match_finite_differences(cls):
    specs = cls.parameter_specs
    with jax.enable_x64(True):
        met = Met(*(jnp.asarray(v, jnp.float64) for v in make_met(tair=18.0, tmin=9.0, vpd=14.0)[:11]))
        model = cls()

        def f(th):
            return model(th, met, jnp.float64(3.0), jnp.float64(0.8))

        grad = jax.jit(jax.grad(f))
        points = {"default": {s.name: s.default for s in specs}}
        points["lower"] = {s.name: s.lower for s in specs}
        points["upper"] = {s.name: s.upper for s in specs}
        for label, values in points.items():
            theta = {k: jnp.float64(v) for k, v in values.items()}
            g = grad(theta)
            for s in specs:
                h = 1e-6 * (s.upper - s.lower)
                up = dict(theta, **{s.name: theta[s.name] + h})
                dn = dict(theta, **{s.name: theta[s.name] - h})
                fd = (float(f(up)) - float(f(dn))) / (2 * h)
                an = float(g[s.name])
                assert math.isfinite(an), (label, s.name)
                assert an == pytest.approx(fd, rel=1e-5, abs=1e-7 * max(1.0, abs(float(f(theta))))), (
                    label, s.name, an, fd,
                )


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_gradients_finite_in_unconstrained_space_at_extremes(cls):
    specs = cls.parameter_specs
    rng = np.random.default_rng(2)
    met = random_met(rng, 16)
    lai = jnp.asarray(rng.uniform(0.0, 8.0, 16), jnp.float32)

    def loss(u):
        theta = {s.name: s.to_physical(u[s.name]) for s in specs}
        return jnp.sum(jax.vmap(cls(), in_axes=(None, 0, 0, None))(theta, met, lai, 1.0))

    for value in (-30.0, 0.0, 30.0):
        g = jax.grad(loss)({s.name: jnp.float32(value) for s in specs})
        assert all(np.isfinite(float(x)) for x in g.values()), (value, g)


# ---------------------------------------------------------------------------------------------
# jit / vmap equal a Python loop
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_jit_vmap_equal_python_loop(cls):
    rng = np.random.default_rng(3)
    n = 6
    met = random_met(rng, n)
    theta = random_theta(rng, cls.parameter_specs, n)
    lai = jnp.asarray(rng.uniform(0.0, 8.0, n), jnp.float32)
    stress = jnp.asarray(rng.uniform(0.0, 1.0, n), jnp.float32)
    batched = np.asarray(gpp_fn(cls)(theta, met, lai, stress))
    model = cls()
    loop = [
        float(model({k: v[i] for k, v in theta.items()}, Met(*(x[i] for x in met[:11])), lai[i], stress[i]))
        for i in range(n)
    ]
    np.testing.assert_allclose(batched, loop, rtol=2e-5, atol=1e-6)
    # whole arrays broadcast elementwise as well (no vmap)
    np.testing.assert_allclose(model(theta, met, lai, stress), loop, rtol=2e-5, atol=1e-6)
    assert isinstance(model, eqx.Module)


# ---------------------------------------------------------------------------------------------
# Golden values
# ---------------------------------------------------------------------------------------------


def test_bernacchi_kinetics_at_25c_match_published_table():
    """Bernacchi et al. (2001) Plant Cell Environ. 24:253, Table 1: Γ* 42.75 µmol mol-1, K_c 404.9 µmol mol-1,
    K_o 278.4 mmol mol-1 at 25 °C; as partial pressures at 101 325 Pa."""
    p = C.P_STANDARD
    np.testing.assert_allclose(P.bernacchi_gamma_star(25.0, p) / p * 1e6, 42.75, rtol=1e-6)
    np.testing.assert_allclose(P.bernacchi_kc(25.0, p) / p * 1e6, 404.9, rtol=1e-6)
    np.testing.assert_allclose(P.bernacchi_ko(25.0, p) / p * 1e3, 278.4, rtol=1e-6)
    np.testing.assert_allclose(P.bernacchi_gamma_star(25.0, p), 4.3316, rtol=1e-4)  # Pa
    # Away from 25 °C, Bernacchi's own form exp(c − ΔH_a/(R T)) with the Table 1 scaling constants c (rounded
    # to 0.01, hence ~1 % agreement): Γ* c = 19.02, ΔH = 37.83; K_c 38.05, 79.43; K_o (mmol) 20.30, 36.38 kJ mol-1.
    for t in (10.0, 35.0):
        rt = C.GAS_CONSTANT * 1e-3 * (t + C.KELVIN_OFFSET)
        np.testing.assert_allclose(P.bernacchi_gamma_star(t, p) / p * 1e6, math.exp(19.02 - 37.83 / rt), rtol=0.01)
        np.testing.assert_allclose(P.bernacchi_kc(t, p) / p * 1e6, math.exp(38.05 - 79.43 / rt), rtol=0.01)
        np.testing.assert_allclose(P.bernacchi_ko(t, p) / p * 1e3, math.exp(20.30 - 36.38 / rt), rtol=0.01)


def test_pmodel_docstring_values_of_pyrealm():
    """Worked examples printed in pyrealm 2.0.0 docstrings (pmodel/functions.py, core/water.py,
    pmodel/optimal_chi.py, pmodel/jmax_limitation.py) at 20 °C, 101 325 Pa, VPD 1000 Pa, CO2 400 ppm."""
    with jax.enable_x64(True):
        t, p = jnp.float64(20.0), jnp.float64(C.P_STANDARD)
        np.testing.assert_allclose(P.pmodel_gamma_star(t, p), 3.33925, rtol=2e-5)
        np.testing.assert_allclose(P.pmodel_kmm(t, p), 46.09928, rtol=2e-5)
        np.testing.assert_allclose(P.water_density_fisher(t, p), 998.206, rtol=1e-6)
        np.testing.assert_allclose(P.water_viscosity_huber(t, p), 0.0010016, atol=5e-8)
        np.testing.assert_allclose(P.relative_viscosity(t, p), 1.12536, rtol=1e-5)
        s = P.pmodel_state(t, 10.0, 400.0, p, 0.081785)
        np.testing.assert_allclose([s.chi, s.mc, s.mj, s.f_v], [0.69435, 0.33408, 0.7123, 0.555], atol=6e-5)


def _golden():
    doc = json.loads(GOLDEN.read_text())
    cols = {k: np.array([np.nan if x is None else x for x in v], float) for k, v in doc["columns"].items()}
    return doc, cols


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_pmodel_matches_pyrealm(x64):
    """pyrealm 2.0.0 PModel (prentice14, wang17, kphio 'temperature', reference_kphio 0.081785) on a 240-point grid,
    generated by tests/golden/make_pmodel_golden.py. The residual ~1e-5 comes from the gas constant (CODATA
    8.314462618 here, 8.3145 in pyrealm), amplified where m_j approaches c*."""
    doc, g = _golden()
    assert doc["pyrealm_version"] == "2.0.0" and doc["settings"]["method_jmaxlim"] == "wang17"
    kphio = doc["settings"]["reference_kphio"]
    assert kphio == P.KPHIO_SPEC.default
    rtol = 2e-4 if not x64 else 1e-4
    with jax.enable_x64(x64):
        dt = jnp.float64 if x64 else jnp.float32

        def a(k):
            return jnp.asarray(g[k], dt)

        vpd_hpa = a("vpd_pa") / C.PA_PER_HPA
        s = P.pmodel_state(a("tc"), vpd_hpa, a("co2_ppm"), a("patm_pa"), dt(kphio))
        gpp = P.pmodel_gpp(a("tc"), vpd_hpa, a("co2_ppm"), a("patm_pa"), a("ppfd"), a("fapar"), dt(kphio))
    pairs = [
        ("ca", "ca"), ("gamma_star", "gammastar"), ("kmm", "kmm"), ("ns_star", "ns_star"), ("xi", "xi"),
        ("chi", "chi"), ("mj", "mj"), ("mc", "mc"), ("f_v", "f_v"), ("phi0", "kphio"), ("lue", "lue"),
    ]
    for ours, theirs in pairs:
        ref = g[theirs]
        ok = np.isfinite(ref)
        np.testing.assert_allclose(np.asarray(getattr(s, ours))[ok], ref[ok], rtol=rtol, atol=1e-9, err_msg=ours)
    gpp_ref = g["gpp"] * C.SECONDS_PER_DAY * 1e-6  # µgC m-2 s-1 → gC m-2 d-1
    ok = np.isfinite(gpp_ref)
    np.testing.assert_allclose(np.asarray(gpp)[ok], gpp_ref[ok], rtol=rtol, atol=1e-9)
    # where pyrealm is undefined (m_j <= c*), ours is 0, not NaN
    assert (~ok).any() and np.all(np.asarray(gpp)[~ok] == 0.0) and np.all(np.asarray(s.f_v)[~ok] == 0.0)
    assert np.any(gpp_ref[ok] == 0.0) and np.any(gpp_ref[ok] > 1.0)  # φ0 = 0 in frost; real GPP elsewhere


def _np_colimit(a, b, theta):
    """Smaller root of θx² − (a+b)x + ab = 0 by the textbook formula (as in BioCro/MLCan)."""
    return ((a + b) - math.sqrt((a + b) ** 2 - 4.0 * theta * a * b)) / (2.0 * theta)


def test_collatz_leaf_against_independent_numpy():
    """One maize leaf, Collatz et al. (1992) Appendix B written out independently in float64: Vmax 39, α 0.04,
    k 0.7 mol m-2 s-1, T 30 °C, Q 1500 µmol m-2 s-1, ci 150 µmol mol-1, θ 0.83, β 0.93, Q10 2."""
    t, q, ci = 30.0, 1500.0, 150e-6
    q10 = 2.0 ** ((t - 25.0) / 10.0)
    vt = 39.0 * q10 / ((1.0 + math.exp(0.3 * (13.0 - t))) * (1.0 + math.exp(0.3 * (t - 36.0))))
    kt = 0.7 * q10
    m = _np_colimit(vt, 0.04 * q, 0.83)
    expected = _np_colimit(m, kt * ci * 1e6, 0.93)
    with jax.enable_x64(True):
        vmax = 39.0 * P.collatz_vmax_response(t)
        k = 0.7 * P.collatz_q10_response(t)
        ours = float(P.collatz_c4_rate(vmax, 0.04, k, q, ci))
    assert ours == pytest.approx(expected, rel=1e-10)
    assert 20.0 < expected < 40.0  # Collatz et al. (1992) Fig. 4: light-saturated maize leaf ~30–40 µmol m-2 s-1


def test_farquhar_leaf_against_independent_numpy():
    """One C3 leaf at 25 °C, 101 325 Pa, written out from von Caemmerer (2000) eqs. 2.20/2.23 in float64."""
    p, vcmax, jmax, apar, ci = 101325.0, 60.0, 100.0, 1200.0, 28.0
    gs, kc, ko, o = 42.75e-6 * p, 404.9e-6 * p, 278.4e-3 * p, 0.209476 * p
    wc = vcmax * (ci - gs) / (ci + kc * (1.0 + o / ko))
    j = _np_colimit(0.5 * 0.85 * apar, jmax, 0.7)
    wj = j / 4.0 * (ci - gs) / (ci + 2.0 * gs)
    expected = _np_colimit(wc, wj, 0.98)
    with jax.enable_x64(True):
        ours = float(
            P.farquhar_c3_rate(
                vcmax, jmax, apar, ci, P.bernacchi_gamma_star(25.0, p), P.bernacchi_kc(25.0, p),
                P.bernacchi_ko(25.0, p), C.O2_MOLE_FRACTION * p,
            )
        )
    assert ours == pytest.approx(expected, rel=1e-10)
    # big leaf = leaf model at scaled capacity and canopy-absorbed light (Sellers et al. 1992)
    with jax.enable_x64(True):
        lai, k_ext, ppfd24, n_h = 4.0, 0.5, 600.0, 15.0
        scale = (1.0 - math.exp(-k_ext * lai)) / k_ext
        canopy = float(
            P.farquhar_c3_canopy_gpp(25.0, ppfd24, n_h, 400.0, p, lai, k_ext, vcmax, jmax / vcmax, 0.7)
        )
        leaf = float(
            P.farquhar_c3_rate(
                scale * vcmax, scale * jmax, k_ext * scale * ppfd24 * 24.0 / n_h, 0.7 * 400e-6 * p,
                P.bernacchi_gamma_star(25.0, p), P.bernacchi_kc(25.0, p), P.bernacchi_ko(25.0, p),
                C.O2_MOLE_FRACTION * p,
            )
        )
    assert canopy == pytest.approx(leaf * n_h * 3600.0 * 12.0107e-6, rel=1e-10)


def test_temperature_responses_are_one_at_25c_and_peaked():
    np.testing.assert_allclose(P.kattge_knorr_vcmax_response(25.0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(P.kattge_knorr_jmax_response(25.0), 1.0, rtol=1e-6)
    t = jnp.linspace(0.0, 50.0, 501)
    for f in (P.kattge_knorr_vcmax_response, P.collatz_vmax_response):
        y = np.asarray(f(t))
        t_opt = float(t[np.argmax(y)])
        assert 30.0 < t_opt < 42.0, (f.__name__, t_opt)
    # Collatz (1992) eq. 5B at 25 °C: 1/((1 + e^(−3.6))(1 + e^(−3.3)))
    np.testing.assert_allclose(
        P.collatz_vmax_response(25.0), 1.0 / ((1.0 + math.exp(-3.6)) * (1.0 + math.exp(-3.3))), rtol=1e-6
    )
