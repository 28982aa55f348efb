"""Maize and soybean growth for one site and one day: sowing, thermal-time development, allocation of
net primary production to leaf/stem/root/grain, leaf area and senescence, harvest → grain yield.

The coupled model (`process_models.ecosystem`) computes GPP from `Crop.lai`, respiration from
`Crop.live_biomass`, and feeds NPP = GPP − Ra back to `Crop.step`. All carbon pools are gC m-2.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models import constants as C
from process_models.forcing import Met
from process_models.parameters import ParameterSpec, Specs
from process_models.phenology import gdd_increment

# --- crop constants (conventions, not learnable) ------------------------------------------------------

#: Base temperature of crop thermal time (°C), maize and soybean. Maize: McMaster & Wilhelm (1997) and the
#: 86/50 °F corn-heat-unit convention (AMS Glossary, "corn heat unit"). Soybean: 10 °C is the base of the
#: GDD used to stage soybean by US extension services (e.g. NDSU/NDAWN soybean GDD, 50 °F); CROPGRO-Soybean
#: itself uses a curvilinear rate with a 7 °C base and adds photoperiod (Boote et al. 1998), which this
#: thermal-time model does not. Fixed, because ``*_gdd_maturity`` is measured on this scale.
GDD_TBASE_C = 10.0

#: Upper temperature threshold of crop thermal time (°C): 30 °C (86 °F), McMaster & Wilhelm (1997) for
#: maize; the same 86/50 °F convention is used for soybean staging (NDAWN).
GDD_TUPPER_C = 30.0

#: Standard market moisture of shelled maize (wet-basis fraction). USDA Federal Grain Inspection Service,
#: Official United States Standards for Grain (yields reported at 15.5 % moisture by USDA NASS).
MAIZE_STANDARD_MOISTURE = 0.155

#: Standard market moisture of soybean (wet-basis fraction). USDA FGIS / NASS (yields at 13 % moisture).
SOYBEAN_STANDARD_MOISTURE = 0.13

#: Killing-frost threshold (°C): 28 °F = −2.2 °C, the US extension convention for a frost that kills
#: maize and soybean canopies (e.g. R.L. Nielsen, Purdue Univ. Corny News Network; Iowa State ICM news).
KILLING_FROST_C = -2.2

#: Development stage (fraction of ``*_gdd_maturity``) before which a frost does not end the season: the
#: maize growing point stays below ground until ≈ V6, ≈ 475 GDD°F ≈ 265 °C d of ≈ 1500 (Abendroth et al.
#: 2011, Iowa State Univ. PMR 1009).
FROST_KILL_MIN_DVS = 0.2

#: Longest season (days from sowing) after which the crop is harvested whatever its stage; < 365 so a
#: season always ends before the next sowing day.
MAX_SEASON_DAYS = 250.0


# --- state ------------------------------------------------------------------------------------------


class CropState(NamedTuple):
    """One site's crop on one day (every field a float scalar; `vmap` adds a site axis).

    Pools are live carbon (gC m-2); the last four fields are the day's carbon transfers (gC m-2 d-1), so
    that the carbon balance closes day by day (``npp_unassigned`` is 0 in a consistent coupled run, where
    a fallow field has no NPP and respiration cannot exceed the live pools):

        Δ(leaf + stem + root + grain) = sown_c + (npp − npp_unassigned) − litter_c − harvest_c
    """

    gdd: Array  #: growing degree days since sowing (°C d); 0 while fallow
    leaf: Array  #: green leaf carbon (gC m-2)
    stem: Array  #: stem carbon, including tassel, cob and husk for maize, pod walls for soybean (gC m-2)
    root: Array  #: root carbon (gC m-2)
    grain: Array  #: grain (kernel, seed) carbon (gC m-2)
    lai: Array  #: green leaf area index (m2 m-2) = leaf / carbon fraction × SLA
    active: Array  #: 1.0 between sowing and harvest, else 0.0
    yield_: Array  #: grain yield of the latest harvest (t ha-1 at standard moisture); 0 before the first
    days: Array  #: days since sowing (d); 0 while fallow
    harvested: Array  #: 1.0 on the day of a harvest, else 0.0
    sown_c: Array  #: seed carbon added at sowing today (gC m-2 d-1)
    harvest_c: Array  #: grain carbon removed by harvest today (gC m-2 d-1)
    litter_c: Array  #: carbon to litter today: senesced leaves + leaf, stem, root at harvest
    npp_unassigned: Array  #: npp no pool took: npp while fallow, or a deficit beyond the pools


class CropParameters(NamedTuple):
    """One crop's physical parameters with the crop prefix removed (see `Maize.parameter_specs`)."""

    sowing_doy: Array
    gdd_maturity: Array
    dvs_grain: Array
    sla: Array
    hi_max: Array
    root_fraction: Array
    leaf_fraction: Array
    leaf_senescence: Array
    seed_c: Array


class AllocationShape(NamedTuple):
    """Fixed shape of a crop's allocation tables (transcribed from WOFOST; see `allocation_fractions`).

    Thermal-time positions are fractions u = gdd / gdd_grain of the time to the grain-filling switch.
    """

    grain_scale_gdd: float  #: logistic scale of the switch to grain filling (°C d)
    root_centre: float  #: u at which the root share has halved (–)
    root_scale: float  #: logistic scale of the root decline (–, in u)
    leaf_centre: float  #: u at which the leaf share of the shoot is halfway to its floor (–)
    leaf_scale: float  #: logistic scale of that decline (–, in u)
    leaf_floor: float  #: late-vegetative leaf share of the shoot relative to the early one (–)


# --- kernels ----------------------------------------------------------------------------------------


def smooth_step(x: ArrayLike, centre: ArrayLike, scale: ArrayLike) -> Array:
    """Logistic step σ((x − centre)/scale) ∈ (0, 1): 0.27 one scale before the centre, 0.73 one after,
    0.12 / 0.88 two scales away, 10 %→90 % over 4.4 scales (2 ln 9). Units of x, centre and scale are the same."""
    return jax.nn.sigmoid((jnp.asarray(x) - centre) / scale)


def allocation_fractions(
    gdd: ArrayLike,
    gdd_grain: ArrayLike,
    root_fraction: ArrayLike,
    leaf_fraction: ArrayLike,
    shape: AllocationShape,
) -> tuple[Array, Array, Array, Array]:
    """Fractions of positive NPP to (leaf, stem, root, grain), each in [0, 1], summing to 1 (–).

        r      = σ((gdd − gdd_grain) / s_g)                              switch to grain filling
        u      = gdd / gdd_grain
        root_v = root_fraction · σ((c_r − u)/s_r) / σ(c_r/s_r)           = root_fraction at sowing
        leaf_v = leaf_fraction · (floor + (1 − floor) σ((c_l − u)/s_l))   leaf share of the shoot
        grain = r;  root = (1 − r) root_v;  leaf = (1 − r)(1 − root_v) leaf_v;  stem = the rest

    A smooth version of the piecewise-linear WOFOST partitioning tables FRTB, FLTB, FSTB, FOTB
    (de Wit et al. 2019 Agric. Syst. 168:154; parameter files of ajwdewit/WOFOST_crop_parameters,
    temperate maize and soybean), with development stage re-expressed as thermal time since sowing.
    Smooth in every argument, so gradients reach ``gdd_grain`` (i.e. ``*_dvs_grain``, ``*_gdd_maturity``).

    Args:
        gdd: thermal time since sowing (°C d). gdd_grain: thermal time of the grain switch (°C d), > 0.
        root_fraction: root share of NPP at sowing (–). leaf_fraction: early leaf share of the shoot (–).
        shape: the crop's fixed table shape.
    """
    gdd = jnp.asarray(gdd)
    r = smooth_step(gdd, gdd_grain, shape.grain_scale_gdd)
    u = gdd / gdd_grain
    root_v = (
        root_fraction
        * smooth_step(shape.root_centre, u, shape.root_scale)
        / smooth_step(shape.root_centre, 0.0, shape.root_scale)
    )
    leaf_v = leaf_fraction * (
        shape.leaf_floor
        + (1.0 - shape.leaf_floor) * smooth_step(shape.leaf_centre, u, shape.leaf_scale)
    )
    vegetative = 1.0 - r
    f_root = vegetative * root_v
    f_leaf = vegetative * (1.0 - root_v) * leaf_v
    f_stem = vegetative * (1.0 - root_v) * (1.0 - leaf_v)
    return f_leaf, f_stem, f_root, r


def grain_yield(grain_c: ArrayLike, moisture: float) -> Array:
    """Grain yield at standard market moisture (t ha-1) from grain carbon (gC m-2):

        Y = grain_c / f_C / (1 − m) · 0.01

    with f_C the carbon fraction of dry matter (`constants.CARBON_FRACTION_DRY_MATTER`) and m the
    wet-basis standard moisture (0.155 maize, 0.13 soybean; USDA grain standards).
    """
    return jnp.asarray(grain_c) / C.CARBON_FRACTION_DRY_MATTER / (1.0 - moisture) * C.T_HA_PER_G_M2


def leaf_area_index(leaf_c: ArrayLike, sla: ArrayLike) -> Array:
    """Green LAI (m2 m-2) = leaf carbon (gC m-2) / f_C (gC g-1 DM) × SLA (m2 g-1 DM)."""
    return jnp.asarray(leaf_c) / C.CARBON_FRACTION_DRY_MATTER * sla


def _safe_share(demand: Array, available: Array) -> Array:
    """min(demand / available, 1), and 0 where nothing is available (double-``where``)."""
    ok = available > 0
    return jnp.where(ok, jnp.minimum(demand / jnp.where(ok, available, 1.0), 1.0), 0.0)


def crop_step(
    p: CropParameters,
    shape: AllocationShape,
    moisture: float,
    state: CropState,
    met: Met,
    npp: ArrayLike,
) -> CropState:
    """Advance one crop by one day (kernel behind `Crop.step`). Order within the day:

    1. **Sowing** on the first day with ``doy ≥ sowing_doy`` (i.e. day ⌈sowing_doy⌉) while fallow: pools
       are set to the seed carbon, split by ``root_fraction`` and ``leaf_fraction``; gdd, days → 0;
       active → 1.
    2. **Development**: gdd += `gdd_increment`(tmin, tmax, 10 °C, 30 °C) while active.
    3. **Deficit**: npp < 0 (respiration above GPP) is drawn from the four live pools in proportion to
       their size, never more than they hold (the rest is reported in ``npp_unassigned``).
    4. **Senescence**: after the grain switch r, leaves die at a relative rate ``leaf_senescence`` per
       °C d, weighted by the switch: leaf · (1 − exp(−k r Δgdd)) goes to litter.
    5. **Growth**: npp > 0 is allocated by `allocation_fractions`; grain takes its share only up to
       ``hi_max`` × aboveground live carbon (leaf + stem + grain, after today's growth), the excess goes to
       the stem (a harvest-index ceiling on allocation; senescence on later days without growth can lift
       the realised ratio slightly above it).
    6. **Harvest** when gdd ≥ gdd_maturity, or a killing frost (tmin ≤ −2.2 °C) after dvs 0.2, or after
       250 days: grain carbon is removed (``harvest_c``) and reported as ``yield_`` (t ha-1 at standard
       moisture); leaf, stem and root become residue (``litter_c``); the state returns to fallow.

    Discrete events (sowing, harvest) switch through ``jnp.where``; allocation and senescence are smooth.
    """
    zero = jnp.zeros_like(state.gdd)
    one = jnp.ones_like(state.gdd)
    npp = jnp.asarray(npp)
    doy = met.doy

    # 1. sowing
    sow = (state.active < 0.5) & (doy >= p.sowing_doy) & (doy - 1.0 < p.sowing_doy)
    seed_root = p.seed_c * p.root_fraction
    seed_leaf = (p.seed_c - seed_root) * p.leaf_fraction
    seed_stem = p.seed_c - seed_root - seed_leaf
    leaf = jnp.where(sow, seed_leaf, state.leaf)
    stem = jnp.where(sow, seed_stem, state.stem)
    root = jnp.where(sow, seed_root, state.root)
    grain = jnp.where(sow, zero, state.grain)
    gdd = jnp.where(sow, zero, state.gdd)
    days = jnp.where(sow, zero, state.days)
    active = jnp.where(sow, one, state.active)
    sown_c = jnp.where(sow, p.seed_c, zero)
    on = active > 0.5

    # 2. development
    dgdd = jnp.where(on, gdd_increment(met.tmin, met.tmax, GDD_TBASE_C, GDD_TUPPER_C), zero)
    gdd = gdd + dgdd
    days = days + jnp.where(on, one, zero)
    gdd_grain = p.dvs_grain * p.gdd_maturity

    # 3. respiration above GPP (npp < 0) drawn from the live pools in proportion to their size
    growth = jnp.where(on, jnp.maximum(npp, 0.0), zero)
    deficit = jnp.where(on, jnp.maximum(-npp, 0.0), zero)
    share = _safe_share(deficit, leaf + stem + root + grain)
    leaf_draw, stem_draw, root_draw, grain_draw = (
        leaf * share,
        stem * share,
        root * share,
        grain * share,
    )
    drawn = leaf_draw + stem_draw + root_draw + grain_draw
    leaf, stem, root, grain = (
        leaf - leaf_draw,
        stem - stem_draw,
        root - root_draw,
        grain - grain_draw,
    )

    # 4. leaf senescence after the grain switch (before today's growth, so the HI ceiling below holds at
    # the end of every day with growth)
    f_leaf, f_stem, f_root, f_grain = allocation_fractions(
        gdd, gdd_grain, p.root_fraction, p.leaf_fraction, shape
    )
    senesced = -leaf * jnp.expm1(-p.leaf_senescence * f_grain * dgdd)
    leaf = leaf - senesced

    # 5. growth, grain capped by the harvest-index ceiling
    grain_wanted = f_grain * growth
    aboveground_after = leaf + stem + grain + (f_leaf + f_stem + f_grain) * growth
    grain_room = jnp.maximum(p.hi_max * aboveground_after - grain, 0.0)
    to_grain = jnp.minimum(grain_wanted, grain_room)
    leaf = leaf + f_leaf * growth
    stem = stem + f_stem * growth + (grain_wanted - to_grain)
    root = root + f_root * growth
    grain = grain + to_grain

    # 6. harvest
    frost_kill = (met.tmin <= KILLING_FROST_C) & (gdd >= FROST_KILL_MIN_DVS * p.gdd_maturity)
    harvest = on & ((gdd >= p.gdd_maturity) | frost_kill | (days >= MAX_SEASON_DAYS))
    harvest_c = jnp.where(harvest, grain, zero)
    residue = jnp.where(harvest, leaf + stem + root, zero)
    yield_ = jnp.where(harvest, grain_yield(grain, moisture), state.yield_)
    leaf, stem, root, grain = (jnp.where(harvest, zero, x) for x in (leaf, stem, root, grain))
    gdd = jnp.where(harvest, zero, gdd)
    days = jnp.where(harvest, zero, days)
    active = jnp.where(harvest, zero, active)

    return CropState(
        gdd=gdd,
        leaf=leaf,
        stem=stem,
        root=root,
        grain=grain,
        lai=leaf_area_index(leaf, p.sla),
        active=active,
        yield_=yield_,
        days=days,
        harvested=jnp.where(harvest, one, zero),
        sown_c=sown_c,
        harvest_c=harvest_c,
        litter_c=senesced + residue,
        npp_unassigned=npp - (growth - drawn),
    )


# --- parameter specs --------------------------------------------------------------------------------

_WOFOST = "de Wit et al. (2019) Agric. Syst. 168:154; WOFOST crop parameter files (ajwdewit/WOFOST_crop_parameters)"

_MEANING = {
    "sowing_doy": (
        "day of year",
        "sowing day (the crop is sown on day ⌈sowing_doy⌉ of each year)",
        "logit",
    ),
    "gdd_maturity": (
        "degC d",
        "thermal time (base 10 °C, cap 30 °C) from sowing to physiological maturity",
        "logit",
    ),
    "dvs_grain": (
        "-",
        "fraction of gdd_maturity at the midpoint of the switch to grain filling",
        "logit",
    ),
    "sla": ("m2 g-1", "specific leaf area per gram leaf dry matter", "loglogit"),
    "hi_max": (
        "-",
        "maximum grain share of aboveground live carbon (harvest-index ceiling)",
        "logit",
    ),
    "root_fraction": (
        "-",
        "share of NPP allocated to roots at sowing (declines to 0 at grain filling)",
        "logit",
    ),
    "leaf_fraction": ("-", "share of shoot NPP allocated to leaves early in the season", "logit"),
    "leaf_senescence": (
        "(degC d)-1",
        "relative leaf death rate per degree day after the grain switch",
        "loglogit",
    ),
    "seed_c": ("gC m-2", "seed / establishment carbon put into the pools at sowing", "loglogit"),
}


def _spec(
    crop: str, key: str, default: float, lower: float, upper: float, reference: str
) -> ParameterSpec:
    units, description, transform = _MEANING[key]
    return ParameterSpec(
        name=f"{crop}_{key}",
        default=default,
        lower=lower,
        upper=upper,
        units=units,
        reference=reference,
        transform=transform,
        description=f"{crop}: {description}",
    )


MAIZE_SPECS: Specs = (
    _spec(
        "maize",
        "sowing_doy",
        125.0,
        80.0,
        180.0,
        "USDA NASS (2010) Field Crops Usual Planting and Harvesting Dates, Agric. Handbook 628: most "
        "active maize planting in Iowa/Illinois late April to mid May (≈ 5 May = doy 125)",
    ),
    _spec(
        "maize",
        "gdd_maturity",
        1500.0,
        1000.0,
        2000.0,
        "≈ 2700 GDD°F (86/50 °F) from planting to black layer for a 110–115-day hybrid = 1500 °C d "
        "(Abendroth et al. 2011 Iowa State PMR 1009; Neild & Newman 1987 NCH-40); range spans "
        "≈ 85–130-day relative maturities",
    ),
    _spec(
        "maize",
        "dvs_grain",
        0.52,
        0.35,
        0.70,
        "silking (R1) at ≈ 1400 of 2700 GDD°F (Abendroth et al. 2011) = 0.52; midpoint of WOFOST "
        f"temperate-maize FOTB (DVS 1.1 of TSUM1 695 + TSUM2 800) = 0.52; {_WOFOST}",
    ),
    _spec(
        "maize",
        "sla",
        0.021,
        0.008,
        0.035,
        f"WOFOST temperate maize SLATB 0.0026 → 0.0012 ha kg-1 (0.026 → 0.012 m2 g-1); {_WOFOST}; "
        "0.021 m2 g-1 is the mean over the leaf-growth phase (DVS < 1, SLATB ≈ 0.026 → 0.016), when the "
        "canopy is built; with it the coupled model peaks at LAI ≈ 5 in a well-watered Midwest season, as "
        "observed at Mead, NE (Suyker et al. 2005 Agric. For. Meteorol. 131:180)",
    ),
    _spec(
        "maize",
        "hi_max",
        0.55,
        0.35,
        0.65,
        "harvest index of modern US hybrids 0.50–0.55 (Hay 1995 Ann. Appl. Biol. 126:197; Lorenz et al. "
        "2010 Crop Sci. 50:1); Hybrid-Maize (Yang et al. 2004 Field Crops Res. 87:131)",
    ),
    _spec(
        "maize",
        "root_fraction",
        0.40,
        0.10,
        0.60,
        f"WOFOST temperate maize FRTB = 0.40 at DVS 0; {_WOFOST}",
    ),
    _spec(
        "maize",
        "leaf_fraction",
        0.62,
        0.30,
        0.85,
        f"WOFOST temperate maize FLTB = 0.62 for DVS 0–0.33; {_WOFOST}",
    ),
    _spec(
        "maize",
        "leaf_senescence",
        1.2e-3,
        3.0e-4,
        5.0e-3,
        "1/leaf life span: WOFOST temperate maize SPAN = 33 d at 35 °C above TBASE 10 °C = 825 °C d "
        f"(1/825 ≈ 1.2e-3 per °C d); {_WOFOST}",
    ),
    _spec(
        "maize",
        "seed_c",
        2.25,
        0.5,
        10.0,
        f"WOFOST temperate maize TDWI = 50 kg DM ha-1 = 5 g m-2 × 0.45 gC g-1; {_WOFOST}",
    ),
)

SOYBEAN_SPECS: Specs = (
    _spec(
        "soybean",
        "sowing_doy",
        140.0,
        90.0,
        200.0,
        "USDA NASS (2010) Agric. Handbook 628: most active soybean planting in Iowa/Illinois mid May "
        "to early June (≈ 20 May = doy 140)",
    ),
    _spec(
        "soybean",
        "gdd_maturity",
        1350.0,
        800.0,
        1900.0,
        "NDAWN soybean model (NDSU Crop & Pest Report, 16 June 2016, Predicting soybean maturity): 1694–2058 GDD°F (base "
        "50 °F) from planting to R8 for maturity groups 00.8–1.1 (940–1145 °C d); ≈ 1350 °C d "
        "extrapolated to the MG 2–3 cultivars of the central Corn Belt",
    ),
    _spec(
        "soybean",
        "dvs_grain",
        0.50,
        0.35,
        0.70,
        "midpoint of WOFOST soybean FOTB (0.47 at DVS 1.3 = 605 of TSUM1 350 + TSUM2 850 °C d) = 0.50; "
        f"beginning seed R5 at ≈ 0.55 of the season (Fehr & Caviness 1977); {_WOFOST}",
    ),
    _spec(
        "soybean",
        "sla",
        0.025,
        0.010,
        0.045,
        f"WOFOST soybean SLATB 0.0025 ha kg-1 (0.025 m2 g-1) for DVS 0.45–0.9; {_WOFOST}; CROPGRO-Soybean "
        "cultivar SLAVR 0.035–0.0375 m2 g-1 for new leaves (Boote et al. 1998)",
    ),
    _spec(
        "soybean",
        "hi_max",
        0.45,
        0.30,
        0.60,
        "soybean harvest index 0.40–0.50 (Spaeth et al. 1984 Agron. J. 76:482, stability of soybean "
        "harvest index; Sinclair 1998 Crop Sci. 38:638)",
    ),
    _spec(
        "soybean",
        "root_fraction",
        0.65,
        0.10,
        0.80,
        f"WOFOST soybean FRTB = 0.65 at DVS 0; {_WOFOST}",
    ),
    _spec(
        "soybean",
        "leaf_fraction",
        0.70,
        0.30,
        0.85,
        f"WOFOST soybean FLTB/(FLTB + FSTB) ≈ 0.70 through the season; {_WOFOST}",
    ),
    _spec(
        "soybean",
        "leaf_senescence",
        1.7e-3,
        3.0e-4,
        6.0e-3,
        "1/leaf life span: WOFOST soybean SPAN = 23 d at 35 °C above TBASE 7 °C = 644 °C d, ≈ 590 °C d "
        f"above 10 °C (1/590 ≈ 1.7e-3 per °C d); {_WOFOST}",
    ),
    _spec(
        "soybean",
        "seed_c",
        5.4,
        0.5,
        15.0,
        f"WOFOST soybean TDWI = 120 kg DM ha-1 = 12 g m-2 × 0.45 gC g-1; {_WOFOST}",
    ),
)

#: Maize table shape, from WOFOST temperate maize (DVS 1 = anthesis at TSUM1 = 695, maturity at 1495 °C d
#: above 6 °C; positions converted to fractions of thermal time to the grain switch, DVS 1.1 ≈ 775):
#: FOTB 0 → 1 over DVS 0.95–1.2 (≈ 195 °C d ≈ 4.4 × 45) → scale 50 °C d; FRTB 0.40 → 0 linearly by DVS 1
#: (half at u ≈ 0.45, slope-matched scale 0.22); FLTB/(FLTB + FSTB) 0.62 → 0.15 over DVS 0.33–0.88
#: (u 0.30–0.79: centre 0.55, scale 0.11, floor 0.15/0.62 ≈ 0.24).
MAIZE_SHAPE = AllocationShape(
    grain_scale_gdd=50.0,
    root_centre=0.45,
    root_scale=0.22,
    leaf_centre=0.55,
    leaf_scale=0.11,
    leaf_floor=0.24,
)

#: Soybean table shape, from WOFOST soybean (TSUM1 350, TSUM2 850 °C d above 7 °C; grain switch at DVS
#: 1.3 ≈ 605): FOTB 0.15 → 0.75 over DVS 1.15–1.5 (≈ 300 °C d) → scale 100 °C d; FRTB 0.65 → 0.35 (DVS
#: 0.75, u 0.43) → 0.15 (DVS 1, u 0.58): centre 0.45, scale 0.10; the leaf share of the non-grain shoot
#: stays ≈ 0.70 (floor 1: no vegetative decline).
SOYBEAN_SHAPE = AllocationShape(
    grain_scale_gdd=100.0,
    root_centre=0.45,
    root_scale=0.10,
    leaf_centre=1.0,
    leaf_scale=0.1,
    leaf_floor=1.0,
)


def crop_parameters(theta, crop: str) -> CropParameters:
    """Pick one crop's parameters (``{crop}_sowing_doy``, …) out of a flat mapping and drop the prefix."""
    return CropParameters(*(theta[f"{crop}_{field}"] for field in CropParameters._fields))


# --- modules ----------------------------------------------------------------------------------------


class Crop(eqx.Module):
    """Abstract annual crop. State `CropState`; parameters prefixed by the crop's name so that a rotation
    can hold several crops in one flat parameter mapping. ``pathway`` ("C3"/"C4") tells the coupled model
    which photosynthesis variant to use."""

    parameter_specs: eqx.AbstractClassVar[Specs]
    pathway: eqx.AbstractClassVar[str]

    def init_state(self) -> CropState:
        """Fallow field before the first sowing: every field 0."""
        zero = jnp.zeros(())
        return CropState(*([zero] * len(CropState._fields)))

    def lai(self, state: CropState) -> Array:
        """Green leaf area index (m2 m-2)."""
        return state.lai

    def live_biomass(self, state: CropState) -> Array:
        """Live, respiring biomass carbon: leaf + stem + root + grain (gC m-2)."""
        return state.leaf + state.stem + state.root + state.grain

    @abc.abstractmethod
    def step(self, theta, state: CropState, met: Met, npp: ArrayLike) -> CropState:
        """Advance one day given the day's forcing and net primary production ``npp`` (gC m-2 d-1, may be
        negative). See `crop_step` for the order of events."""


class Maize(Crop):
    """Maize (C4): 10/30 °C thermal time, WOFOST temperate-maize allocation, yield at 15.5 % moisture."""

    parameter_specs: ClassVar[Specs] = MAIZE_SPECS
    pathway: ClassVar[str] = "C4"
    standard_moisture: ClassVar[float] = MAIZE_STANDARD_MOISTURE

    def step(self, theta, state: CropState, met: Met, npp: ArrayLike) -> CropState:
        return crop_step(
            crop_parameters(theta, "maize"), MAIZE_SHAPE, self.standard_moisture, state, met, npp
        )


class Soybean(Crop):
    """Soybean (C3): 10/30 °C thermal time, WOFOST soybean allocation, yield at 13 % moisture."""

    parameter_specs: ClassVar[Specs] = SOYBEAN_SPECS
    pathway: ClassVar[str] = "C3"
    standard_moisture: ClassVar[float] = SOYBEAN_STANDARD_MOISTURE

    def step(self, theta, state: CropState, met: Met, npp: ArrayLike) -> CropState:
        return crop_step(
            crop_parameters(theta, "soybean"),
            SOYBEAN_SHAPE,
            self.standard_moisture,
            state,
            met,
            npp,
        )


# --- technology trend -------------------------------------------------------------------------------


def technology_factor(year: ArrayLike, rate: ArrayLike, max_gain: ArrayLike, reference_year: ArrayLike) -> Array:
    """Multiplicative technology factor on the crop's yield potential (–), bounded and saturating:

        τ(year) = exp(g · tanh(r · (year − year_ref) / g))

    with r the relative yield gain per year near the reference year (yr-1) and g the largest log-gain
    (–): τ ≈ 1 + r (year − year_ref) for |year − year_ref| ≪ g / r, and τ → exp(±g) far from it — a smooth
    "linear with a plateau" trend (Grassini, Eskridge & Cassman 2013 Nat. Commun. 4:2918: linear and
    linear-plateau models of historical yield trends), never an unbounded polynomial. τ > 0 always; τ = 1
    at the reference year. Technology (breeding, plant density, nitrogen) raised US maize yields by
    ≈ 1–2 % per year since the 1940s (Duvick 2005 Adv. Agron. 86:83; Egli 2008 Agron. J. 100:S79), the
    weather leaves its year-to-year marks on top (Lobell & Field 2007 Environ. Res. Lett. 2:014002).

    Args:
        year: calendar year (yr). rate: r (yr-1), ≥ 0. max_gain: g (–), > 0. reference_year: year_ref (yr).
    """
    dt = jnp.asarray(year, jnp.float32) - reference_year
    return jnp.exp(max_gain * jnp.tanh(rate * dt / max_gain))


#: Learnable parameters of `technology_factor` (shared by all sites of a model: one regional trend).
TECHNOLOGY_SPECS: Specs = (
    ParameterSpec(
        name="tech_rate",
        default=0.012,
        lower=0.0,
        upper=0.04,
        units="yr-1",
        reference="US maize yield gains ≈ 1–2 % per year from the 1940s to the 2000s (Duvick 2005 Adv. Agron. "
        "86:83; Egli 2008 Agron. J. 100:S79: ≈ 110 kg ha-1 yr-1 on ≈ 8–9 t ha-1); 0.04 bounds the fastest "
        "sustained regional gain",
        transform="logit",
        description="relative gain of yield potential per year near the reference year",
    ),
    ParameterSpec(
        name="tech_max_gain",
        default=0.4,
        lower=0.05,
        upper=0.8,
        units="-",
        reference="largest log-gain of yield potential from the reference year: yield plateaus (Grassini et "
        "al. 2013 Nat. Commun. 4:2918); exp(0.8) = 2.2× bounds the factor over a few decades",
        transform="logit",
        description="plateau of the technology factor: τ stays within exp(±tech_max_gain)",
    ),
)
