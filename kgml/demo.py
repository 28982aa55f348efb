"""``kgml demo``: the main job on the built-in synthetic default (no data needed).

1. Process model: synthetic Midwest-like sites in three states, each with maize, soybean and grassland,
   driven by the weather generator fitted on the Ames, Iowa record (table, netCDF, figure).
2. Hybrid: pretrain the hybrid (maize) on a synthetic corpus drawn from the parameter priors, fine-tune
   it on a few noisy "towers" and yields of another synthetic world whose parameters shift between the
   states in a known way, and compare on held-out sites: the process model alone, one global model,
   per-state models, the global model without pretraining, and skill against the number of training sites.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoSizes", "JITTER_SD", "WORLD_SHIFT", "hybrid_comparison", "run_demo", "simulate_states"]

#: Standard deviation of the site-to-site jitter in unconstrained (logit) space.
JITTER_SD = 0.3

#: The known shift of the fine-tuning world, in unconstrained space, relative to the pretraining prior:
#: Illinois soils respire more and its maize is more productive; Nebraska the opposite. (Assumptions of
#: the demo, a test bed for regional vs global models.)
WORLD_SHIFT = {
    "IL": {"rref_rh": 0.3, "vmax25_c4": 0.4},
    "NE": {"rref_rh": -0.3, "vmax25_c4": -0.4},
}

#: Parameters the hybrid learns per site in the demo (the others stay at their cited defaults).
#: Crop phenology (sowing day, thermal time to maturity) stays at its defaults: it varies from site to site
#: in the synthetic worlds but nothing a held-out site offers (weather, location, soil) predicts it.
DEMO_LEARNED = ("vmax25_c4", "k_ext", "rref_rh", "e0_rh", "rm_ref", "root_depth", "maize_hi_max")


@dataclass(frozen=True)
class DemoSizes:
    """Sizes of the hybrid part (defaults: a few minutes on 2 CPU cores)."""

    pretrain_sites_per_state: int = 16
    pretrain_years: int = 2
    pretrain_steps: int = 300
    world_sites_per_state: int = 10
    world_years: int = 2
    towers_per_state: int = 3  #: fine-tuning sites per state (+ 1 validation site per state)
    finetune_steps: int = 150
    curve: tuple[int, ...] = (1, 2, 3)
    hidden: int = 16
    attention: bool = True
    n_context: int = 4
    use_summary: bool = False  #: static parameters from location, attributes and context only
    residual_penalty: float = 1.0
    yield_weight: float = 1.0
    weight_decay: float = 1e-3
    learning_rate: float = 3e-3
    finetune_learning_rate: float = 2e-3
    finetune_trainable: tuple[str, ...] = ()  #: empty: everything
    learned: tuple[str, ...] = DEMO_LEARNED

    @classmethod
    def quick(cls) -> DemoSizes:
        """Tiny sizes for smoke tests (well under a minute of training)."""
        return cls(pretrain_sites_per_state=3, pretrain_years=1, pretrain_steps=6, world_sites_per_state=4,
                   world_years=1, towers_per_state=2, finetune_steps=4, curve=(1, 2), hidden=8, attention=False,
                   n_context=2)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the main job on the built-in synthetic default (no data needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--sites-per-state", type=int, default=8, help="process-model table: sites per state and vegetation")
    p.add_argument("--years", type=int, default=4, help="process-model table: simulated years per site")
    p.add_argument("--seed", type=int, default=0, help="random seed (weather, parameters, networks)")
    p.add_argument("--no-figure", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-hybrid", action="store_true", help="only the process-model part")
    p.add_argument("--quick", action="store_true", help="tiny hybrid sizes (a smoke run, not a result)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    result = run_demo(
        out_dir=Path(args.out),
        sites_per_state=args.sites_per_state,
        years=args.years,
        seed=args.seed,
        figure=not args.no_figure,
        hybrid=not args.no_hybrid,
        sizes=DemoSizes.quick() if args.quick else DemoSizes(),
    )
    print(result["table"])
    print(f"\nwrote {result['netcdf']}" + (f" and {result['figure']}" if result.get("figure") else ""))
    if "hybrid" in result:
        print("\n" + result["hybrid"]["table"])
        print(f"\nwrote {result['hybrid']['markdown']}, {', '.join(str(f) for f in result['hybrid']['figures'])}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


def synthetic_forcing(state, n_sites: int, years: int, key):
    """Daily `Met` shaped (site, day) for one state (`kgml.synthetic.generate_forcing` at the state centre)."""
    from kgml.synthetic import generate_forcing

    return generate_forcing(state, n_sites, years, key)


def site_parameters(model, n_sites: int, key):
    """Per-site physical parameters: defaults, with the `SITE_VARYING` ones jittered in logit space."""
    from kgml.synthetic import SITE_VARYING, sample_parameters

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
    import jax
    import numpy as np
    from tqdm import tqdm

    from kgml.io import write_netcdf_atomic
    from kgml.synthetic import STATES, VEGETATION, build_model
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


# ---------------------------------------------------------------------------------------------------------
# Hybrid: pretrain, fine-tune, global vs per-state
# ---------------------------------------------------------------------------------------------------------


def demo_config(sizes: DemoSizes, seed: int):
    """The demo's `ExperimentConfig` (pretraining settings; fine-tuning replaces data and train)."""
    from kgml.config import (
        CorpusConfig,
        DataConfig,
        ExperimentConfig,
        LossConfig,
        ModelConfig,
        TrainConfig,
    )

    return ExperimentConfig(
        name="demo-pretrain",
        seed=seed,
        data=DataConfig(
            corpus=CorpusConfig(vegetation=("maize",), sites_per_block=sizes.pretrain_sites_per_state,
                                years=sizes.pretrain_years, seed=seed + 1),
            vegetation="maize", val_fraction=0.1, test_fraction=0.0, n_context=sizes.n_context,
        ),
        model=ModelConfig(hidden=sizes.hidden, attention=sizes.attention, n_heads=2, location_dim=16,
                          embed_dim=16, head_hidden=32, region_embedding=True, site_attention=sizes.n_context > 0,
                          learned=sizes.learned, residual=("gpp", "reco"), residual_scale=1.0,
                          use_summary=sizes.use_summary),
        loss=LossConfig(prior=1e-2, residual=sizes.residual_penalty, weights={"crop_yield": sizes.yield_weight}),
        train=TrainConfig(steps=sizes.pretrain_steps, batch_size=16, learning_rate=sizes.learning_rate, eval_every=50,
                          patience=4, warmup_steps=20, weight_decay=sizes.weight_decay, seed=seed),
    )


def _world_split(ds, states, towers: int, name: str):
    """Per state: the first ``towers`` sites train, the next one validates, the rest are held out."""
    import numpy as np

    from kgml.data.splits import Part, Split

    train, val, test = [], [], []
    for state in states:
        sites = sorted(ds.site.values[ds.state.values == state].astype(str).tolist())
        train += sites[:towers]
        val += sites[towers : towers + 1]
        test += sites[towers + 1 :]
    assert not set(np.intersect1d(train, test))
    return Split(name, "demo_towers", 0, "site", Part(train), Part(val), Part(test), Part())


def _scores(run, ds_test):
    """Held-out skill of one model: daily NEE against the noise-free truth, yields, rref_rh."""
    import numpy as np

    from kgml import metrics
    from kgml.experiment import predict_dataset
    from kgml.synthetic import STATES

    pred = predict_dataset(run, ds_test, batch_size=12)
    out = {}
    for state in ("all", *[s.name for s in STATES]):
        sel = np.ones(ds_test.sizes["site"], bool) if state == "all" else ds_test.state.values == state
        if not sel.any():
            continue
        p, t = pred.nee.values[sel], ds_test.true_nee.values[sel]
        years = np.intersect1d(pred.year.values, ds_test.year.values)
        py = pred.crop_yield.sel(year=years).values[sel]
        ty = ds_test.true_crop_yield.sel(year=years).values[sel]
        rref = pred.theta_rref_rh.values[sel] if "theta_rref_rh" in pred else np.full(sel.sum(), np.nan)
        out[state] = {
            "nee_rmse": metrics.rmse(p, t), "nee_r2": metrics.r2(p, t), "nee_nse": metrics.nse(p, t),
            "yield_rmse": metrics.rmse(py, ty),
            "rref_err": float(np.nanmedian(np.abs(rref / ds_test.theta_rref_rh.values[sel] - 1.0))),
        }
    return out, pred


def hybrid_comparison(out_dir: Path, seed: int = 0, sizes: DemoSizes = DemoSizes(), figure: bool = True,
                      progress: bool = True) -> dict:
    """Pretrain on the prior corpus, fine-tune on the shifted world's towers, compare on held-out sites."""
    import json

    import numpy as np

    from kgml.experiment import Run, new_model, train_run
    from kgml.io import write_text_atomic
    from kgml.synthetic import STATES, CorpusSpec, make_corpus

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    cfg = demo_config(sizes, seed)
    from kgml.experiment import corpus_spec

    prior = make_corpus(corpus_spec(cfg.data.corpus), progress=progress)
    world = make_corpus(CorpusSpec(vegetation=("maize",), sites_per_block=sizes.world_sites_per_state,
                                   years=sizes.world_years, state_shift=WORLD_SHIFT, seed=seed + 2), progress=progress)
    timings["corpora"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pretrained = train_run(cfg, prior, out_dir / "pretrain", progress=progress, description="pretraining")
    timings["pretraining"] = time.perf_counter() - t0

    states = [s.name for s in STATES]
    full = _world_split(world, states, sizes.towers_per_state, "world")
    test_ds = world.sel(site=list(full.test.units))
    ft_train = dataclasses.replace(cfg.train, steps=sizes.finetune_steps, batch_size=6,
                                   learning_rate=sizes.finetune_learning_rate, eval_every=25, warmup_steps=10,
                                   patience=3, trainable=sizes.finetune_trainable)
    ft_cfg = dataclasses.replace(cfg, name="demo-finetune", train=ft_train)

    runs: dict[str, Run] = {}
    scores: dict[str, dict] = {}
    preds = {}
    t0 = time.perf_counter()
    runs["process model"] = Run(new_model(cfg, pretrained.prepared), cfg, pretrained.prepared)
    runs["global, pretrained"] = train_run(ft_cfg, world, out_dir / "global", init=pretrained, split=full,
                                           progress=progress, description="fine-tune global")
    runs["global, no pretraining"] = train_run(ft_cfg, world, out_dir / "global-scratch", split=full,
                                               progress=progress, description="train global from scratch")
    for name in ("process model", "global, pretrained", "global, no pretraining"):
        scores[name], preds[name] = _scores(runs[name], test_ds)
    per_state_scores, per_state_preds = {}, []
    for state in states:
        sub = world.isel(site=np.flatnonzero(world.state.values == state))
        split = _world_split(sub, [state], sizes.towers_per_state, f"world-{state}")
        run = train_run(ft_cfg, sub, out_dir / f"state-{state}", init=pretrained, split=split, progress=progress,
                        description=f"fine-tune {state}")
        sc, pr = _scores(run, sub.sel(site=list(split.test.units)))
        per_state_scores[state] = sc[state]
        per_state_preds.append(pr)
    timings["fine-tuning"] = time.perf_counter() - t0
    scores["per-state, pretrained"] = _pool_per_state(per_state_preds, test_ds, per_state_scores)
    preds["per-state, pretrained"] = None

    # skill vs number of training sites per state, with and without pretraining
    t0 = time.perf_counter()
    curve = {"sites_per_state": list(sizes.curve), "pretrained": [], "scratch": []}
    for n in sizes.curve:
        for label, init in (("pretrained", pretrained), ("scratch", None)):
            if n == sizes.towers_per_state:
                key = "global, pretrained" if init is not None else "global, no pretraining"
                curve[label].append(scores[key]["all"]["nee_rmse"])
                continue
            split = _world_split(world, states, n, f"world-n{n}")
            split = dataclasses.replace(split, test=full.test)  # the same held-out sites for every point
            run = train_run(ft_cfg, world, None, init=init, split=split, progress=progress,
                            description=f"curve n={n} {label}")
            curve[label].append(_scores(run, test_ds)[0]["all"]["nee_rmse"])
    timings["curve"] = time.perf_counter() - t0

    table = _comparison_table(scores, curve, sizes)
    md_path = write_text_atomic(table + "\n", out_dir / "comparison.md")
    write_text_atomic(json.dumps({"scores": scores, "curve": curve, "timings_s": timings,
                                  "sizes": dataclasses.asdict(sizes), "world_shift": WORLD_SHIFT}, indent=1,
                                 default=float) + "\n", out_dir / "comparison.json")
    figures = _hybrid_figures(scores, curve, preds, test_ds, out_dir) if figure else []
    return {"table": table, "scores": scores, "curve": curve, "markdown": md_path, "figures": figures,
            "timings": timings, "runs": runs}


def _pool_per_state(preds, test_ds, per_state_scores):
    """Scores of the per-state models over all held-out sites (each site predicted by its state's model)."""
    import numpy as np
    import xarray as xr

    from kgml import metrics

    pred = xr.concat(preds, dim="site").sel(site=test_ds.site.values)
    years = np.intersect1d(pred.year.values, test_ds.year.values)
    out = {"all": {
        "nee_rmse": metrics.rmse(pred.nee.values, test_ds.true_nee.values),
        "nee_r2": metrics.r2(pred.nee.values, test_ds.true_nee.values),
        "nee_nse": metrics.nse(pred.nee.values, test_ds.true_nee.values),
        "yield_rmse": metrics.rmse(pred.crop_yield.sel(year=years).values,
                                   test_ds.true_crop_yield.sel(year=years).values),
        "rref_err": float(np.nanmedian(np.abs(pred.theta_rref_rh.values / test_ds.theta_rref_rh.values - 1.0))),
    }}
    out.update(per_state_scores)
    return out


def _comparison_table(scores, curve, sizes) -> str:
    from kgml.synthetic import STATES

    states = [s.name for s in STATES]
    lines = [
        "| model | " + " | ".join(f"NEE RMSE {s}" for s in states) + " | NEE RMSE all | NEE NSE all | "
        "yield RMSE (t ha-1) | rref_rh error |",
        "|---|" + "---|" * (len(states) + 4),
    ]
    for name, sc in scores.items():
        cells = [f"{sc[s]['nee_rmse']:.2f}" if s in sc else "–" for s in states]
        a = sc["all"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {a['nee_rmse']:.2f} | {a['nee_nse']:.2f} | "
                     f"{a['yield_rmse']:.2f} | {100 * a['rref_err']:.0f} % |")
    lines += [
        "",
        f"Held-out synthetic maize sites ({sizes.world_sites_per_state - sizes.towers_per_state - 1} per state) of "
        "a world whose parameters shift between states (IL: more soil respiration and photosynthetic capacity, "
        "NE: less); fine-tuned on "
        f"{sizes.towers_per_state} noisy towers per state with yields. NEE RMSE in gC m-2 d-1 against the "
        "noise-free truth; rref_rh error: median relative error of the learned base respiration.",
        "",
        "| training sites per state | " + " | ".join(str(n) for n in curve["sites_per_state"]) + " |",
        "|---|" + "---|" * len(curve["sites_per_state"]),
        "| NEE RMSE, pretrained | " + " | ".join(f"{v:.2f}" for v in curve["pretrained"]) + " |",
        "| NEE RMSE, no pretraining | " + " | ".join(f"{v:.2f}" for v in curve["scratch"]) + " |",
    ]
    return "\n".join(lines)


def _hybrid_figures(scores, curve, preds, test_ds, out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install 'kgml[plot]'): no figure written")
        return []
    import numpy as np

    from kgml.io import atomic_path
    from kgml.synthetic import STATES

    states = [s.name for s in STATES]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    width = 0.8 / len(scores)
    for i, (name, sc) in enumerate(scores.items()):
        axes[0].bar(np.arange(len(states)) + i * width, [sc.get(s, {}).get("nee_rmse", np.nan) for s in states],
                    width, label=name)
    axes[0].set_xticks(np.arange(len(states)) + 0.4 - width / 2, states)
    axes[0].set(ylabel="NEE RMSE (gC m-2 d-1)", title="held-out sites by state")
    axes[0].legend(fontsize=7)
    axes[1].plot(curve["sites_per_state"], curve["pretrained"], "o-", label="pretrained")
    axes[1].plot(curve["sites_per_state"], curve["scratch"], "s--", label="no pretraining")
    axes[1].set(xlabel="training sites per state", ylabel="NEE RMSE (gC m-2 d-1)", title="skill vs training sites")
    axes[1].legend()
    il = [i for i, s in enumerate(test_ds.state.values) if s == "IL"] or [0]
    site = test_ds.site.values[il[0]]
    t = np.arange(test_ds.sizes["time"])
    axes[2].plot(t, test_ds.true_nee.sel(site=site).values, "k-", lw=1.5, label="truth")
    for name in ("process model", "global, pretrained"):
        if preds.get(name) is not None:
            axes[2].plot(t, preds[name].nee.sel(site=site).values, lw=0.9, label=name)
    axes[2].set(xlabel="day", ylabel="NEE (gC m-2 d-1)", title=f"held-out site {site}")
    axes[2].legend(fontsize=7)
    path = out_dir / "comparison.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return [path]


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
