"""Speed of the process model on this machine: forward and gradient site-days per second, against a
plain vectorised-numpy twin of the same daily kernel, the P-model against pyrealm (when installed), and
crop site-seasons per second. The last printed line is one JSON object with the figures.

    python benchmarks/process_speed.py [--sites 20000] [--years 1] [--repeats 3] [--devices N]

The sites are split across N XLA host devices (default: every CPU core), one thread each; the numpy twin
runs single-process as numpy does. Speed is measured here and recorded in benchmarks/RESULTS.md, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=20000, help="sites in the forward/gradient runs")
    p.add_argument("--years", type=int, default=1, help="simulated years per site")
    p.add_argument("--crop-sites", type=int, default=4000, help="sites in the crop run (one season each)")
    p.add_argument("--pmodel-points", type=int, default=2_000_000, help="site-days in the P-model run")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1, help="XLA host devices (threads)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:  # must precede the first jax import
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from record import append_result, load_average  # noqa: E402

from process_models import constants as C  # noqa: E402
from process_models.ecosystem import NaturalEcosystem, maize  # noqa: E402
from process_models.forcing import Met, make_met  # noqa: E402
from process_models.phenology import PrescribedLAI  # noqa: E402
from process_models.photosynthesis import pmodel_gpp  # noqa: E402
from process_models.radiation import MJ_PER_DAY_PER_W, clear_sky_radiation  # noqa: E402
from process_models.simulate import simulate_sites  # noqa: E402
from process_models.temperature import LLOYD_TAYLOR_T0_C, LLOYD_TAYLOR_TREF_C  # noqa: E402

# --------------------------------------------------------------------------------------------------
# Forcing: a seasonal cycle with site-to-site offsets and day-to-day noise (deterministic seed)
# --------------------------------------------------------------------------------------------------


def compact(met: Met) -> Met:
    """The same forcing with latitude per site ``(site, 1)``, day of year per day ``(1, time)`` and CO2 and air
    pressure as ``(1, 1)`` (all constant here): the layout `simulate_sites` reads at the fields' own shapes."""
    return met._replace(lat=met.lat[:, :1], doy=met.doy[:1, :], co2=met.co2[:1, :1], patm=met.patm[:1, :1])


def make_forcing(n_sites: int, n_days: int, seed: int = 0, with_lai: bool = True) -> Met:
    rng = np.random.default_rng(seed)
    doy = (np.arange(n_days) % 365 + 1).astype(np.float32)
    lat = rng.uniform(30.0, 55.0, (n_sites, 1)).astype(np.float32)
    season = -np.cos(2 * np.pi * (doy - 15) / 365.0)[None, :]
    tmean = rng.uniform(5, 15, (n_sites, 1)) + 13 * season + rng.normal(0, 3, (n_sites, n_days))
    dtr = rng.uniform(8, 14, (n_sites, 1))
    clear = np.asarray(clear_sky_radiation(lat, doy[None, :])) / MJ_PER_DAY_PER_W
    sw = clear * rng.uniform(0.35, 0.95, (n_sites, n_days))
    wet = rng.random((n_sites, n_days)) < 0.3
    precip = np.where(wet, rng.gamma(0.8, 10.0, (n_sites, n_days)), 0.0)
    lai = np.clip(3.0 + 2.5 * season, 0.3, None) * rng.uniform(0.6, 1.2, (n_sites, 1))
    return make_met(
        tmin=(tmean - dtr / 2).astype(np.float32),
        tmax=(tmean + dtr / 2).astype(np.float32),
        sw_in=sw.astype(np.float32),
        precip=precip.astype(np.float32),
        doy=np.broadcast_to(doy, (n_sites, n_days)),
        lat=np.broadcast_to(lat, (n_sites, n_days)),
        lai=lai.astype(np.float32) if with_lai else None,
    )


def site_theta(model, n_sites: int, seed: int = 1) -> dict:
    """Per-site parameters: each drawn in unconstrained space around its default."""
    rng = np.random.default_rng(seed)
    return {
        s.name: s.to_physical(s.default_unconstrained + 0.3 * rng.standard_normal(n_sites).astype(np.float32))
        for s in model.parameter_specs
    }


# --------------------------------------------------------------------------------------------------
# The numpy twin: NaturalEcosystem(LightUseEfficiency, LloydTaylor, Bucket, PrescribedLAI), written
# again with numpy only (same equations, same order; checked against the JAX model below).
# --------------------------------------------------------------------------------------------------


def _svp(t):
    return 0.6108 * np.exp(17.27 * t / (t + 237.3))


def _net_radiation(sw, tmin, tmax, ea, lat, doy, albedo):
    rs = sw * MJ_PER_DAY_PER_W
    phi = np.deg2rad(lat)
    delta = 0.409 * np.sin(2 * np.pi * doy / 365.0 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))
    dr = 1 + 0.033 * np.cos(2 * np.pi * doy / 365.0)
    ra = 24 * 60 / np.pi * C.SOLAR_CONSTANT_MJ_PER_MIN * dr * (
        ws * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(ws)
    )
    rso = 0.75 * ra
    ratio = np.clip(np.where(rso > 1e-3, rs / np.where(rso > 1e-3, rso, 1.0), 0.5), 0.25, 1.0)
    tk4 = ((tmax + C.KELVIN_OFFSET) ** 4 + (tmin + C.KELVIN_OFFSET) ** 4) / 2
    rnl = C.STEFAN_BOLTZMANN_MJ_DAY * tk4 * (0.34 - 0.14 * np.sqrt(np.maximum(ea, 0) + 1e-12)) * (1.35 * ratio - 0.35)
    return (1 - albedo) * rs - rnl


def _numpy_step(th, w, m):
    """One day for all sites (arrays shaped (site,)); returns the new water and (gpp, reco, nee)."""
    lai = np.maximum(m["lai"], 0.0)
    # bucket
    whc = th["porosity"] * th["fc_frac"] * (1 - th["wp_frac"]) * th["root_depth"]
    w_in = w + np.maximum(m["precip"], 0.0)
    wrel_in = np.clip(w_in / whc, 0, 1)
    ea = np.maximum(_svp(m["tair"]) - m["vpd"] / 10.0, 0.0)
    rn = _net_radiation(m["sw_in"], m["tmin"], m["tmax"], ea, m["lat"], m["doy"], th["albedo"])
    slope = 4098 * _svp(m["tair"]) / (m["tair"] + 237.3) ** 2
    gamma = C.CP_AIR_MJ * (m["patm"] / 1000.0) / (C.EPSILON_WATER_AIR * C.LATENT_HEAT_VAPORISATION)
    pet = np.maximum(th["pt_alpha"] * slope / (slope + gamma) * rn / C.LATENT_HEAT_VAPORISATION, 0.0)
    cover = -np.expm1(-th["k_ext"] * lai)
    transp = np.minimum(cover * pet, th["et_supply_max"] * wrel_in)
    soil_evap = (1 - cover) * pet * 0.25 * (1 - np.cos(np.pi * wrel_in)) ** 2
    et = np.minimum(transp + soil_evap, w_in)
    w_new = np.minimum(w_in - et, whc)
    wrel = np.clip(w_new / whc, 0, 1)
    thr = 1 - th["depletion_frac"]
    stress = np.clip(np.where(wrel >= thr, 1.0, wrel / thr), 0, 1)
    theta_fc = th["porosity"] * th["fc_frac"]
    swc = theta_fc * th["wp_frac"] + w_new / th["root_depth"]
    # GPP (MOD17)
    par = m["sw_in"] * C.PAR_FRACTION_OF_SW * MJ_PER_DAY_PER_W
    f_t = np.clip((m["tmin"] - th["tmin_close"]) / (th["tmin_open"] - th["tmin_close"]), 0, 1)
    f_v = np.clip((m["vpd"] - th["vpd_close"]) / (th["vpd_open"] - th["vpd_close"]), 0, 1)
    gpp = th["lue_max"] * f_t * f_v * cover * np.maximum(par, 0) * stress
    # Ra
    biomass = lai * th["leaf_c_per_lai"] * th["live_to_leaf_c"]
    rm = th["rm_ref"] * biomass * np.exp(np.log(th["q10_ra"]) * (m["tair"] - 20.0) / 10.0)
    ra = rm + th["growth_resp_frac"] * np.maximum(gpp - rm, 0)
    # Rh (Lloyd–Taylor × Parton WFPS)
    t0, tref = LLOYD_TAYLOR_T0_C, LLOYD_TAYLOR_TREF_C
    ts = np.maximum(m["tsoil"], t0 + 1.0)
    f_temp = np.exp(th["e0_rh"] * (1 / (tref - t0) - 1 / (ts - t0)))
    wfps = np.clip(swc / th["porosity"], 0, 1)
    a, b, c, d = 0.55, 1.70, -0.007, 3.22
    f_moist = np.exp(d * (b - a) / (a - c) * np.log((wfps - b) / (a - b)) + d * np.log((wfps - c) / (a - c)))
    rh = th["rref_rh"] * f_temp * f_moist
    reco = ra + rh
    return w_new, gpp, reco, reco - gpp


def numpy_simulate(theta: dict, met: Met):
    th = {k: np.asarray(v, np.float32) for k, v in theta.items()}
    shape = np.shape(met.tair)
    fields = {k: np.broadcast_to(np.asarray(v), shape) for k, v in met._asdict().items() if v is not None}
    w = th["porosity"] * th["fc_frac"] * (1 - th["wp_frac"]) * th["root_depth"]
    n_days = fields["tair"].shape[1]
    out = np.empty((3, fields["tair"].shape[0], n_days), np.float32)
    for t in range(n_days):
        w, gpp, reco, nee = _numpy_step(th, w, {k: v[:, t] for k, v in fields.items()})
        out[0, :, t], out[1, :, t], out[2, :, t] = gpp, reco, nee
    return out


# --------------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------------


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def whole_day_loop(model, theta, met_tm):
    """The layout before issue 18, kept as the in-run reference: the whole coupled day, every state-independent
    term included (`Ecosystem.step` with ``drivers=None``), inside the scan, each day rematerialised."""
    n = met_tm.tair.shape[1]
    state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,)), model.init_state(theta))

    @jax.checkpoint
    def body(carry, met_t):
        new, out = model.step(theta, carry, met_t)
        new = jax.tree_util.tree_map(lambda a, b: jnp.broadcast_to(a, b.shape).astype(b.dtype), new, carry)
        return new, jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,)), out)

    return jax.lax.scan(body, state, met_tm)[1]


def shard_sites(tree, mesh):
    """Place arrays with a leading site axis across the mesh's devices (scalars replicated)."""
    def put(x):
        x = jnp.asarray(x)
        spec = P("site") if x.ndim >= 1 and x.shape[0] > 1 else P()  # (1, …): the same for every site
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(put, tree)


def main() -> dict:
    args = ARGS or argparse.Namespace(sites=2000, years=1, crop_sites=500, pmodel_points=100_000,
                                      repeats=1, devices=len(jax.devices()))
    load0 = load_average()
    devices = jax.devices()[: args.devices]
    n_sites = args.sites - args.sites % len(devices)
    mesh = Mesh(np.array(devices), ("site",))
    n_days = 365 * args.years
    print(f"kgml process-model speed | {platform.processor() or platform.machine()} | "
          f"{os.cpu_count()} CPU cores | {len(devices)} XLA devices | jax {jax.__version__}")
    print(f"forward/gradient: {n_sites} sites × {n_days} days = {n_sites * n_days / 1e6:.1f} M site-days")

    # --- forward and gradient: bucket + Lloyd–Taylor + light-use efficiency ----------------------
    model = NaturalEcosystem(phenology=PrescribedLAI())
    met = make_forcing(n_sites, n_days)
    theta = site_theta(model, n_sites)

    def time_major(m):  # (time, site): each simulated day reads contiguous memory; sites over the devices
        m = Met(*[None if v is None else np.ascontiguousarray(np.asarray(v).T) for v in m])
        return jax.tree_util.tree_map(
            lambda x: jax.device_put(x, NamedSharding(mesh, P(None, "site") if x.shape[1] > 1 else P())), m)

    # The measured layout: latitude per site, day of year per day (the values of the full-shaped fields); the
    # full-shaped layout (every field per site-day, as before issue 18's last round) is timed beside it.
    met_s, met_full_s = time_major(compact(met)), time_major(met)
    theta_s = shard_sites(theta, mesh)

    @jax.jit
    def forward(th, m):
        out = simulate_sites(model, th, m, time_major=True).outputs
        return out.gpp, out.reco, out.nee

    @jax.jit
    def gradient(th, m):
        def loss(th):
            return jnp.mean(simulate_sites(model, th, m, time_major=True).outputs.nee ** 2)
        return jax.grad(loss)(th)

    @jax.jit
    def forward_ref(th, m):
        out = whole_day_loop(model, th, m)
        return out.gpp, out.reco, out.nee

    @jax.jit
    def gradient_ref(th, m):
        return jax.grad(lambda th: jnp.mean(whole_day_loop(model, th, m).nee ** 2))(th)

    # Profile of the forward pass: the drivers pass alone (everything state-independent: sun geometry, net
    # radiation, PET, light and temperature responses), and the loop + finish given the drivers.
    @jax.jit
    def drivers_only(th, m):
        return model.drivers(th, m)

    site_days = n_sites * n_days
    # (function, forcing): the whole-day-loop reference scans every field, so it reads the full-shaped layout
    fns = {"forward": (forward, met_s), "gradient": (gradient, met_s), "forward_full": (forward, met_full_s),
           "gradient_full": (gradient, met_full_s), "forward_ref": (forward_ref, met_full_s),
           "gradient_ref": (gradient_ref, met_full_s), "drivers_only": (drivers_only, met_s)}
    for f, m in fns.values():
        jax.block_until_ready(f(theta_s, m))
    # interleaved repeats (A B A B …): a change of load during the run hits every variant alike
    times = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, (f, m) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(theta_s, m))
            times[k].append(time.perf_counter() - t0)
    t_fwd, t_grad = min(times["forward"]), min(times["gradient"])
    t_fwd_full, t_grad_full = min(times["forward_full"]), min(times["gradient_full"])
    t_fwd_ref, t_grad_ref = min(times["forward_ref"]), min(times["gradient_ref"])
    t_drv = min(times["drivers_only"])
    ref_nee = np.asarray(forward_ref(theta_s, met_full_s)[2])
    for m in (met_s, met_full_s):  # both layouts equal the previous implementation within 1e-5 relative
        np.testing.assert_allclose(np.asarray(forward(theta_s, m)[2]), ref_nee, rtol=0,
                                   atol=1e-5 * float(np.max(np.abs(ref_nee))))

    # numpy twin on the same inputs; equality first, then speed
    gpp_j, reco_j, nee_j = (np.asarray(x).T for x in forward(theta_s, met_s))
    t0 = time.perf_counter()
    ref = numpy_simulate(theta, met)
    t_np = time.perf_counter() - t0
    max_rel = max(
        float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
        for a, b in ((gpp_j, ref[0]), (reco_j, ref[1]), (nee_j, ref[2]))
    )

    # --- P-model GPP against pyrealm --------------------------------------------------------------
    rng = np.random.default_rng(2)
    npts = args.pmodel_points - args.pmodel_points % len(devices)
    tc = rng.uniform(0, 35, npts).astype(np.float32)
    vpd_hpa = rng.uniform(1, 30, npts).astype(np.float32)
    co2 = rng.uniform(350, 450, npts).astype(np.float32)
    patm = rng.uniform(85000, 102000, npts).astype(np.float32)
    ppfd = rng.uniform(100, 900, npts).astype(np.float32)
    fapar = rng.uniform(0.1, 0.95, npts).astype(np.float32)
    pm_args = shard_sites((tc, vpd_hpa, co2, patm, ppfd, fapar), mesh)
    pm = jax.jit(lambda a, b, c, d, e, f: pmodel_gpp(a, b, c, d, e, f, 0.081785))
    jax.block_until_ready(pm(*pm_args))
    t_pm = best_time(lambda: pm(*pm_args), args.repeats)
    pyrealm_rate = None
    try:
        from pyrealm.pmodel import PModel, PModelEnvironment

        t0 = time.perf_counter()
        env = PModelEnvironment(tc=tc.astype(float), vpd=vpd_hpa.astype(float) * 100.0,
                                co2=co2.astype(float), patm=patm.astype(float),
                                fapar=fapar.astype(float), ppfd=ppfd.astype(float))
        PModel(env)
        t_pyrealm = time.perf_counter() - t0
        pyrealm_rate = npts / t_pyrealm
    except Exception as err:  # pyrealm is optional (pip install 'kgml[bench]')
        print(f"pyrealm not run: {type(err).__name__}: {err}")

    # --- crop: maize seasons ----------------------------------------------------------------------
    crop_model = maize()
    n_crop = args.crop_sites - args.crop_sites % len(devices)
    crop_forcing = make_forcing(n_crop, 365, seed=3, with_lai=False)
    crop_met, crop_met_full = shard_sites(compact(crop_forcing), mesh), shard_sites(crop_forcing, mesh)
    crop_theta = shard_sites(crop_model.default_parameters(), mesh)

    @jax.jit
    def crop_run(th, m):
        return simulate_sites(crop_model, th, m).outputs.crop_yield[:, -1]

    @jax.jit
    def crop_run_ref(th, m):
        m_tm = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), m)
        return whole_day_loop(crop_model, th, m_tm).crop_yield[-1]

    jax.block_until_ready(crop_run(crop_theta, crop_met))
    jax.block_until_ready(crop_run_ref(crop_theta, crop_met_full))
    np.testing.assert_allclose(np.asarray(crop_run(crop_theta, crop_met)), np.asarray(crop_run_ref(crop_theta, crop_met_full)),
                               rtol=1e-5, atol=1e-5)
    t_crop, t_crop_ref = float("inf"), float("inf")
    for _ in range(args.repeats):  # interleaved A B A B
        t_crop = min(t_crop, best_time(lambda: crop_run(crop_theta, crop_met), 1))
        t_crop_ref = min(t_crop_ref, best_time(lambda: crop_run_ref(crop_theta, crop_met_full), 1))

    result = {
        "forward_site_days_per_s": site_days / t_fwd,
        "grad_site_days_per_s": site_days / t_grad,
        "forward_full_fields_site_days_per_s": site_days / t_fwd_full,
        "grad_full_fields_site_days_per_s": site_days / t_grad_full,
        "forward_whole_day_loop_site_days_per_s": site_days / t_fwd_ref,
        "grad_whole_day_loop_site_days_per_s": site_days / t_grad_ref,
        "forward_speedup_vs_whole_day_loop": t_fwd_ref / t_fwd,
        "grad_speedup_vs_whole_day_loop": t_grad_ref / t_grad,
        "drivers_pass_site_days_per_s": site_days / t_drv,
        "drivers_pass_share_of_forward": t_drv / t_fwd,
        "numpy_site_days_per_s": site_days / t_np,
        "speedup_vs_numpy": t_np / t_fwd,
        "numpy_max_rel_diff": max_rel,
        "pmodel_site_days_per_s": npts / t_pm,
        "pyrealm_site_days_per_s": pyrealm_rate,
        "pmodel_speedup_vs_pyrealm": None if pyrealm_rate is None else (npts / t_pm) / pyrealm_rate,
        "crop_site_seasons_per_s": n_crop / t_crop,
        "crop_whole_day_loop_site_seasons_per_s": n_crop / t_crop_ref,
        "sites": n_sites,
        "days": n_days,
        "xla_devices": len(devices),
    }
    rows = [
        ("forward (GPP, Reco, NEE daily)", result["forward_site_days_per_s"], "site-days/s"),
        ("gradient (all parameters, per site)", result["grad_site_days_per_s"], "site-days/s"),
        ("  drivers pass alone (before the loop)", result["drivers_pass_site_days_per_s"], "site-days/s"),
        ("forward, every field per site-day", result["forward_full_fields_site_days_per_s"], "site-days/s"),
        ("gradient, every field per site-day", result["grad_full_fields_site_days_per_s"], "site-days/s"),
        ("forward, whole day in the loop (before)", result["forward_whole_day_loop_site_days_per_s"], "site-days/s"),
        ("gradient, whole day in the loop (before)", result["grad_whole_day_loop_site_days_per_s"], "site-days/s"),
        ("numpy twin, same kernel", result["numpy_site_days_per_s"], "site-days/s"),
        ("P-model GPP (jax)", result["pmodel_site_days_per_s"], "site-days/s"),
        ("P-model GPP (pyrealm)", pyrealm_rate or float("nan"), "site-days/s"),
        ("maize crop, coupled", result["crop_site_seasons_per_s"], "site-seasons/s"),
        ("maize crop, whole day in the loop (before)", result["crop_whole_day_loop_site_seasons_per_s"],
         "site-seasons/s"),
    ]
    print(f"\n{'what':40s} {'rate':>14s}")
    for name, rate, unit in rows:
        print(f"{name:40s} {rate:14,.0f} {unit}")
    print(f"\njax forward / numpy: {result['speedup_vs_numpy']:.1f}×  (max relative difference "
          f"{max_rel:.1e})")
    print(f"drivers pass + minimal loop vs whole day in the loop: forward {result['forward_speedup_vs_whole_day_loop']:.2f}×, "
          f"gradient {result['grad_speedup_vs_whole_day_loop']:.2f}×; drivers pass = "
          f"{100 * result['drivers_pass_share_of_forward']:.0f} % of the forward time")
    if pyrealm_rate:
        print(f"P-model jax / pyrealm: {result['pmodel_speedup_vs_pyrealm']:.1f}×")
    result["load_start"], result["load_end"] = load0, load_average()
    print(f"load average: start {load0}, end {result['load_end']}")
    print(json.dumps(result))
    if ARGS is not None:
        append_result("process_speed", {k: v for k, v in result.items() if not k.startswith("load_")}, load_start=load0)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
