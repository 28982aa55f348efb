"""The coupled daily ecosystem model: GPP, Ra, Rh, Reco, NEE, soil water, LAI, biomass and crop yield.

Natural vegetation and crops share one daily step; they differ only in where leaf area and live biomass
come from (a phenology model, or a growing crop) and whether net primary production builds organs.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from process_models.autotrophic import AutotrophicRespiration
from process_models.crop import Crop, CropState, Maize, Soybean
from process_models.forcing import Met
from process_models.moisture import relative_water, water_holding_capacity
from process_models.parameters import ParameterSpec, Specs, collect_specs, default_parameters
from process_models.phenology import GrowingSeasonIndex, Phenology
from process_models.photosynthesis import CollatzC4, FarquharC3, LightUseEfficiency, Photosynthesis
from process_models.soil_respiration import LloydTaylor, SoilRespiration
from process_models.water import Bucket


class EcosystemState(NamedTuple):
    """State carried from day to day: plant-available soil water (mm) and the vegetation's own state."""

    w: Array
    vegetation: PyTree


class EcosystemDrivers(NamedTuple):
    """The terms of a site-day that depend on the drivers and parameters only, never on the carried state, one per
    component (`Ecosystem.drivers`); `process_models.simulate` computes them for every day in one vectorised pass
    before the time loop, so the loop carries only what is truly sequential."""

    photosynthesis: PyTree  #: `Photosynthesis.drivers` (e.g. MOD17 GPP per unit fAPAR, gC m-2 d-1)
    water: Array  #: `Bucket.drivers`: Priestley–Taylor PET (mm d-1), sun geometry and net radiation inside
    autotrophic: Array  #: `AutotrophicRespiration.drivers`: maintenance respiration per unit biomass (gC gC-1 d-1)
    soil_respiration: PyTree  #: `SoilRespiration.drivers` (e.g. Rh at optimal moisture, gC m-2 d-1) or None
    vegetation: PyTree  #: the phenology's drivers (prescribed LAI, daily iGSI) or None (crops)


class NaturalDay(NamedTuple):
    """What the time loop of `NaturalEcosystem` carries out of each day; every flux follows from it elementwise."""

    lai: Array  #: green LAI of the day (m2 m-2)
    w: Array  #: plant-available water after the day (mm)
    et: Array  #: evapotranspiration (mm d-1)
    drainage: Array  #: drainage and runoff (mm d-1)


class DailyOutput(NamedTuple):
    """One day's fluxes and states. Carbon fluxes gC m-2 d-1 (FLUXNET sign: NEE > 0 is a source)."""

    gpp: Array
    ra: Array  #: autotrophic respiration = rm + rg
    rm: Array  #: maintenance respiration
    rg: Array  #: growth respiration
    rh: Array  #: heterotrophic respiration
    reco: Array  #: ecosystem respiration = ra + rh
    nee: Array  #: net ecosystem exchange = reco − gpp
    npp: Array  #: net primary production = gpp − ra
    rsoil: Array  #: soil CO2 efflux seen by a chamber = rh + belowground share of ra
    et: Array  #: evapotranspiration (mm d-1)
    drainage: Array  #: drainage and runoff (mm d-1)
    w: Array  #: plant-available soil water after the day (mm)
    swc: Array  #: volumetric soil water content (m3 m-3)
    water_stress: Array  #: GPP water-stress scalar (1 = none)
    lai: Array  #: green leaf area index (m2 m-2)
    biomass: Array  #: live respiring biomass (gC m-2)
    crop_yield: Array  #: grain yield of the latest harvest (t ha-1 at market moisture; 0 for natural vegetation)


LEAF_C_PER_LAI_SPEC = ParameterSpec(
    name="leaf_c_per_lai",
    default=40.0,
    lower=10.0,
    upper=150.0,
    units="gC m-2 (m2 leaf m-2)-1",
    reference=(
        "1/SLA: White et al. (2000) Earth Interactions 4:1, Table 5 (SLA 12–32 m2 kgC-1 for deciduous "
        "trees and grasses, 8–12 for needleleaf) → 30–125 gC m-2"
    ),
    transform="loglogit",
    description="leaf carbon per unit leaf area",
)

LIVE_TO_LEAF_C_SPEC = ParameterSpec(
    name="live_to_leaf_c",
    default=2.0,
    lower=1.2,
    upper=10.0,
    units="-",
    reference=(
        "White et al. (2000) Table 5 allocation ratios: new fine-root C : new leaf C ≈ 1 (grasses, deciduous "
        "trees), hence the default 2 (leaf + fine root); live wood adds more, but its respiring share is "
        "small, hence 1.2–10"
    ),
    transform="loglogit",
    description="respiring live carbon (leaf + fine root + live wood) per unit leaf carbon",
)

RA_BELOWGROUND_SPEC = ParameterSpec(
    name="ra_belowground_frac",
    default=0.4,
    lower=0.1,
    upper=0.8,
    units="-",
    reference=(
        "Hanson et al. (2000) Biogeochemistry 48:115 (roots ≈ 45 % of soil respiration on average); "
        "Litton, Raich & Ryan (2007) Glob. Change Biol. 13:2089 (belowground allocation 0.2–0.6 of GPP)"
    ),
    description="share of autotrophic respiration released belowground (roots), seen by soil chambers",
)


class Ecosystem(eqx.Module):
    """Abstract coupled model. One `step` is one site-day; `process_models.simulate` scans and vmaps it.

    Daily order: vegetation state gives LAI and live biomass → the bucket takes the day's rain and
    evaporative demand → GPP under the bucket's water stress → Ra (maintenance ∝ biomass, growth share of
    the rest) → Rh from soil temperature and moisture → Reco = Ra + Rh, NEE = Reco − GPP → NPP feeds
    growth (crops).

    A day is computed in three parts so that a simulation loops over as little as possible: `drivers` (every
    state-independent term: sun geometry, net radiation and PET, light and temperature responses; elementwise,
    for all days at once before the loop), `advance` (the sequential part, inside the loop) and `finish`
    (elementwise, for all days at once after the loop). `step` = the three in a row, for one day.
    """

    photosynthesis: eqx.AbstractVar[Photosynthesis]
    soil_respiration: eqx.AbstractVar[SoilRespiration]
    water: eqx.AbstractVar[Bucket]
    autotrophic: eqx.AbstractVar[AutotrophicRespiration]

    own_specs: ClassVar[Specs] = ()

    @property
    def parameter_specs(self) -> Specs:
        """Every learnable parameter of the composed model (names are unique across components)."""
        return collect_specs(
            self.photosynthesis.parameter_specs,
            self.soil_respiration.parameter_specs,
            self.water.parameter_specs,
            self.autotrophic.parameter_specs,
            self._vegetation_specs(),
            self.own_specs,
        )

    def default_parameters(self) -> dict[str, Array]:
        return default_parameters(self.parameter_specs)

    def init_state(self, theta) -> EcosystemState:
        """Full bucket and the vegetation's initial state."""
        return EcosystemState(w=self.water.initial_water(theta), vegetation=self._init_vegetation())

    def drivers(self, theta, met: Met) -> EcosystemDrivers:
        """Every state-independent term of the day(s): elementwise, so ``met`` may hold one day or all of them."""
        return EcosystemDrivers(
            photosynthesis=self.photosynthesis.drivers(theta, met),
            water=self.water.drivers(theta, met),
            autotrophic=self.autotrophic.drivers(theta, met.tair),
            soil_respiration=self.soil_respiration.drivers(theta, met.tsoil),
            vegetation=self._vegetation_drivers(theta, met),
        )

    def step(
        self, theta, state: EcosystemState, met: Met, drivers: EcosystemDrivers | None = None
    ) -> tuple[EcosystemState, DailyOutput]:
        """Advance one site by one day. ``theta``: physical parameters; ``met``: that day's drivers; ``drivers``:
        the day's `EcosystemDrivers` when already computed (None: computed here). Equals `advance` then `finish`."""
        if drivers is None and self.photosynthesis.needs_series:
            raise ValueError(f"{type(self.photosynthesis).__name__} needs the whole series for its drivers: use "
                             "process_models.simulate, or pass drivers computed for the series")
        drivers = self.drivers(theta, met) if drivers is None else drivers
        state, carried = self.advance(theta, state, met, drivers)
        return state, self.finish(theta, met, drivers, carried)

    def advance(self, theta, state: EcosystemState, met: Met, drivers: EcosystemDrivers) -> tuple[EcosystemState, PyTree]:
        """The sequential part of a day: the new state and what `finish` needs. Here the whole coupled day
        (crops: growth depends on the day's NPP, so everything is sequential); `NaturalEcosystem` keeps only the
        phenology and the bucket in the loop."""
        veg, lai, biomass = self._leaf_area(theta, state.vegetation, met, drivers.vegetation)
        hydro = self.water(theta, state.w, met, lai, drivers.water)
        veg, out = self._fluxes(theta, met, drivers, veg, lai, biomass, hydro)
        return EcosystemState(w=hydro.w, vegetation=veg), out

    def finish(self, theta, met: Met, drivers: EcosystemDrivers, carried: PyTree) -> DailyOutput:
        """The day's outputs from what `advance` carried out (elementwise; after the loop, for all days at once)."""
        return carried

    def _fluxes(self, theta, met, drivers, veg, lai, biomass, hydro) -> tuple[PyTree, DailyOutput]:
        gpp = self.photosynthesis(theta, met, lai, hydro.water_stress, drivers.photosynthesis)
        resp = self.autotrophic(theta, gpp, biomass, met.tair, drivers.autotrophic)
        rh = self.soil_respiration(theta, met.tsoil, hydro.swc, drivers.soil_respiration)
        npp = gpp - resp.ra
        veg, crop_yield, belowground = self._grow(theta, veg, met, npp, resp.ra)
        reco = resp.ra + rh
        out = DailyOutput(
            gpp=gpp,
            ra=resp.ra,
            rm=resp.rm,
            rg=resp.rg,
            rh=rh,
            reco=reco,
            nee=reco - gpp,
            npp=npp,
            rsoil=rh + belowground,
            et=hydro.et,
            drainage=hydro.drainage,
            w=hydro.w,
            swc=hydro.swc,
            water_stress=hydro.water_stress,
            lai=lai,
            biomass=biomass,
            crop_yield=crop_yield,
        )
        return veg, out

    # --- what differs between natural vegetation and crops -------------------------------------
    @abc.abstractmethod
    def _vegetation_specs(self) -> Specs: ...

    @abc.abstractmethod
    def _init_vegetation(self) -> PyTree: ...

    @abc.abstractmethod
    def _vegetation_drivers(self, theta, met: Met) -> PyTree:
        """The vegetation's state-independent terms (see `drivers`), or None."""

    @abc.abstractmethod
    def _leaf_area(self, theta, veg: PyTree, met: Met, drivers: PyTree) -> tuple[PyTree, Array, Array]:
        """(vegetation state, green LAI m2 m-2, live respiring biomass gC m-2) for the day."""

    @abc.abstractmethod
    def _grow(self, theta, veg: PyTree, met: Met, npp: Array, ra: Array) -> tuple[PyTree, Array, Array]:
        """(new vegetation state, latest grain yield t ha-1, belowground autotrophic respiration)."""


#: Soil-water modes of `NaturalEcosystem` (its ``soil_water``).
SOIL_WATER_MODES = ("bucket", "observed", "observed_rew")


class NaturalEcosystem(Ecosystem):
    """Natural vegetation: LAI from a phenology model (default: the growing-season index) and live biomass
    proportional to leaf carbon. Carbon pools of wood and soil are not tracked: Rh draws on a base rate."""

    photosynthesis: Photosynthesis = eqx.field(default_factory=LightUseEfficiency)
    soil_respiration: SoilRespiration = eqx.field(default_factory=LloydTaylor)
    water: Bucket = eqx.field(default_factory=Bucket)
    autotrophic: AutotrophicRespiration = eqx.field(default_factory=AutotrophicRespiration)
    phenology: Phenology = eqx.field(default_factory=GrowingSeasonIndex)
    #: Soil water of the stress and moisture responses: ``"bucket"`` (default: the bucket's own state everywhere),
    #: ``"observed"`` (the measured volumetric content ``met.swc``, m3 m-3, against the learned soil limits,
    #: `Bucket.observed`) or ``"observed_rew"`` (the measured relative extractable water ``met.rew``, 0–1, from
    #: the tower's own record, `Bucket.observed_rew`); where the observation is NaN, the bucket's. The water
    #: balance and ET stay the bucket's in every mode.
    soil_water: str = eqx.field(default="bucket", static=True)

    own_specs: ClassVar[Specs] = (LEAF_C_PER_LAI_SPEC, LIVE_TO_LEAF_C_SPEC, RA_BELOWGROUND_SPEC)

    def __check_init__(self):
        if self.soil_water not in SOIL_WATER_MODES:
            raise ValueError(f"NaturalEcosystem: unknown soil_water {self.soil_water!r}; choose one of {SOIL_WATER_MODES}")

    def _vegetation_specs(self) -> Specs:
        return self.phenology.parameter_specs

    def _init_vegetation(self) -> PyTree:
        return self.phenology.init_state()

    def _vegetation_drivers(self, theta, met):
        return self.phenology.drivers(theta, met)

    def _leaf_area(self, theta, veg, met, drivers):
        if self.phenology.water_limited:
            raise NotImplementedError("a water-limited phenology needs the soil water: use advance/step")
        veg, lai = self.phenology(theta, veg, met, drivers)
        return veg, lai, self._biomass(theta, lai)

    def _biomass(self, theta, lai):
        return lai * theta["leaf_c_per_lai"] * theta["live_to_leaf_c"]

    def advance(self, theta, state, met, drivers) -> tuple[EcosystemState, NaturalDay]:
        """Only the phenology and the bucket are sequential here: LAI does not depend on carbon (nor on water,
        unless the phenology is water-limited: then on yesterday's bucket), and the
        carbon fluxes do not feed back, so `finish` computes them for all days at once after the loop."""
        if self.phenology.water_limited:  # leaf area limited by yesterday's soil water
            wrel = relative_water(state.w, water_holding_capacity(theta))
            veg, lai = self.phenology(theta, state.vegetation, met, drivers.vegetation, wrel=wrel)
        else:
            veg, lai = self.phenology(theta, state.vegetation, met, drivers.vegetation)
        w, et, drainage = self.water.balance(theta, state.w, met, lai, drivers.water)
        return EcosystemState(w=w, vegetation=veg), NaturalDay(lai=lai, w=w, et=et, drainage=drainage)

    def finish(self, theta, met, drivers, carried: NaturalDay) -> DailyOutput:
        hydro = self.water.state_of(theta, carried.w, carried.et, carried.drainage)
        if self.soil_water == "observed":
            if met.swc is None:
                raise ValueError("NaturalEcosystem(soil_water='observed') needs the measured soil water met.swc "
                                 "(m3 m-3, NaN where not measured); give the dataset an 'swc' variable (%)")
            hydro = self.water.observed(theta, hydro, met.swc)
        elif self.soil_water == "observed_rew":
            if met.rew is None:
                raise ValueError("NaturalEcosystem(soil_water='observed_rew') needs met.rew (relative extractable "
                                 "water 0–1, NaN where not measured); give the dataset an 'swc_rew' variable")
            hydro = self.water.observed_rew(theta, hydro, met.rew)
        _, out = self._fluxes(theta, met, drivers, None, carried.lai, self._biomass(theta, carried.lai), hydro)
        return out

    def _grow(self, theta, veg, met, npp, ra):
        return veg, jnp.zeros_like(npp), theta["ra_belowground_frac"] * ra


class CropEcosystem(Ecosystem):
    """A maize or soybean field: LAI and live biomass from the crop's pools, NPP builds the organs, the
    grain yield is reported at harvest. Photosynthesis follows the crop's pathway unless given."""

    crop: Crop
    photosynthesis: Photosynthesis
    soil_respiration: SoilRespiration
    water: Bucket
    autotrophic: AutotrophicRespiration

    def __init__(
        self,
        crop: Crop | None = None,
        photosynthesis: Photosynthesis | None = None,
        soil_respiration: SoilRespiration | None = None,
        water: Bucket | None = None,
        autotrophic: AutotrophicRespiration | None = None,
    ):
        self.crop = Maize() if crop is None else crop
        if photosynthesis is None:
            photosynthesis = CollatzC4() if self.crop.pathway == "C4" else FarquharC3()
        self.photosynthesis = photosynthesis
        self.soil_respiration = LloydTaylor() if soil_respiration is None else soil_respiration
        self.water = Bucket() if water is None else water
        self.autotrophic = AutotrophicRespiration() if autotrophic is None else autotrophic

    def _vegetation_specs(self) -> Specs:
        return self.crop.parameter_specs

    def _init_vegetation(self) -> CropState:
        return self.crop.init_state()

    def _vegetation_drivers(self, theta, met):
        return None

    def _leaf_area(self, theta, veg, met, drivers):
        return veg, self.crop.lai(veg), self.crop.live_biomass(veg)

    def _grow(self, theta, veg, met, npp, ra):
        root_share = _safe_ratio(veg.root, self.crop.live_biomass(veg))
        veg = self.crop.step(theta, veg, met, npp)
        return veg, veg.yield_, root_share * ra


class SoilChamber(eqx.Module):
    """Soil CO2 efflux at a chamber: Rsoil = f(T_soil) · g(θ_soil) from the MEASURED soil temperature
    (``met.tsoil``, °C) and volumetric soil water (``met.swc``, m3 m-3), with no vegetation and no bucket.

    Same interface as `Ecosystem` (``parameter_specs``, ``init_state``, ``step`` → `DailyOutput`), so it
    is a physics layer for the hybrid and runs in `process_models.simulate`. The respiration component
    (default Lloyd–Taylor; `DAMM` or `Q10Respiration` alike) here represents TOTAL soil respiration
    (heterotrophic + root), the quantity chambers measure and to which Lloyd & Taylor (1994) and Davidson
    et al. (2012) fitted their forms; its base rate is then the total soil respiration at 10 °C.
    Outputs: rsoil = reco = nee = rh = that efflux, gpp = ra = npp = 0 (a dark chamber sees no
    photosynthesis); et, drainage, w, water_stress, lai and biomass are not modelled and are NaN.
    """

    soil_respiration: SoilRespiration = eqx.field(default_factory=LloydTaylor)

    @property
    def parameter_specs(self) -> Specs:
        return collect_specs(self.soil_respiration.parameter_specs)

    def default_parameters(self) -> dict[str, Array]:
        return default_parameters(self.parameter_specs)

    def init_state(self, theta) -> EcosystemState:
        return EcosystemState(w=jnp.zeros(()), vegetation=())

    def drivers(self, theta, met: Met) -> EcosystemDrivers:
        if met.swc is None:
            raise ValueError("SoilChamber needs the measured soil water content met.swc (m3 m-3); build the "
                             "forcing with make_met(..., swc=...) or give the dataset an 'swc' variable (%)")
        return EcosystemDrivers(photosynthesis=None, water=None, autotrophic=None,
                                soil_respiration=self.soil_respiration.drivers(theta, met.tsoil), vegetation=None)

    def step(self, theta, state: EcosystemState, met: Met, drivers: EcosystemDrivers | None = None
             ) -> tuple[EcosystemState, DailyOutput]:
        drivers = self.drivers(theta, met) if drivers is None else drivers
        state, carried = self.advance(theta, state, met, drivers)
        return state, self.finish(theta, met, drivers, carried)

    def advance(self, theta, state: EcosystemState, met: Met, drivers: EcosystemDrivers) -> tuple[EcosystemState, tuple]:
        """Nothing is sequential: the efflux follows from the measured drivers day by day."""
        return state, ()

    def finish(self, theta, met: Met, drivers: EcosystemDrivers, carried: tuple) -> DailyOutput:
        rs = self.soil_respiration(theta, met.tsoil, met.swc, drivers.soil_respiration)
        zero = jnp.zeros_like(rs)
        nan = jnp.full_like(rs, jnp.nan)
        return DailyOutput(
            gpp=zero, ra=zero, rm=zero, rg=zero, rh=rs, reco=rs, nee=rs, npp=zero, rsoil=rs, et=nan,
            drainage=nan, w=nan, swc=met.swc, water_stress=nan, lai=nan, biomass=nan, crop_yield=zero,
        )


def maize() -> CropEcosystem:
    """A maize field (C4, Collatz et al. 1992 photosynthesis)."""
    return CropEcosystem(crop=Maize())


def soybean() -> CropEcosystem:
    """A soybean field (C3, Farquhar photosynthesis)."""
    return CropEcosystem(crop=Soybean())


def _safe_ratio(num: Array, den: Array) -> Array:
    """num / den, 0 where den ≤ 0 (double-``where``: finite value and gradient)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)
