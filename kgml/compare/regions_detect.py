"""Regions detected from where the driver–flux relationship differs (the region-aware scope of the
distribution-shift benchmark), their assignment to held-out sites, agreement scores and a map.

Method (`detect_regions`):

1. A *signature* per training site describes its driver–flux relationship (`site_signatures`):
   ``"theta"`` — the site's parameter vector learned by the global hybrid (unconstrained values of the
   per-site parameters, mean over the site's windows): sites whose fluxes the process model explains with
   different parameters respond differently to the same drivers; ``"response"`` — model-free: per site and
   target, ridge-regularised least-squares coefficients of the observed flux on the standardised drivers
   (intercept + one slope per driver); ``"cycle"`` — model-free: the site's mean seasonal cycle of each
   observed flux (12 calendar-month means; among sites of similar climate it separates different responses).
   Parts join with ``+`` (``"theta+cycle"``). Columns are standardised over the training sites (constant
   columns dropped).
2. Seeded k-means (k-means++ initialisation, best of ``n_init``) for k = 2 … ``k_max``; k is chosen by the
   mean silhouette (Rousseeuw 1987 J. Comput. Appl. Math. 20:53). When no k reaches ``min_silhouette``
   the training sites form a single region (no regional structure found).
3. Held-out sites have no fluxes, so they are assigned by *where they are*: the inverse-distance-weighted
   vote of their ``n_neighbours`` nearest training sites in the standardised space of location (unit
   vector of lat/lon) and static attributes (e.g. ``mat``, ``map``).

Agreement with known regions is the adjusted Rand index (Hubert & Arabie 1985 J. Classif. 2:193).
Everything is numpy (small site counts); deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from kgml.evaluation import to_monthly
from kgml.io import pyplot, write_png_atomic

__all__ = [
    "DetectedRegions",
    "adjusted_rand_index",
    "assign_sites",
    "choose_k",
    "cycle_signature",
    "detect_regions",
    "kmeans",
    "location_features",
    "plot_region_map",
    "response_signature",
    "silhouette",
    "site_signatures",
    "theta_signature",
]

SIGNATURES = ("theta", "cycle", "response")


# ---------------------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------------------


def _standardise(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean, unit sd over rows; constant or non-finite columns dropped."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"signatures must be (site, feature), got shape {x.shape}")
    keep = np.isfinite(x).all(axis=0)
    x = x[:, keep]
    sd = x.std(axis=0)
    x = x[:, sd > 1e-9 * (np.abs(x).max(axis=0) + 1e-12)]
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 1))
    return (x - x.mean(axis=0)) / x.std(axis=0)


def _sklearn():
    try:
        import sklearn.cluster
        import sklearn.metrics
    except ImportError as err:  # pragma: no cover - scikit-learn is in the test, ml and bench set-ups
        raise ImportError("region detection needs scikit-learn: pip install 'kgml[ml]'") from err
    return sklearn


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 10, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), best of ``n_init`` starts by
    inertia (`sklearn.cluster.KMeans`). Returns (labels (n,), centroids (k, d), inertia). Deterministic for
    ``seed``; clusters are numbered by their first member."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}")
    fit = _sklearn().cluster.KMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter,
                                    random_state=seed).fit(x)
    labels, c = fit.labels_.astype(np.int64), np.asarray(fit.cluster_centers_, np.float64)
    # Canonical order: clusters numbered by their first member, so labels do not depend on the start.
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    labels = np.array([order[v] for v in labels])
    c = c[[old for old, _ in sorted(order.items(), key=lambda t: t[1])]]
    return labels, c, float(fit.inertia_)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette width s = (b − a)/max(a, b) over points (a: mean distance within the own cluster,
    b: smallest mean distance to another cluster; s = 0 for a point alone in its cluster;
    `sklearn.metrics.silhouette_score`). NaN for one cluster or one cluster per point."""
    x = np.asarray(x, np.float64)
    labels = np.asarray(labels)
    ks = np.unique(labels)
    if ks.size < 2 or ks.size >= x.shape[0]:
        return float("nan")
    return float(_sklearn().metrics.silhouette_score(x, labels, metric="euclidean"))


def choose_k(x: np.ndarray, *, k_max: int = 8, seed: int = 0, min_silhouette: float = 0.15) -> dict:
    """k-means for k = 2 … k_max (at most n − 1); the k of the largest mean silhouette, or 1 when none
    reaches ``min_silhouette``. Returns {k, labels, centroids, silhouette: {k: s}}."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    scores, fits = {}, {}
    for k in range(2, min(k_max, n - 1) + 1):
        labels, c, _ = kmeans(x, k, seed=seed)
        fits[k] = (labels, c)
        scores[k] = silhouette(x, labels)
    good = {k: s for k, s in scores.items() if np.isfinite(s) and s >= min_silhouette}
    if not good:
        return {"k": 1, "labels": np.zeros(n, np.int64), "centroids": x.mean(axis=0, keepdims=True),
                "silhouette": scores}
    k = max(good, key=lambda j: (good[j], -j))
    return {"k": k, "labels": fits[k][0], "centroids": fits[k][1], "silhouette": scores}


def adjusted_rand_index(a: Sequence, b: Sequence) -> float:
    """Adjusted Rand index of two labellings of the same items (1: identical partitions; ≈ 0: chance;
    `sklearn.metrics.adjusted_rand_score`)."""
    a, b = np.asarray(a).astype(str), np.asarray(b).astype(str)
    if a.shape != b.shape:
        raise ValueError(f"labellings differ in length: {a.shape} vs {b.shape}")
    return float(_sklearn().metrics.adjusted_rand_score(a, b))


# ---------------------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------------------


def theta_signature(pred: xr.Dataset, specs: Mapping | Sequence, names: Sequence[str] | None = None) -> np.ndarray:
    """(site, parameter) unconstrained values of the learned per-site parameters ``theta_<name>`` of a
    predictions dataset (`kgml.experiment.predict_dataset`); ``specs``: the model's `ParameterSpec`s."""
    spec_map = dict(specs) if isinstance(specs, Mapping) else {s.name: s for s in specs}
    cols = []
    for var in pred.data_vars:
        name = str(var).removeprefix("theta_")
        if not str(var).startswith("theta_") or name not in spec_map or (names is not None and name not in names):
            continue
        spec = spec_map[name]
        v = np.asarray(pred[var].values, np.float64)
        # The unconstrained coordinate the network predicts (values nudged inside the open bounds).
        eps = 1e-6 * (spec.upper - spec.lower)
        v = np.clip(np.where(np.isfinite(v), v, spec.default), spec.lower + eps, spec.upper - eps)
        cols.append(np.asarray(spec.to_unconstrained(v.astype(np.float32)), np.float64))
    if not cols:
        raise ValueError("no learned theta_<parameter> variable in the predictions")
    return np.stack(cols, axis=-1)


def response_signature(ds: xr.Dataset, targets: Sequence[str], features: Sequence[str], *,
                       resolution: str = "daily", ridge: float = 1.0,
                       stats: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """(site, n_targets·(1 + n_features)) ridge least-squares coefficients of each observed target on the
    drivers standardised with ``stats`` (name → (mean, sd); default: over ``ds``), per site. At monthly
    resolution targets ``<v>_monthly`` are regressed on monthly means of the drivers; at annual resolution
    ``crop_yield`` on the May–September means. Sites without observations of a target get NaN there."""
    drivers = {f: np.asarray(ds[f].transpose("site", "time").values, np.float64) for f in features}
    if stats is None:
        stats = {f: (float(np.nanmean(v)), float(np.nanstd(v)) or 1.0) for f, v in drivers.items()}
    if resolution == "daily":
        x = np.stack([(drivers[f] - stats[f][0]) / stats[f][1] for f in features], -1)
        ys = [np.asarray(ds[t].transpose("site", "time").values, np.float64) for t in targets]
    elif resolution == "monthly":
        tmp = xr.Dataset({f: (("site", "time"), drivers[f]) for f in features},
                         coords={"site": ds.site.values, "time": ds.time.values})
        mm = to_monthly(tmp, list(features), min_fraction=0.0)
        x = np.stack([(mm[f"{f}_monthly"].values - stats[f][0]) / stats[f][1] for f in features], -1)
        ys = []
        for t in targets:
            name = f"{t.removesuffix('_monthly')}_monthly"
            ys.append(np.asarray(ds[name].reindex(month=mm.month.values).transpose("site", "month").values, np.float64))
    elif resolution == "annual":
        month = np.asarray(ds.time.dt.month.values)
        year = np.asarray(ds.time.dt.year.values)
        years = np.asarray(ds.year.values)
        season = (month >= 5) & (month <= 9)
        x = np.stack([np.stack([np.nanmean(np.where((year == y) & season, (drivers[f] - stats[f][0]) / stats[f][1],
                                                    np.nan), axis=1) for y in years], -1) for f in features], -1)
        ys = [np.asarray(ds["crop_yield"].transpose("site", "year").values, np.float64) for _ in targets]
    else:
        raise ValueError(f"resolution must be daily, monthly or annual, got {resolution!r}")
    n_sites, n_f = x.shape[0], x.shape[-1]
    out = np.full((n_sites, len(targets), n_f + 1), np.nan)
    for i in range(n_sites):
        for j, y in enumerate(ys):
            ok = np.isfinite(y[i]) & np.isfinite(x[i]).all(-1)
            if ok.sum() < 2:
                continue
            a = np.concatenate([np.ones((ok.sum(), 1)), x[i][ok]], axis=1)
            pen = ridge * np.eye(n_f + 1)
            pen[0, 0] = 0.0  # the intercept (level) is not shrunk
            out[i, j] = np.linalg.solve(a.T @ a + pen, a.T @ y[i][ok])
    return out.reshape(n_sites, -1)


def cycle_signature(ds: xr.Dataset, targets: Sequence[str], *, resolution: str = "daily") -> np.ndarray:
    """(site, 12·n_targets) mean seasonal cycle of each observed target: the mean of each calendar month
    over the site's years (monthly means of daily values, or the ``<v>_monthly`` targets). NaN for months
    a site never observed."""
    cols = []
    for t in targets:
        base = t.removesuffix("_monthly")
        if resolution == "monthly" and f"{base}_monthly" in ds:
            da = ds[f"{base}_monthly"]
        elif base in ds and "time" in ds[base].dims:
            da = to_monthly(ds, [base], min_fraction=0.0)[f"{base}_monthly"]
        else:
            raise KeyError(f"cycle signature: neither daily {base!r} nor {base + '_monthly'!r} in the dataset")
        v = np.asarray(da.transpose("site", "month").values, np.float64)
        cal = np.asarray(da.month.values, np.int64) % 12
        for m in range(12):
            sel = v[:, cal == m]
            ok = np.isfinite(sel)
            n = ok.sum(axis=1)
            cols.append(np.where(n > 0, np.where(ok, sel, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan))
    return np.stack(cols, axis=-1)


def site_signatures(kind: str, *, ds: xr.Dataset | None = None, pred: xr.Dataset | None = None,
                    specs=None, targets: Sequence[str] = (), features: Sequence[str] = (),
                    resolution: str = "daily") -> np.ndarray:
    """Signatures of the sites of ``ds``/``pred`` (same site order): ``"theta"``, ``"cycle"``,
    ``"response"`` or several joined by ``+`` (e.g. ``"theta+cycle"``; see the module docstring). Each part
    is standardised on its own and scaled by 1/sqrt(its columns), so that parts weigh alike; NaN entries (a
    target or month a site never observed) become the column mean."""
    kinds = kind.split("+")
    unknown = sorted(set(kinds) - set(SIGNATURES))
    if unknown:
        raise ValueError(f"signature parts must be among {SIGNATURES}, got {unknown}")
    parts = []
    for k in kinds:
        if k == "theta":
            if pred is None or specs is None:
                raise ValueError("the theta signature needs the global model's predictions and parameter specs")
            x = theta_signature(pred, specs)
        elif ds is None:
            raise ValueError(f"the {k} signature needs the dataset")
        elif k == "cycle":
            x = cycle_signature(ds, targets, resolution=resolution)
        else:
            x = response_signature(ds, targets, features, resolution=resolution)
        finite = np.isfinite(x)
        with np.errstate(invalid="ignore"):
            col_mean = np.nanmean(np.where(finite, x, np.nan), axis=0) if finite.any() else np.zeros(x.shape[1])
        x = np.where(finite, x, np.where(np.isfinite(col_mean), col_mean, 0.0)[None, :])
        x = _standardise(x)
        parts.append(x / np.sqrt(x.shape[1]))
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------------------------------------------------
# Assignment of sites without fluxes
# ---------------------------------------------------------------------------------------------------------


def location_features(ds: xr.Dataset, static: Sequence[str] = ()) -> np.ndarray:
    """(site, 3 + n_static): unit vector of (lat, lon) on the sphere, then the static attributes present."""
    lat = np.deg2rad(np.asarray(ds["lat"].values, np.float64))
    lon = np.deg2rad(np.asarray(ds["lon"].values, np.float64))
    cols = [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]
    for name in static:
        if name in ds.variables and ds[name].dims == ("site",):
            cols.append(np.asarray(ds[name].values, np.float64))
    return np.stack(cols, axis=-1)


def assign_sites(train_loc: np.ndarray, train_labels: Sequence, new_loc: np.ndarray, *,
                 n_neighbours: int = 5) -> np.ndarray:
    """Labels of new sites: the inverse-distance-weighted vote of their ``n_neighbours`` nearest training
    sites in location/attribute space, each column scaled by the training sites' sd (NaN → column mean)."""
    train_loc = np.asarray(train_loc, np.float64)
    new_loc = np.asarray(new_loc, np.float64)
    labels = np.asarray(train_labels).astype(str)
    mean = np.nanmean(train_loc, axis=0)
    sd = np.nanstd(train_loc, axis=0)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)

    def norm(a):
        a = np.where(np.isfinite(a), a, mean[None, :])
        return (a - mean) / sd

    tr, nw = norm(train_loc), norm(new_loc)
    k = max(1, min(n_neighbours, tr.shape[0]))
    out = []
    for row in nw:
        d = np.sqrt(((tr - row) ** 2).sum(-1))
        idx = np.argsort(d, kind="stable")[:k]
        votes: dict[str, float] = {}
        for i in idx:
            votes[labels[i]] = votes.get(labels[i], 0.0) + 1.0 / (d[i] + 1e-6)
        out.append(max(sorted(votes), key=lambda lab: votes[lab]))
    return np.asarray(out, dtype=str)


@dataclass
class DetectedRegions:
    """Detected regions of training sites (from their fluxes) and of held-out sites (by location)."""

    labels: dict[str, str]  #: site → region label ("R1", "R2", ...)
    train_sites: tuple[str, ...]
    k: int
    silhouette: dict[int, float] = field(default_factory=dict)
    signature: str = "theta"

    def to_dict(self) -> dict:
        return {"labels": self.labels, "train_sites": list(self.train_sites), "k": self.k,
                "silhouette": {str(k): v for k, v in self.silhouette.items()}, "signature": self.signature}

    @classmethod
    def from_dict(cls, d: Mapping) -> DetectedRegions:
        return cls(dict(d["labels"]), tuple(d["train_sites"]), int(d["k"]),
                   {int(k): float(v) for k, v in d.get("silhouette", {}).items()}, d.get("signature", "theta"))

    def of(self, sites: Sequence[str]) -> np.ndarray:
        return np.asarray([self.labels[str(s)] for s in sites], dtype=str)


def detect_regions(signatures: np.ndarray, train_sites: Sequence[str], train_loc: np.ndarray,
                   new_sites: Sequence[str] = (), new_loc: np.ndarray | None = None, *, k_max: int = 8,
                   seed: int = 0, min_silhouette: float = 0.15, n_neighbours: int = 5,
                   signature: str = "theta") -> DetectedRegions:
    """Cluster the training sites' ``signatures`` (`choose_k`) and assign ``new_sites`` by location
    (`assign_sites`). Labels are ``R1`` … ``Rk``."""
    x = _standardise(signatures)
    if x.shape[0] != len(train_sites):
        raise ValueError(f"{x.shape[0]} signatures for {len(train_sites)} training sites")
    fit = choose_k(x, k_max=k_max, seed=seed, min_silhouette=min_silhouette) if len(train_sites) >= 3 else \
        {"k": 1, "labels": np.zeros(len(train_sites), np.int64), "silhouette": {}}
    train_labels = np.array([f"R{int(v) + 1}" for v in fit["labels"]])
    labels = dict(zip(map(str, train_sites), train_labels.tolist(), strict=True))
    if len(new_sites):
        got = assign_sites(train_loc, train_labels, new_loc, n_neighbours=n_neighbours)
        labels.update(zip(map(str, new_sites), got.tolist(), strict=True))
    return DetectedRegions(labels, tuple(map(str, train_sites)), int(fit["k"]),
                           {int(k): float(v) for k, v in fit["silhouette"].items()}, signature)


# ---------------------------------------------------------------------------------------------------------
# Map
# ---------------------------------------------------------------------------------------------------------


def plot_region_map(ds: xr.Dataset, regions: DetectedRegions, path, *, title: str = "detected regions",
                    truth: str | None = None) -> None:
    """PNG map (lon/lat scatter) of the detected region of every site: training sites filled, held-out
    sites hollow; with ``truth`` (a site coordinate) its labels are written next to the points."""
    plt = pyplot()
    sites = [s for s in ds.site.values.astype(str) if s in regions.labels]
    sub = ds.sel(site=sites)
    lab = regions.of(sites)
    names = sorted(set(lab.tolist()), key=lambda s: (len(s), s))
    cmap = plt.get_cmap("tab10")
    train = set(regions.train_sites)
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    lat, lon = sub["lat"].values, sub["lon"].values
    for i, name in enumerate(names):
        for is_train in (True, False):
            sel = (lab == name) & np.array([(s in train) == is_train for s in sites])
            if not sel.any():
                continue
            ax.scatter(lon[sel], lat[sel], s=30, color=cmap(i % 10) if is_train else "none",
                       edgecolors=cmap(i % 10), linewidths=1.2,
                       label=f"{name}{'' if is_train else ' (assigned)'}")
    if truth is not None and truth in sub.coords:
        for x, y, t in zip(lon, lat, sub[truth].values.astype(str), strict=True):
            ax.annotate(t, (x, y), fontsize=6, alpha=0.6, xytext=(2, 2), textcoords="offset points")
    ax.set(xlabel="longitude (°E)", ylabel="latitude (°N)", title=title)
    ax.legend(fontsize=7, loc="best")
    write_png_atomic(fig, path)
