"""Few towers, real data (issue 15 item 3): skill against the number of training towers on fixed held-out towers.

``kgml bench shift --train-towers 5,10,20,40[,all]``: for every selected frozen fold, derived fold kinds
``<kind>_towers<N>`` whose *training* part is a draw of N towers from that fold's training towers; validation
and test towers are the fold's own (unchanged). The draw is made by the model seed (`draw_train_towers`):
``--seeds 3`` = 3 draws, and every model of a seed sees the same draw (a paired comparison). Draws of one seed
are nested (the first N of one seeded permutation of the fold's training towers). ``all`` is the frozen fold
kind itself (every training tower). Predictions go where every bench run writes them
(``<out>/<suite>/folds/<kind>_towers<N>/<split>/<model>[_seed<k>].nc``), so the curve resumes; the tables are
the engine's (`kgml.compare.runner.score_suite`): ensemble mean over the seeds (draws) and their spread.

The slot ``hybrid_pretrained_towers`` (`TOWER_SLOTS`): the hybrid pretrained on the tower-like corpus of
`kgml.synthetic.tower_corpus` (the real drivers of towers outside every selected fold's test part, parameter
priors per IGBP class, the source tower's gap pattern), fine-tuned with hybrid_global's budget; the old
``hybrid_pretrained`` (Ames weather generator) stays for comparison. The corpus never holds a test tower's
drivers, nor any tower's flux values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.compare import runner as rn
from kgml.compare.figures import seed_suffix
from kgml.compare.suites import Suite, get_suite
from kgml.data.splits import Split
from kgml.experiment import load_run, train_run
from kgml.io import write_text_atomic
from kgml.synthetic.tower_corpus import tower_corpus

__all__ = ["TOWER_LABELS", "TOWER_SLOTS", "draw_train_towers", "parse_train_towers", "run_towers_curve",
           "towers_kind"]

#: Parameter draws per pool tower and years of its real drivers in the tower-like corpus.
TOWER_DRAWS = 3
TOWER_YEARS = 2


def parse_train_towers(text: str | Sequence) -> tuple[int | str, ...]:
    """``"5,10,20,40,all"`` → ``(5, 10, 20, 40, "all")``; a clear error for anything else."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[int | str] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if item == "all":
            out.append("all")
            continue
        try:
            n = int(item)
        except ValueError:
            raise ValueError(f"--train-towers: {item!r} is neither a positive integer nor 'all'") from None
        if n < 1:
            raise ValueError(f"--train-towers: the number of towers must be >= 1, got {n}")
        out.append(n)
    if not out:
        raise ValueError("--train-towers: no tower count given")
    return tuple(dict.fromkeys(out))


def towers_kind(kind: str, n: int | str) -> str:
    """Derived fold kind of ``n`` training towers (``all``: the frozen kind itself)."""
    return kind if n == "all" else f"{kind}_towers{int(n)}"


def draw_train_towers(split: Split, n: int, seed: int, kind: str | None = None) -> Split:
    """``split`` with its training part reduced to ``n`` towers drawn by ``seed``: the first ``n`` of one
    permutation of the sorted training towers, seeded by (seed, split name), so a seed's draws are nested
    (N=5 ⊂ N=10 ⊂ …) and identical for every model. Validation and held-out parts are unchanged. Raises
    ``ValueError`` when ``n`` exceeds the fold's training towers."""
    pool = sorted(split.train.units)
    if n > len(pool):
        raise ValueError(f"--train-towers {n}: fold {split.name!r} has only {len(pool)} training towers")
    if split.train.unit_years is not None or split.train.years is not None:
        raise ValueError(f"--train-towers draws whole towers; fold {split.name!r} trains on chosen years "
                         "(use a fold kind that holds whole sites out, e.g. site_kfold)")
    rng = np.random.default_rng([int(seed), zlib.crc32(split.name.encode())])
    chosen = [pool[i] for i in rng.permutation(len(pool))[:n]]
    info = {**split.info, "train_towers": int(n), "train_towers_draw_seed": int(seed),
            "train_towers_pool": len(pool)}
    if kind is not None:
        info["fold_kind"] = kind
    return dataclasses.replace(split, train=split.train.subset(chosen), info=info)


# ---------------------------------------------------------------------------------------------------------
# The tower-like pretraining slot
# ---------------------------------------------------------------------------------------------------------


def _test_units(split: Split) -> set[str]:
    return set(split.test.units) | set(split.ood.units)


def towers_pretrained_run(ctx: rn.FoldContext, balance: str = "none"):
    """The hybrid pretrained on the tower-like corpus of this fold and seed, cached on disk. The pool of
    driver towers is every tower outside the held-out parts of all selected folds
    (``ctx.options["pretrain_exclude"]``, set by `run_towers_curve`; else this fold's own held-out towers),
    so one corpus per seed serves every fold of the curve; a cached run whose pool holds one of this fold's
    held-out towers is an error."""
    exclude = set(ctx.options.get("pretrain_exclude") or _test_units(ctx.split))
    held = _test_units(ctx.split)
    if not held <= exclude:
        raise ValueError(f"pretrain_exclude misses held-out towers {sorted(held - exclude)[:5]} of {ctx.split.name}")
    tag = "all" if ctx.options.get("pretrain_exclude") else ctx.split.name
    folder = "pretrained_towers" if balance == "none" else f"pretrained_towers_{balance}"
    where = ctx.suite_directory / folder / f"{tag}{seed_suffix(ctx.seed)}"
    key = str(where)
    if key in ctx.shared:
        return ctx.shared[key]
    done = where / "done"
    if done.exists():
        info = json.loads((where / "history.json").read_text())
        leak = sorted(set(info["pool_towers"]) & held)
        if leak:
            raise ValueError(f"{where}: the cached corpus holds drivers of held-out towers {leak[:5]}; remove it")
        run = load_run(where)
    else:
        pool = [s for s in ctx.ds.site.values.astype(str) if s not in exclude]
        corpus = tower_corpus(ctx.ds, pool, years=1 if ctx.quick else TOWER_YEARS,
                              draws=1 if ctx.quick else TOWER_DRAWS, seed=ctx.seed, balance=balance,
                              static=tuple(a for a in ctx.suite.static if a in ctx.ds.coords))
        missing = [v for v in ctx.suite.features if v not in corpus]
        missing += [a for a in ctx.suite.static if a not in corpus.coords]
        if missing:
            raise rn.NotAvailable(f"the tower-like corpus lacks the suite's inputs {missing}")
        pcfg = rn.pretrain_config(ctx.suite, ctx.config, ctx.quick)
        pcfg = rn._replace(pcfg, name=f"{pcfg.name}-towers")
        started = time.perf_counter()
        run = train_run(pcfg, corpus, where, progress=False, description="pretrain (tower-like)")
        info = {"seconds": round(time.perf_counter() - started, 1), "n_sites": int(corpus.sizes["site"]),
                "pool_towers": sorted(set(corpus["source_tower"].values.astype(str))),
                "excluded_towers": sorted(exclude), "corpus": {k: v for k, v in corpus.attrs.items()
                                                               if isinstance(v, str | int | float)},
                "history": run.history or []}
        write_text_atomic(json.dumps(info, indent=1, default=float) + "\n", where / "history.json")
        write_text_atomic("trained\n", done)
    ctx.shared[key] = run
    return run


def _towers_slot(balance: str):
    def slot(ctx: rn.FoldContext) -> xr.Dataset:
        if ctx.suite.vegetation != "grassland" or ctx.suite.resolution == "annual":
            raise rn.NotAvailable("the tower-like corpus is for the flux-tower suites (natural-ecosystem physics)")
        pre = towers_pretrained_run(ctx, balance)
        suffix = "" if balance == "none" else f"-{balance}"
        cfg = rn._replace(ctx.config, name=f"{ctx.config.name}-pretrained-towers{suffix}")  # hybrid_global's budget
        run = ctx.train(cfg, init=rn.pretrained_init(pre, cfg, ctx.part("train")))
        pred = ctx.predict(run, ctx.heldout_ds())
        pred.attrs["init"] = f"pretrained on the tower-like corpus (kgml.synthetic.tower_corpus, balance={balance})"
        return pred

    return slot


TOWER_SLOTS = {"hybrid_pretrained_towers": _towers_slot("none"), "hybrid_pretrained_towers_ss": _towers_slot("steady_state")}
TOWER_LABELS = {"hybrid_pretrained_towers": "hybrid, pretrained on the tower-like corpus (real drivers of "
                                             "non-test towers, IGBP priors, tower gaps), fine-tuned",
                "hybrid_pretrained_towers_ss": "hybrid_pretrained_towers with the corpus in carbon steady state "
                                                "(rref_rh rescaled: mean Rh = mean NPP per site)"}


# ---------------------------------------------------------------------------------------------------------
# The curve
# ---------------------------------------------------------------------------------------------------------


def run_towers_curve(name: str, train_towers: Sequence[int | str], *, data_dir=None, out="runs/bench",
                     quick: bool = False, models: Sequence[str] | None = None, progress: bool = True,
                     results_md=None, folds_dir=None, max_folds: int | None = None,
                     fold_kinds: Sequence[str] | None = None, seed: int = 0, seeds: int = 1,
                     command: str | None = None, figures: bool = True, score_only: bool = False) -> rn.SuiteResult:
    """Run (or resume) the few-towers curve of suite ``name``: for each N of ``train_towers`` and each seed,
    every model on the selected frozen folds with N drawn training towers (`draw_train_towers`), N in
    ascending order (the smallest curves finish first); then score every derived kind (and ``all``) with
    `kgml.compare.runner.score_suite`. Returns its `SuiteResult`."""
    suite: Suite = get_suite(name)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    models = tuple(models or ("rf", "neural", "hybrid_global", "hybrid_pretrained", "hybrid_pretrained_towers"))
    slots = {**rn.SLOTS, **TOWER_SLOTS}
    unknown = sorted(set(models) - set(slots))
    if unknown:
        raise KeyError(f"unknown models {unknown}; choose from {sorted(slots)}")
    seed_list = [seed + k for k in range(seeds)]
    directory = Path(out) / suite.name
    directory.mkdir(parents=True, exist_ok=True)
    ds, folds = rn.prepare_suite(suite, data_dir=data_dir, quick=quick, folds_dir=folds_dir, max_folds=max_folds,
                                 fold_kinds=fold_kinds)
    ns = sorted((n for n in train_towers if n != "all"), key=int) + (["all"] if "all" in train_towers else [])
    for splits in folds.values():  # N larger than a fold's pool: a clear error before anything is trained
        for n in ns:
            if n != "all":
                for sp in splits:
                    draw_train_towers(sp, int(n), seed_list[0])
    scales = rn.loss_scales(suite, ds)
    cfgs = {s: rn.base_config(suite, quick=quick, seed=s, scales=scales) for s in seed_list}
    exclude = sorted({u for splits in folds.values() for sp in splits for u in _test_units(sp)})
    options = {"pretrain_exclude": exclude}
    status: dict[str, str] = {}
    shared: dict = {}
    scored: dict[str, list[Split]] = {}
    for n in ns:
        for kind, splits in folds.items():
            derived = towers_kind(kind, n)
            scored[derived] = splits if n == "all" else [draw_train_towers(sp, int(n), seed_list[0], derived)
                                                          for sp in splits]
            if score_only:
                continue
            for s in seed_list:
                drawn = splits if n == "all" else [draw_train_towers(sp, int(n), s, derived) for sp in splits]
                st = rn.run_folds(suite, ds, {derived: drawn}, directory, cfgs[s], models, quick=quick,
                                  progress=progress, slots=slots, options=options, shared=shared,
                                  cfgs={s: cfgs[s]}, desc=f"{suite.name} {derived} seed {s}")
                for m, msg in st.items():
                    status.setdefault(m, msg)
    res = rn.score_suite(suite, ds, scored, directory, models, status, results_md=None, quick=quick,
                         command=command, figures=figures, seeds=seed_list, labels={**rn.MODEL_LABELS, **TOWER_LABELS})
    curve = "## Few towers, real data: the curve\n\n" + curve_markdown(res) + "\n"
    res.markdown = curve + "\n" + res.markdown
    write_text_atomic(res.markdown, directory / "metrics.md")
    write_text_atomic(curve, directory / "towers_curve.md")
    if results_md is not None:
        rn.append_results(results_md, suite, res.markdown, command=command)
    return res


def _n_of(kind: str) -> str:
    return kind.rsplit("_towers", 1)[1] if "_towers" in kind else "all"


def curve_markdown(result: rn.SuiteResult, variable: str = "nee", stat: str = "r2_median",
                   base: str = "hybrid_global", pretrained: Sequence[str] = ("hybrid_pretrained",
                                                                              "hybrid_pretrained_towers",
                                                                              "hybrid_pretrained_towers_ss")) -> str:
    """The curve as one table: per N (training towers) and model, ``stat`` of ``variable`` of the ensemble
    mean over the seeds (draws) [min–max of the single seeds]; then the pretraining gain Δ = pretrained −
    ``base``, paired by seed (same draw): mean over seeds [min–max], and the Δ of the ensemble means."""
    rows = [r for r in result.rows if r["variable"] == variable]
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = list(dict.fromkeys(r["fold_kind"] for r in rows))
    kinds.sort(key=lambda k: (1, 0) if _n_of(k) == "all" else (0, int(_n_of(k))))
    get = {(r["model"], r["fold_kind"]): r for r in rows}
    gains = [m for m in pretrained if m in models and base in models]
    head = ["training towers", *models, *[f"Δ {m} − {base}" for m in gains]]
    lines = [f"Median over held-out towers of {variable.upper()} {stat.split('_')[0].upper().replace('R2', 'R²')} "
             "(ensemble mean over seeds = draws [min–max of single seeds]); Δ paired by seed: mean [min–max]; "
             "ens = Δ of the ensemble means.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in kinds:
        cells = [_n_of(k)]
        for m in models:
            r = get.get((m, k))
            if r is None:
                cells.append("–")
                continue
            cells.append(f"{rn._f3(r[stat])} [{rn._spread(r['seed_values'].get(stat, []))}] ({r['n_seeds']})")
        for m in gains:
            a, b = get.get((m, k)), get.get((base, k))
            if a is None or b is None:
                cells.append("–")
                continue
            d = np.asarray(a["seed_values"][stat], np.float64) - np.asarray(b["seed_values"][stat], np.float64)
            d = d[np.isfinite(d)]
            ens = a[stat] - b[stat]
            cells.append("–" if not d.size else f"{d.mean():+.3f} [{d.min():+.3f}…{d.max():+.3f}]; ens {ens:+.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_rows(result: rn.SuiteResult, variable: str = "nee", stat: str = "r2_median") -> list[dict]:
    """The curve as rows (fold kind, N, model, ensemble-mean statistic, per-seed values) from a `SuiteResult`."""
    out = []
    for r in result.rows:
        if r["variable"] != variable:
            continue
        kind = r["fold_kind"]
        n = kind.rsplit("_towers", 1)[1] if "_towers" in kind else "all"
        vals = [float(v) for v in r["seed_values"].get(stat, []) if v is not None and math.isfinite(v)]
        out.append({"fold_kind": kind, "n": n, "model": r["model"], "ensemble": float(r[stat]),
                    "seeds": vals})
    return out
