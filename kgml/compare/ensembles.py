"""Multi-model ensembles in the distribution-shift benchmark: a model named ``a+b+c`` in ``kgml bench shift
--models`` is the mean of the members' predictions, seed by seed (seed k of the ensemble = the mean of every
member's seed k), formed from their saved held-out predictions after they are run — nothing is trained for it.

Ensembles of different model classes are the standard of upscaling (FLUXCOM merges the predictions of
several machine-learning methods, Jung et al. 2020, Biogeosciences 17:1343; Tramontana et al. 2016,
Biogeosciences 13:4291): the classes' errors at an unseen site are partly independent, so their mean errs
less than each. Here the members are whole benchmark slots (a hybrid, a forest, a network), each trained on
the fold's training part as it is alone; the ensemble is scored like any slot (per-site medians and tails,
decomposition, seeds, intervals: its calibration-site predictions are formed the same way).

The mean is taken only where every member predicts (a step one member leaves NaN is NaN, never the mean of
the others), over the variables all members predict (the quantile forest's quantiles are the forest's own:
left out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import xarray as xr

from kgml.compare.figures import prediction_path
from kgml.data.splits import Split
from kgml.io import write_netcdf_atomic

__all__ = ["SEP", "ensemble_label", "is_ensemble", "members", "validate", "write_ensembles"]

#: Separator of the members in an ensemble's model name.
SEP = "+"


def is_ensemble(name: str) -> bool:
    """Whether ``name`` names a multi-model ensemble (``a+b``)."""
    return SEP in str(name)


def members(name: str) -> tuple[str, ...]:
    """The member slots of an ensemble name, in order."""
    return tuple(str(name).split(SEP))


def validate(name: str, known: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``name`` is ≥ 2 distinct known slots joined by `SEP` (no ensemble of
    ensembles)."""
    parts = members(name)
    if len(parts) < 2 or len(set(parts)) != len(parts) or any(not p for p in parts):
        raise ValueError(f"ensemble {name!r}: give at least two different models joined by {SEP!r}, e.g. rf{SEP}hybrid_global")
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ValueError(f"ensemble {name!r}: unknown members {unknown}; choose from {list(known)}")


def ensemble_label(name: str, labels: dict[str, str]) -> str:
    """The table label of an ensemble: its members' labels."""
    return "multi-model mean of " + "; ".join(labels.get(m, m) for m in members(name))


def _mean(preds: list[xr.Dataset], name: str) -> xr.Dataset:
    common = set.intersection(*(set(map(str, p.data_vars)) for p in preds))
    keep = sorted(v for v in common if not v.endswith("_qrf"))
    if not keep:
        raise ValueError(f"ensemble {name!r}: its members predict no variable in common")
    stack = xr.concat([p[keep] for p in preds], dim="member", join="inner", coords="minimal", compat="override",
                      combine_attrs="override")
    out = stack.mean("member", skipna=False, keep_attrs=True)
    for v in keep:  # CF attributes of the first member's variable (units, long_name)
        out[v].attrs = dict(preds[0][v].attrs)
    attrs = dict(preds[0].attrs)
    fit = [float(p.attrs.get("fit_seconds", float("nan"))) for p in preds]
    attrs.update(model=name, members=", ".join(members(name)), n_parameters=-1, fit_seconds=round(sum(fit), 2),
                 title=f"kgml benchmark: ensemble mean of {', '.join(members(name))}")
    out.attrs = attrs
    return out


def write_ensembles(directory: Path, folds: dict[str, list[Split]], names: Sequence[str], seeds: Sequence[int],
                    extra_paths: Sequence[Callable[[Path, str, int], Path]] = ()) -> dict[str, str]:
    """Write every ensemble of ``names`` into each fold folder, for every seed whose members' files are all
    there: the held-out predictions (`prediction_path`) and, where the members have them, the files of
    ``extra_paths`` (path functions (fold folder, model, seed) → path: the runner passes the calibration-site
    and all-years files). Rewritten on every run (so a re-run member is reflected). Returns name → status
    (``"ensemble of …"``, or how many fold-seeds lack a member)."""
    paths = (prediction_path, *extra_paths)
    status = {}
    for name in names:
        parts = members(name)
        done = missing = 0
        for kind, splits in folds.items():
            for split in splits:
                fold_dir = Path(directory) / "folds" / kind / split.name
                for s in seeds:
                    for path_of in paths:
                        files = [path_of(fold_dir, m, s) for m in parts]
                        if not all(f.exists() for f in files):
                            missing += path_of is paths[0]
                            continue
                        preds = []
                        for f in files:
                            with xr.open_dataset(f) as d:
                                preds.append(d.load())
                        write_netcdf_atomic(_mean(preds, name), path_of(fold_dir, name, s))
                        done += path_of is paths[0]
        status[name] = (f"ensemble of {', '.join(parts)}" if not missing else
                        f"ensemble of {', '.join(parts)}: {missing} fold-seeds lack a member ({done} formed)")
    return status
