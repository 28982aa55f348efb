"""Simulation-to-reality gap of fluxnet_mm's pretraining corpora (issue 15 item 3).

    python benchmarks/towers_gap.py [--max-folds 3] [--seed 0] [--out FILE.md]

The old corpus (`kgml.compare.runner.pretrain_corpus`: Ames weather generator, warmed/rained grid) and the
tower-like corpus (`kgml.synthetic.tower_corpus` over the towers outside the test part of the first
``--max-folds`` site_kfold folds, as `kgml bench shift --train-towers` builds it) against all 125 towers'
monthly drivers and fluxes (`kgml.compare.towers_gap`)."""

from __future__ import annotations

import argparse
import sys

from kgml.compare import runner as rn
from kgml.compare.suites import get_suite
from kgml.compare.towers_curve import TOWER_DRAWS, TOWER_YEARS
from kgml.compare.towers_gap import gap_markdown, gap_rows
from kgml.io import write_text_atomic
from kgml.synthetic.tower_corpus import tower_corpus


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    a = p.parse_args(argv)
    suite = get_suite("fluxnet_mm")
    ds, folds = rn.prepare_suite(suite, data_dir=a.data_dir, max_folds=a.max_folds, fold_kinds=["site_kfold"])
    held = {u for sp in folds["site_kfold"] for u in (*sp.test.units, *sp.ood.units)}
    pool = [s for s in ds.site.values.astype(str) if s not in held]
    old = rn.pretrain_corpus(suite, ds, seed=a.seed)
    new = tower_corpus(ds, pool, years=TOWER_YEARS, draws=TOWER_DRAWS, seed=a.seed)
    ss = tower_corpus(ds, pool, years=TOWER_YEARS, draws=TOWER_DRAWS, seed=a.seed, balance="steady_state")
    md = gap_markdown(gap_rows(ds, {"old corpus (Ames generator)": old, "tower-like corpus": new,
                                    "tower-like, steady state": ss}))
    head = (f"Towers: all {ds.sizes['site']} fluxnet_mm towers (monthly values). Old corpus: {old.sizes['site']} "
            f"sites. Tower-like corpus: {new.sizes['site']} sites from {new.attrs['towers_used']} towers outside "
            f"the test part of {len(folds['site_kfold'])} site_kfold folds (skipped: "
            f"{new.attrs['towers_skipped'] or 'none'}). Steady state: {ss.attrs['balance']}. Seed {a.seed}.\n\n")
    print(head + md)
    if a.out:
        write_text_atomic(head + md + "\n", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
