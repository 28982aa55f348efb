"""Flux partitioning: the Lloyd–Taylor regression against an independent fit (scipy), recovery of known
E0 / R_ref / light-response parameters from synthetic NEE, agreement with the FLUXNET2015 night-time
GPP/RECO of real half-hourly months (bigleaf examples), and clear errors for bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kgml.data.schema import DataValidationError
from kgml.fluxsite.partition import (
    PartitionError,
    daytime_partition,
    fit_lloyd_taylor,
    nighttime_partition,
    partition_dataset,
    potential_radiation,
)
from process_models.temperature import LLOYD_TAYLOR_T0_C, lloyd_taylor_response

SPD = 48


def lloyd_taylor(rref, e0, t):
    return rref * np.asarray(lloyd_taylor_response(np.asarray(t, dtype=float), e0, tref=15.0), dtype=float)


def test_lloyd_taylor_fit_matches_scipy_curve_fit():
    """Independent computation: scipy's Levenberg–Marquardt (curve_fit) on the same noisy windows gives the same
    estimates and standard errors (nls-style s² (JᵀJ)⁻¹) as the batched JAX fit."""
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    temps, fluxes, truth = [], [], []
    for n, (rref, e0) in zip((40, 90, 300), ((1.5, 120.0), (3.0, 250.0), (6.0, 180.0)), strict=True):
        t = rng.uniform(-2.0, 22.0, n)
        temps.append(t)
        fluxes.append(lloyd_taylor(rref, e0, t) + rng.normal(0.0, 0.3, n))
        truth.append((rref, e0))
    rref, rref_sd, e0, e0_sd = fit_lloyd_taylor(temps, fluxes, trim_percent=0.0)
    t0 = LLOYD_TAYLOR_T0_C
    for i, (t, y) in enumerate(zip(temps, fluxes, strict=True)):
        model = lambda t, a, b: a * np.exp(b * (1 / (15.0 - t0) - 1 / (t - t0)))  # noqa: E731
        popt, pcov = optimize.curve_fit(model, t, y, p0=(2.0, 200.0))
        assert rref[i] == pytest.approx(popt[0], rel=1e-5)
        assert e0[i] == pytest.approx(popt[1], rel=1e-5)
        assert rref_sd[i] == pytest.approx(np.sqrt(pcov[0, 0]), rel=1e-3)
        assert e0_sd[i] == pytest.approx(np.sqrt(pcov[1, 1]), rel=1e-3)


def test_lloyd_taylor_fit_exact_without_noise_and_trimming_removes_outliers():
    t = np.linspace(0.0, 20.0, 60)
    clean = lloyd_taylor(2.5, 210.0, t)
    rref, _, e0, e0_sd = fit_lloyd_taylor([t], [clean])
    assert rref[0] == pytest.approx(2.5, rel=1e-6)  # data made in float32
    assert e0[0] == pytest.approx(210.0, rel=1e-6)
    assert e0_sd[0] < 1e-4
    noisy = clean + np.random.default_rng(1).normal(0, 0.05, t.size)
    noisy[[5, 30, 50]] += 8.0  # spikes
    _, _, e0_raw, _ = fit_lloyd_taylor([t], [noisy], trim_percent=0.0)
    _, _, e0_trim, _ = fit_lloyd_taylor([t], [noisy], trim_percent=5.0)
    assert abs(e0_trim[0] - 210.0) < abs(e0_raw[0] - 210.0)
    assert abs(e0_trim[0] - 210.0) < 10.0


def synthetic_year(n_days=365, e0=200.0, noise=0.2, seed=0):
    """Half-hourly NEE = R_ref(t) f_LT(T; E0) − GPP, GPP a VPD-limited rectangular hyperbola (Lasslop 2010)."""
    rng = np.random.default_rng(seed)
    n = n_days * SPD
    times = np.datetime64("2003-01-01") + np.arange(n) * np.timedelta64(30, "m")
    hour = (np.arange(n) % SPD) / 2.0 + 0.25
    doy = np.arange(n) // SPD
    season = np.sin(2 * np.pi * (doy - 100) / 365)
    sw = np.maximum(0.0, 850 * np.sin(np.pi * (hour - 6) / 12)) * (0.65 + 0.35 * season) * rng.uniform(0.4, 1.0, n)
    sw[(hour < 6) | (hour > 18)] = 0.0
    ta = 9 + 9 * season + 5 * np.sin(np.pi * (hour - 9) / 12) + rng.normal(0, 1.5, n)
    vpd = np.maximum(0.0, 6 + 0.9 * (ta - 9) + 5 * np.sin(np.pi * (hour - 9) / 12))
    rref = 3.0 + 1.0 * season
    reco = lloyd_taylor(rref, e0, ta)
    alpha, beta0, k = 0.04, 22.0, 0.04
    beta = beta0 * np.exp(-k * np.maximum(vpd - 10.0, 0.0))
    gpp = alpha * beta * sw / (alpha * sw + beta)
    nee = reco - gpp + rng.normal(0, noise, n)
    return dict(times=times, sw=sw, ta=ta, vpd=vpd, nee=nee, gpp=gpp, reco=reco, rref=rref,
                params=dict(alpha=alpha, beta0=beta0, k=k, e0=e0))


@pytest.fixture(scope="module")
def synth():
    return synthetic_year()


def test_nighttime_recovers_e0_rref_and_gpp(synth):
    s = synth
    res = nighttime_partition(s["nee"], s["ta"], s["sw"], s["times"])
    assert res.e0_by_year[2003] == pytest.approx(200.0, rel=0.05)
    assert res.e0_windows["valid"].sum() >= 3
    ok = np.isfinite(res.rref)
    assert ok.all()
    assert np.median(np.abs(res.rref - s["rref"]) / s["rref"]) < 0.05
    assert np.sqrt(np.mean((res.reco - s["reco"]) ** 2)) < 0.15 * s["reco"].mean()
    assert np.sqrt(np.mean((res.gpp - s["gpp"]) ** 2)) < 0.4  # noise σ 0.2 on NEE
    assert res.night.sum() > 0.4 * res.night.size


def test_nighttime_with_fixed_e0_and_filled_nee(synth):
    s = synth
    filled = s["nee"].copy()
    nee = s["nee"].copy()
    nee[::3] = np.nan
    res = nighttime_partition(nee, s["ta"], s["sw"], s["times"], nee_filled=filled, e0=200.0)
    assert (res.e0 == 200.0).all()
    np.testing.assert_allclose(res.gpp, res.reco - filled)


def test_daytime_recovers_light_response_parameters(synth):
    s = synth
    res = daytime_partition(s["nee"], s["ta"], s["vpd"], s["sw"], s["times"])
    w = res.windows
    assert w["valid"].mean() > 0.6
    p = s["params"]
    for name in ("alpha", "beta0", "k", "e0"):
        assert np.nanmedian(w[name]) == pytest.approx(p[name], rel=0.1), name
    assert np.sqrt(np.mean((res.gpp - s["gpp"]) ** 2)) < 0.1 * s["gpp"].max()
    assert np.sqrt(np.mean((res.reco - s["reco"]) ** 2)) < 0.1 * s["reco"].mean()
    assert set(np.unique(res.qc)) <= {0, 1, 2}


def test_potential_radiation():
    t = np.datetime64("2014-06-21") + np.arange(48) * np.timedelta64(30, "m")
    pot = potential_radiation(t, 50.96, 13.57, 1.0)
    assert (pot[:6] == 0).all() and (pot[-4:] == 0).all()
    # solar noon at 13.57 °E in UTC+1 is near 12:05 local standard time; sin(elevation) = cos(50.96° − 23.44°)
    peak = np.argmax(pot)
    assert t[peak] in (np.datetime64("2014-06-21T11:30"), np.datetime64("2014-06-21T12:00"))
    expected = 1366.7 * 0.967 * np.cos(np.radians(50.96 - 23.44))
    assert pot[peak] == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda s: s.__setitem__("nee", np.full_like(s["nee"], np.nan)), DataValidationError, "all values are missing"),
        (lambda s: s.__setitem__("times", s["times"][::-1]), DataValidationError, "not strictly increasing"),
        (lambda s: s.__setitem__("sw", np.full_like(s["sw"], 500.0)), PartitionError, "night-time records"),
        (lambda s: s.__setitem__("ta", s["ta"][:-5]), DataValidationError, "length"),
    ],
)
def test_nighttime_bad_input(change, error, match):
    s = synthetic_year(n_days=20)
    change(s)
    with pytest.raises(error, match=match):
        nighttime_partition(s["nee"], s["ta"], s["sw"], s["times"], source="tower.csv")


def test_nighttime_without_enough_valid_e0_windows_says_what_to_try():
    s = synthetic_year(n_days=20)
    s["ta"] = 10.0 + 0.5 * np.sin(np.arange(s["ta"].size))  # no temperature range
    with pytest.raises(PartitionError, match="min_temp_range"):
        nighttime_partition(s["nee"], s["ta"], s["sw"], s["times"])


def test_daily_data_is_rejected():
    t = np.datetime64("2003-01-01") + np.arange(100) * np.timedelta64(1, "D")
    x = np.ones(100)
    with pytest.raises(DataValidationError, match="half-hourly or hourly"):
        nighttime_partition(x, x, x, t)


# --- real half-hourly months with FLUXNET2015 night-time partitioning --------------------------------------

#: bigleaf example months: file → (lat, lon, UTC offset) from the FLUXNET2015 site list.
BIGLEAF_SITES = {
    "DE_Tha_Jun_2014": (50.9636, 13.5669, 1.0),
    "AT_Neu_Jul_2010": (47.11667, 11.3175, 1.0),
    "FR_Pue_May_2012": (43.7413, 3.5957, 1.0),
}


def bigleaf_month(dataset_dir, name):
    from kgml.data.towers import NO_QC, QCPolicy, read_bigleaf_csv
    from kgml.variables import UMOL_CO2_M2_S_TO_GC_M2_D as S
    from process_models.constants import PAR_FRACTION_OF_SW, PAR_UMOL_PER_J

    path = dataset_dir("bigleaf_examples") / f"{name}.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = read_bigleaf_csv(path, qc=QCPolicy(max_flag=0))
        every = read_bigleaf_csv(path, qc=NO_QC)
    g = lambda ds, v: ds[v].values[0].astype(float)  # noqa: E731
    lat, lon, tz = BIGLEAF_SITES[name]
    t = every["time"].values
    return dict(
        times=t, nee=g(measured, "nee") / S, nee_f=g(every, "nee") / S, gpp_nt=g(every, "gpp") / S,
        reco_nt=g(every, "reco") / S, ta=g(every, "tair"), vpd=g(every, "vpd"),
        sw=g(every, "ppfd_in") / (PAR_FRACTION_OF_SW * PAR_UMOL_PER_J), pot=potential_radiation(t, lat, lon, tz),
        measured=measured, every=every,
    )


def fluxnet_e0(m):
    """ONEFlux's E0 recovered from its own RECO_NT: ln RECO = ln R_ref(day) + E0 (1/(15 − T0) − 1/(T − T0)),
    regressed within days (R_ref varies slowly)."""
    day = np.arange(m["ta"].size) // SPD
    x = 1 / (15.0 - LLOYD_TAYLOR_T0_C) - 1 / (m["ta"] - LLOYD_TAYLOR_T0_C)
    ly = np.log(m["reco_nt"])
    centre = lambda v: v - (np.bincount(day, v) / np.bincount(day))[day]  # noqa: E731
    return float(centre(x) @ centre(ly) / (centre(x) @ centre(x)))


@pytest.mark.realdata
def test_nighttime_agrees_with_fluxnet_nt_on_fr_pue(dataset_dir):
    """FR-Pue May 2012 (FLUXNET2015 via bigleaf): E0 estimated from the month itself. Documented tolerance:
    monthly mean GPP and Reco within 5 % of GPP_NT_VUT_USTAR50 / RECO_NT_VUT_USTAR50, half-hourly r > 0.97 (GPP)
    and > 0.9 (Reco). When written: GPP 4.69 vs 4.73, r 0.987; Reco 4.54 vs 4.53, r 0.943."""
    m = bigleaf_month(dataset_dir, "FR_Pue_May_2012")
    res = nighttime_partition(m["nee"], m["ta"], m["sw"], m["times"], nee_filled=m["nee_f"], potential_rad=m["pot"])
    assert np.nanmean(res.gpp) == pytest.approx(m["gpp_nt"].mean(), rel=0.05)
    assert np.nanmean(res.reco) == pytest.approx(m["reco_nt"].mean(), rel=0.05)
    ok = np.isfinite(res.gpp)
    assert ok.mean() > 0.99
    assert np.corrcoef(res.gpp[ok], m["gpp_nt"][ok])[0, 1] > 0.97
    assert np.corrcoef(res.reco[ok], m["reco_nt"][ok])[0, 1] > 0.9


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["DE_Tha_Jun_2014", "AT_Neu_Jul_2010"])
def test_one_month_needs_e0_and_then_matches_fluxnet(dataset_dir, name):
    """A single summer month rarely has three short-term windows with a valid E0: the error says so. With
    FLUXNET's own E0 (recovered from RECO_NT), the R_ref regression and GPP = Reco − NEE_f reproduce
    GPP_NT/RECO_NT: monthly means within 5 %, GPP r > 0.98, Reco r > 0.8 (written: DE-Tha 0.998 / 0.980,
    AT-Neu 0.990 / 0.865)."""
    m = bigleaf_month(dataset_dir, name)
    with pytest.raises(PartitionError, match="valid E0"):
        nighttime_partition(m["nee"], m["ta"], m["sw"], m["times"], potential_rad=m["pot"])
    res = nighttime_partition(
        m["nee"], m["ta"], m["sw"], m["times"], nee_filled=m["nee_f"], potential_rad=m["pot"], e0=fluxnet_e0(m)
    )
    assert np.nanmean(res.gpp) == pytest.approx(m["gpp_nt"].mean(), rel=0.05)
    assert np.nanmean(res.reco) == pytest.approx(m["reco_nt"].mean(), rel=0.05)
    ok = np.isfinite(res.gpp)
    assert np.corrcoef(res.gpp[ok], m["gpp_nt"][ok])[0, 1] > 0.98
    assert np.corrcoef(res.reco[ok], m["reco_nt"][ok])[0, 1] > 0.8


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(BIGLEAF_SITES))
def test_daytime_close_to_fluxnet_nt(dataset_dir, name):
    """The data hold no GPP_DT at half-hourly resolution, so the daytime method is compared with GPP_NT: the two
    methods differ by 10–20 % at many sites (Lasslop et al. 2010, Fig. 9). Documented tolerance: monthly mean GPP
    within 25 % and half-hourly r > 0.85 (written: +6.5 %, −19 %, +7.6 %; r 0.96, 0.90, 0.93)."""
    m = bigleaf_month(dataset_dir, name)
    res = daytime_partition(m["nee"], m["ta"], m["vpd"], m["sw"], m["times"], potential_rad=m["pot"])
    ok = np.isfinite(res.gpp)
    assert ok.mean() > 0.99
    assert np.nanmean(res.gpp) == pytest.approx(m["gpp_nt"].mean(), rel=0.25)
    assert np.corrcoef(res.gpp[ok], m["gpp_nt"][ok])[0, 1] > 0.85


@pytest.mark.realdata
def test_partition_dataset_converts_units(dataset_dir):
    m = bigleaf_month(dataset_dir, "FR_Pue_May_2012")
    ds = m["measured"][["nee", "tair", "vpd"]].copy()
    ds["sw_in"] = m["every"]["ppfd_in"] / 2.0565
    ds["sw_in"].attrs["units"] = "W m-2"
    ds["nee_f"] = m["every"]["nee"]
    lat, lon, tz = BIGLEAF_SITES["FR_Pue_May_2012"]
    ds = ds.assign_coords(lat=("site", [lat]), lon=("site", [lon]), utc_offset=("site", [tz]))
    out = partition_dataset(ds, "nighttime", nee_filled="nee_f")
    assert out["gpp_nt"].attrs["units"] == "gC m-2 d-1"
    gpp = out["gpp_nt"].values[0]
    assert np.nanmean(gpp) == pytest.approx(np.mean(m["every"]["gpp"].values), rel=0.05)
    dt = partition_dataset(ds, "daytime")
    assert np.isfinite(dt["gpp_dt"].values).mean() > 0.99
    with pytest.raises(DataValidationError, match="vpd"):
        partition_dataset(ds.drop_vars("vpd"), "daytime")


@pytest.mark.realdata
def test_hybrid_partitioning_against_fluxnet_nt_on_fr_pue(dataset_dir):
    """The hybrid (kgml.fluxsite.fluxhybrid) trained on the month's measured NEE only, through ``partition_dataset``,
    against FLUXNET2015 GPP_NT_VUT_USTAR50 / RECO_NT_VUT_USTAR50 of FR-Pue May 2012. Documented tolerance: R² > 0.8
    (GPP) and > 0.7 (Reco), monthly mean GPP within 15 % and Reco within 20 % — the night-time and daytime methods
    themselves differ by 10–20 % (Lasslop et al. 2010, Fig. 9); the hybrid's daytime Reco follows its own Q10 rather
    than the night-time Lloyd–Taylor extrapolation. Q10 inside its bounds. (Written, 3 members: Reco mean −16 %;
    5 members: GPP R² 0.91, bias −0.24 of 4.90 gC m-2 d-1, Reco R² 0.86, bias −0.47 of 4.70.)"""
    from kgml.fluxsite.fluxhybrid import HybridConfig

    m = bigleaf_month(dataset_dir, "FR_Pue_May_2012")
    ds = m["measured"][["nee", "tair", "vpd"]].copy()
    ds["sw_in"] = m["every"]["ppfd_in"] / 2.0565
    out = partition_dataset(ds, "hybrid", config=HybridConfig(members=3))
    assert out["gpp_hybrid"].attrs["units"] == ds["nee"].attrs["units"]
    gpp, reco = out["gpp_hybrid"].values[0], out["reco_hybrid"].values[0]
    ref_gpp, ref_reco = m["every"]["gpp"].values[0], m["every"]["reco"].values[0]
    assert np.isfinite(gpp).all() and np.isfinite(reco).all()
    assert np.corrcoef(gpp, ref_gpp)[0, 1] ** 2 > 0.8
    assert np.corrcoef(reco, ref_reco)[0, 1] ** 2 > 0.7
    assert gpp.mean() == pytest.approx(ref_gpp.mean(), rel=0.15)
    assert reco.mean() == pytest.approx(ref_reco.mean(), rel=0.20)
    assert 1.0 <= float(out["q10_reco"].values[0]) <= 5.0
    assert (out["gpp_hybrid_sd"].values >= 0).all()
