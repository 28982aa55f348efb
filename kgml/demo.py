"""``kgml demo``: the main job on the built-in synthetic default (no data needed).

Synthetic Midwest-like sites in three states, each with maize, soybean and grassland, driven by the
weather generator fitted on the Ames, Iowa record and run through the coupled process model.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateClimate:
    """A synthetic state: location and a documented shift of the Ames-fitted weather."""

    name: str
    lat: float
    lon: float
    warming: float  # °C added to tmin and tmax
    precip_scale: float  # multiplies daily precipitation


#: Three Midwest-like states. The shifts are assumptions of the demo, chosen to follow the observed
#: gradient (NOAA 1991–2020 normals: central Illinois ~1 °C warmer and ~10 % wetter than central Iowa;
#: eastern Nebraska ~25 % drier).
STATES = (
    StateClimate("IA", 42.0, -93.6, 0.0, 1.0),
    StateClimate("IL", 40.1, -88.2, 1.0, 1.10),
    StateClimate("NE", 41.2, -96.5, 0.3, 0.75),
)

#: Parameters that vary from site to site in the demo (those present in a model are jittered).
SITE_VARYING = (
    "rref_rh", "e0_rh", "k_ext", "lue_max", "vcmax25", "vmax25_c4", "root_depth", "rm_ref",
    "maize_sowing_doy", "soybean_sowing_doy",
)

#: Standard deviation of the site-to-site jitter in unconstrained (logit) space.
JITTER_SD = 0.3

VEGETATION = ("maize", "soybean", "grassland")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the main job on the built-in synthetic default (no data needed)",
        description=__doc__,
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--sites-per-state", type=int, default=8, help="sites per state and vegetation")
    p.add_argument("--years", type=int, default=4, help="simulated years per site")
    p.add_argument("--seed", type=int, default=0, help="random seed (weather and parameters)")
    p.add_argument("--no-figure", action="store_true", help="skip the PNG figure")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    result = run_demo(
        out_dir=Path(args.out),
        sites_per_state=args.sites_per_state,
        years=args.years,
        seed=args.seed,
        figure=not args.no_figure,
    )
    print(result["table"])
    print(f"\nwrote {result['netcdf']}" + (f" and {result['figure']}" if result.get("figure") else ""))
    return 0


def synthetic_forcing(state: StateClimate, n_sites: int, years: int, key):
    """Daily `Met` shaped (site, day) for one state: weather generated from the Ames-fitted generator, with
    the state's warming added to tmin and tmax (tair and vpd re-derived from them) and its rain scaled."""
    import jax

    from kgml.data.stations import load_default_generator
    from process_models import weather
    from process_models.forcing import make_met

    params = load_default_generator()
    keys = jax.random.split(key, n_sites)
    wx = jax.vmap(lambda k: weather.generate_weather(params, k, 365 * years))(keys)
    return make_met(
        tmin=wx.tmin + state.warming,
        tmax=wx.tmax + state.warming,
        sw_in=wx.sw_in,
        precip=wx.precip * state.precip_scale,
        doy=wx.doy,
        lat=state.lat,
    )


def site_parameters(model, n_sites: int, key):
    """Per-site physical parameters: defaults, with the `SITE_VARYING` ones jittered in logit space."""
    import jax

    theta = model.default_parameters()
    for spec in model.parameter_specs:
        if spec.name in SITE_VARYING:
            key, sub = jax.random.split(key)
            u = spec.default_unconstrained + JITTER_SD * jax.random.normal(sub, (n_sites,))
            theta[spec.name] = spec.to_physical(u)
    return theta


def build_model(vegetation: str):
    from process_models.ecosystem import NaturalEcosystem, maize, soybean

    return {"maize": maize, "soybean": soybean, "grassland": NaturalEcosystem}[vegetation]()


def run_demo(out_dir: Path, sites_per_state: int = 8, years: int = 4, seed: int = 0, figure: bool = True):
    """Simulate every state × vegetation, write CF netCDF and a figure, return the summary table."""
    import jax
    import numpy as np
    from tqdm import tqdm

    from kgml.io import write_netcdf_atomic
    from process_models.simulate import simulate_sites

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
    (out_dir / "summary.md").write_text(table + "\n")
    result = {"netcdf": nc_path, "table": table, "summary": summary, "dataset": ds}
    if figure:
        result["figure"] = _figure(ds, out_dir / "demo.png")
    return result


def _to_dataset(blocks, sites_per_state: int, years: int, seed: int):
    import numpy as np
    import pandas as pd
    import xarray as xr

    from kgml import __version__

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
    import numpy as np

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
    import numpy as np

    from kgml.io import atomic_path

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
