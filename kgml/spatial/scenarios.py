"""Scenario projection by the delta method: a warming (°C), a precipitation change (fraction), a CO2 level or
change (ppm) applied to the forcing, optionally relabelled to a future period; the trained run is mapped
under the baseline and the scenario, and the differences come back as maps and a table of budget changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import xarray as xr

from kgml.experiment import process_model
from kgml.spatial.mapping import FLUXES, DriverAssumptions, budget_table, map_run
from process_models.forcing import make_met, saturation_vapour_pressure
from process_models.simulate import simulate

__all__ = ["Scenario", "ScenarioWarning", "apply_scenario", "budget_changes", "difference_maps", "physics_response",
           "run_scenario", "scenario_warnings"]


class ScenarioWarning(UserWarning):
    """A scenario delta that cannot change what the chosen run computes (e.g. CO2 on a physics layer without
    a CO2 response and without CO2 among the network's inputs)."""


@dataclass(frozen=True)
class Scenario:
    """Deltas on the forcing (the delta method: future = observed + change).

    ``warming`` (°C) is added to ``tair``, ``tmin``, ``tmax`` and ``tsoil``; where the forcing has ``vpd`` it
    is rescaled at constant relative humidity, vpd·e°(T+ΔT)/e°(T) (FAO-56 eq. 11), where it has none the
    relative-humidity assumption of the mapping applies to the warmer air anyway. ``precip_change`` is a
    fraction (−0.1: 10 % less rain). ``co2`` (ppm) replaces the CO2 mole fraction (the forcing's or the
    mapping's assumed 400 ppm) and ``co2_change`` adds to it; CO2 acts only through process models that read
    it (C3/C4 photosynthesis; not the light-use-efficiency grassland). ``shift_years`` relabels the time
    axis to a future period (e.g. 2018 → 2050 with 32), so day lengths and calendars follow the new years.
    """

    name: str = "scenario"
    warming: float = 0.0
    precip_change: float = 0.0
    co2: float | None = None
    co2_change: float = 0.0
    shift_years: int = 0

    def __post_init__(self):
        if self.precip_change <= -1.0:
            raise ValueError(f"precip_change {self.precip_change} would make precipitation negative (≤ −100 %)")
        if self.co2 is not None and self.co2 <= 0:
            raise ValueError(f"co2 must be a positive mole fraction (ppm), got {self.co2}")

    def describe(self) -> str:
        parts = []
        if self.warming:
            parts.append(f"{self.warming:+g} °C")
        if self.precip_change:
            parts.append(f"precipitation {100 * self.precip_change:+g} %")
        if self.co2 is not None:
            parts.append(f"CO2 {self.co2:g} ppm")
        if self.co2_change:
            parts.append(f"CO2 {self.co2_change:+g} ppm")
        if self.shift_years:
            parts.append(f"period shifted {self.shift_years:+d} years")
        return ", ".join(parts) or "no change"


def apply_scenario(forcing: xr.Dataset, scenario: Scenario, *, assumptions=None) -> xr.Dataset:
    """The forcing under ``scenario`` (lazy where the forcing is). CO2 becomes an explicit (lat, lon, time)
    field when the scenario sets it."""
    a = assumptions or DriverAssumptions()
    out = forcing.copy()
    dt = scenario.warming
    if dt:
        if "vpd" in out and "tair" in out:
            def rescale(vpd, t):
                t = np.asarray(t, np.float32)
                ratio = np.asarray(saturation_vapour_pressure(t + np.float32(dt))) / np.asarray(saturation_vapour_pressure(t))
                return (vpd * ratio).astype(np.float32)

            out["vpd"] = xr.apply_ufunc(rescale, forcing["vpd"], forcing["tair"], dask="parallelized",
                                        output_dtypes=[np.float32]).assign_attrs(forcing["vpd"].attrs)
        for v in ("tair", "tmin", "tmax", "tsoil"):
            if v in out:
                out[v] = (forcing[v] + np.float32(dt)).assign_attrs(forcing[v].attrs)
    if scenario.precip_change and "precip" in out:
        out["precip"] = (forcing["precip"] * np.float32(1.0 + scenario.precip_change)).assign_attrs(forcing["precip"].attrs)
    if scenario.co2 is not None or scenario.co2_change:
        base = forcing["co2"] if "co2" in forcing else xr.full_like(forcing["tair"], a.co2)
        level = xr.full_like(base, scenario.co2) if scenario.co2 is not None else base
        out["co2"] = (level + np.float32(scenario.co2_change)).astype(np.float32).assign_attrs(
            units="ppm", long_name="atmospheric CO2 mole fraction (scenario)")
    if scenario.shift_years:
        t = np.asarray(out.time.values).astype("datetime64[M]")
        years = t.astype("datetime64[Y]").astype(int) + 1970
        months = t.astype(int) % 12
        new = ((years + scenario.shift_years - 1970) * 12 + months).astype("datetime64[M]")
        if forcing.attrs.get("resolution") not in (None, "monthly") and len(t) > 1 and \
                np.median(np.diff(forcing.time.values)) < np.timedelta64(28, "D"):
            # sub-monthly: keep the offset within the month (days, hours)
            offset = np.asarray(out.time.values) - t.astype("datetime64[ns]")
            new = new.astype("datetime64[ns]") + offset
        out = out.assign_coords(time=np.asarray(new).astype("datetime64[ns]"))
    out.attrs = {**forcing.attrs, "scenario": scenario.name, "scenario_description": scenario.describe(),
                 "scenario_method": "delta method on the forcing (kgml.spatial.scenarios.apply_scenario)"}
    return out


def difference_maps(base: xr.Dataset, scen: xr.Dataset, variables: Sequence[str] = ("gpp", "reco", "nee")) -> xr.Dataset:
    """Scenario − baseline of the time-mean maps (``d_<v>``, gC m-2 d-1) and of the learned parameters."""
    out = {}
    for v in variables:
        d = scen[v].mean("time").values - base[v].mean("time").values
        out[f"d_{v}"] = (("lat", "lon"), d.astype(np.float32),
                         {"units": "g m-2 d-1", "comment": "grams of carbon",
                          "long_name": f"change of the mean {v} (scenario − baseline)"})
    for v in base.data_vars:
        if str(v).startswith("theta_") and not str(v).endswith("_sd") and v in scen:
            out[f"d_{v}"] = (("lat", "lon"), (scen[v].values - base[v].values).astype(np.float32),
                             {"units": base[v].attrs.get("units", ""), "long_name": f"change of {v}"})
    ds = xr.Dataset(out, coords={"lat": base.lat, "lon": base.lon})
    ds["mapped"] = base["mapped"]
    ds.attrs = {"Conventions": "CF-1.8", "title": f"kgml scenario differences: {scen.attrs.get('scenario', '')}",
                "baseline_config_sha256": base.attrs.get("config_sha256", ""),
                "forcing_sha256": base.attrs.get("forcing_sha256", ""),
                "scenario_description": scen.attrs.get("scenario_description", "")}
    return ds


def budget_changes(base: xr.Dataset, scen: xr.Dataset, groups=None):
    """`kgml.spatial.mapping.budget_table` of baseline and scenario side by side with the changes (scenario −
    baseline) of the mean rates (gC m-2 d-1) and totals (TgC), over identical cell sets: a cell counts only
    where it is mapped in both, a (month, cell) value only where both are finite, and every group label
    (including ``training_climate``, which warming would move) is the baseline's."""
    if base[FLUXES[0]].shape != scen[FLUXES[0]].shape:
        raise ValueError(f"baseline and scenario maps differ in shape: {base[FLUXES[0]].shape} vs "
                         f"{scen[FLUXES[0]].shape}; map both over the same grid and record")
    ok = base["mapped"].values.astype(bool) & scen["mapped"].values.astype(bool)
    groups = dict(groups or {})
    if "static_max_abs_z" in base:
        groups.setdefault("training_climate", xr.DataArray(np.where(
            base["static_max_abs_z"].values > 3, "extrapolated (z-score above 3)", "within 3 sd"), dims=("lat", "lon")))
    both = {v: np.isfinite(base[v].values) & np.isfinite(scen[v].values) for v in FLUXES}

    def common(ds):
        ds = ds.assign(mapped=ds["mapped"].copy(data=ok.astype(ds["mapped"].dtype)))
        return ds.assign({v: ds[v].copy(data=np.where(both[v], ds[v].values, np.nan)) for v in FLUXES})

    b = budget_table(common(base), groups).set_index(["group", "label"])
    s = budget_table(common(scen), groups).set_index(["group", "label"])
    if not b.index.equals(s.index) or not (b["cells"] == s["cells"]).all():
        raise AssertionError("baseline and scenario budgets cover different cells")  # cannot happen: same masks
    out = b[["cells", "area_km2"]].copy()
    for v in FLUXES:
        for k in ("mean_gc_m2_d", "total_tgc"):
            col = f"{v}_{k}"
            out[f"{col}_base"] = b[col]
            out[f"{col}_scenario"] = s[col]
            out[f"{col}_change"] = s[col] - b[col]
    return out.reset_index()


def physics_response(model, driver: str, low: float, high: float) -> float:
    """Largest change of daily GPP, Reco or NEE (gC m-2 d-1) of the process ``model`` at its default
    parameters over one idealised mid-latitude year (41° N; tair 10 ± 12 °C seasonal, tmin/tmax ∓ 5 °C,
    sw_in 60–300 W m-2, 2 mm d-1 rain, 400 ppm CO2, swc 0.25) when ``driver`` goes from ``low`` to ``high``:
    zero when the physics does not read the driver."""

    doy = jnp.arange(1, 366, dtype=jnp.float32)
    season = jnp.sin(2 * jnp.pi * (doy - 105) / 365)
    tair = 10 + 12 * season
    base = dict(tmin=tair - 5, tmax=tair + 5, tair=tair, sw_in=180 + 120 * season, precip=jnp.full_like(doy, 2.0),
                doy=doy, lat=41.0, co2=400.0, swc=jnp.full_like(doy, 0.25))
    outs = []
    for value in (low, high):
        met = make_met(**{**base, driver: jnp.full_like(doy, value)})
        outs.append(simulate(model, model.default_parameters(), met).outputs)
    return float(max(np.nanmax(np.abs(np.asarray(getattr(outs[1], v)) - np.asarray(getattr(outs[0], v))))
                     for v in ("gpp", "reco", "nee") if hasattr(outs[0], v)))


def scenario_warnings(runs, scenario: Scenario) -> list[str]:
    """Messages for the scenario deltas that cannot act on a run: CO2 (``co2``/``co2_change``) or
    precipitation (``precip_change``) where the run's physics layer does not respond to that driver
    (`physics_response` is zero) and the driver is not among the network's inputs (``[data] features``)."""
    checks = []
    if scenario.co2 is not None or scenario.co2_change:
        checks.append(("co2", "--co2/--co2-change", 400.0, 800.0))
    if scenario.precip_change:
        checks.append(("precip", "--precip-change", 1.0, 4.0))
    out = []
    for run in runs if isinstance(runs, list | tuple) else [runs]:
        for driver, flag, low, high in checks:
            if driver in run.config.data.features:
                continue
            model = process_model(run.config)
            if physics_response(model, driver, low, high) == 0.0:
                out.append(f"{flag} cannot act on run {run.config.name!r}: its physics layer "
                           f"({type(model).__name__}, vegetation {run.config.data.vegetation!r}) does not read "
                           f"{driver} and {driver!r} is not among its features, so this change has no effect")
    return out


def run_scenario(runs, forcing: xr.Dataset, scenario: Scenario, **map_kwargs) -> dict:
    """Map the baseline and the scenario; returns {"baseline", "scenario", "difference", "budget",
    "warnings"}. Each of `scenario_warnings` is also issued as a `ScenarioWarning` and recorded in the
    difference's ``scenario_warnings`` attribute."""

    notes = scenario_warnings(runs, scenario)
    for note in notes:
        warnings.warn(note, ScenarioWarning, stacklevel=2)

    assumptions = map_kwargs.get("assumptions")
    base = map_run(runs, forcing, **map_kwargs)
    scen = map_run(runs, apply_scenario(forcing, scenario, assumptions=assumptions), **map_kwargs)
    scen.attrs.update(scenario=scenario.name, scenario_description=scenario.describe())
    diff = difference_maps(base, scen)
    if notes:
        diff.attrs["scenario_warnings"] = "; ".join(notes)
    return {"baseline": base, "scenario": scen, "difference": diff, "budget": budget_changes(base, scen),
            "warnings": notes}
