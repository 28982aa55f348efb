"""Mapping at scale: a grid the size of China at 1 km, monthly, 2000–2020 (~9.6 M land cells × 252 months),
forcing generated lazily per dask chunk, mapped with a trained hybrid.

Measures, on a seeded sample of land blocks (``--sample-blocks``; ``--full`` maps every block):
- the fast path (`kgml.spatial.mapping.monthly_fluxes_fast`: parameters once per cell from the location/static
  head, physics per cell-year from monthly means, jit-compiled, vmapped over cell-years) over
  `dask.array.map_blocks`, on the threaded scheduler (1 and 2 threads) and on a `distributed.LocalCluster`
  (1 and 2 worker processes): cell-months per second, peak memory, projected wall time of the full grid;
- the model path (`kgml.spatial.mapping.map_run(path="model")`: encoder + heads + physics per cell-year window,
  xarray in and out) on a small sub-grid, and the bare jit-compiled `kgml.models.hybrid.predict` on stacked
  windows (no xarray), both projected to the full grid.

The synthetic monthly climate is a documented stand-in (south–north temperature gradient and seasonal
amplitude, east–west monsoon precipitation gradient, seeded noise); it exists only to exercise the code
at the right size. The last line printed is a JSON object with ``cell_months_per_s``, ``peak_memory_gb``
and ``projected_full_grid_s`` (fast path, best configuration) and the other figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np

LAT0, LAT1, LON0, LON1 = 18.0, 54.0, 73.0, 135.0  # the bounding box of China (deg)
KM_PER_DEG = 111.32  # length of a degree of latitude (km), mean
MONTHS = 252  # 2000-01 … 2020-12
YEARS = MONTHS // 12
ELLIPSE_SCALE = 0.739  # land = an ellipse filling ~43 % of the box → ≈ 9.6 M cells at 1 km


@dataclass(frozen=True)
class Grid:
    lat: np.ndarray
    lon: np.ndarray

    @classmethod
    def china(cls, km: float = 1.0) -> Grid:
        dlat = km / KM_PER_DEG
        dlon = km / (KM_PER_DEG * np.cos(np.radians((LAT0 + LAT1) / 2)))
        return cls(np.arange(LAT0 + dlat / 2, LAT1, dlat), np.arange(LON0 + dlon / 2, LON1, dlon))

    def land(self, lat2, lon2) -> np.ndarray:
        y = (lat2 - (LAT0 + LAT1) / 2) / ((LAT1 - LAT0) / 2 * ELLIPSE_SCALE)
        x = (lon2 - (LON0 + LON1) / 2) / ((LON1 - LON0) / 2 * ELLIPSE_SCALE)
        return x**2 + y**2 <= 1.0

    def land_cells(self) -> int:
        n = 0
        for i in range(0, self.lat.size, 500):
            la, lo = np.meshgrid(self.lat[i:i + 500], self.lon, indexing="ij")
            n += int(self.land(la, lo).sum())
        return n


def synthetic_monthly(lat, lon, seed: int) -> dict[str, np.ndarray]:
    """Monthly tair (°C), precip (mm d-1), sw_in (W m-2) for cells (n,) × 252 months (documented stand-in)."""
    rng = np.random.default_rng(seed)
    n = lat.size
    m = np.arange(MONTHS) % 12
    year = np.arange(MONTHS) // 12
    season = -np.cos(2 * np.pi * (m + 0.5) / 12)  # −1 in January, +1 in July
    t_mean = 27.0 - 0.65 * (lat - LAT0)
    amp = 4.0 + 0.45 * (lat - LAT0)
    tair = (t_mean[:, None] + amp[:, None] * season[None] + 0.02 * year[None]
            + rng.normal(0, 1.0, (n, MONTHS))).astype(np.float32)
    wet = np.clip((lon - LON0) / (LON1 - LON0), 0.05, 1.0) * 4.5
    precip = (wet[:, None] * (1 + 0.8 * season[None]) * rng.gamma(4.0, 0.25, (n, MONTHS))).astype(np.float32)
    sw = (190 + 90 * season[None] * (np.abs(lat[:, None]) / 36.0) + rng.normal(0, 10, (n, MONTHS))).astype(np.float32)
    return {"tair": tair, "precip": precip, "sw_in": np.maximum(sw, 5.0)}


def _block_sums(dummy, block_info=None, *, run, grid: Grid, batch: int):
    """One (lat, lon) chunk: generate its forcing, map its land cells, return area-weighted monthly totals."""
    from kgml.spatial.mapping import EARTH_RADIUS, monthly_fluxes_fast

    (y0, y1), (x0, x1) = block_info[0]["array-location"]
    la, lo = np.meshgrid(grid.lat[y0:y1], grid.lon[x0:x1], indexing="ij")
    land = grid.land(la, lo)
    out = np.zeros((1, 1, MONTHS, 4), np.float64)
    if land.any():
        lat, lon = la[land], lo[land]
        forcing = synthetic_monthly(lat, lon, seed=y0 * 100_003 + x0)
        fl, _ = monthly_fluxes_fast(run, forcing, lat, lon, batch=batch)
        dlat = np.radians(grid.lat[1] - grid.lat[0])
        dlon = np.radians(grid.lon[1] - grid.lon[0])
        area = EARTH_RADIUS**2 * dlon * dlat * np.cos(np.radians(lat))
        out[0, 0, :, :3] = np.einsum("c,cmk->mk", area, fl.astype(np.float64))  # g C d-1
        out[0, 0, :, 3] = lat.size
    return out


def sample_blocks(grid: Grid, chunk: int, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` seeded blocks lying wholly on land (so the sample measures full blocks)."""
    rng = np.random.default_rng(seed)
    full = []
    for by in range(0, grid.lat.size - chunk + 1, chunk):
        for bx in range(0, grid.lon.size - chunk + 1, chunk):
            corners = np.array([[grid.lat[by], grid.lon[bx]], [grid.lat[by + chunk - 1], grid.lon[bx]],
                                [grid.lat[by], grid.lon[bx + chunk - 1]],
                                [grid.lat[by + chunk - 1], grid.lon[bx + chunk - 1]]])
            if grid.land(corners[:, 0], corners[:, 1]).all():
                full.append((by // chunk, bx // chunk))
    idx = rng.choice(len(full), size=min(n, len(full)), replace=False)
    return [full[i] for i in sorted(idx)]


def build_graph(run, grid: Grid, chunk: int, blocks, batch: int):
    """Lazy totals over the chosen blocks (``blocks`` None: all)."""
    import dask.array as da

    ny, nx = grid.lat.size, grid.lon.size
    dummy = da.zeros((ny, nx), chunks=(chunk, chunk), dtype=np.int8)
    sums = da.map_blocks(_block_sums, dummy, run=run, grid=grid, batch=batch, dtype=np.float64,
                         new_axis=[2, 3], chunks=((1,) * dummy.numblocks[0], (1,) * dummy.numblocks[1], (MONTHS,), (4,)))
    if blocks is None:
        return sums.sum(axis=(0, 1))
    parts = [sums[by:by + 1, bx:bx + 1] for by, bx in blocks]
    return da.concatenate([p.reshape(1, MONTHS, 4) for p in parts]).sum(axis=0)


def _rss_gb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024**2  # KiB → GiB (Linux)


def measure(label: str, graph, scheduler, warm, land_cells_total: int) -> dict:
    import dask

    t0 = time.perf_counter()
    if isinstance(scheduler, tuple):  # (scheduler name, threads)
        name, threads = scheduler
        with dask.config.set(num_workers=threads):
            dask.compute(warm, scheduler=name)  # compile once per thread
            t0, c0 = time.perf_counter(), time.process_time()
            total = dask.compute(graph, scheduler=name)[0]
            cpu = time.process_time() - c0
        peak = _rss_gb()
    else:
        client = scheduler
        client.compute(warm).result()
        c0 = sum(client.run(time.process_time).values())
        t0 = time.perf_counter()
        total = client.compute(graph).result()
        cpu = sum(client.run(time.process_time).values()) - c0
        worker_peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)
        import psutil

        # the workers' peaks plus what this (client) process holds now: its own peak dates from the
        # threaded runs before
        peak = psutil.Process().memory_info().rss / 1024**3 + sum(worker_peaks.values())
    wall = time.perf_counter() - t0
    cells = int(total[0, 3])
    rate = cells * MONTHS / wall
    row = {"config": label, "cells": cells, "wall_s": round(wall, 2), "cell_months_per_s": round(rate),
           "peak_memory_gb": round(peak, 2), "projected_full_grid_s": round(land_cells_total * MONTHS / rate),
           "cpu_s": round(cpu, 1), "cell_months_per_cpu_s": round(cells * MONTHS / max(cpu, 1e-9)),
           "nee_domain_mean": float(total[:, 2].sum() / max(total[:, 0].sum(), 1e-30))}
    print(f"  {label:<34} {cells:>9,} cells  {wall:7.1f} s  {rate:>12,.0f} cell-months/s  peak {peak:5.2f} GB  "
          f"→ full grid {row['projected_full_grid_s'] / 60:6.1f} min  (CPU {cpu:.1f} s: "
          f"{row['cell_months_per_cpu_s']:,} cell-months per CPU-second)", flush=True)
    return row


def model_path(run, cells_side: int, years: int) -> dict:
    """The model path (`map_run(path="model")`, xarray in/out) and bare `predict` on stacked windows."""
    import equinox as eqx
    import jax
    import xarray as xr

    from kgml.experiment import windows
    from kgml.models.hybrid import predict
    from kgml.spatial.mapping import map_run

    lat = np.linspace(30, 32, cells_side)
    lon = np.linspace(110, 112, cells_side)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    f = synthetic_monthly(la.ravel(), lo.ravel(), seed=1)
    months = years * 12
    times = np.arange("2001-01", np.datetime64("2001-01") + months, dtype="datetime64[M]").astype("datetime64[ns]")
    forcing = xr.Dataset({k: (("lat", "lon", "time"), v[:, :months].reshape(cells_side, cells_side, months))
                          for k, v in f.items()}, coords={"lat": lat, "lon": lon, "time": times})
    map_run(run, forcing.isel(lat=slice(0, 2), lon=slice(0, 2)), path="model", scheduler="sync")  # compile
    t0 = time.perf_counter()
    map_run(run, forcing, path="model", scheduler="threads", chunks={"lat": cells_side // 2, "lon": cells_side // 2})
    wall = time.perf_counter() - t0
    rate_map = cells_side**2 * months / wall
    # bare predict: windows built once (not timed), then the jit-compiled hybrid on batches of 256 windows
    from kgml.spatial.mapping import _site_dataset, daily_drivers

    vals = {k: forcing[k].values.reshape(-1, months) for k in forcing.data_vars}
    drivers, days, ok, _ = daily_drivers(vals, forcing.time.values, la.ravel())
    ds = _site_dataset(drivers, days, la.ravel(), lo.ravel(), run.config)
    data = windows(ds, run.config, run.prepared, require_targets=False, missing_static="zero")
    pj = eqx.filter_jit(predict)
    idx = np.arange(256) % len(data)
    batch = data.batch(idx)[0]
    jax.block_until_ready(pj(run.model, batch))
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        jax.block_until_ready(pj(run.model, batch))
    rate_predict = reps * 256 * 12 / (time.perf_counter() - t0)
    return {"map_run_model_cell_months_per_s": round(rate_map), "predict_cell_months_per_s": round(rate_predict),
            "model_cells": cells_side**2, "model_years": years}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--km", type=float, default=1.0, help="grid spacing (km; default 1)")
    p.add_argument("--chunk", type=int, default=128, help="cells per dask block along lat and lon")
    p.add_argument("--sample-blocks", type=int, default=4, help="full land blocks to time (default 4)")
    p.add_argument("--full", action="store_true", help="map every block (hours on 2 cores)")
    p.add_argument("--batch", type=int, default=8192, help="cell-years per jit call")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--no-distributed", action="store_true", help="threaded scheduler only")
    p.add_argument("--no-model-path", action="store_true", help="skip the model-path measurement")
    p.add_argument("--model-side", type=int, default=16,
                   help="cells per side of the model-path grid (default 16; mapped in 4 blocks, 2 years)")
    p.add_argument("--run", default=None, help="a trained run directory (default: a demonstration run)")
    args = p.parse_args(argv)
    load0 = [round(x, 2) for x in os.getloadavg()]

    from kgml.experiment import load_run
    from kgml.spatial.mapping import fast_path_reason, train_demo_run

    t_start = time.perf_counter()
    run = load_run(args.run) if args.run else train_demo_run(None, steps=20)
    if fast_path_reason(run):
        print(f"the run cannot take the fast path: {fast_path_reason(run)}", file=sys.stderr)
        return 2
    grid = Grid.china(args.km)
    land = grid.land_cells()
    print(f"grid {grid.lat.size} × {grid.lon.size} at {args.km:g} km, {land:,} land cells × {MONTHS} months = "
          f"{land * MONTHS / 1e9:.2f} G cell-months; chunks {args.chunk}²; {os.cpu_count()} CPU cores", flush=True)
    blocks = None if args.full else sample_blocks(grid, args.chunk, args.sample_blocks)
    warm_blocks = sample_blocks(grid, args.chunk, 2, seed=99)
    rows = []
    print("fast path (parameters once per cell, physics per cell-year from monthly means):", flush=True)
    workers = [int(w) for w in args.workers.split(",")]
    for w in workers:
        graph = build_graph(run, grid, args.chunk, blocks, args.batch)
        warm = build_graph(run, grid, args.chunk, warm_blocks[:w], args.batch)
        rows.append(measure(f"threaded scheduler, {w} thread(s)", graph, ("threads", w), warm, land))
    if not args.no_distributed:
        from distributed import Client, LocalCluster

        for w in workers:
            with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None,
                              memory_limit="6GiB") as cluster, Client(cluster) as client:
                graph = build_graph(run, grid, args.chunk, blocks, args.batch)
                warm = build_graph(run, grid, args.chunk, warm_blocks[:w], args.batch)
                rows.append(measure(f"distributed LocalCluster, {w} worker(s)", graph, client, warm, land))
                rows[-1]["workers"] = w
    best = max(rows, key=lambda r: r["cell_months_per_s"])
    result = {"cell_months_per_s": best["cell_months_per_s"], "peak_memory_gb": best["peak_memory_gb"],
              "projected_full_grid_s": best["projected_full_grid_s"], "best_config": best["config"],
              "land_cells": land, "months": MONTHS, "chunk": args.chunk,
              "sample_cells": best["cells"], "scaling": {r["config"]: r["cell_months_per_s"] for r in rows},
              "peak_memory_by_config_gb": {r["config"]: r["peak_memory_gb"] for r in rows},
              "cell_months_per_cpu_s": {r["config"]: r["cell_months_per_cpu_s"] for r in rows},
              "load_average_1min": os.getloadavg()[0]}
    # per-worker throughput of the distributed runs: with proportional scaling, T(N workers) = cells / (N · this)
    per_worker = {r["config"]: round(r["cell_months_per_s"] / r["workers"]) for r in rows if "workers" in r}
    if per_worker:
        result["per_worker_cell_months_per_s"] = per_worker
        print("per-worker throughput (distributed): " + ", ".join(f"{k}: {v:,}" for k, v in per_worker.items()))
    if not args.no_model_path:
        print("model path (encoder + heads + physics per cell-year window):", flush=True)
        mp = model_path(run, args.model_side, 2)
        for k in ("map_run_model_cell_months_per_s", "predict_cell_months_per_s"):
            mp[k.replace("cell_months_per_s", "projected_full_grid_s")] = round(land * MONTHS / mp[k])
        print(f"  map_run(path='model') {mp['map_run_model_cell_months_per_s']:,} cell-months/s → full grid "
              f"{mp['map_run_model_projected_full_grid_s'] / 3600:.1f} h; bare predict "
              f"{mp['predict_cell_months_per_s']:,} cell-months/s → {mp['predict_projected_full_grid_s'] / 3600:.1f} h",
              flush=True)
        result["model_path"] = mp
    result["benchmark_wall_s"] = round(time.perf_counter() - t_start, 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    from record import append_result

    figures = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    def key(config: str) -> str:
        return config.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")

    for config, rate in result["scaling"].items():
        figures[key(config) + "_cell_months_per_s"] = rate
        figures[key(config) + "_cell_months_per_cpu_s"] = result["cell_months_per_cpu_s"][config]
        figures[key(config) + "_peak_memory_gb"] = result["peak_memory_by_config_gb"][config]
    for config, rate in result.get("per_worker_cell_months_per_s", {}).items():
        figures[key(config) + "_per_worker_cell_months_per_s"] = rate
    for k, v in result.get("model_path", {}).items():
        figures[f"model_path_{k}"] = v
    append_result("mapping_scale", figures, load_start=load0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
