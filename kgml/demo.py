"""``kgml demo``: the main job on the built-in synthetic default (no data needed).

1. Process model: synthetic Midwest-like sites in three states, each with maize, soybean and grassland,
   driven by the weather generator fitted on the Ames, Iowa record (table, netCDF, figure).
2. Hybrid: pretrain the hybrid (maize) on a synthetic corpus drawn from the parameter priors, fine-tune
   it on a few noisy "towers" and yields of another synthetic world whose parameters shift between the
   states in a known way, and compare on held-out sites: the process model alone (at its defaults, and
   calibrated as one global parameter set on the same towers), one global model, per-state models, the
   global model without pretraining, a pure-neural model of the same size, and skill against the number of
   training sites. (`pretraining_curve` is the longer study of skill vs training sites, with seeds.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from kgml import __version__
from kgml import evaluation as ev
from kgml.cliopts import add_alias, add_force
from kgml.config import (
    CorpusConfig,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    table_from_dict,
)
from kgml.data.splits import Part, Split
from kgml.experiment import (
    Run,
    corpus_spec,
    count_parameters,
    new_model,
    predict_dataset,
    train_run,
)
from kgml.io import (
    atomic_path,
    guard_outputs,
    refuse_existing,
    write_netcdf_atomic,
    write_text_atomic,
)
from kgml.paths import find_data_dir
from kgml.synthetic import (
    SITE_VARYING,
    STATES,
    VEGETATION,
    CorpusSpec,
    build_model,
    generate_forcing,
    make_corpus,
    sample_parameters,
)
from process_models.simulate import simulate_sites

__all__ = [
    "CurveSizes",
    "DemoSizes",
    "JITTER_SD",
    "WORLD_SHIFT",
    "hybrid_comparison",
    "neural_config",
    "pretraining_curve",
    "process_config",
    "run_demo",
    "simulate_states",
]

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


#: Row names of the comparison models.
PROCESS_CALIBRATED = "process model, calibrated (global)"
NEURAL = "neural, same size (no pretraining)"


@dataclass(frozen=True)
class DemoSizes:
    """Sizes of the hybrid part (defaults: a few minutes on 2 CPU cores)."""

    #: Synthetic pretraining corpus: sites per state (3 states), years per site. 64 (192 sites, 19 of them
    #: validation) rather than 16: with 43 training sites the hybrid overfit the corpus within 50–100 steps
    #: (training loss 0.6 vs validation 3.7) and 5 validation sites could not tell good from bad models.
    pretrain_sites_per_state: int = 64
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
    process_steps: int = 100  #: calibration steps of the process model (one global parameter set)
    process_learning_rate: float = 0.03

    @classmethod
    def quick(cls) -> DemoSizes:
        """Tiny sizes for smoke tests (well under a minute of training)."""
        return cls(pretrain_sites_per_state=3, pretrain_years=1, pretrain_steps=6, world_sites_per_state=4,
                   world_years=1, towers_per_state=2, finetune_steps=4, curve=(1, 2), hidden=8, attention=False,
                   n_context=2, process_steps=4)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the main job on the built-in synthetic default (no data needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output directory (default: runs/demo)")
    add_force(p)
    p.add_argument("--sites-per-state", type=int, default=8, help="process-model table: sites per state and vegetation")
    p.add_argument("--years", type=int, default=4, help="process-model table: simulated years per site")
    p.add_argument("--seed", type=int, default=0, help="random seed (weather, parameters, networks)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    add_alias(p, "--no-figure", "no_figures", action="store_true")
    p.add_argument("--no-hybrid", action="store_true", help="only the process-model part")
    p.add_argument("--quick", action="store_true", help="tiny hybrid sizes (a smoke run, not a result)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # the demo reads the real weather station files: its outputs must not land on them
    guard_outputs([Path(args.out)], [find_data_dir()])
    refuse_existing([Path(args.out)], args.force)
    t0 = time.perf_counter()
    result = run_demo(
        out_dir=Path(args.out),
        sites_per_state=args.sites_per_state,
        years=args.years,
        seed=args.seed,
        figure=not args.no_figures,
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


# ---------------------------------------------------------------------------------------------------------
# Hybrid: pretrain, fine-tune, global vs per-state
# ---------------------------------------------------------------------------------------------------------


def demo_config(sizes: DemoSizes, seed: int):
    """The demo's `ExperimentConfig` (pretraining settings; fine-tuning replaces data and train)."""
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


def process_config(config, sizes: DemoSizes):
    """``config`` as the process model alone (kind "process": its learned parameters calibrated as one global
    set; no residual), trained for ``sizes.process_steps`` at ``sizes.process_learning_rate``."""
    model = dataclasses.replace(config.model, kind="process", residual=(), time_varying=())
    train = dataclasses.replace(config.train, steps=sizes.process_steps, learning_rate=sizes.process_learning_rate,
                                trainable=())
    return dataclasses.replace(config, name=f"{config.name}-process", model=model, train=train)


def neural_config(config):
    """``config`` as the pure-neural model (kind "neural", as many parameters as the hybrid of ``config``)."""
    model = dataclasses.replace(config.model, kind="neural")
    return dataclasses.replace(config, name=f"{config.name}-neural", model=model,
                               train=dataclasses.replace(config.train, trainable=()))


def _world_split(ds, states, towers: int, name: str):
    """Per state: the first ``towers`` sites train, the next one validates, the rest are held out."""

    train, val, test = [], [], []
    for state in states:
        sites = sorted(ds.site.values[ds.state.values == state].astype(str).tolist())
        train += sites[:towers]
        val += sites[towers : towers + 1]
        test += sites[towers + 1 :]
    assert not set(np.intersect1d(train, test))
    return Split(name, "demo_towers", 0, "site", Part(train), Part(val), Part(test), Part())


def _scores(run, ds_test):
    """Held-out skill of one model (`_skill` of its predictions on ``ds_test``) and the predictions."""
    pred = predict_dataset(run, ds_test, batch_size=12)
    return _skill(pred, ds_test), pred


def _skill(pred, ds_test) -> dict:
    """Skill of ``pred`` on the held-out sites of ``ds_test``, for all sites and per state, from the benchmark
    scorer (`kgml.evaluation.score_sites`: pooled over all site-steps, and pooled within each state): daily
    NEE against the noise-free truth (RMSE, R², NSE), yields (RMSE), and the median relative error of the
    learned base respiration ``rref_rh`` (a model without physical parameters, kind "neural", has none)."""


    nee = ev.score_sites(pred, ds_test, {"nee": "true_nee"}, resolution="daily", group="state",
                         metrics=("rmse", "r2", "nse")).sel(variable="nee")
    yld = ev.score_sites(pred, ds_test, {"crop_yield": "true_crop_yield"}, resolution="annual", group="state",
                         metrics=("rmse",)).sel(variable="crop_yield")
    sites = nee.site.values
    states = ds_test.state.sel(site=sites).values.astype(str)
    out = {}
    for state in ("all", *nee.group.values.astype(str).tolist()):
        def get(sc, m, state=state):
            return float(sc[f"pooled_{m}"] if state == "all" else sc[f"group_{m}"].sel(group=state))

        rref_err = math.nan
        if "theta_rref_rh" in pred:
            sel = sites if state == "all" else sites[states == state]
            rref_err = float(np.nanmedian(np.abs(pred.theta_rref_rh.sel(site=sel).values
                                                 / ds_test.theta_rref_rh.sel(site=sel).values - 1.0)))
        out[state] = {"nee_rmse": get(nee, "rmse"), "nee_r2": get(nee, "r2"), "nee_nse": get(nee, "nse"),
                      "yield_rmse": get(yld, "rmse"), "rref_err": rref_err}
    return out


def hybrid_comparison(out_dir: Path, seed: int = 0, sizes: DemoSizes = DemoSizes(), figure: bool = True,
                      progress: bool = True) -> dict:
    """Pretrain on the prior corpus, fine-tune on the shifted world's towers, compare on held-out sites."""


    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    cfg = demo_config(sizes, seed)

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
    # the comparison models: the process model calibrated (one global parameter set) and a pure-neural
    # model as large as the hybrid, both trained on the same towers
    proc_cfg = process_config(ft_cfg, sizes)
    runs[PROCESS_CALIBRATED] = train_run(proc_cfg, world, out_dir / "process-calibrated", split=full,
                                         progress=progress, description="calibrate process model")
    runs[NEURAL] = train_run(neural_config(ft_cfg), world, out_dir / "neural", split=full, progress=progress,
                             description="train neural from scratch")
    for name in ("process model", PROCESS_CALIBRATED, "global, pretrained", "global, no pretraining", NEURAL):
        scores[name], preds[name] = _scores(runs[name], test_ds)
    per_state_preds = []
    for state in states:
        sub = world.isel(site=np.flatnonzero(world.state.values == state))
        split = _world_split(sub, [state], sizes.towers_per_state, f"world-{state}")
        run = train_run(ft_cfg, sub, out_dir / f"state-{state}", init=pretrained, split=split, progress=progress,
                        description=f"fine-tune {state}")
        per_state_preds.append(_scores(run, sub.sel(site=list(split.test.units)))[1])
    timings["fine-tuning"] = time.perf_counter() - t0
    # each held-out site predicted by its state's model, scored as one prediction of all held-out sites
    pooled = xr.concat(per_state_preds, dim="site").sel(site=test_ds.site.values)
    scores["per-state, pretrained"] = _skill(pooled, test_ds)
    preds["per-state, pretrained"] = None
    order = ("process model", PROCESS_CALIBRATED, "global, pretrained", "global, no pretraining",
             "per-state, pretrained", NEURAL)
    scores = {k: scores[k] for k in order}
    n_parameters = {k: count_parameters(runs[k].model) for k in ("global, pretrained", NEURAL, PROCESS_CALIBRATED)}

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

    table = _comparison_table(scores, curve, sizes, n_parameters)
    md_path = write_text_atomic(table + "\n", out_dir / "comparison.md")
    write_text_atomic(json.dumps({"scores": scores, "curve": curve, "timings_s": timings,
                                  "n_parameters": n_parameters,
                                  "sizes": dataclasses.asdict(sizes), "world_shift": WORLD_SHIFT}, indent=1,
                                 default=float) + "\n", out_dir / "comparison.json")
    figures = _hybrid_figures(scores, curve, preds, test_ds, out_dir) if figure else []
    return {"table": table, "scores": scores, "curve": curve, "markdown": md_path, "figures": figures,
            "timings": timings, "runs": runs}


# ---------------------------------------------------------------------------------------------------------
# Skill vs number of training sites, with and without pretraining (experiments/pretraining_curve)
# ---------------------------------------------------------------------------------------------------------

#: Model rows of the pretraining curve, in table order.
CURVE_MODELS = ("process model (defaults)", PROCESS_CALIBRATED, "hybrid, pretrained", "hybrid, no pretraining",
                NEURAL)


@dataclass(frozen=True)
class CurveSizes:
    """Sizes of `pretraining_curve`. ``model``: the demo's network, pretraining and fine-tuning settings.
    The fine-tuning world (the "towers") has ``world_sites_per_state`` sites per state: per state the last
    ``test_per_state`` are held out, the one before validates, the others are the pool the ``n_sites``
    training sites are drawn from (round robin over the states, in a seeded order; nested in n). The
    pretraining corpus is drawn with another seed and a broader prior (``pretrain_prior_sd`` vs the
    world's 0.3, and without the world's state shift), so pretraining is not a copy of the truth."""

    model: DemoSizes = DemoSizes()
    n_sites: tuple[int, ...] = (1, 2, 4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    world_sites_per_state: int = 11
    test_per_state: int = 4
    world_prior_sd: float = 0.3
    pretrain_prior_sd: float = 0.5
    world_seed: int = 1000

    @classmethod
    def from_dict(cls, d) -> CurveSizes:
        """From a TOML-like mapping: the keys above, with the `DemoSizes` keys in a ``[model]`` table; lists
        become tuples; an unknown key is a `kgml.config.ConfigError` naming it."""
        return table_from_dict(cls, dict(d), "curve")

    @classmethod
    def quick(cls) -> CurveSizes:
        """A smoke run (a couple of minutes): two points, one seed, tiny networks and few steps."""
        model = dataclasses.replace(DemoSizes.quick(), pretrain_steps=30, finetune_steps=20, process_steps=20)
        return cls(model=model, n_sites=(1, 3), seeds=(0,), world_sites_per_state=3, test_per_state=1)


def _curve_split(world, states, test_per_state: int):
    """(training pool per state, validation sites, test sites) of the fine-tuning world."""
    pool, val, test = {}, [], []
    for state in states:
        sites = sorted(world.site.values[world.state.values == state].astype(str).tolist())
        test += sites[len(sites) - test_per_state:]
        val.append(sites[len(sites) - test_per_state - 1])
        pool[state] = sites[: len(sites) - test_per_state - 1]
    return pool, val, test


def _tower_order(pool: dict, seed: int) -> list[str]:
    """The pool's sites in a seeded order that alternates between the states (IA, IL, NE, IA, …)."""
    rng = np.random.default_rng([seed, 31])
    shuffled = {k: [v[i] for i in rng.permutation(len(v))] for k, v in pool.items()}
    order = []
    for i in range(max(len(v) for v in shuffled.values())):
        order += [v[i] for v in shuffled.values() if i < len(v)]
    return order


def pretraining_curve(out_dir: Path, sizes: CurveSizes = CurveSizes(), *, figure: bool = True,
                      progress: bool = True) -> dict:
    """Held-out skill (daily NEE RMSE and R² against the noise-free truth, yield RMSE) against the number
    of training sites, for the hybrid fine-tuned from a pretrained model and trained from scratch, the
    process model at its defaults and calibrated (one global parameter set), and a pure-neural model of the
    hybrid's size — ``len(sizes.seeds)`` repetitions per point (seed: pretraining corpus and run, network
    initialisation, batches and which towers train). Writes ``metrics.json`` (every run and the mean ± sd
    per point), ``metrics.md`` and ``curve.png`` into ``out_dir``."""


    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = sizes.model
    states = [s.name for s in STATES]
    t_start = time.perf_counter()
    world = make_corpus(CorpusSpec(vegetation=("maize",), sites_per_block=sizes.world_sites_per_state,
                                   years=m.world_years, prior_sd=sizes.world_prior_sd, state_shift=WORLD_SHIFT,
                                   seed=sizes.world_seed))
    pool, val, test = _curve_split(world, states, sizes.test_per_state)
    n_pool = sum(len(v) for v in pool.values())
    if max(sizes.n_sites) > n_pool:
        raise ValueError(f"n_sites up to {max(sizes.n_sites)} but the world has {n_pool} training sites; raise "
                         "world_sites_per_state")
    test_ds = world.sel(site=test)
    records = []
    per_seed = 2 + 4 * len(sizes.n_sites)
    bar = tqdm(total=per_seed * len(sizes.seeds), desc="pretraining curve", unit="run", disable=not progress)

    def record(model, n, seed, run):
        sc = _scores(run, test_ds)[0]["all"]
        records.append({"model": model, "n_sites": n, "seed": seed, **{k: float(v) for k, v in sc.items()}})
        # what has been measured so far survives an interrupted run
        write_text_atomic(json.dumps(records, indent=1) + "\n", out_dir / "records.partial.json")
        bar.update(1)

    for seed in sizes.seeds:
        cfg = demo_config(m, seed)
        cfg = dataclasses.replace(cfg, name=f"curve-pretrain-s{seed}", data=dataclasses.replace(
            cfg.data, corpus=dataclasses.replace(cfg.data.corpus, prior_sd=sizes.pretrain_prior_sd, seed=seed + 1)))
        prior = make_corpus(corpus_spec(cfg.data.corpus))
        pretrained = train_run(cfg, prior, None, progress=False)
        record("hybrid, pretrained", 0, seed, pretrained)  # zero-shot: no tower seen
        record(CURVE_MODELS[0], 0, seed, Run(new_model(process_config(cfg, m), pretrained.prepared),
                                             process_config(cfg, m), pretrained.prepared))
        ft_train = dataclasses.replace(cfg.train, steps=m.finetune_steps, batch_size=6,
                                       learning_rate=m.finetune_learning_rate, eval_every=25, warmup_steps=10,
                                       patience=3, trainable=m.finetune_trainable)
        ft_cfg = dataclasses.replace(cfg, name=f"curve-s{seed}", train=ft_train)
        order = _tower_order(pool, seed)
        for n in sizes.n_sites:
            split = Split(f"curve-n{n}-s{seed}", "curve_towers", seed, "site", Part(tuple(sorted(order[:n]))),
                          Part(tuple(val)), Part(tuple(test)), Part())
            for model, config, init in (("hybrid, pretrained", ft_cfg, pretrained),
                                        ("hybrid, no pretraining", ft_cfg, None),
                                        (PROCESS_CALIBRATED, process_config(ft_cfg, m), None),
                                        (NEURAL, neural_config(ft_cfg), None)):
                record(model, n, seed, train_run(config, world, None, init=init, split=split, progress=False))
    bar.close()
    summary = _curve_summary(records)
    elapsed = time.perf_counter() - t_start
    table = _curve_table(summary, records, sizes, elapsed)
    md = write_text_atomic(table + "\n", out_dir / "metrics.md")
    js = write_text_atomic(json.dumps({"records": records, "summary": summary, "elapsed_s": elapsed,
                                       "sizes": dataclasses.asdict(sizes), "world_shift": WORLD_SHIFT,
                                       "test_sites": test, "val_sites": val}, indent=1, default=float) + "\n",
                           out_dir / "metrics.json")
    (out_dir / "records.partial.json").unlink(missing_ok=True)
    fig = _curve_figure(summary, sizes, out_dir / "curve.png") if figure else None
    return {"records": records, "summary": summary, "table": table, "markdown": md, "json": js, "figure": fig,
            "elapsed_s": elapsed}


def _curve_summary(records) -> list[dict]:
    """Mean and sd over seeds of every score, per (model, n_sites)."""
    out = []
    keys = sorted({(r["model"], r["n_sites"]) for r in records}, key=lambda k: (CURVE_MODELS.index(k[0]), k[1]))
    for model, n in keys:
        rows = [r for r in records if r["model"] == model and r["n_sites"] == n]
        entry = {"model": model, "n_sites": n, "n_seeds": len(rows)}
        for score in ("nee_rmse", "nee_r2", "yield_rmse"):
            v = np.array([r[score] for r in rows], float)
            entry[score] = float(v.mean())
            entry[f"{score}_sd"] = float(v.std(ddof=1)) if v.size > 1 else 0.0
        out.append(entry)
    return out


def _curve_table(summary, records, sizes: CurveSizes, elapsed: float) -> str:
    ns = [0, *sizes.n_sites]
    lookup = {(e["model"], e["n_sites"]): e for e in summary}
    lines = []
    for score, title in (("nee_rmse", "daily NEE RMSE (gC m-2 d-1)"), ("nee_r2", "daily NEE R²"),
                         ("yield_rmse", "yield RMSE (t ha-1)")):
        lines += [f"### {title} vs number of training sites (mean ± sd over {len(sizes.seeds)} seeds)", "",
                  "| model | " + " | ".join(str(n) for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for model in CURVE_MODELS:
            cells = []
            for n in ns:
                e = lookup.get((model, n))
                cells.append("–" if e is None else f"{e[score]:.2f} ± {e[score + '_sd']:.2f}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    gains = []
    for n in sizes.n_sites:
        d = [next(r["nee_rmse"] for r in records if r["model"] == "hybrid, no pretraining" and r["n_sites"] == n
                  and r["seed"] == s) - next(r["nee_rmse"] for r in records if r["model"] == "hybrid, pretrained"
                                             and r["n_sites"] == n and r["seed"] == s) for s in sizes.seeds]
        gains.append(f"{np.mean(d):+.2f} ({sum(x > 0 for x in d)}/{len(d)} seeds better)")
    lines += ["### NEE RMSE gain of pretraining (no pretraining − pretrained; > 0: pretraining helps)", "",
              "| training sites | " + " | ".join(str(n) for n in sizes.n_sites) + " |",
              "|---|" + "---|" * len(gains), "| gain (gC m-2 d-1) | " + " | ".join(gains) + " |", "",
              f"Columns: training sites (towers with daily NEE/GPP/Reco/Rsoil and yields) of a synthetic maize world "
              f"whose parameters shift between states; 0: no fine-tuning. Scores on {3 * sizes.test_per_state} "
              "held-out sites against the noise-free truth. Pretraining corpus: another seed and a broader prior "
              f"(sd {sizes.pretrain_prior_sd} vs {sizes.world_prior_sd} in logit space) without the world's state "
              f"shift. {len(records)} runs in {elapsed:.0f} s (2-core CPU)."]
    return "\n".join(lines)


def _curve_figure(summary, sizes: CurveSizes, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install 'kgml[plot]'): no figure written")
        return None

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    styles = {"hybrid, pretrained": "o-", "hybrid, no pretraining": "s--", PROCESS_CALIBRATED: "^-.", NEURAL: "d:"}
    for ax, score, label in zip(axes, ("nee_rmse", "nee_r2", "yield_rmse"),
                                ("NEE RMSE (gC m-2 d-1)", "NEE R²", "yield RMSE (t ha-1)"), strict=True):
        for model, style in styles.items():
            rows = [e for e in summary if e["model"] == model and e["n_sites"] > 0]
            if rows:
                ax.errorbar([e["n_sites"] for e in rows], [e[score] for e in rows],
                            yerr=[e[f"{score}_sd"] for e in rows], fmt=style, capsize=3, label=model)
        for model, colour in (("process model (defaults)", "grey"), ("hybrid, pretrained", "tab:blue")):
            zero = [e for e in summary if e["model"] == model and e["n_sites"] == 0]
            if zero:
                ax.axhline(zero[0][score], color=colour, lw=0.8, ls=":",
                           label=f"{model}, no fine-tuning" if model != CURVE_MODELS[0] else model)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sizes.n_sites), [str(n) for n in sizes.n_sites])
        ax.set(xlabel="training sites", ylabel=label)
    axes[0].legend(fontsize=7)
    fig.suptitle("held-out skill vs number of training sites (mean ± sd over seeds)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _comparison_table(scores, curve, sizes, n_parameters=None) -> str:

    states = [s.name for s in STATES]
    lines = [
        "| model | " + " | ".join(f"NEE RMSE {s}" for s in states) + " | NEE RMSE all | NEE NSE all | "
        "yield RMSE (t ha-1) | rref_rh error |",
        "|---|" + "---|" * (len(states) + 4),
    ]
    for name, sc in scores.items():
        cells = [f"{sc[s]['nee_rmse']:.2f}" if s in sc else "–" for s in states]
        a = sc["all"]
        rref = "–" if not np.isfinite(a["rref_err"]) else f"{100 * a['rref_err']:.0f} %"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {a['nee_rmse']:.2f} | {a['nee_nse']:.2f} | "
                     f"{a['yield_rmse']:.2f} | {rref} |")
    lines += [
        "",
        f"Held-out synthetic maize sites ({sizes.world_sites_per_state - sizes.towers_per_state - 1} per state) of "
        "a world whose parameters shift between states (IL: more soil respiration and photosynthetic capacity, "
        "NE: less); fine-tuned on "
        f"{sizes.towers_per_state} noisy towers per state with yields. NEE RMSE in gC m-2 d-1 against the "
        "noise-free truth; rref_rh error: median relative error of the learned base respiration. "
        f"{PROCESS_CALIBRATED}: the process model with the learned parameters calibrated as one set for all "
        f"sites on the same towers; {NEURAL}: no physics, the hybrid's encoder, location encoding and site "
        "attention with flux and yield heads, trained on the same towers"
        + (f" ({n_parameters[NEURAL]:,} trainable values vs {n_parameters['global, pretrained']:,} for the hybrid)."
           if n_parameters else "."),
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
