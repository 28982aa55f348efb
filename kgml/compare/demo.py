"""The main job of ``kgml demo`` (what it runs: `kgml.cli.demo`): the process-model table — synthetic
Midwest-like sites in three states, each with maize, soybean and grassland, driven by the weather generator
fitted on the Ames, Iowa record (CF netCDF, markdown table, figure; `simulate_states`) — and, with ``hybrid``,
the hybrid comparison of `kgml.compare.demo_hybrid` (`run_demo`). The longer study of skill against the
number of training sites is `kgml.compare.pretraining_curve`.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from kgml import __version__
from kgml.compare.demo_hybrid import (  # the demo's public names, one import away as before
    DEMO_LEARNED,
    JITTER_SD,
    NEURAL,
    PROCESS_CALIBRATED,
    WORLD_SHIFT,
    DemoSizes,
    demo_config,
    hybrid_comparison,
    neural_config,
    process_config,
)
from kgml.compare.pretraining_curve import CURVE_MODELS, CurveSizes, pretraining_curve
from kgml.io import atomic_path, write_netcdf_atomic, write_text_atomic
from kgml.synthetic import (
    SITE_VARYING,
    STATES,
    VEGETATION,
    build_model,
    generate_forcing,
    sample_parameters,
)
from process_models.simulate import simulate_sites

__all__ = [
    "CURVE_MODELS",
    "CurveSizes",
    "DEMO_LEARNED",
    "DemoSizes",
    "JITTER_SD",
    "NEURAL",
    "PROCESS_CALIBRATED",
    "WORLD_SHIFT",
    "annual_summary",
    "demo_config",
    "hybrid_comparison",
    "neural_config",
    "pretraining_curve",
    "process_config",
    "run_demo",
    "simulate_states",
]


def synthetic_forcing(state, n_sites: int, years: int, key):
    """Daily `Met` shaped (site, day) for one state (`kgml.synthetic.generate_forcing` at the state centre)."""
    return generate_forcing(state, n_sites, years, key)


def site_parameters(model, n_sites: int, key):
    """Per-site physical parameters: defaults, with the `SITE_VARYING` ones jittered in logit space."""
    return sample_parameters(model, n_sites, key, prior_sd=JITTER_SD, varying=SITE_VARYING, covariate_params=())


def run_demo(out_dir: Path, sites_per_state: int = 8, years: int = 4, seed: int = 0, figure: bool = True,
             hybrid: bool = True, sizes: DemoSizes | None = None, progress: bool = True):
    """The process-model table (`simulate_states`) and, with ``hybrid``, the hybrid comparison
    (`hybrid_comparison`, under ``out_dir/hybrid``)."""
    result = simulate_states(out_dir, sites_per_state, years, seed, figure)
    if hybrid:
        result["hybrid"] = hybrid_comparison(out_dir / "hybrid", seed=seed, sizes=sizes or DemoSizes(),
                                             figure=figure, progress=progress)
    return result


def simulate_states(out_dir: Path, sites_per_state: int = 8, years: int = 4, seed: int = 0, figure: bool = True):
    """Simulate every state × vegetation, write CF netCDF and a figure, return the summary table."""

    out_dir.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(seed)
    blocks = []
    t0 = time.perf_counter()
    jobs = [(s, v) for s in STATES for v in VEGETATION]
    for state, vegetation in tqdm(jobs, desc="simulating state × vegetation", unit="block"):
        key, k_met, k_par = jax.random.split(key, 3)
        model = build_model(vegetation)
        met = synthetic_forcing(state, sites_per_state, years, k_met)
        theta = site_parameters(model, sites_per_state, k_par)
        out = simulate_sites(model, theta, met).outputs
        blocks.append((state, vegetation, met, jax.tree_util.tree_map(np.asarray, out)))
    elapsed = time.perf_counter() - t0
    ds = _to_dataset(blocks, sites_per_state, years, seed)
    nc_path = out_dir / "simulation.nc"
    write_netcdf_atomic(ds, nc_path)
    summary = annual_summary(ds)
    table = _markdown_table(summary, elapsed, ds.sizes["site"] * ds.sizes["time"])
    write_text_atomic(table + "\n", out_dir / "summary.md")
    result = {"netcdf": nc_path, "table": table, "summary": summary, "dataset": ds}
    if figure:
        result["figure"] = _figure(ds, out_dir / "demo.png")
    return result


def _to_dataset(blocks, sites_per_state: int, years: int, seed: int):

    variables = {
        "gpp": ("gross primary production", "g m-2 d-1"),
        "reco": ("ecosystem respiration", "g m-2 d-1"),
        "nee": ("net ecosystem exchange (positive: source to the atmosphere)", "g m-2 d-1"),
        "ra": ("autotrophic respiration", "g m-2 d-1"),
        "rh": ("heterotrophic respiration", "g m-2 d-1"),
        "rsoil": ("soil CO2 efflux", "g m-2 d-1"),
        "et": ("evapotranspiration", "mm d-1"),
        "swc": ("volumetric soil water content", "m3 m-3"),
        "lai": ("leaf area index", "m2 m-2"),
        "crop_yield": ("grain yield of the latest harvest at market moisture", "t ha-1"),
    }
    drivers = {"tair": ("air temperature", "degC"), "precip": ("precipitation", "mm d-1"),
               "sw_in": ("incoming shortwave radiation", "W m-2")}
    n_days = 365 * years
    # A 365-day calendar keeps the generated years aligned; CF "noleap".
    time_values = np.arange(n_days, dtype=np.int32)
    sites, states, vegs, lats, lons = [], [], [], [], []
    data = {k: [] for k in (*variables, *drivers)}
    for state, vegetation, met, out in blocks:
        for i in range(sites_per_state):
            sites.append(f"{state.name}-{vegetation}-{i:02d}")
            states.append(state.name)
            vegs.append(vegetation)
            lats.append(state.lat)
            lons.append(state.lon)
        for k in variables:
            data[k].append(getattr(out, k))
        for k in drivers:
            data[k].append(np.asarray(getattr(met, k)))
    ds = xr.Dataset(
        {k: (("site", "time"), np.concatenate(v).astype(np.float32)) for k, v in data.items()},
        coords={
            "site": sites,
            "time": ("time", time_values, {"units": "days since 2001-01-01", "calendar": "noleap",
                                           "standard_name": "time", "long_name": "time"}),
            "state": ("site", states),
            "vegetation": ("site", vegs),
            "lat": ("site", np.array(lats, np.float32), {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("site", np.array(lons, np.float32), {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    for k, (long_name, units) in {**variables, **drivers}.items():
        ds[k].attrs.update(long_name=long_name, units=units)
        if units == "g m-2 d-1":
            ds[k].attrs["comment"] = "grams of carbon"
    ds.attrs.update(
        Conventions="CF-1.8",
        title="kgml demo: synthetic Midwest-like sites simulated with the kgml process model",
        source=f"kgml {__version__} process_models",
        history=f"{pd.Timestamp.now('UTC').isoformat()} kgml demo --seed {seed}",
        comment="Weather from the generator fitted on Ames, IA (kgml/resources/weather_ames_ia.json), "
        "shifted per state; parameters jittered around cited defaults.",
    )
    return ds


def annual_summary(ds):
    """Mean annual GPP, Reco, NEE (gC m-2 yr-1), ET (mm yr-1) and final-season yield per state × vegetation."""
    years = ds.sizes["time"] // 365
    rows = []
    for state in dict.fromkeys(ds.state.values):
        for veg in dict.fromkeys(ds.vegetation.values):
            sel = ds.where((ds.state == state) & (ds.vegetation == veg), drop=True)
            row = {"state": str(state), "vegetation": str(veg), "sites": int(sel.sizes["site"])}
            for k in ("gpp", "reco", "nee", "et"):
                row[k] = float(sel[k].sum("time").mean()) / years
            yields = sel["crop_yield"].values[:, 364::365]  # yield of each year's harvest, at year end
            row["yield"] = float(np.mean(yields)) if veg != "grassland" else float("nan")
            row["yield_sd"] = float(np.std(yields)) if veg != "grassland" else float("nan")
            rows.append(row)
    return rows


def _markdown_table(rows, elapsed: float, site_days: int) -> str:
    lines = [
        "| state | vegetation | sites | GPP | Reco | NEE | ET | yield (t ha-1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        y = "–" if r["vegetation"] == "grassland" else f"{r['yield']:.1f} ± {r['yield_sd']:.1f}"
        lines.append(
            f"| {r['state']} | {r['vegetation']} | {r['sites']} | {r['gpp']:.0f} | {r['reco']:.0f} | "
            f"{r['nee']:.0f} | {r['et']:.0f} | {y} |"
        )
    lines.append("")
    lines.append(
        "Annual means: GPP, Reco, NEE in gC m-2 yr-1 (NEE > 0 is a source), ET in mm yr-1; yield at market "
        f"moisture, mean ± sd over site-years. {site_days:,} site-days simulated in {elapsed:.1f} s "
        "(including compilation)."
    )
    return "\n".join(lines)


def _figure(ds, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install 'kgml[plot]'): no figure written")
        return None


    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    colours = {"IA": "tab:blue", "IL": "tab:green", "NE": "tab:orange"}
    styles = {"maize": "-", "soybean": "--", "grassland": ":"}
    doy = np.arange(365) + 1
    for state in colours:
        for veg, ls in styles.items():
            sel = ds.nee.where((ds.state == state) & (ds.vegetation == veg), drop=True)
            cycle = sel.values.reshape(sel.shape[0], -1, 365).mean(axis=(0, 1))
            axes[0].plot(doy, cycle, ls, color=colours[state], lw=1.2, label=f"{state} {veg}")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set(xlabel="day of year", ylabel="NEE (gC m-2 d-1)", title="Mean seasonal NEE")
    axes[0].legend(fontsize=6, ncol=3)
    for j, crop in enumerate(("maize", "soybean")):
        data = []
        for state in colours:
            sel = ds.crop_yield.where((ds.state == state) & (ds.vegetation == crop), drop=True)
            data.append(sel.values[:, 364::365].ravel())
        axes[1 + j].boxplot(data, tick_labels=list(colours))
        axes[1 + j].set(ylabel="grain yield (t ha-1)", title=f"{crop} yield by state (site-years)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
