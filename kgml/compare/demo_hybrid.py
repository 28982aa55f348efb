"""The demo's hybrid comparison: pretrain the hybrid (maize) on a synthetic corpus drawn from the parameter
priors, fine-tune it on a few noisy "towers" and yields of another synthetic world whose parameters shift
between the states in a known way, and compare on held-out sites with the process model alone (at its
defaults, and calibrated as one global parameter set), one global model, per-state models, the global model
without pretraining, a pure-neural model of the same size, and skill against the number of training sites.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from kgml import evaluation as ev
from kgml.config import (
    CorpusConfig,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
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
from kgml.io import atomic_path, write_text_atomic
from kgml.synthetic import (
    STATES,
    CorpusSpec,
    make_corpus,
)

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


