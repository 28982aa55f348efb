"""Machine-learning baselines without physics, fitted on the same drivers as the hybrid: feature models
(random forest, gradient boosting; the FLUXCOM-style site-level baseline) and a sequence LSTM.

Both take a Contract-A dataset, ``fit(train_ds, *, targets, features, resolution)`` and ``predict(ds)`` in the
layout of `kgml.experiment.predict_dataset` (daily ``nee`` on (site, time), monthly ``nee_monthly`` on (site,
month), ``crop_yield`` on (site, year)). They are refit from data and seeds, never saved (no pickle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr
from jaxtyping import Array, Bool, Float, PRNGKeyArray
from tqdm import tqdm

from kgml import __version__
from kgml.data.normalisation import Normaliser
from kgml.evaluation import to_monthly
from kgml.models.hybrid import TaskSpec, prepare_windows
from kgml.models.nn.encoders import LSTMEncoder

__all__ = [
    "DRIVER_FEATURES",
    "FeatureBaseline",
    "LSTMBaseline",
    "YIELD_BASELINES",
    "YieldBaseline",
    "LSTMRegressor",
    "default_features",
    "default_static",
]

#: Daily drivers the baselines use by default (those present in the dataset), as the hybrid does.
DRIVER_FEATURES = ("tair", "sw_in", "vpd", "precip", "tsoil", "swc")
RESOLUTIONS = ("daily", "monthly", "annual")
#: Growing-season months whose mean drivers describe a site-year for annual (yield) targets.
SEASON_MONTHS = (5, 6, 7, 8, 9)
_EXCLUDED_STATIC = ("lat", "lon")


def default_features(ds: xr.Dataset) -> tuple[str, ...]:
    """The `DRIVER_FEATURES` present in ``ds`` as (site, time) variables."""
    return tuple(f for f in DRIVER_FEATURES if f in ds and set(ds[f].dims) == {"site", "time"})


def default_static(ds: xr.Dataset) -> tuple[str, ...]:
    """Numeric (not boolean) site coordinates other than lat/lon: static site attributes such as ``mat``
    (°C) and ``map`` (mm yr-1) of Contract A."""
    out = []
    for name, c in ds.coords.items():
        if c.dims == ("site",) and name not in _EXCLUDED_STATIC and np.issubdtype(c.dtype, np.number) \
                and not np.issubdtype(c.dtype, np.bool_):
            out.append(str(name))
    return tuple(sorted(out))


def _check_resolution(resolution: str) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")


def _target_names(targets: Sequence[str] | str, resolution: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(base names, dataset/prediction names) of the targets at ``resolution``."""
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if not targets:
        raise ValueError("no targets given")
    base = tuple(t.removesuffix("_monthly") for t in targets)
    if resolution == "monthly":
        return base, tuple(f"{b}_monthly" for b in base)
    if resolution == "annual" and base != ("crop_yield",):
        raise ValueError(f"annual targets must be ('crop_yield',), got {targets}")
    return base, base


def _check_drivers(ds: xr.Dataset, names: Sequence[str], used: np.ndarray, what: str) -> None:
    """Raise naming the driver, the site and the first day where a driver needed for ``what`` is NaN."""
    for name in names:
        v = np.asarray(ds[name].transpose("site", "time").values, np.float64)
        bad = ~np.isfinite(v) & used
        if bad.any():
            s, t = np.argwhere(bad)[0]
            site = str(ds.site.values[s])
            per_site = bad.sum(axis=1)
            raise ValueError(
                f"driver {name!r} is NaN at site {site!r} on {int(per_site[s])} day(s) needed for {what} "
                f"(first {ds.time.values[t]}; {int((per_site > 0).sum())} site(s) affected). Fill short gaps by "
                "interpolation or drop those site-years before fitting (Contract A), or predict with "
                "missing='nan'.")


def _site_coords(ds: xr.Dataset) -> dict:
    return {str(c): ("site", v.values, dict(v.attrs)) for c, v in ds.coords.items()
            if c != "site" and v.dims == ("site",)}


def _units(ds: xr.Dataset, name: str, default: str) -> str:
    return str(ds[name].attrs.get("units", default)) if name in ds else default


# ---------------------------------------------------------------------------------------------------------
# Feature baselines (random forest, gradient boosting)
# ---------------------------------------------------------------------------------------------------------


class _Table:
    """Rows of one dataset at one resolution: features (site, step, feature) and the map day → step."""

    def __init__(self, ds: xr.Dataset, resolution: str, features: Sequence[str], static: Sequence[str],
                 static_fill: dict[str, float], season: Sequence[int], year_feature: bool = False):
        missing = [f for f in features if f not in ds]
        if missing:
            raise KeyError(f"driver(s) {missing} not in the dataset (has {sorted(map(str, ds.data_vars))})")
        if "time" not in ds.dims:
            raise ValueError("feature baselines read daily drivers: the dataset needs a 'time' dim")
        year = np.asarray(ds.time.dt.year.values, np.int64)
        month = np.asarray(ds.time.dt.month.values, np.int64)
        doy = np.asarray(ds.time.dt.dayofyear.values, np.float64)
        n_sites = ds.sizes["site"]
        drivers = np.stack([np.asarray(ds[f].transpose("site", "time").values, np.float64) for f in features],
                           axis=-1)  # (site, time, f)
        self.resolution = resolution
        if resolution == "daily":
            self.dim, self.steps = "time", ds.time.values
            self.step_of_day = np.arange(ds.sizes["time"])
            ang = 2 * np.pi * doy / 365.0
            season_feats = np.broadcast_to(np.stack([np.sin(ang), np.cos(ang)], -1), (n_sites, doy.size, 2))
            x = np.concatenate([drivers, season_feats], axis=-1)
            self.names = (*features, "doy_sin", "doy_cos")
        elif resolution == "monthly":
            codes = year * 12 + month - 1
            self.dim = "month"
            self.steps, self.step_of_day = np.unique(codes, return_inverse=True)
            x = self._means(drivers, self.step_of_day, self.steps.size)
            ang = 2 * np.pi * ((self.steps % 12) + 0.5) / 12.0
            season_feats = np.broadcast_to(np.stack([np.sin(ang), np.cos(ang)], -1), (n_sites, self.steps.size, 2))
            x = np.concatenate([x, season_feats], axis=-1)
            self.names = (*features, "month_sin", "month_cos")
        else:
            self.dim = "year"
            years = np.unique(year)
            have = [y for y in years if set(season) <= set(month[year == y].tolist())]
            self.steps = np.asarray(have, np.int64)
            index = {int(y): i for i, y in enumerate(have)}
            slot = {m: j for j, m in enumerate(season)}
            code = np.array([index.get(int(y), -1) * len(season) + slot[int(m)] if int(y) in index and int(m) in slot
                             else -1 for y, m in zip(year, month, strict=True)])
            means = self._means(drivers, code, len(have) * len(season))  # (site, year*season, f)
            x = means.reshape(n_sites, len(have), len(season) * len(features))
            self.step_of_day = np.where(code >= 0, code // len(season), -1)
            self.names = tuple(f"{f}_m{m:02d}" for m in season for f in features)
            if year_feature:  # the calendar year: the technology trend of yields
                yr = np.broadcast_to(self.steps.astype(np.float64)[None, :, None], (n_sites, len(have), 1))
                x = np.concatenate([x, yr], axis=-1)
                self.names = (*self.names, "year")
        st = []
        for name in static:
            if name not in ds.variables:
                raise KeyError(f"static attribute {name!r} not in the dataset (has {sorted(map(str, ds.coords))})")
            v = np.asarray(ds[name].values, np.float64)
            st.append(np.where(np.isfinite(v), v, static_fill.get(name, 0.0)))
        if st:
            st_a = np.broadcast_to(np.stack(st, -1)[:, None, :], (n_sites, x.shape[1], len(st)))
            x = np.concatenate([x, st_a], axis=-1)
            self.names = (*self.names, *static)
        self.x = x

    @staticmethod
    def _means(drivers: np.ndarray, step_of_day: np.ndarray, n_steps: int) -> np.ndarray:
        """Mean of the finite daily values of each step (NaN where a step has none)."""
        ok_day = step_of_day >= 0
        onehot = np.zeros((step_of_day.size, n_steps))
        onehot[np.flatnonzero(ok_day), step_of_day[ok_day]] = 1.0
        ok = np.isfinite(drivers)
        total = np.einsum("stf,tk->skf", np.where(ok, drivers, 0.0), onehot)
        count = np.einsum("stf,tk->skf", ok.astype(np.float64), onehot)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)

    def rows_touched(self, days: np.ndarray) -> np.ndarray:
        """(site, step) mask of the rows fed by at least one of the (site, time) ``days``."""
        valid = self.step_of_day >= 0
        onehot = np.zeros((int(valid.sum()), self.x.shape[1]))
        onehot[np.arange(onehot.shape[0]), self.step_of_day[valid]] = 1.0
        return (days[:, valid].astype(np.float64) @ onehot) > 0

    def days_of(self, rows: np.ndarray) -> np.ndarray:
        """(site, time) mask of the days that feed the (site, step) rows ``rows``."""
        valid = self.step_of_day >= 0
        out = np.zeros((rows.shape[0], self.step_of_day.size), bool)
        out[:, valid] = rows[:, self.step_of_day[valid]]
        return out


def _targets_on(ds: xr.Dataset, table: _Table, name: str, base: str) -> np.ndarray:
    """Observed target ``name`` on the table's (site, step) grid (NaN where not observed)."""
    n_sites = ds.sizes["site"]
    if table.resolution == "daily":
        if name not in ds:
            raise KeyError(f"target {name!r} not in the dataset")
        return np.asarray(ds[name].transpose("site", "time").values, np.float64)
    if table.resolution == "monthly":
        if name in ds and "month" in ds[name].dims:
            da = ds[name]
        elif base in ds and "time" in ds[base].dims:
            da = to_monthly(ds, [base])[name]
        else:
            raise KeyError(f"target {name!r} (site, month) or daily {base!r} not in the dataset")
        da = da.reindex(month=table.steps)
        return np.asarray(da.transpose("site", "month").values, np.float64)
    if name not in ds or "year" not in ds[name].dims:
        raise KeyError(f"target {name!r} on (site, year) not in the dataset")
    da = ds[name].reindex(year=table.steps)
    return np.asarray(da.transpose("site", "year").values, np.float64).reshape(n_sites, -1)


class FeatureBaseline:
    """A random forest (``kind="rf"``) or histogram gradient boosting (``kind="gbm"``) regressor per target
    on drivers at the target's resolution, as the site-level machine-learning upscaling of FLUXCOM
    (Tramontana et al. 2016 Biogeosciences 13:4291; Jung et al. 2020 Biogeosciences 17:1343):

    - daily targets: one row per site-day — the daily drivers, sin/cos of day of year, static attributes;
    - monthly targets: one row per site-month — monthly means of the daily drivers, sin/cos of the month,
      static attributes (like the FLUXNET RF baseline on TA, SW_IN, VPD, P and month);
    - annual ``crop_yield``: one row per site-year — the monthly means of each driver in ``season_months``
      (default May–September), static attributes, and with ``year_feature`` the calendar year (the
      technology trend; trees cannot extrapolate it: a forecast year gets the level of the latest
      training years).

    Drivers default to `default_features` (tair, sw_in, vpd, precip, + tsoil, swc where present); static
    attributes to `default_static` (missing values filled with the training mean). Rows without the target
    are dropped for fitting; a NaN driver on a row that is used raises an error naming driver and site.

    Random forest settings follow R randomForest's regression defaults (Liaw & Wiener 2002 R News 2(3):18;
    Breiman 2001 Mach. Learn. 45:5): a third of the features tried at each split, at least 5 samples per
    leaf; 500 trees. Gradient boosting is sklearn's `HistGradientBoostingRegressor` (Ke et al. 2017
    LightGBM-style binning) with ``n_estimators`` boosting iterations, no early stopping (deterministic).
    """

    def __init__(self, kind: str = "rf", *, n_estimators: int | None = None, seed: int = 0,
                 min_samples_leaf: int = 5, max_features: float = 1 / 3, learning_rate: float = 0.05,
                 static: Sequence[str] | None = None, season_months: Sequence[int] = SEASON_MONTHS,
                 n_jobs: int | None = -1, year_feature: bool = False):
        if kind not in ("rf", "gbm"):
            raise ValueError(f"FeatureBaseline kind must be 'rf' or 'gbm', got {kind!r}")
        self.kind = kind
        self.n_estimators = n_estimators if n_estimators is not None else (500 if kind == "rf" else 300)
        self.seed = seed
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.learning_rate = learning_rate
        self.static = None if static is None else tuple(static)
        self.season_months = tuple(int(m) for m in season_months)
        self.n_jobs = n_jobs
        self.year_feature = bool(year_feature)
        self.models_: dict = {}

    def __repr__(self) -> str:
        year = ", year_feature=True" if self.year_feature else ""
        return f"FeatureBaseline(kind={self.kind!r}, n_estimators={self.n_estimators}, seed={self.seed}{year})"

    def _estimator(self):
        try:
            from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("FeatureBaseline needs scikit-learn: pip install 'kgml[ml]'") from e
        if self.kind == "rf":
            return RandomForestRegressor(n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
                                         max_features=self.max_features, random_state=self.seed, n_jobs=self.n_jobs)
        return HistGradientBoostingRegressor(max_iter=self.n_estimators, learning_rate=self.learning_rate,
                                             min_samples_leaf=self.min_samples_leaf * 4, early_stopping=False,
                                             random_state=self.seed)

    def fit(self, train_ds: xr.Dataset, *, targets: Sequence[str] | str = ("nee", "gpp", "reco"),
            features: Sequence[str] | None = None, resolution: str = "daily") -> FeatureBaseline:
        """Fit one regressor per target on the rows of ``train_ds`` where it is observed."""
        _check_resolution(resolution)
        if self.year_feature and resolution != "annual":
            raise ValueError("year_feature is for annual (yield) targets; daily and monthly rows have none")
        self.resolution_ = resolution
        self.targets_, self.names_ = _target_names(targets, resolution)
        self.features_ = tuple(features) if features is not None else default_features(train_ds)
        if not self.features_:
            raise ValueError(f"no driver features: none of {DRIVER_FEATURES} is in the dataset")
        self.static_ = self.static if self.static is not None else default_static(train_ds)
        self.static_fill_ = {}
        for name in self.static_:
            if name not in train_ds.variables:
                raise KeyError(f"static attribute {name!r} not in the training dataset")
            v = np.asarray(train_ds[name].values, np.float64)
            self.static_fill_[name] = float(np.nanmean(v)) if np.isfinite(v).any() else 0.0
        table = _Table(train_ds, resolution, self.features_, self.static_, self.static_fill_, self.season_months,
                       self.year_feature)
        self.feature_names_ = table.names
        self.units_ = {}
        self.models_ = {}
        self.train_rows_ = {}
        for base, name in zip(self.targets_, self.names_, strict=True):
            y = _targets_on(train_ds, table, name, base)
            rows = np.isfinite(y)
            if not rows.any():
                raise ValueError(f"target {name!r} has no observation in the training data")
            _check_drivers(train_ds, self.features_, table.days_of(rows), f"fitting {name!r}")
            x = table.x[rows]
            if not np.isfinite(x).all():  # a step whose days are all outside the time axis
                keep = np.isfinite(x).all(axis=1)
                x, yv = x[keep], y[rows][keep]
            else:
                yv = y[rows]
            model = self._estimator()
            model.fit(x, yv)
            self.models_[name] = model
            if self.kind == "rf":  # kept for the quantile forest (`predict_quantiles`)
                self.train_rows_[name] = (x, np.asarray(yv, np.float64))
            self.units_[name] = _units(train_ds, name, _units(train_ds, base, ""))
        return self

    def predict(self, ds: xr.Dataset, *, missing: str = "raise") -> xr.Dataset:
        """Predictions for every site and step of ``ds`` (every day, month with drivers, or year with the whole
        season). ``missing="raise"``: a NaN driver is an error; ``"nan"``: those rows are predicted NaN."""
        if not self.models_:
            raise RuntimeError("FeatureBaseline.predict before fit")
        if missing not in ("raise", "nan"):
            raise ValueError(f"missing must be 'raise' or 'nan', got {missing!r}")
        table = _Table(ds, self.resolution_, self.features_, self.static_, self.static_fill_, self.season_months,
                       self.year_feature)
        if missing == "raise":
            _check_drivers(ds, self.features_, table.days_of(np.ones(table.x.shape[:2], bool)), "prediction")
        gaps = np.zeros(table.x.shape[:2], bool)
        for f in self.features_:
            gaps |= table.rows_touched(~np.isfinite(np.asarray(ds[f].transpose("site", "time").values)))
        flat = table.x.reshape(-1, table.x.shape[-1])
        ok = np.isfinite(flat).all(axis=1) & ~gaps.ravel()
        out = {}
        for name, model in self.models_.items():
            y = np.full(flat.shape[0], np.nan)
            if ok.any():
                y[ok] = model.predict(flat[ok])
            out[name] = (("site", table.dim), y.reshape(table.x.shape[:2]).astype(np.float32),
                         {"units": self.units_[name], "long_name": f"{name} predicted by {self!r}"})
        coords = {"site": ds.site.values, table.dim: table.steps, **_site_coords(ds)}

        return xr.Dataset(out, coords=coords, attrs={
            "Conventions": "CF-1.8", "title": f"kgml feature baseline predictions ({self.kind})",
            "source": f"kgml {__version__} {self!r}", "features": ", ".join(self.feature_names_),
            "time_resolution": self.resolution_})

    def predict_quantiles(self, ds: xr.Dataset, quantiles: Sequence[float]) -> xr.Dataset:
        """Quantile regression forest (Meinshausen 2006, JMLR 7:983) of the fitted random forest: the
        predictive distribution at x is the training targets weighted by w_j(x) = (1/T) Σ_t 1[j ∈ leaf_t(x)] /
        |leaf_t(x)| (all training rows, as in the paper, not only a tree's bootstrap sample); its
        ``quantiles`` per row. Returns ``<name>_qrf`` on (site, step, quantile) for every target (NaN where
        a driver is missing, as ``predict(missing="nan")``). Random forests only."""
        if self.kind != "rf" or not getattr(self, "train_rows_", None):
            raise RuntimeError("predict_quantiles needs a fitted random forest (kind='rf')")
        qs = np.asarray(quantiles, np.float64)
        if qs.ndim != 1 or not ((qs > 0) & (qs < 1)).all():
            raise ValueError(f"quantiles must be a list of values in (0, 1), got {quantiles}")
        table = _Table(ds, self.resolution_, self.features_, self.static_, self.static_fill_, self.season_months,
                       self.year_feature)
        gaps = np.zeros(table.x.shape[:2], bool)
        for f in self.features_:
            gaps |= table.rows_touched(~np.isfinite(np.asarray(ds[f].transpose("site", "time").values)))
        flat = table.x.reshape(-1, table.x.shape[-1])
        ok = np.isfinite(flat).all(axis=1) & ~gaps.ravel()
        out = {}
        for name, model in self.models_.items():
            q = np.full((flat.shape[0], qs.size), np.nan)
            if ok.any():
                x_train, y_train = self.train_rows_[name]
                q[ok] = _forest_quantiles(model, x_train, y_train, flat[ok], qs)
            out[f"{name}_qrf"] = (("site", table.dim, "quantile"), q.reshape(*table.x.shape[:2], qs.size).astype(
                np.float32), {"units": self.units_[name], "long_name": f"quantiles of {name}: quantile regression "
                              f"forest of {self!r} (Meinshausen 2006)"})
        coords = {"site": ds.site.values, table.dim: table.steps, "quantile": qs, **_site_coords(ds)}
        return xr.Dataset(out, coords=coords)


def _forest_quantiles(model, x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray, qs: np.ndarray,
                      chunk: int = 512) -> np.ndarray:
    """Weighted quantiles of ``y_train`` with the quantile-forest weights of each row of ``x``
    (`FeatureBaseline.predict_quantiles`): (rows, quantiles)."""
    from scipy import sparse

    rank = np.argsort(y_train, kind="stable")
    y_sorted = y_train[rank]
    pos_of = np.empty_like(rank)
    pos_of[rank] = np.arange(rank.size)  # training row → its position in the sorted targets
    leaves_train = model.apply(x_train)  # (n_train, T)
    n_trees = leaves_train.shape[1]
    by_tree = []
    for t in range(n_trees):
        order = np.argsort(leaves_train[:, t], kind="stable")
        ids, start, count = np.unique(leaves_train[order, t], return_index=True, return_counts=True)
        by_tree.append((ids, start, count, pos_of[order]))
    out = np.empty((x.shape[0], qs.size))
    for lo in range(0, x.shape[0], chunk):
        leaves = model.apply(x[lo:lo + chunk])
        n = leaves.shape[0]
        rows, cols, vals = [], [], []
        for t, (ids, start, count, members) in enumerate(by_tree):
            k = np.searchsorted(ids, leaves[:, t])  # every leaf of a row holds training rows
            c, s = count[k], start[k]
            offs = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
            rows.append(np.repeat(np.arange(n), c))
            cols.append(members[np.repeat(s, c) + offs])
            vals.append(np.repeat(1.0 / c, c))
        w = sparse.csr_matrix((np.concatenate(vals) / n_trees, (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n, y_sorted.size))
        w.sum_duplicates()
        w.sort_indices()
        for i in range(n):
            a, b = w.indptr[i], w.indptr[i + 1]
            cdf = np.cumsum(w.data[a:b])
            j = np.minimum(np.searchsorted(cdf, qs * cdf[-1], side="left"), b - a - 1)
            out[lo + i] = y_sorted[w.indices[a:b][j]]
    return out


# ---------------------------------------------------------------------------------------------------------
# Naive yield baselines (training-year mean, linear trends, trend + random forest on the residual)
# ---------------------------------------------------------------------------------------------------------

#: The naive yield baselines of `YieldBaseline` (CY-Bench, Paudel et al. 2025/2026 ESSD: average yield,
#: linear trend, and machine learning on the detrended yield).
YIELD_BASELINES = ("unit_mean", "unit_trend", "region_trend", "trend_rf")


def _linear_fit(years: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """(intercept at year 0, slope per year) of the ordinary least-squares line through (years, values)."""
    x = years.astype(np.float64)
    xm, ym = x.mean(), values.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (values - ym)).sum() / sxx)
    return float(ym - slope * xm), slope


class YieldBaseline:
    """Naive baselines for annual ``crop_yield`` on (site, year), fitted on the training years only:

    - ``unit_mean``: each unit's (county's, state's) mean yield of its training years;
    - ``unit_trend``: each unit's ordinary least-squares line yield = a + b·year through its training years,
      extrapolated linearly (the usual yield-trend model, e.g. Lobell & Field 2007 Environ. Res. Lett.
      2:014002; CY-Bench's linear-trend baseline);
    - ``region_trend``: one line through all training site-years of all units;
    - ``trend_rf``: ``unit_trend`` plus a random forest (`FeatureBaseline`, growing-season monthly drivers,
      no year) fitted on the training residuals y − trend: CY-Bench's "RF on the residual" (Paudel et al.
      2026 ESSD, CY-Bench: a comprehensive benchmark dataset for sub-national crop yield forecasting).

    Per-unit baselines need the unit's own training years: predicting a unit without at least
    ``min_years`` observed training years raises `ValueError` naming it (leave-unit-out folds hold whole
    units out; use ``region_trend`` there).
    """

    def __init__(self, kind: str, *, min_years: int = 3, seed: int = 0, n_estimators: int = 500,
                 features: Sequence[str] | None = None, static: Sequence[str] = (),
                 season_months: Sequence[int] = SEASON_MONTHS, n_jobs: int | None = -1):
        if kind not in YIELD_BASELINES:
            raise ValueError(f"YieldBaseline kind must be one of {YIELD_BASELINES}, got {kind!r}")
        if min_years < 2:
            raise ValueError(f"min_years must be ≥ 2 (a line needs two years), got {min_years}")
        self.kind = kind
        self.min_years = int(min_years)
        self.seed = seed
        self.n_estimators = n_estimators
        self.features = None if features is None else tuple(features)
        self.static = tuple(static)
        self.season_months = tuple(season_months)
        self.n_jobs = n_jobs
        self.fitted_: dict | None = None

    def __repr__(self) -> str:
        return f"YieldBaseline(kind={self.kind!r})"

    @staticmethod
    def _observed(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "crop_yield" not in ds or set(ds["crop_yield"].dims) != {"site", "year"}:
            raise KeyError("YieldBaseline needs 'crop_yield' on (site, year) in the dataset")
        y = np.asarray(ds["crop_yield"].transpose("site", "year").values, np.float64)
        return ds.site.values.astype(str), np.asarray(ds.year.values, np.int64), y

    def fit(self, train_ds: xr.Dataset) -> YieldBaseline:
        """Fit on the observed (finite) training site-years of ``train_ds``."""
        sites, years, y = self._observed(train_ds)
        ok = np.isfinite(y)
        if ok.sum() < 2 or np.unique(np.broadcast_to(years, y.shape)[ok]).size < 2:
            raise ValueError("YieldBaseline.fit: fewer than two observed training years")
        self.units_ = {}
        for i, s in enumerate(sites):
            if ok[i].sum() >= self.min_years:
                yy, vv = years[ok[i]], y[i, ok[i]]
                self.units_[s] = {"mean": float(vv.mean()), "line": _linear_fit(yy, vv), "n_years": int(yy.size)}
        yrs = np.broadcast_to(years, y.shape)[ok]
        self.region_line_ = _linear_fit(yrs, y[ok])
        self.training_years_ = (int(yrs.min()), int(yrs.max()))
        self.units_attr_ = _units(train_ds, "crop_yield", "t ha-1")
        self.rf_ = None
        if self.kind == "trend_rf":
            # the residual forest learns from the units that have a line; a unit with fewer than min_years
            # observed yields (e.g. a flux tower in a yield study's training data) has no trend to remove
            lined = np.array([s in self.units_ for s in sites])
            if not lined.any():
                raise ValueError(f"{self!r}.fit: no training unit has {self.min_years} observed years for its trend")
            resid = y[lined] - self._level(sites[lined], years)
            rds = train_ds.isel(site=np.flatnonzero(lined))
            rds["crop_yield"] = (("site", "year"), resid.astype(np.float32), dict(train_ds["crop_yield"].attrs))
            self.rf_ = FeatureBaseline("rf", n_estimators=self.n_estimators, seed=self.seed, static=self.static,
                                       season_months=self.season_months, n_jobs=self.n_jobs)
            self.rf_.fit(rds.transpose("site", "year", ...), targets=("crop_yield",), features=self.features,
                         resolution="annual")
        self.fitted_ = {"kind": self.kind}
        return self

    def _level(self, sites: np.ndarray, years: np.ndarray) -> np.ndarray:
        """(site, year) prediction of the mean/trend part."""
        yrs = years.astype(np.float64)[None, :]
        if self.kind == "region_trend":
            a, b = self.region_line_
            return np.broadcast_to(a + b * yrs, (sites.size, years.size)).copy()
        missing = [s for s in sites if s not in self.units_]
        if missing:
            raise ValueError(f"{self!r}: unit(s) {missing[:5]} have fewer than {self.min_years} observed training "
                             "years (per-unit baselines need the unit's own years; use 'region_trend' for "
                             "held-out units)")
        if self.kind == "unit_mean":
            return np.stack([np.full(years.size, self.units_[s]["mean"]) for s in sites])
        return np.stack([self.units_[s]["line"][0] + self.units_[s]["line"][1] * yrs[0] for s in sites])

    def predict(self, ds: xr.Dataset, *, missing: str = "nan") -> xr.Dataset:
        """``crop_yield`` (site, year) for every site and year of ``ds`` (``trend_rf``: years whose season
        drivers are incomplete are NaN with ``missing="nan"``)."""
        if self.fitted_ is None:
            raise RuntimeError("YieldBaseline.predict before fit")
        sites = ds.site.values.astype(str)
        years = np.asarray(ds.year.values, np.int64)
        level = self._level(sites, years)
        if self.rf_ is not None:
            resid = self.rf_.predict(ds, missing=missing)["crop_yield"].reindex(year=years)
            level = level + np.asarray(resid.transpose("site", "year").values, np.float64)

        coords = {"site": ds.site.values, "year": years, **_site_coords(ds)}
        return xr.Dataset(
            {"crop_yield": (("site", "year"), level.astype(np.float32),
                            {"units": self.units_attr_, "long_name": f"crop_yield predicted by {self!r}"})},
            coords=coords, attrs={"Conventions": "CF-1.8", "title": f"kgml naive yield baseline ({self.kind})",
                                  "source": f"kgml {__version__} {self!r}",
                                  "training_years": f"{self.training_years_[0]}-{self.training_years_[1]}"})


# ---------------------------------------------------------------------------------------------------------
# LSTM baseline
# ---------------------------------------------------------------------------------------------------------


class LSTMRegressor(eqx.Module):
    """LSTM over one site window of normalised drivers (+ static attributes repeated each day) → a linear
    read-out of the daily targets (normalised) from each hidden state."""

    encoder: eqx.Module
    head: eqx.nn.Linear

    def __init__(self, in_features: int, hidden: int, n_out: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.encoder = LSTMEncoder(in_features, hidden, key=k1)
        self.head = eqx.nn.Linear(hidden, n_out, key=k2)

    def __call__(self, x: Float[Array, "time feature"], mask: Bool[Array, " time"]) -> Float[Array, "time out"]:  # noqa: F722
        return jax.vmap(self.head)(self.encoder(x, mask))


def _window_inputs(data) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(data.inputs.x, np.float32)
    st = np.asarray(data.inputs.static, np.float32)
    st = np.broadcast_to(st[:, None, :], (x.shape[0], x.shape[1], st.shape[-1]))
    return np.concatenate([x, st], axis=-1), np.asarray(data.inputs.x_mask, bool)


class LSTMBaseline:
    """A sequence LSTM from daily drivers to daily fluxes, set up like the global daily soil CO2 efflux LSTM
    of Smykalov, Li, Vargas & Bond-Lamberty (EarthArXiv preprint 8619, "Towards a global deep learning model
    for daily soil CO2 efflux"; COSORE sites; median held-out-site NSE 0.02, KGE 0.30): sequence windows of
    daily drivers, the mean squared error on observed days only (targets standardised with training
    statistics), Adam, early stopping on a validation split of the training sites. LSTM: Hochreiter &
    Schmidhuber 1997 Neural Comput. 9:1735; static attributes repeated each step as in Kratzert et al. 2019
    HESS 23:5089.

    Inputs: `default_features` (or ``features``) standardised on the training sites, sin/cos of day of year,
    and the standardised static attributes (`default_static`) repeated each day — windows (whole years from
    1 January, 29 February dropped) come from `kgml.models.hybrid.prepare_windows`, as for the hybrid.
    ``resolution="monthly"`` trains the daily output on monthly means (``<v>_monthly``: the daily predictions
    averaged over each observed month). Annual targets (yield) are left to `FeatureBaseline`.
    Deterministic for a given ``seed`` (initialisation, validation sites and batches).
    """

    def __init__(self, hidden: int = 32, *, window_days: int = 365, steps: int = 2000, batch_size: int = 16,
                 learning_rate: float = 1e-3, val_fraction: float = 0.2, eval_every: int = 50, patience: int = 10,
                 seed: int = 0, static: Sequence[str] | None = None, progress: bool = False):
        self.hidden = hidden
        self.window_days = window_days
        self.steps = steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.val_fraction = val_fraction
        self.eval_every = eval_every
        self.patience = patience
        self.seed = seed
        self.static = None if static is None else tuple(static)
        self.progress = progress
        self.model_: LSTMRegressor | None = None
        self.history_: list[dict] = []

    def __repr__(self) -> str:
        return f"LSTMBaseline(hidden={self.hidden}, window_days={self.window_days}, seed={self.seed})"

    # --- data ------------------------------------------------------------------------------------------

    def _task(self):
        if self.resolution_ == "daily":
            return TaskSpec(daily=self.targets_, monthly=(), annual=False)
        return TaskSpec(daily=(), monthly=self.targets_, annual=False)

    def _windows(self, ds: xr.Dataset, *, require_targets: bool):
        return prepare_windows(ds, features=self.features_, static=self.static_, task=self._task(),
                               normaliser=self.normaliser_, window_days=self.window_days,
                               require_targets=require_targets)

    def _check_windows(self, ds: xr.Dataset, data, what: str) -> None:
        bad = ~np.asarray(data.inputs.x_mask, bool)
        if not bad.any():
            return
        w, t = np.argwhere(bad)[0]
        site = str(data.sites[int(data.site[w])])
        when = data.times[int(data.start[w]) + int(t)]
        names = [f for f in self.features_
                 if not np.isfinite(float(ds[f].sel(site=site, time=when).values))]
        raise ValueError(f"driver {names[0] if names else self.features_!r} is NaN at site {site!r} on {when} "
                         f"(and {int(bad.sum()) - 1} more window-day(s)) needed for {what}. Fill short gaps by "
                         "interpolation or drop those site-years (Contract A), or predict with missing='nan'.")

    def _standardised_targets(self, data) -> tuple[np.ndarray, np.ndarray]:
        t = data.targets
        if self.resolution_ == "daily":
            y, m = np.asarray(t.daily, np.float64), np.asarray(t.daily_mask, bool)
        else:
            y, m = np.asarray(t.monthly, np.float64), np.asarray(t.monthly_mask, bool)
        y = (y - self.target_mean_) / self.target_std_
        return np.where(m, y, 0.0).astype(np.float32), m

    # --- fit -------------------------------------------------------------------------------------------

    def fit(self, train_ds: xr.Dataset, *, targets: Sequence[str] | str = ("nee", "gpp", "reco"),
            features: Sequence[str] | None = None, resolution: str = "daily",
            val_ds: xr.Dataset | None = None) -> LSTMBaseline:
        """Train on the windows of ``train_ds`` with observations; early stopping on ``val_ds`` or, by
        default, on a seeded ``val_fraction`` of the training sites (none when there is a single site)."""

        _check_resolution(resolution)
        if resolution == "annual":
            raise ValueError("LSTMBaseline predicts daily fluxes (daily or monthly targets); use FeatureBaseline "
                             "for annual yields")
        self.resolution_ = resolution
        base, names = _target_names(targets, resolution)
        self.targets_, self.names_ = base, names
        self.features_ = tuple(features) if features is not None else default_features(train_ds)
        if not self.features_:
            raise ValueError(f"no driver features: none of {DRIVER_FEATURES} is in the dataset")
        self.static_ = self.static if self.static is not None else default_static(train_ds)
        for name in names:
            if name not in train_ds:
                raise KeyError(f"target {name!r} not in the training dataset (has {sorted(map(str, train_ds.data_vars))})")
        rng = np.random.default_rng([self.seed, 1])
        sites = train_ds.site.values
        if val_ds is None and self.val_fraction > 0 and sites.size > 1:
            n_val = max(1, int(round(self.val_fraction * sites.size)))
            perm = rng.permutation(sites.size)
            val_ds = train_ds.isel(site=np.sort(perm[:n_val]))
            train_ds = train_ds.isel(site=np.sort(perm[n_val:]))
        self.normaliser_ = Normaliser.fit(train_ds, list(self.features_) + list(self.static_))
        obs = [np.asarray(train_ds[n].values, np.float64) for n in names]
        self.target_mean_ = np.array([np.nanmean(v) if np.isfinite(v).any() else 0.0 for v in obs])
        self.target_std_ = np.array([max(float(np.nanstd(v)), 1e-3) if np.isfinite(v).any() else 1.0 for v in obs])
        self.units_ = {b: _units(train_ds, n, _units(train_ds, b, "")) for b, n in zip(base, names, strict=True)}

        train = self._windows(train_ds, require_targets=True)
        self._check_windows(train_ds, train, "fitting")
        x_tr, m_tr = _window_inputs(train)
        y_tr, ym_tr = self._standardised_targets(train)
        idx_tr = np.asarray(train.targets.month_index, np.int32)
        val = None
        if val_ds is not None:
            try:
                vw = self._windows(val_ds, require_targets=True)
            except ValueError as e:  # no validation window with observations
                raise ValueError(f"LSTMBaseline validation sites {list(val_ds.site.values)[:5]}: {e}; pass "
                                 "val_ds or val_fraction=0") from e
            self._check_windows(val_ds, vw, "validation")
            val = (*_window_inputs(vw), *self._standardised_targets(vw), np.asarray(vw.targets.month_index, np.int32))

        key = jax.random.PRNGKey(self.seed)
        model = LSTMRegressor(x_tr.shape[-1], self.hidden, len(names), key=key)
        optimiser = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(self.learning_rate))
        opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))
        monthly = resolution == "monthly"
        n_slots = y_tr.shape[1] if monthly else 0

        def sse(model, x, m, y, ym, idx):
            """Sum of squared standardised errors and number of observations, per target."""
            out = jax.vmap(model)(x, m)  # (batch, time, n_out), standardised
            if monthly:
                onehot = jax.nn.one_hot(idx, n_slots, dtype=out.dtype)  # (batch, time, slot); slot -1 → zeros
                days = onehot.sum(axis=1)[..., None]
                out = jnp.einsum("bts,bto->bso", onehot, out) / jnp.maximum(days, 1.0)
            err = jnp.where(ym, out - y, 0.0) ** 2
            return err.sum(axis=(0, 1)), ym.sum(axis=(0, 1))

        def combine(total, count):
            present = count > 0
            return jnp.sum(jnp.where(present, total / jnp.maximum(count, 1), 0.0)) / jnp.maximum(present.sum(), 1)

        def loss_fn(model, x, m, y, ym, idx):
            return combine(*sse(model, x, m, y, ym, idx))

        @eqx.filter_jit
        def step(model, opt_state, x, m, y, ym, idx):
            loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, m, y, ym, idx)
            updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
            return eqx.apply_updates(model, updates), opt_state, loss

        evaluate = eqx.filter_jit(sse)

        def full_loss(model, arrays) -> float:
            """The loss over all windows, in fixed-size chunks (one compilation; padding carries no weight)."""
            x, m, y, ym, idx = arrays
            n = x.shape[0]
            size = min(self.batch_size, n)
            total = np.zeros(len(names))
            count = np.zeros(len(names))
            for i in range(0, n, size):
                sl = np.minimum(np.arange(i, i + size), n - 1)
                keep = (np.arange(i, i + size) < n)[:, None, None]
                t, c = evaluate(model, x[sl], m[sl], y[sl], ym[sl] & keep, idx[sl])
                total += np.asarray(t, np.float64)
                count += np.asarray(c, np.float64)
            return float(combine(jnp.asarray(total), jnp.asarray(count)))

        train_arrays = (x_tr, m_tr, y_tr, ym_tr, idx_tr)
        history = [{"step": 0, "train_loss": full_loss(model, train_arrays),
                    "val_loss": full_loss(model, val) if val is not None else math.nan}]
        best, best_loss, waited = model, history[0]["val_loss"], 0
        n = x_tr.shape[0]
        size = min(self.batch_size, n)
        steps = range(1, self.steps + 1)
        if self.progress:
            steps = tqdm(steps, desc="LSTM baseline", unit="step")
        for s in steps:
            b = rng.choice(n, size=size, replace=False)
            model, opt_state, _ = step(model, opt_state, x_tr[b], m_tr[b], y_tr[b], ym_tr[b], idx_tr[b])
            if s % self.eval_every == 0 or s == self.steps:
                entry = {"step": s, "train_loss": full_loss(model, train_arrays),
                         "val_loss": full_loss(model, val) if val is not None else math.nan}
                history.append(entry)
                if val is None:
                    best = model
                elif entry["val_loss"] < best_loss or not math.isfinite(best_loss):
                    best, best_loss, waited = model, entry["val_loss"], 0
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
        self.model_, self.history_ = best, history
        return self

    # --- predict ---------------------------------------------------------------------------------------

    def predict(self, ds: xr.Dataset, *, missing: str = "raise", batch_size: int = 64) -> xr.Dataset:
        """Daily predictions of every target on (site, time) for every whole window of ``ds`` (29 February
        dropped, as for the hybrid); with monthly targets also ``<v>_monthly`` on (site, month)."""
        if self.model_ is None:
            raise RuntimeError("LSTMBaseline.predict before fit")
        if missing not in ("raise", "nan"):
            raise ValueError(f"missing must be 'raise' or 'nan', got {missing!r}")
        data = self._windows(ds, require_targets=False)
        if missing == "raise":
            self._check_windows(ds, data, "prediction")
        x, m = _window_inputs(data)
        forward = eqx.filter_jit(lambda model, x, m: jax.vmap(model)(x, m))
        n = x.shape[0]
        size = min(batch_size, n)
        parts = []
        for i in range(0, n, size):
            sl = np.minimum(np.arange(i, i + size), n - 1)
            parts.append(np.asarray(forward(self.model_, x[sl], m[sl]))[: min(size, n - i)])
        y = np.concatenate(parts).astype(np.float64) * self.target_std_ + self.target_mean_
        y = np.where(m[..., None], y, np.nan)
        n_s, n_t = len(data.sites), len(data.times)
        win = x.shape[1]
        out = {}
        for j, name in enumerate(self.targets_):
            arr = np.full((n_s, n_t), np.nan, np.float32)
            for w in range(n):
                arr[data.site[w], data.start[w] : data.start[w] + win] = y[w, :, j]
            out[name] = (("site", "time"), arr, {"units": self.units_[name],
                                                 "long_name": f"{name} predicted by {self!r}"})

        sel = ds.sel(site=list(data.sites))
        res = xr.Dataset(out, coords={"site": list(data.sites), "time": data.times, **_site_coords(sel)}, attrs={
            "Conventions": "CF-1.8", "title": "kgml LSTM baseline predictions",
            "source": f"kgml {__version__} {self!r}", "time_resolution": "daily"})
        if self.resolution_ == "monthly":
            res = res.merge(to_monthly(res, list(self.targets_), min_fraction=1.0))
        return res
