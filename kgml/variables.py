"""The one registry of canonical variables: names, units, valid ranges and network column names.

Every reader maps its source columns onto these names and converts to these units; `kgml.data.schema`
checks datasets against them. Units are UDUNITS/CF-style strings (``"degC"``, ``"W m-2"``, ``"gC m-2 d-1"``).

Flux variables (``nee``, ``gpp``, ``reco``, ``rsoil``, ``rh_soil``) are always *rates* in gC m-2 d-1, at any
time resolution: a half-hourly NEE of 1 µmol CO2 m-2 s-1 is stored as 1.0377 gC m-2 d-1, and an annual total
as its mean daily rate. Sign convention (FLUXNET): NEE > 0 is a source to the atmosphere.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from process_models.constants import (
    GC_PER_UMOL_CO2,
    HOURS_PER_DAY,
    KELVIN_OFFSET,
    SECONDS_PER_DAY,
    T_HA_PER_G_M2,
)

__all__ = [
    "UnitConversionError",
    "UnitMistake",
    "Variable",
    "VARIABLES",
    "UMOL_CO2_M2_S_TO_GC_M2_D",
    "convert_units",
    "conversion_factor",
    "find_variable",
    "get_variable",
    "normalise_units",
    "register_variable",
    "units_equal",
    "units_label",
]

#: 1 µmol CO2 m-2 s-1 expressed in gC m-2 d-1 = M_C × 1e-6 × 86400 = 1.03772... (molar mass of C, IUPAC).
UMOL_CO2_M2_S_TO_GC_M2_D = GC_PER_UMOL_CO2 * SECONDS_PER_DAY


class UnitConversionError(ValueError):
    """No known conversion between two unit strings."""


# --- Units ------------------------------------------------------------------------------------------

#: Spellings met in the wild → the canonical spelling used in this package.
_UNIT_ALIASES: dict[str, str] = {
    "deg c": "degC", "degc": "degC", "°c": "degC", "c": "degC", "celsius": "degC", "degree_celsius": "degC",
    "degrees_celsius": "degC", "deg_c": "degC", "degree c": "degC",
    "k": "K", "kelvin": "K",
    "deg f": "degF", "degf": "degF", "°f": "degF", "fahrenheit": "degF",
    "w m-2": "W m-2", "wm-2": "W m-2", "w/m2": "W m-2", "w/m^2": "W m-2", "w m^-2": "W m-2", "j m-2 s-1": "W m-2",
    "mj m-2 d-1": "MJ m-2 d-1", "mj/m2/d": "MJ m-2 d-1", "mj m-2 day-1": "MJ m-2 d-1", "mj/m2/day": "MJ m-2 d-1",
    "hpa": "hPa", "mbar": "hPa", "mb": "hPa", "kpa": "kPa", "pa": "Pa",
    "mm d-1": "mm d-1", "mm/d": "mm d-1", "mm/day": "mm d-1", "mm day-1": "mm d-1", "mm d^-1": "mm d-1",
    "mm h-1": "mm h-1", "mm/h": "mm h-1", "mm hr-1": "mm h-1", "mm/hr": "mm h-1",
    "kg m-2 s-1": "kg m-2 s-1", "mm s-1": "kg m-2 s-1",
    "%": "%", "percent": "%", "pct": "%",
    "1": "1", "fraction": "1", "m3 m-3": "1", "m3/m3": "1", "m^3 m^-3": "1", "nondimensional": "1", "-": "1",
    "dimensionless": "1", "unitless": "1",
    "ppm": "umol mol-1", "umol mol-1": "umol mol-1", "umolco2 mol-1": "umol mol-1", "µmol mol-1": "umol mol-1",
    "umol/mol": "umol mol-1", "mol mol-1": "mol mol-1",
    "m s-1": "m s-1", "ms-1": "m s-1", "m/s": "m s-1",
    "umol m-2 s-1": "umol m-2 s-1", "umolco2 m-2 s-1": "umol m-2 s-1", "µmol m-2 s-1": "umol m-2 s-1",
    "umolm-2s-1": "umol m-2 s-1", "umol co2 m-2 s-1": "umol m-2 s-1", "µmol co2 m-2 s-1": "umol m-2 s-1",
    "umol/m2/s": "umol m-2 s-1", "µmolco2 m-2 s-1": "umol m-2 s-1", "umolphoton m-2 s-1": "umol m-2 s-1",
    "gc m-2 d-1": "gC m-2 d-1", "g c m-2 d-1": "gC m-2 d-1", "gc m-2 day-1": "gC m-2 d-1", "gc/m2/d": "gC m-2 d-1",
    "gc m-2 y-1": "gC m-2 yr-1", "gc m-2 yr-1": "gC m-2 yr-1", "g c m-2 yr-1": "gC m-2 yr-1",
    "gc m-2 h-1": "gC m-2 h-1", "gc m-2 s-1": "gC m-2 s-1", "kg c m-2 s-1": "kgC m-2 s-1", "kgc m-2 s-1": "kgC m-2 s-1",
    "t ha-1": "t ha-1", "t/ha": "t ha-1", "kg ha-1": "kg ha-1", "kg/ha": "kg ha-1",
    "g m-2": "g m-2",
    "m2 m-2": "m2 m-2", "m2/m2": "m2 m-2",
    "mm": "mm", "m": "m",
}


#: Spellings where case matters (SI prefixes: M mega vs m milli), looked up before the case-free aliases.
_EXACT_UNITS: dict[str, str] = {
    "Mg ha-1": "t ha-1", "Mg/ha": "t ha-1", "mg ha-1": "mg ha-1", "mg/ha": "mg ha-1",
    # The CF / UDUNITS-2 spelling kgml writes (grams of carbon, said in the variable's comment).
    "g m-2 d-1": "gC m-2 d-1", "g m-2 day-1": "gC m-2 d-1", "g m-2 h-1": "gC m-2 h-1",
    "g m-2 s-1": "gC m-2 s-1", "g m-2 yr-1": "gC m-2 yr-1",
}
#: Prefix letters whose case changes the unit (mega/milli, peta/pico, giga, tera…): no case-free lookup.
_CASE_SENSITIVE = re.compile(r"(?<![A-Za-z])[MPGTmp][a-z]*g(?![a-z])")


def normalise_units(units: str) -> str:
    """The canonical spelling of a unit string (``"deg C"`` → ``"degC"``); unknown strings are returned stripped.
    Case is kept where it carries meaning (``"Mg ha-1"`` megagram = t ha-1, ``"mg ha-1"`` milligram)."""
    text = " ".join(str(units).strip().split())
    if text in _EXACT_UNITS:
        return _EXACT_UNITS[text]
    if _CASE_SENSITIVE.search(text):
        return text
    return _UNIT_ALIASES.get(text.lower(), text)


def units_equal(a: str, b: str) -> bool:
    """Whether two unit strings denote the same unit after normalisation."""
    return normalise_units(a) == normalise_units(b)


# Linear conversions: every unit of a group has its factor to the group's base unit (value_base = value × f).
_LINEAR_GROUPS: tuple[dict[str, float], ...] = (
    {"Pa": 1.0, "hPa": 100.0, "kPa": 1000.0},
    {"%": 1.0, "1": 100.0},
    {"umol mol-1": 1.0, "mol mol-1": 1.0e6},
    {
        "gC m-2 d-1": 1.0,
        "umol m-2 s-1": UMOL_CO2_M2_S_TO_GC_M2_D,
        "gC m-2 h-1": HOURS_PER_DAY,
        "gC m-2 s-1": SECONDS_PER_DAY,
        "kgC m-2 s-1": 1.0e3 * SECONDS_PER_DAY,
    },
    {"mm d-1": 1.0, "mm h-1": HOURS_PER_DAY, "kg m-2 s-1": SECONDS_PER_DAY},
    {"W m-2": 1.0, "MJ m-2 d-1": 1.0e6 / SECONDS_PER_DAY},
    {"t ha-1": 1.0, "kg ha-1": 1.0e-3, "g m-2": T_HA_PER_G_M2, "mg ha-1": 1.0e-9},
    {"mm": 1.0, "m": 1.0e3},
    {"m s-1": 1.0},
    {"m2 m-2": 1.0},
)


def conversion_factor(from_units: str, to_units: str) -> float:
    """Multiplicative factor from ``from_units`` to ``to_units`` (linear units only; not temperatures).

    ``umol m-2 s-1`` ↔ ``gC m-2 d-1`` assumes a CO2 flux expressed as carbon (molar mass of C 12.0107 g mol-1).
    Annual totals (``gC m-2 yr-1``) are not converted here: their day count depends on the year (see readers).
    """
    src, dst = normalise_units(from_units), normalise_units(to_units)
    if src == dst:
        return 1.0
    for group in _LINEAR_GROUPS:
        if src in group and dst in group:
            return group[src] / group[dst]
    raise UnitConversionError(f"no known conversion from {from_units!r} to {to_units!r}")


def convert_units(values, from_units: str, to_units: str):
    """Convert ``values`` (scalar, numpy or xarray) from one unit to another; temperatures handle offsets."""
    src, dst = normalise_units(from_units), normalise_units(to_units)
    if src == dst:
        return values
    temperature = {"degC", "K", "degF"}
    if src in temperature and dst in temperature:
        celsius = {
            "degC": lambda v: v,
            "K": lambda v: v - KELVIN_OFFSET,
            "degF": lambda v: (v - 32.0) * 5.0 / 9.0,
        }[src](values)
        return {
            "degC": lambda c: c,
            "K": lambda c: c + KELVIN_OFFSET,
            "degF": lambda c: c * 9.0 / 5.0 + 32.0,
        }[dst](celsius)
    return values * conversion_factor(src, dst)


# --- Variables --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitMistake:
    """A recognisable unit mistake: ``applies(finite_values)`` → the values look like ``advice`` says.

    ``certain`` mistakes are errors even when every value is inside the valid range (e.g. soil water as a
    0–1 fraction where % is expected); the others only add a hint to range errors (or a warning).
    """

    applies: Callable[[np.ndarray], bool]
    advice: str
    certain: bool = False


@dataclass(frozen=True)
class Variable:
    """One canonical variable: name, units, physically plausible range and its names in source networks.

    ``valid_min``/``valid_max`` are generous physical bounds valid at every time resolution (hourly to
    annual); they catch unit mistakes and corrupted files, not outliers.
    """

    name: str
    units: str
    long_name: str
    valid_min: float
    valid_max: float
    standard_name: str | None = None
    fluxnet: tuple[str, ...] = ()
    ameriflux: tuple[str, ...] = ()
    cosore: tuple[str, ...] = ()
    description: str = ""
    mistakes: tuple[UnitMistake, ...] = field(default=(), repr=False)

    def attrs(self) -> dict[str, object]:
        """xarray/CF attributes for a DataArray holding this variable."""
        out: dict[str, object] = {
            "units": self.units,
            "long_name": self.long_name,
            "valid_min": self.valid_min,
            "valid_max": self.valid_max,
        }
        if self.standard_name:
            out["standard_name"] = self.standard_name
        return out

    def diagnose(self, values, *, certain_only: bool = False) -> str | None:
        """Advice on a likely unit mistake for these values, or None when they look right."""
        finite = np.asarray(values, dtype=float).ravel()
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return None
        for mistake in self.mistakes:
            if certain_only and not mistake.certain:
                continue
            if mistake.applies(finite):
                return mistake.advice
        return None

    def out_of_range(self, values) -> np.ndarray:
        """Boolean mask of values outside [valid_min, valid_max], ±inf included (``inf``, ``Infinity`` and
        ``1e999`` in a text file are an overflow or a missing-value code, never a measurement); NaN (a gap)
        is not out of range."""
        arr = np.asarray(values, dtype=float)
        return ~np.isnan(arr) & ((arr < self.valid_min) | (arr > self.valid_max))


def _temperature_mistakes(name: str) -> tuple[UnitMistake, ...]:
    return (
        UnitMistake(
            lambda v: float(np.median(v)) > 200.0,
            f"{name} looks like kelvin (values above 200): convert with convert_units(x, 'K', 'degC') (x − 273.15)",
        ),
        UnitMistake(
            lambda v: float(np.max(v)) > 60.0 and float(np.median(v)) > 25.0,
            f"{name} may be in °F: convert with convert_units(x, 'degF', 'degC')",
        ),
    )


def _flux_mistakes(name: str) -> tuple[UnitMistake, ...]:
    return (
        UnitMistake(
            lambda v: float(np.max(np.abs(v))) > 365.0,
            f"{name} may be an annual total (gC m-2 yr-1): divide by the days in the year to get gC m-2 d-1",
        ),
        UnitMistake(
            lambda v: True,
            f"{name} must be gC m-2 d-1; µmol CO2 m-2 s-1 converts with × {UMOL_CO2_M2_S_TO_GC_M2_D:.4f}",
        ),
    )


def _fraction_not_percent(name: str) -> UnitMistake:
    return UnitMistake(
        lambda v: v.size >= 5 and float(np.max(v)) <= 1.0,
        f"{name} looks like a 0–1 fraction but must be %: multiply by 100 (convert_units(x, '1', '%'))",
        certain=True,
    )


_REGISTRY: dict[str, Variable] = {}


def units_label(name: str) -> str:
    """`` (units)`` of a registered variable for plot axis labels (``nee``, ``nee_monthly``, ``true_nee`` →
    " (gC m-2 d-1)"); empty for unknown names."""
    base = str(name).removeprefix("true_").removesuffix("_monthly")
    var = _REGISTRY.get(base)
    return f" ({var.units})" if var is not None else ""


def register_variable(variable: Variable, *, overwrite: bool = False) -> Variable:
    """Add a variable to the registry (users may add their own); re-registering a name needs ``overwrite``."""
    if variable.name in _REGISTRY and not overwrite and _REGISTRY[variable.name] != variable:
        raise ValueError(f"variable {variable.name!r} is already registered; pass overwrite=True to replace it")
    if not variable.valid_min < variable.valid_max:
        raise ValueError(f"variable {variable.name!r}: valid_min must be below valid_max")
    _REGISTRY[variable.name] = variable
    return variable


#: Read-only view of the registry, name → Variable.
VARIABLES: Mapping[str, Variable] = MappingProxyType(_REGISTRY)


def get_variable(name: str) -> Variable:
    """The registered variable called ``name``; an unknown name raises KeyError with close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown variable {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})") from None


def find_variable(column: str, network: str) -> Variable | None:
    """The canonical variable that a source column maps to (``network`` in fluxnet/ameriflux/cosore)."""
    if network not in ("fluxnet", "ameriflux", "cosore"):
        raise ValueError(f"unknown network {network!r}; expected 'fluxnet', 'ameriflux' or 'cosore'")
    for var in _REGISTRY.values():
        if column in getattr(var, network):
            return var
    return None


def _register_all(variables: Iterable[Variable]) -> None:
    for var in variables:
        register_variable(var)


_register_all(
    [
        # --- meteorology ---------------------------------------------------------------------------
        Variable(
            "tair", "degC", "air temperature", -70.0, 60.0, "air_temperature",
            fluxnet=("TA_F", "TA_F_MDS", "TA"), ameriflux=("TA", "TA_1_1_1", "TA_PI_F"),
            mistakes=_temperature_mistakes("tair"),
        ),
        Variable(
            "tmin", "degC", "daily minimum air temperature", -70.0, 60.0, "air_temperature",
            description="cell_methods: time: minimum within days", mistakes=_temperature_mistakes("tmin"),
        ),
        Variable(
            "tmax", "degC", "daily maximum air temperature", -70.0, 60.0, "air_temperature",
            description="cell_methods: time: maximum within days", mistakes=_temperature_mistakes("tmax"),
        ),
        Variable(
            "sw_in", "W m-2", "incoming shortwave radiation", -20.0, 1500.0,
            "surface_downwelling_shortwave_flux_in_air",
            fluxnet=("SW_IN_F", "SW_IN_F_MDS", "SW_IN"), ameriflux=("SW_IN", "SW_IN_1_1_1", "SW_IN_PI_F"),
            description="mean over the time step (a daily value is the 24-h mean)",
            mistakes=(
                UnitMistake(
                    lambda v: v.size >= 30 and float(np.max(v)) < 45.0,
                    "sw_in may be in MJ m-2 d-1: convert with convert_units(x, 'MJ m-2 d-1', 'W m-2') (× 11.574)",
                ),
                UnitMistake(
                    lambda v: float(np.max(v)) > 1500.0,
                    "sw_in above 1500 W m-2: PPFD (µmol m-2 s-1) or J m-2 per step given as W m-2?",
                ),
            ),
        ),
        Variable(
            "lw_in", "W m-2", "incoming longwave radiation", 0.0, 800.0,
            "surface_downwelling_longwave_flux_in_air",
            fluxnet=("LW_IN_F", "LW_IN_F_MDS", "LW_IN"), ameriflux=("LW_IN", "LW_IN_1_1_1"),
        ),
        Variable(
            "netrad", "W m-2", "net radiation", -500.0, 1200.0, "surface_net_downward_radiative_flux",
            fluxnet=("NETRAD",), ameriflux=("NETRAD", "NETRAD_1_1_1"),
        ),
        Variable(
            "ppfd_in", "umol m-2 s-1", "incoming photosynthetic photon flux density", -50.0, 3000.0,
            fluxnet=("PPFD_IN",), ameriflux=("PPFD_IN", "PPFD_IN_1_1_1"),
        ),
        Variable(
            "vpd", "hPa", "vapour pressure deficit", -1.0, 120.0, "water_vapor_saturation_deficit_in_air",
            fluxnet=("VPD_F", "VPD_F_MDS", "VPD"), ameriflux=("VPD", "VPD_PI", "VPD_PI_F"),
            description="small negative values (−1 hPa) from sensor noise are tolerated",
            mistakes=(
                UnitMistake(
                    lambda v: float(np.max(v)) > 120.0,
                    "vpd above 120 hPa: is it in Pa? convert with convert_units(x, 'Pa', 'hPa')",
                ),
                UnitMistake(
                    # hPa sites reach at least ~1.8 hPa even as monthly means (FLUXNET2015 MM, 137 sites)
                    lambda v: v.size >= 30 and float(np.max(v)) < 1.0,
                    "vpd never exceeds 1: is it in kPa? convert with convert_units(x, 'kPa', 'hPa') (× 10)",
                ),
            ),
        ),
        Variable(
            "vp", "hPa", "actual vapour pressure", 0.0, 80.0, "water_vapor_partial_pressure_in_air",
            mistakes=(
                UnitMistake(lambda v: float(np.max(v)) > 80.0, "vp above 80 hPa: is it in Pa? (÷ 100)"),
                UnitMistake(
                    lambda v: v.size >= 30 and float(np.max(v)) < 8.0,
                    "vp never exceeds 8: is it in kPa? (× 10)",
                ),
            ),
        ),
        Variable(
            "precip", "mm d-1", "precipitation rate", 0.0, 3000.0, "lwe_precipitation_rate",
            fluxnet=("P_F", "P"), ameriflux=("P", "P_1_1_1", "P_PI_F"),
            description="rate over the time step: a half-hourly 2 mm becomes 96 mm d-1, so sub-daily rates can be large",
            mistakes=(
                UnitMistake(
                    lambda v: v.size >= 30 and 0.0 < float(np.max(v)) < 0.01,
                    "precip is tiny: kg m-2 s-1 or m d-1? convert with convert_units(x, 'kg m-2 s-1', 'mm d-1')",
                ),
                UnitMistake(lambda v: float(np.min(v)) < 0.0, "negative precipitation: missing-value code not removed?"),
            ),
        ),
        Variable(
            "swe", "mm", "snow water equivalent", 0.0, 10000.0, "lwe_thickness_of_surface_snow_amount",
        ),
        Variable(
            "swc", "%", "volumetric soil water content", 0.0, 100.0,
            "volume_fraction_of_condensed_water_in_soil",
            fluxnet=("SWC_F_MDS_1", "SWC_1"), ameriflux=("SWC_1_1_1", "SWC", "SWC_PI_1_1_1"),
            cosore=("CSR_SM5", "CSR_SM10", "CSR_SM", "CSR_SM30"),
            description="shallowest sensor; COSORE reports 0–1 fractions, converted to %",
            mistakes=(
                _fraction_not_percent("swc"),
                UnitMistake(lambda v: float(np.max(v)) > 100.0, "swc above 100 %: missing-value code or gravimetric?"),
            ),
        ),
        Variable(
            "tsoil", "degC", "soil temperature", -60.0, 70.0, "soil_temperature",
            fluxnet=("TS_F_MDS_1", "TS_1"), ameriflux=("TS_1_1_1", "TS", "TS_PI_1_1_1"),
            cosore=("CSR_T5", "CSR_T10", "CSR_T2", "CSR_T0", "CSR_T"),
            description="shallowest sensor",
            mistakes=_temperature_mistakes("tsoil"),
        ),
        Variable(
            "co2", "umol mol-1", "atmospheric CO2 mole fraction", 100.0, 2000.0,
            "mole_fraction_of_carbon_dioxide_in_air",
            fluxnet=("CO2_F_MDS", "CO2"), ameriflux=("CO2", "CO2_1_1_1", "CO2_PI_F"),
            mistakes=(
                UnitMistake(lambda v: float(np.max(v)) < 0.01, "co2 looks like mol mol-1: multiply by 1e6 to get ppm"),
            ),
        ),
        Variable(
            "patm", "Pa", "surface air pressure", 30000.0, 110000.0, "surface_air_pressure",
            fluxnet=("PA_F", "PA"), ameriflux=("PA", "PA_1_1_1", "PA_PI_F"),
            description="FLUXNET reports kPa; converted to Pa as in process_models.forcing",
            mistakes=(
                UnitMistake(lambda v: float(np.max(v)) < 200.0, "patm looks like kPa: × 1000 (convert_units(x, 'kPa', 'Pa'))"),
                UnitMistake(lambda v: float(np.max(v)) < 2000.0, "patm looks like hPa: × 100 (convert_units(x, 'hPa', 'Pa'))"),
            ),
        ),
        Variable(
            "ws", "m s-1", "wind speed", 0.0, 75.0, "wind_speed",
            fluxnet=("WS_F", "WS"), ameriflux=("WS", "WS_1_1_1", "WS_PI_F"),
        ),
        Variable(
            "rh", "%", "relative humidity", 0.0, 110.0, "relative_humidity",
            fluxnet=("RH",), ameriflux=("RH", "RH_1_1_1", "RH_PI_F"),
            description="values slightly above 100 % from sensor saturation are tolerated",
            mistakes=(_fraction_not_percent("rh"),),
        ),
        Variable(
            "ustar", "m s-1", "friction velocity", 0.0, 10.0,
            fluxnet=("USTAR",), ameriflux=("USTAR", "USTAR_1_1_1"),
        ),
        # --- fluxes ----------------------------------------------------------------------------------
        Variable(
            "nee", "gC m-2 d-1", "net ecosystem exchange of CO2 (positive = source)", -100.0, 100.0,
            fluxnet=("NEE_VUT_REF",), ameriflux=("NEE", "NEE_PI", "NEE_PI_F", "FC"),
            description="rate; FLUXNET HH/HR µmol m-2 s-1 converted with the molar mass of C",
            mistakes=_flux_mistakes("nee"),
        ),
        Variable(
            "gpp", "gC m-2 d-1", "gross primary production", -50.0, 150.0,
            "gross_primary_productivity_of_biomass_expressed_as_carbon",
            fluxnet=("GPP_NT_VUT_REF",), ameriflux=("GPP", "GPP_PI_F"),
            description="night-time partitioning (Reichstein et al. 2005) unless gpp_dt",
            mistakes=_flux_mistakes("gpp"),
        ),
        Variable(
            "reco", "gC m-2 d-1", "ecosystem respiration", -50.0, 150.0,
            fluxnet=("RECO_NT_VUT_REF",), ameriflux=("RECO", "RECO_PI_F"),
            mistakes=_flux_mistakes("reco"),
        ),
        Variable(
            "gpp_dt", "gC m-2 d-1", "gross primary production, daytime partitioning", -50.0, 150.0,
            fluxnet=("GPP_DT_VUT_REF",), description="Lasslop et al. (2010) daytime method",
            mistakes=_flux_mistakes("gpp_dt"),
        ),
        Variable(
            "reco_dt", "gC m-2 d-1", "ecosystem respiration, daytime partitioning", -50.0, 150.0,
            fluxnet=("RECO_DT_VUT_REF",), mistakes=_flux_mistakes("reco_dt"),
        ),
        Variable(
            "rsoil", "gC m-2 d-1", "soil respiration (total soil CO2 efflux)", -20.0, 100.0,
            cosore=("CSR_FLUX_CO2", "CSR_FLUX"), mistakes=_flux_mistakes("rsoil"),
        ),
        Variable(
            "rh_soil", "gC m-2 d-1", "heterotrophic soil respiration", -20.0, 100.0,
            "heterotrophic_respiration_carbon_flux", mistakes=_flux_mistakes("rh_soil"),
        ),
        Variable(
            "le", "W m-2", "latent heat flux", -500.0, 1500.0, "surface_upward_latent_heat_flux",
            fluxnet=("LE_F_MDS", "LE"), ameriflux=("LE", "LE_PI_F"),
        ),
        Variable(
            "h", "W m-2", "sensible heat flux", -500.0, 1500.0, "surface_upward_sensible_heat_flux",
            fluxnet=("H_F_MDS", "H"), ameriflux=("H", "H_PI_F"),
        ),
        Variable(
            "g", "W m-2", "soil heat flux", -500.0, 700.0, "downward_heat_flux_in_soil",
            fluxnet=("G_F_MDS", "G"), ameriflux=("G", "G_1_1_1"),
        ),
        Variable(
            "nee_qc", "1", "NEE quality (HH/HR: flag 0–3; DD and coarser: fraction of good data)", 0.0, 3.0,
            fluxnet=("NEE_VUT_REF_QC",),
        ),
        # --- vegetation and crops ----------------------------------------------------------------------
        Variable(
            "lai", "m2 m-2", "leaf area index", 0.0, 15.0, "leaf_area_index",
            mistakes=(UnitMistake(lambda v: float(np.max(v)) > 15.0, "lai above 15: cm2 cm-2 ×100 or a percent cover?"),),
        ),
        Variable(
            "crop_yield", "t ha-1", "grain yield (as reported moisture basis)", 0.0, 40.0,
            description="NASS bu ac-1 converts with the crop's bushel weight (corn 56 lb, soybean/wheat 60 lb)",
            mistakes=(
                UnitMistake(
                    lambda v: float(np.max(v)) > 40.0 and float(np.max(v)) < 400.0,
                    "crop_yield above 40 t ha-1 looks like bu ac-1: corn × 0.06277, soybean/wheat × 0.06725",
                ),
                UnitMistake(
                    lambda v: float(np.max(v)) >= 400.0,
                    "crop_yield looks like kg ha-1: divide by 1000 (convert_units(x, 'kg ha-1', 't ha-1'))",
                ),
            ),
        ),
        Variable(
            "biomass", "t ha-1", "above-ground dry biomass", 0.0, 100.0,
            mistakes=(
                UnitMistake(lambda v: float(np.max(v)) > 100.0, "biomass looks like kg ha-1 or g m-2: ÷ 1000 or ÷ 100"),
            ),
        ),
    ]
)
