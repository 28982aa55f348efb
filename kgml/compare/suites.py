"""The distribution-shift suites: what data, which targets at which resolution, which process model, and
which frozen folds (`benchmarks/folds/<suite>.json`) every model is compared on.

A `Suite` loads a Contract-A dataset (`kgml.data.assemble` builders for real data, `kgml.synthetic` for
``synthetic_shift``), names its targets, the site coordinate that defines regions for the per-region scopes,
and its fold kinds (site-grouped k-fold, leave-region-out, leave-years-out). Folds are generated once with
a fixed seed from the full site list, frozen as JSON, and always loaded from there.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.data import assemble
from kgml.data.disaggregate import smooth_monthly_drivers
from kgml.data.soil_respiration import read_srdb
from kgml.data.splits import (
    Part,
    Split,
    anomalous_year_out,
    climate_extrapolation,
    kfold_by_site,
    leave_region_out,
    load_splits,
    save_splits,
    years_kfold_within_sites,
)
from kgml.data.srdb_prior import IGBP_TO_SRDB, fit_srdb_prior
from kgml.paths import find_data_dir
from kgml.synthetic import STATES, CorpusSpec, make_corpus

__all__ = [
    "FOLDS_DIR",
    "SUITES",
    "FoldKind",
    "Suite",
    "SuiteUnavailable",
    "check_folds",
    "fold_units",
    "folds_path",
    "forecast_origins",
    "freeze_folds",
    "freeze_new_fold_kinds",
    "IGBP_INDICATORS",
    "get_suite",
    "igbp_indicators",
    "evergreen_fraction",
    "EVERGREEN_FRACTION",
    "load_folds",
    "make_folds",
    "restrict_split",
    "select_part",
    "year_blocks",
]

#: Frozen folds shipped with the repository.
FOLDS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "folds"
FOLD_SEED = 20261121


class SuiteUnavailable(RuntimeError):
    """A suite's data (or the builder that reads it) is not available here; the message says what is missing."""


# ---------------------------------------------------------------------------------------------------------
# Fold kinds
# ---------------------------------------------------------------------------------------------------------


def year_blocks(ds: xr.Dataset, k: int = 5, *, seed: int = 0, val_fraction: float = 0.15) -> list[Split]:
    """Leave-years-out: the years are cut into ``k`` contiguous blocks; block i (all sites) is ``test``, a
    seeded ``val_fraction`` of the other years is ``val`` (all sites), the rest ``train``."""
    if "year" in ds.dims:
        years = sorted(int(y) for y in ds.year.values)
    else:
        years = sorted(set(ds.time.dt.year.values.tolist()))
    if not 2 <= k <= len(years):
        raise ValueError(f"year_blocks: k must be between 2 and the number of years ({len(years)}), got {k}")
    units = sorted(ds.site.values.astype(str).tolist())
    blocks = np.array_split(np.asarray(years), k)
    out = []
    for i, block in enumerate(blocks):
        rest = [y for y in years if y not in set(block.tolist())]
        rng = np.random.default_rng([seed, i])
        n_val = max(1, int(round(val_fraction * len(rest)))) if len(rest) > 2 else 0
        val = sorted(rng.choice(rest, size=n_val, replace=False).tolist()) if n_val else []
        train = [y for y in rest if y not in set(val)]
        out.append(Split(f"years{k}_block{i}_seed{seed}", "year_blocks", seed, "site", Part(units, train),
                         Part(units if val else (), val or None), Part(units, block.tolist()), Part(),
                         {"block": i, "k": k, "years": [int(block[0]), int(block[-1])]}))
    return out


def forecast_origins(ds: xr.Dataset, origins: Sequence[int], horizon: int, *, seed: int = 0,
                     val_years: int = 2) -> list[Split]:
    """Forecasting: for each origin Y, every unit's years ≤ Y are known and the next ``horizon`` years
    Y+1 … Y+horizon are ``test`` (all units) — yields are forecast forward in time, as in Khaki et al. (2020,
    Front. Plant Sci. 10:1750: train to 2015, test 2016–2018) and CY-Bench (Paudel et al. 2026 ESSD). The last
    ``val_years`` known years (Y − val_years + 1 … Y) are ``val`` (early stopping; models without it train on
    them too), the earlier known years ``train``. No test year is ever in ``train`` or ``val``."""
    if "year" in ds.dims:
        years = sorted(int(y) for y in ds.year.values)
    else:
        years = sorted(set(ds.time.dt.year.values.tolist()))
    if horizon < 1 or val_years < 0:
        raise ValueError(f"forecast_origins: horizon must be ≥ 1 and val_years ≥ 0, got {horizon}, {val_years}")
    units = sorted(ds.site.values.astype(str).tolist())
    out = []
    for origin in origins:
        known = [y for y in years if y <= origin]
        test = [y for y in years if origin < y <= origin + horizon]
        if len(known) < val_years + 3 or len(test) < horizon:
            raise ValueError(f"forecast origin {origin}: {len(known)} known years (need ≥ {val_years + 3}) and "
                             f"{len(test)} of {horizon} test years in {years[0]}–{years[-1]}")
        val = known[len(known) - val_years:] if val_years else []
        train = known[:len(known) - val_years]
        out.append(Split(f"forecast{horizon}_from{origin}", "forecast_origins", seed, "site", Part(units, train),
                         Part(units if val else (), val or None), Part(units, test), Part(),
                         {"origin": int(origin), "horizon": int(horizon), "years": [test[0], test[-1]],
                          "train_years": [train[0], train[-1]]}))
    return out


@dataclass(frozen=True)
class FoldKind:
    """A family of splits: ``make(ds, seed) -> [Split]``; the held-out sites are part ``heldout``
    (``"test"`` for k-fold and year blocks, ``"ood"`` for leave-region-out)."""

    name: str
    description: str
    make: Callable[[xr.Dataset, int], list[Split]]
    heldout: str = "test"


def _kfold(k: int, val_fraction: float = 0.15) -> Callable[[xr.Dataset, int], list[Split]]:
    def make(ds, seed):
        return kfold_by_site(ds, min(k, ds.sizes["site"]), seed=seed, val_fraction=val_fraction)

    return make


def _lro(coord: str, min_units: int = 1) -> Callable[[xr.Dataset, int], list[Split]]:
    def make(ds, seed):
        return leave_region_out(ds, coord, seed=seed, val_fraction=0.15, test_fraction=0.0, min_units=min_units)

    return make


def _climate(by: str, quantile: float) -> Callable[[xr.Dataset, int], list[Split]]:
    """One split holding out the sites at a climate extreme (`kgml.data.splits.climate_extrapolation`)."""
    def make(ds, seed):
        return [climate_extrapolation(ds, by=by, quantile=quantile, seed=seed, val_fraction=0.15, test_fraction=0.0)]

    return make


def _anomalous_year(by: str) -> Callable[[xr.Dataset, int], list[Split]]:
    """One split holding out each site's most anomalous year (`kgml.data.splits.anomalous_year_out`)."""
    def make(ds, seed):
        return [anomalous_year_out(ds, by=by, seed=seed)]

    return make


def _years_within(k: int) -> Callable[[xr.Dataset, int], list[Split]]:
    """k folds over each site's own years (`kgml.data.splits.years_kfold_within_sites`)."""
    def make(ds, seed):
        return years_kfold_within_sites(ds, k, seed=seed)

    return make


def _years(k: int) -> Callable[[xr.Dataset, int], list[Split]]:
    def make(ds, seed):
        return year_blocks(ds, k, seed=seed)

    return make


def _forecast(origins: Sequence[int], horizon: int) -> Callable[[xr.Dataset, int], list[Split]]:
    def make(ds, seed):
        return forecast_origins(ds, origins, horizon, seed=seed)

    return make


# ---------------------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    """One benchmark: data, targets, process model, regions and fold kinds.

    ``targets``: base names scored (``nee``, ``gpp``, ``reco``, ``rsoil``, ``crop_yield``) at ``resolution``
    (daily, monthly, annual); ``observed``: target → observation variable in the dataset (the noise-free
    truth ``true_<v>`` for synthetic data); ``region``: site coordinate of the per-region scopes and of skill by
    region; ``truth_region``: known regions the detected ones are compared with (ARI); ``static``: numeric
    site attributes every model reads (and held-out sites are assigned to detected regions by, with lat/lon).
    """

    name: str
    description: str
    load: Callable[[Path | None, bool, Sequence[str] | None], xr.Dataset]
    vegetation: str
    targets: tuple[str, ...]
    resolution: str
    region: str
    folds: tuple[FoldKind, ...]
    features: tuple[str, ...] = ("tair", "sw_in", "vpd", "precip")
    static: tuple[str, ...] = ()
    observed: Mapping[str, str] = field(default_factory=dict)
    truth_region: str = ""
    anchor: str = ""
    dataset_folder: str = ""
    quick_sites: int = 6
    signature: str = "theta+cycle"
    #: frozen folds of another suite on the same units (a variant of it), "" = its own
    folds_name: str = ""
    #: targets the physics-based models (hybrids, process model) are trained on; () = ``targets``. The
    #: others are scored without being trained on (e.g. GPP and Reco of a hybrid trained on NEE alone);
    #: models that can only reach a flux by being trained on it (RF, GBM, LSTM, same-size network) are
    #: trained on every target: the "told" reference.
    train_targets: tuple[str, ...] = ()
    #: Reference year of the technology trend of yield suites (`kgml.models.hybrid.TechnologyTrend`); 0: none.
    trend_reference_year: int = 0
    #: The published error of the observations, for the measurement-noise ceiling of the decomposition
    #: (`kgml.evaluation.noise_ceiling`): ``(data_dir, sites) → {target: (σ independent between steps, σ shared
    #: by a site-year or None)}`` on the target's (site, step) axes; None: not published with the data.
    uncertainty: Callable[[Path | None, Sequence[str]], dict] | None = None

    def observed_name(self, target: str) -> str:
        return self.observed.get(target, target)

    def config_dict(self, *, told: bool = False) -> dict:
        """The `kgml.config.ExperimentConfig` fields that follow from the suite (data section): trained on
        ``train_targets``, or on every target with ``told``."""
        trained = self.targets if told or not self.train_targets else self.train_targets
        daily = trained if self.resolution == "daily" else ()
        monthly = trained if self.resolution == "monthly" else ()
        return {"data": {"source": "(kgml bench)", "vegetation": self.vegetation, "features": list(self.features),
                         "static": list(self.static), "daily_targets": list(daily), "monthly_targets": list(monthly),
                         "yield_target": self.resolution == "annual", "region": self.region, "window_days": 365}}


#: The synthetic known shift: Illinois soil respiration 1.8× faster at the reference temperature and C4
#: photosynthetic capacity lower (unconstrained offsets of the bounded transforms, see
#: `kgml.synthetic.sample_parameters`).
SYNTHETIC_SHIFT = {"IL": {"rref_rh": 0.8, "vmax25_c4": -0.6}}


def _load_synthetic(data_dir, quick, sites):
    spec = CorpusSpec(states=STATES, vegetation=("maize",), sites_per_block=6 if quick else 8, years=1 if quick else 2,
                      state_shift=SYNTHETIC_SHIFT, seed=0)
    ds = make_corpus(spec)
    ds.attrs["title"] = "kgml synthetic_shift suite: three states, Illinois shifted"
    ds.attrs["state_shift"] = repr(SYNTHETIC_SHIFT)
    return _subset(ds, sites)


def _subset(ds: xr.Dataset, sites: Sequence[str] | None) -> xr.Dataset:
    if sites is None:
        return ds
    keep = [s for s in ds.site.values.astype(str) if s in set(sites)]
    return ds.sel(site=keep)


def _assemble(name: str):
    return getattr(assemble, name)


def _data_path(data_dir, folder: str) -> Path:
    root = Path(data_dir) if data_dir is not None else find_data_dir()
    if root is None or not (Path(root) / folder).exists():
        raise SuiteUnavailable(f"dataset folder {folder!r} not found under {root} (set --data-dir or KGML_DATA)")
    return Path(root)


def _load_fluxnet(data_dir, quick, sites):
    root = _data_path(data_dir, "fluxnet2015_subset_mm")
    ds = _assemble("fluxnet_monthly")(root, sites=list(sites) if sites else None)
    return evergreen_fraction(_subset(ds, sites))


#: Evergreen share of the canopy by IGBP class (Loveland & Belward 1997 IJRS 18:3289; Friedl et al. 2010 Remote
#: Sens. Environ. 114:168, the MCD12Q1 legend): evergreen needleleaf and broadleaf forests "remain green all
#: year" (1); mixed forests are by definition a mix in which neither deciduous nor evergreen trees exceed 60 %
#: (0.5); every other class 0 — including the shrublands, whose definition allows either, so the class says
#: nothing (they keep the growing-season index).
EVERGREEN_FRACTION: dict[str, float] = {"ENF": 1.0, "EBF": 1.0, "MF": 0.5}


def evergreen_fraction(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the site coordinate ``evergreen`` (0–1, `EVERGREEN_FRACTION` of its ``igbp`` class), read by
    the evergreen phenology (``[model] phenology = "gsi_evergreen"``, `process_models.phenology.EvergreenGSI`).
    Raises naming the dataset's coordinates when it has no ``igbp``."""
    classes = _igbp_classes(ds, "evergreen_fraction")
    e = np.array([EVERGREEN_FRACTION.get(str(c), 0.0) for c in classes], np.float32)
    return ds.assign_coords(evergreen=("site", e, {
        "units": "1", "long_name": "evergreen share of the canopy",
        "comment": "from the IGBP class (kgml.compare.suites.EVERGREEN_FRACTION): ENF, EBF 1; MF 0.5; others 0"}))


#: Vegetation type as static inputs (``fluxnet_mm_igbp``): indicator coordinate → the IGBP classes
#: (Loveland & Belward 1997 IJRS 18:3289) it marks. One indicator per class with ≥ 3 towers in the FLUXNET2015
#: SUBSET (ENF 33, GRA 25, DBF 17, WET 13, CRO 13, EBF 10, OSH 9, MF 6, SAV 5, WSA 4); the rare classes join the
#: class of the same structure and phenology (closed shrubland CSH with open shrubland, deciduous needleleaf DNF
#: with deciduous broadleaf, cropland/natural mosaic CVM with cropland). Snow/ice, barren, urban and water
#: (SNO, BSV, URB, WAT) have no indicator (all zero), as has a site without a class.
IGBP_INDICATORS: dict[str, tuple[str, ...]] = {
    "igbp_enf": ("ENF",), "igbp_ebf": ("EBF",), "igbp_dbf": ("DBF", "DNF"), "igbp_mf": ("MF",),
    "igbp_sh": ("OSH", "CSH"), "igbp_wsa": ("WSA",), "igbp_sav": ("SAV",), "igbp_gra": ("GRA",),
    "igbp_cro": ("CRO", "CVM"), "igbp_wet": ("WET",),
}


def _igbp_classes(ds: xr.Dataset, who: str) -> np.ndarray:
    """The sites' IGBP classes, upper case without blanks; raises naming ``who`` and the dataset's coordinates
    when it has no ``igbp`` site coordinate."""
    if "igbp" not in ds.coords:
        raise KeyError(f"{who}: the dataset has no 'igbp' site coordinate (has {sorted(map(str, ds.coords))})")
    return np.char.upper(np.char.strip(ds["igbp"].values.astype(str)))


def igbp_indicators(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the 0/1 site coordinates of `IGBP_INDICATORS` made from its ``igbp`` site coordinate
    (the vegetation type as numeric static attributes every model can read). Raises naming the dataset's
    coordinates when it has no ``igbp``."""
    classes = _igbp_classes(ds, "igbp_indicators")
    out = {}
    for name, members in IGBP_INDICATORS.items():
        flag = np.isin(classes, members).astype(np.float32)
        out[name] = ("site", flag, {"units": "1", "long_name": f"IGBP vegetation class {' or '.join(members)}",
                                    "comment": "1 where the site's IGBP class is one of the listed, else 0"})
    return ds.assign_coords(out)


def _fluxnet_uncertainty(data_dir, sites):
    """FLUXNET2015 monthly NEE: random uncertainty per month and the u*-threshold spread shared by a year's months
    (`kgml.data.assemble.fluxnet_monthly_uncertainty`)."""
    u = _assemble("fluxnet_monthly_uncertainty")(_data_path(data_dir, "fluxnet2015_subset_mm"), sites=sites)
    return {"nee": (u["nee_randunc"], u["nee_ustar_sd"])}


def _load_fluxnet_soil(data_dir, quick, sites):
    """`_load_fluxnet` with the towers' measured soil water (``swc``, ``swc_measured``; `fluxnet_monthly`
    with ``soil_water``)."""
    root = _data_path(data_dir, "fluxnet2015_subset_mm")
    ds = _assemble("fluxnet_monthly")(root, sites=list(sites) if sites else None, soil_water=True)
    return evergreen_fraction(_subset(ds, sites))


def _load_fluxnet_memory(data_dir, quick, sites):
    """`_load_fluxnet` plus the antecedent drivers (`kgml.data.assemble.antecedent_drivers`)."""
    return _assemble("antecedent_drivers")(_load_fluxnet(data_dir, quick, sites))


def _load_fluxnet_smooth(data_dir, quick, sites):
    """`_load_fluxnet` with the month-held drivers disaggregated to smooth daily series that keep every monthly
    mean (`kgml.data.disaggregate.smooth_monthly_drivers`)."""
    return smooth_monthly_drivers(_load_fluxnet(data_dir, quick, sites))


def _load_fluxnet_igbp(data_dir, quick, sites):
    """`_load_fluxnet` plus the IGBP indicators (`igbp_indicators`)."""
    return igbp_indicators(_load_fluxnet(data_dir, quick, sites))


def _load_cosore(data_dir, quick, sites):
    root = _data_path(data_dir, "cosore")
    fn = _assemble("cosore_daily")
    if sites:
        datasets = sorted({str(s).split("/")[0] for s in sites})  # site IDs are "<dataset>[/<port>/...]"
        try:
            ds = fn(root, datasets=datasets)
        except (KeyError, ValueError):
            ds = fn(root)
    else:
        ds = fn(root)
    return _subset(ds, sites)


def _load_cosore_srdb(data_dir, quick, sites):
    """`_load_cosore` plus ``rs_srdb``: each site's soil-respiration level predicted from its climate and
    ecosystem type by the SRDB prior (`kgml.data.srdb_prior`), fitted on SRDB records farther than 10 km from
    every loaded chamber site (no site's own record informs its prior)."""
    ds = _load_cosore(data_dir, quick, sites)
    srdb = read_srdb(_data_path(data_dir, "srdb") / "srdb")
    prior = fit_srdb_prior(srdb, exclude_lat=ds["lat"].values, exclude_lon=ds["lon"].values, exclude_km=10.0)
    eco = [IGBP_TO_SRDB.get(str(v), "") for v in ds["igbp"].values]
    level = prior.daily_mean(ds["mat"].values, ds["map"].values, eco).astype(np.float32)
    attrs = {"units": "g m-2 d-1", "long_name": "soil respiration level from the SRDB climate prior",
             "comment": "carbon; Raich et al. (2002) form fitted on SRDB annual Rs: " + json.dumps(prior.to_dict())}
    return ds.assign_coords(rs_srdb=("site", level, attrs))


def _with_district(ds: xr.Dataset) -> xr.Dataset:
    """Northern/central/southern Illinois by latitude terciles of the counties (the per-region unit)."""
    if "district" in ds.coords:
        return ds
    lat = np.asarray(ds["lat"].values, np.float64)
    lo, hi = np.nanpercentile(lat, [100 / 3, 200 / 3])
    labels = np.where(lat < lo, "south", np.where(lat < hi, "central", "north"))
    return ds.assign_coords(district=("site", labels.astype(str)))


def _load_il_corn(data_dir, quick, sites):
    root = _data_path(data_dir, "khaki2020_corn_il40_weekly_daymet")
    fn = _assemble("il_corn")
    ds = fn(root, counties=list(sites) if sites else None) if sites else fn(root)
    return _with_district(_subset(ds, sites))


def _load_state_yield(data_dir, quick, sites):
    root = _data_path(data_dir, "agridat_us_corn_soy_state")
    ds = _assemble("state_yield")(root, crop="corn")
    return _subset(ds, sites)


SUITES: dict[str, Suite] = {}


def _register(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


_register(Suite(
    name="synthetic_shift",
    description="synthetic three-state maize corpus (kgml.synthetic, IA/IL/NE) with a known Illinois parameter "
                f"shift {SYNTHETIC_SHIFT}; scored against the noise-free truth",
    load=_load_synthetic, vegetation="maize", targets=("nee", "gpp", "reco"), resolution="daily", region="state",
    folds=(FoldKind("site_kfold", "5-fold grouped by site", _kfold(5)),
           FoldKind("leave_state_out", "each state held out", _lro("state"), heldout="ood")),
    features=("tair", "sw_in", "vpd", "precip", "tsoil"), static=("soil_carbon",),
    observed={"nee": "true_nee", "gpp": "true_gpp", "reco": "true_reco"}, truth_region="state", quick_sites=9,
))
#: Fold kinds of the FLUXNET monthly suites (a variant names the ones it runs; all share fluxnet_mm's frozen folds).
_FLUXNET_KINDS = {k.name: k for k in (
    FoldKind("site_kfold", "10-fold grouped by site", _kfold(10)),
    FoldKind("leave_continent_out", "each continent held out", _lro("continent", 3), heldout="ood"),
    FoldKind("leave_climate_zone_out", "each climate zone held out", _lro("climate_zone", 3), heldout="ood"),
    FoldKind("leave_igbp_out", "each IGBP class held out", _lro("igbp", 3), heldout="ood"),
    FoldKind("warmest_sites_out", "the warmest 20 % of sites (mean annual temperature) held out",
             _climate("warm", 0.2), heldout="ood"),
    FoldKind("driest_sites_out", "the driest 20 % of sites (mean annual precipitation) held out",
             _climate("dry", 0.2), heldout="ood"),
    FoldKind("most_arid_sites_out", "the most arid 20 % of sites (aridity index P/PET of the record, UNEP 1992; "
             "kgml.data.regions.site_aridity) held out", _climate("arid", 0.2), heldout="ood"),
    FoldKind("driest_year_out", "each site's year of largest relative precipitation deficit held out "
             "(trained on its other years)", _anomalous_year("dry")),
    FoldKind("hottest_year_out", "each site's year of largest positive air-temperature anomaly held out "
             "(trained on its other years)", _anomalous_year("hot")),
    FoldKind("years_within_sites", "5-fold over each site's own years: known sites, unseen years (every "
             "eligible year predicted once, trained on the site's other years)", _years_within(5)),
)}


def _fluxnet_suite(name: str, description: str, load, kinds: Sequence[str], anchor: str, **fields) -> Suite:
    """A FLUXNET2015 monthly suite: NEE, GPP and Reco of the grassland physics at monthly resolution, regions by
    IGBP group, site climate as static inputs, the published NEE error; a variant (name ≠ fluxnet_mm) runs on
    fluxnet_mm's frozen folds."""
    fields.setdefault("static", ("mat", "map"))
    if name != "fluxnet_mm":
        fields.setdefault("folds_name", "fluxnet_mm")
    return _register(Suite(
        name=name, description=description, load=load, vegetation="grassland", targets=("nee", "gpp", "reco"),
        resolution="monthly", region="igbp_group", folds=tuple(_FLUXNET_KINDS[k] for k in kinds), anchor=anchor,
        dataset_folder="fluxnet2015_subset_mm", uncertainty=_fluxnet_uncertainty, **fields))


_fluxnet_suite(
    "fluxnet_mm",
    "FLUXNET2015 SUBSET monthly (kgml.data.assemble.fluxnet_monthly): NEE, GPP, Reco at monthly resolution; daily "
    "models scored on monthly means",
    _load_fluxnet, tuple(_FLUXNET_KINDS),
    "500-tree random forest on TA, SW_IN, VPD, P and month: R² 0.20 for NEE under site-grouped 10-fold CV "
    "(measured in issue 5); targets: hybrid NEE R² ≥ 2× the random forest's, GPP R² ≥ 0.75")
_fluxnet_suite(
    "fluxnet_mm_igbp",
    "fluxnet_mm with the vegetation type as knowledge: indicators of the site's IGBP class "
    "(kgml.compare.suites.IGBP_INDICATORS) as static inputs of every model (the hybrid's site embedding and "
    "parameter heads, the same-size network, RF, GBM, LSTM), beside MAT and MAP",
    _load_fluxnet_igbp, ("site_kfold", "leave_igbp_out", "driest_sites_out"),
    "issue 20 item 4: the lever 'IGBP as a static input' against fluxnet_mm (same frozen folds, same models, "
    "without the indicators)",
    static=("mat", "map", *IGBP_INDICATORS))
_fluxnet_suite(
    "fluxnet_mm_soil",
    "fluxnet_mm with the towers' measured soil state as inputs of every model: soil water (SWC_F_MDS_1, filled "
    "with the all-tower mean where not measured, with a 0/1 swc_measured indicator) and soil temperature "
    "(TS_F_MDS_1, air temperature where not measured)",
    _load_fluxnet_soil, ("site_kfold", "warmest_sites_out", "driest_sites_out", "driest_year_out",
                         "years_within_sites"),
    "issue 20 item 4: the lever 'measured soil water and soil temperature' against fluxnet_mm (same frozen folds, "
    "same models, without them)",
    features=("tair", "sw_in", "vpd", "precip", "tsoil", "swc", "swc_measured"))
_fluxnet_suite(
    "fluxnet_mm_memory",
    "fluxnet_mm with the memory of the weather as inputs of every model: precipitation of the last 90 and 365 "
    "days relative to the site mean and air temperature of the last 90 days "
    "(kgml.data.assemble.antecedent_drivers)",
    _load_fluxnet_memory, ("site_kfold", "years_within_sites"),
    "issue 20 item 4: the lever 'antecedent precipitation and soil-water memory for drought anomalies' against "
    "fluxnet_mm (same frozen folds, same models, without them)",
    features=("tair", "sw_in", "vpd", "precip", "tsoil", "precip_rel_90d", "precip_rel_365d", "tair_90d"))
_fluxnet_suite(
    "fluxnet_mm_smooth",
    "fluxnet_mm with sub-monthly disaggregation: air and soil temperature, shortwave radiation and VPD as smooth "
    "daily series that keep every monthly mean (Killworth 1996 mean-preserving interpolation; "
    "kgml.data.disaggregate) instead of each month's mean held on every day; precipitation stays a uniform "
    "daily rate",
    _load_fluxnet_smooth, ("site_kfold", "years_within_sites"),
    "issue 20 item 4: the lever 'a documented sub-monthly disaggregation' against fluxnet_mm (same frozen folds, "
    "same models; models reading monthly means of the drivers see the same inputs)")
_fluxnet_suite(
    "fluxnet_mm_nee_only",
    "fluxnet_mm with the physics-based models trained on monthly NEE alone; GPP and Reco scored against "
    "FLUXNET's night-time partitioning (GPP_NT_VUT_REF, RECO_NT_VUT_REF) at held-out sites; RF, GBM, LSTM and "
    "the same-size network are trained on GPP and Reco too (the told reference)",
    _load_fluxnet, ("site_kfold",),
    "issue 15 target: the hybrid trained on NEE alone reaches held-out GPP median R² ≥ 0.70 and Reco median R² "
    "≥ 0.55",
    train_targets=("nee",))
_register(Suite(
    name="cosore_daily",
    description="COSORE daily soil respiration (kgml.data.assemble.cosore_daily), soil-respiration physics "
                "driven by tsoil and swc",
    load=_load_cosore, vegetation="soil", targets=("rsoil",), resolution="daily", region="igbp",
    folds=(FoldKind("leave_site_out", "10-fold grouped by site: every site held out once", _kfold(10)),),
    # Site climate (mean annual temperature and precipitation of the record) as static inputs: the global
    # soil-respiration level scales with them (Raich & Schlesinger 1992 Tellus B 44:81; Hashimoto et al. 2015
    # Biogeosciences 12:4121), and the chamber records carry no other site attribute.
    features=("tsoil", "swc", "tair", "precip"), static=("mat", "map"),
    anchor="global LSTM (Smykalov et al., EarthArXiv 8619): median test NSE 0.02, KGE 0.30 over 82 sites; "
           "target: median leave-site-out KGE ≥ 0.5 and NSE ≥ 0.3",
    dataset_folder="cosore", quick_sites=4,
))
_register(Suite(
    name="cosore_daily_srdb",
    description="cosore_daily with knowledge of the level: each site's Rs level predicted from climate and "
                "ecosystem type by a prior fitted on the SRDB annual records (kgml.data.srdb_prior) as a static "
                "input of every model",
    load=_load_cosore_srdb, vegetation="soil", targets=("rsoil",), resolution="daily", region="igbp",
    folds=(FoldKind("leave_site_out", "10-fold grouped by site: every site held out once", _kfold(10)),),
    features=("tsoil", "swc", "tair", "precip"), static=("mat", "map", "rs_srdb"),
    anchor="issue 15 target: median leave-site-out KGE ≥ 0.35 and NSE ≥ 0.05 (global LSTM 0.30 / 0.02)",
    dataset_folder="cosore", quick_sites=4, folds_name="cosore_daily",
))
_register(Suite(
    name="il_corn_yield",
    description="Illinois county corn yield, 40 counties (Khaki et al. 2020; weekly Daymet → daily drivers)",
    load=_load_il_corn, vegetation="maize", targets=("crop_yield",), resolution="annual", region="district",
    folds=(FoldKind("leave_county_out", "10-fold grouped by county", _kfold(10)),
           FoldKind("leave_years_out", "5 blocks of consecutive years", _years(5)),
           FoldKind("forecast", "train on years ≤ Y, forecast Y+1…Y+5 (Y = 1998, 2003, 2008)",
                    _forecast((1998, 2003, 2008), 5))),
    static=(), dataset_folder="khaki2020_corn_il40_weekly_daymet", quick_sites=4, trend_reference_year=1996,
))
_register(Suite(
    name="state_yield",
    description="Thompson (1969) corn yields and weather of IA, IL, IN, MO, OH (agridat thompson.cornsoy): "
                "per-state vs global",
    load=_load_state_yield, vegetation="maize", targets=("crop_yield",), resolution="annual", region="state",
    folds=(FoldKind("leave_years_out", "5 blocks of consecutive years", _years(5)),
           FoldKind("leave_state_out", "each state held out", _kfold(5)),
           FoldKind("forecast", "train on years ≤ Y, forecast Y+1…Y+6 (Y = 1944, 1950, 1956)",
                    _forecast((1944, 1950, 1956), 6))),
    static=(), dataset_folder="agridat_us_corn_soy_state", quick_sites=5, trend_reference_year=1946,
))


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; suites are {sorted(SUITES)}")
    return SUITES[name]


# ---------------------------------------------------------------------------------------------------------
# Frozen folds
# ---------------------------------------------------------------------------------------------------------


def make_folds(suite: Suite, ds: xr.Dataset, *, seed: int = FOLD_SEED) -> list[Split]:
    """Every split of every fold kind of ``suite`` on ``ds`` (``info["fold_kind"]`` names the kind)."""
    out = []
    for kind in suite.folds:
        for split in kind.make(ds, seed):
            out.append(dataclasses.replace(split, info={**split.info, "fold_kind": kind.name,
                                                        "heldout": kind.heldout}))
    return out


def folds_path(suite: Suite, folds_dir: str | os.PathLike | None = None) -> Path:
    return Path(folds_dir or FOLDS_DIR) / f"{suite.folds_name or suite.name}.json"


def load_folds(suite: Suite, folds_dir: str | os.PathLike | None = None) -> list[Split]:
    path = folds_path(suite, folds_dir)
    if not path.exists():
        raise FileNotFoundError(f"no frozen folds at {path}; create them once with `kgml bench shift --suite "
                                f"{suite.name} --freeze-folds`")
    return load_splits(path)


def freeze_folds(suite: Suite, ds: xr.Dataset, folds_dir: str | os.PathLike | None = None) -> Path:
    return save_splits(make_folds(suite, ds), folds_path(suite, folds_dir))


def freeze_new_fold_kinds(suite: Suite, ds: xr.Dataset, folds_dir: str | os.PathLike | None = None,
                          *, seed: int = FOLD_SEED) -> list[str]:
    """Add the fold kinds of ``suite`` that its frozen folds lack, leaving every frozen split as it is (the
    JSON format and the order of existing entries unchanged; new kinds appended). Returns the added kinds."""
    path = folds_path(suite, folds_dir)
    frozen = load_folds(suite, folds_dir)
    have = {s.info.get("fold_kind") for s in frozen}
    added, new = [], []
    for kind in suite.folds:
        if kind.name in have:
            continue
        added.append(kind.name)
        new += [dataclasses.replace(split, info={**split.info, "fold_kind": kind.name, "heldout": kind.heldout})
                for split in kind.make(ds, seed)]
    if new:
        save_splits([*frozen, *new], path)
    return added


def fold_units(splits: Sequence[Split]) -> list[str]:
    """Every unit named by the splits (the site list they were made from)."""
    units = set()
    for s in splits:
        for p in ("train", "val", "test", "ood"):
            units |= set(s.part(p).units)
    return sorted(units)


def check_folds(splits: Sequence[Split], ds: xr.Dataset) -> None:
    """Frozen folds must be made from this dataset's sites: same unit set, each held out once per kind
    (site-grouped kinds)."""
    have = set(ds.site.values.astype(str).tolist())
    named = set(fold_units(splits))
    if named != have:
        raise ValueError(f"frozen folds and data disagree: {len(named - have)} fold sites not in the data "
                         f"(e.g. {sorted(named - have)[:3]}), {len(have - named)} data sites in no fold "
                         f"(e.g. {sorted(have - named)[:3]}); regenerate with --freeze-folds")


def restrict_split(split: Split, sites: Sequence[str]) -> Split | None:
    """``split`` with every part limited to ``sites`` (quick runs on a few sites); None when no training
    or no held-out site is left."""
    keep = set(map(str, sites))
    parts = {p: split.part(p).subset(keep) for p in ("train", "val", "test", "ood")}
    heldout = split.info.get("heldout", "test")
    if not parts["train"].units or not parts[heldout].units:
        return None
    return dataclasses.replace(split, **parts)


def select_part(ds: xr.Dataset, split: Split, part: str) -> xr.Dataset:
    """`Split.select` (kept for callers of the bench API: it restricts every time axis of a part)."""
    return split.select(ds, part)
