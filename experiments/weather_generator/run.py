"""Fit the stochastic weather generator to Ames IA and Champaign IL; compare observed and simulated monthly climate.

    python experiments/weather_generator/run.py [--data-dir DIR] [--years 100] [--seed 0] [--out runs/weather_generator]

Writes ``monthly_obs_vs_sim.png``, ``summary.md``, ``summary.json`` and the fitted ``params_<site>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from kgml.data.stations import (
    fit_generator_from_dataset,
    generator_inputs,
    read_ames_ia,
    read_champaign_il,
)
from process_models.weather import generate_weather, monthly_statistics, params_to_dict

STATIONS = {"Ames_IA": read_ames_ia, "Champaign_IL": read_champaign_il}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: (statistic, label, units, decimals) in table and figure order.
STATISTICS = (
    ("tmax_mean", "tmax", "°C", 1),
    ("tmin_mean", "tmin", "°C", 1),
    ("sw_in_mean", "sw_in", "W m-2", 0),
    ("tmax_std", "sd(tmax)", "°C", 1),
    ("wet_fraction", "wet-day freq.", "–", 2),
    ("wet_amount_mean", "wet-day amount", "mm", 1),
    ("precip_total", "precip", "mm month-1", 0),
)


def station_statistics(name, data_dir, years, key):
    ds = STATIONS[name](data_dir)
    params = fit_generator_from_dataset(ds)
    x = generator_inputs(ds)
    observed = monthly_statistics(x["tmin"], x["tmax"], x["sw_in"], x["precip"], x["doy"])
    sim = generate_weather(params, key, n_years=years)
    simulated = monthly_statistics(sim.tmin, sim.tmax, sim.sw_in, sim.precip, sim.doy)
    period = f"{str(ds.time.values[0])[:10]} … {str(ds.time.values[-1])[:10]}"
    as_np = lambda d: {k: np.asarray(v) for k, v in d.items()}  # noqa: E731
    return params, as_np(observed), as_np(simulated), period


def markdown(results, years) -> str:
    lines = [f"# Weather generator: observed vs simulated ({years} simulated years)", ""]
    lines += ["| station | annual precip obs / sim (mm) | tmax lag-1 autocorr obs / sim | max abs Δ monthly tmax (°C) "
              "| max abs Δ wet-day freq. |", "|---|---|---|---|---|"]
    for name, (_, obs, sim, period) in results.items():
        lines.append(
            f"| {name} ({period}) | {obs['annual_precip']:.0f} / {sim['annual_precip']:.0f} "
            f"({100 * (sim['annual_precip'] / obs['annual_precip'] - 1):+.1f} %) "
            f"| {obs['tmax_lag1_autocorr']:.2f} / {sim['tmax_lag1_autocorr']:.2f} "
            f"| {np.max(np.abs(sim['tmax_mean'] - obs['tmax_mean'])):.2f} "
            f"| {np.max(np.abs(sim['wet_fraction'] - obs['wet_fraction'])):.3f} |"
        )
    for name, (_, obs, sim, period) in results.items():
        lines += ["", f"## {name} — observed {period} / simulated", ""]
        lines.append("| month | " + " | ".join(f"{label} ({units})" for _, label, units, _ in STATISTICS) + " |")
        lines.append("|---" * (len(STATISTICS) + 1) + "|")
        for m, month in enumerate(MONTHS):
            cells = [f"{obs[key][m]:.{d}f} / {sim[key][m]:.{d}f}" for key, _, _, d in STATISTICS]
            lines.append(f"| {month} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(results, years, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("tmax_mean", "tmin_mean")] + [(key,) for key, *_ in STATISTICS[2:]]
    labels = {key: (label, units) for key, label, units, _ in STATISTICS}
    fig, axes = plt.subplots(len(results), len(panels), figsize=(3.1 * len(panels), 3.0 * len(results)),
                             squeeze=False, constrained_layout=True)
    month = np.arange(1, 13)
    for row, (name, (_, obs, sim, _)) in enumerate(results.items()):
        for col, keys in enumerate(panels):
            ax = axes[row, col]
            for key in keys:
                ax.plot(month, obs[key], "o-", color="black", ms=3, label=f"observed {labels[key][0]}")
                ax.plot(month, sim[key], "s--", color="tab:red", ms=3, label=f"simulated {labels[key][0]}")
            label, units = labels[keys[0]]
            ax.set_title(f"{name}: {'tmax, tmin' if len(keys) > 1 else label}", fontsize=9)
            ax.set_ylabel(units, fontsize=8)
            ax.set_xticks(month[::2])
            ax.tick_params(labelsize=7)
            if row == 0 and col == 0:
                ax.legend(fontsize=6)
    fig.suptitle(f"Observed (black) vs {years}-year simulated (red) monthly statistics", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="real-data directory (default: KGML_DATA or ../shared/data)")
    parser.add_argument("--years", type=int, default=100, help="simulated years per station (≥ 50 recommended)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/weather_generator", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = jax.random.split(jax.random.key(args.seed), len(STATIONS))
    results = {}
    for key, name in zip(keys, tqdm(STATIONS, desc="stations"), strict=True):
        results[name] = station_statistics(name, args.data_dir, args.years, key)
        (out / f"params_{name}.json").write_text(json.dumps(params_to_dict(results[name][0]), indent=1) + "\n")
    (out / "summary.md").write_text(markdown(results, args.years), encoding="utf-8")
    summary = {
        name: {"period": period, "observed": {k: np.asarray(v).tolist() for k, v in obs.items()},
               "simulated": {k: np.asarray(v).tolist() for k, v in sim.items()}}
        for name, (_, obs, sim, period) in results.items()
    }
    summary["config"] = {"years": args.years, "seed": args.seed}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    figure(results, args.years, out / "monthly_obs_vs_sim.png")
    print(markdown(results, args.years).split("\n## ")[0])
    print(f"wrote {out}/monthly_obs_vs_sim.png, summary.md, summary.json, params_*.json")


if __name__ == "__main__":
    main()
