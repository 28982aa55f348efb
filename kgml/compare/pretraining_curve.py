"""Skill against the number of training sites, with and without synthetic pretraining, with seeds
(experiments/pretraining_curve): the longer study behind the demo's small curve."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kgml.compare.demo_hybrid import (
    NEURAL,
    PROCESS_CALIBRATED,
    WORLD_SHIFT,
    DemoSizes,
    _scores,
    demo_config,
    neural_config,
    process_config,
)
from kgml.config import (
    table_from_dict,
)
from kgml.data.splits import Part, Split
from kgml.experiment import (
    Run,
    corpus_spec,
    new_model,
    train_run,
)
from kgml.io import atomic_path, write_text_atomic
from kgml.synthetic import (
    STATES,
    CorpusSpec,
    make_corpus,
)

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


