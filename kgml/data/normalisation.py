"""Feature/target scaling fitted on training data only, saved as JSON next to checkpoints (never pickle).

`Normaliser.fit` refuses a dataset that `Split.select` marked as a non-training part, so validation or
out-of-distribution statistics cannot leak into the scaler.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.io import write_text_atomic

__all__ = ["Normaliser"]

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Normaliser:
    """z = (x − mean) / std per variable, with the units the statistics were computed in."""

    mean: Mapping[str, float]
    std: Mapping[str, float]
    units: Mapping[str, str]
    fitted_on: Mapping[str, object] = field(default_factory=dict)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self.mean)

    @classmethod
    def fit(cls, ds: xr.Dataset, variables: Iterable[str] | None = None, *, split=None) -> Normaliser:
        """Fit on ``ds`` (already the training part) or on ``split.select(ds, "train")`` when ``split`` is given.

        Statistics ignore NaN. A variable with zero spread gets std 1 (with a warning) so transform is the
        identity shift. Raises if ``ds`` is marked as a val/test/ood part.
        """
        if split is not None:
            ds = split.select(ds, "train")
        part = ds.attrs.get("split_part")
        if part is not None and part != "train":
            raise ValueError(f"refusing to fit a normaliser on the {part!r} part: fit on training data only")
        names = list(variables) if variables is not None else [str(v) for v in ds.data_vars]
        mean, std, units = {}, {}, {}
        for name in names:
            if name not in ds:
                raise KeyError(f"variable {name!r} not in dataset (has {sorted(map(str, ds.data_vars))})")
            values = np.asarray(ds[name].values, dtype=np.float64)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                raise ValueError(f"variable {name!r} has no finite training values")
            m, s = float(finite.mean()), float(finite.std())
            if not s > 0:
                warnings.warn(f"variable {name!r} is constant in the training data; std set to 1", stacklevel=2)
                s = 1.0
            mean[name], std[name], units[name] = m, s, str(ds[name].attrs.get("units", ""))
        info = {
            "split": ds.attrs.get("split_name", ""),
            "part": part or "",
            "n_units": int(ds.sizes.get("site", ds.sizes.get("county", 0))),
        }
        return cls(mean, std, units, info)

    def _check(self, ds: xr.Dataset, name: str) -> None:
        got = ds[name].attrs.get("units")
        if got is not None and self.units.get(name) and got not in (self.units[name], "1"):
            raise ValueError(f"variable {name!r} is in {got!r} but the normaliser was fitted in {self.units[name]!r}")

    def transform(self, ds: xr.Dataset) -> xr.Dataset:
        """Scale every fitted variable present in ``ds``; others pass through unchanged."""
        out = ds.copy()
        for name in self.variables:
            if name in ds:
                self._check(ds, name)
                da = (ds[name] - self.mean[name]) / self.std[name]
                out[name] = da.astype(ds[name].dtype).assign_attrs(
                    {**ds[name].attrs, "units": "1", "normalised_from_units": self.units[name]}
                )
        return out

    def inverse(self, ds: xr.Dataset) -> xr.Dataset:
        """Undo `transform` (restores the original units)."""
        out = ds.copy()
        for name in self.variables:
            if name in ds:
                da = ds[name] * self.std[name] + self.mean[name]
                attrs = {k: v for k, v in ds[name].attrs.items() if k != "normalised_from_units"}
                out[name] = da.astype(ds[name].dtype).assign_attrs({**attrs, "units": self.units[name]})
        return out

    def transform_array(self, name: str, values):
        """Scale a raw array (numpy or jax) of variable ``name``."""
        return (values - self.mean[name]) / self.std[name]

    def inverse_array(self, name: str, values):
        """Unscale a normalised array (numpy or jax) of variable ``name``."""
        return values * self.std[name] + self.mean[name]

    def to_dict(self) -> dict:
        return {
            "format_version": _FORMAT_VERSION,
            "mean": dict(self.mean),
            "std": dict(self.std),
            "units": dict(self.units),
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Normaliser:
        if d.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported normaliser format version {d.get('format_version')!r}")
        return cls(dict(d["mean"]), dict(d["std"]), dict(d["units"]), dict(d.get("fitted_on", {})))

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically (temp file + rename)."""
        return write_text_atomic(json.dumps(self.to_dict(), indent=1), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normaliser:
        return cls.from_dict(json.loads(Path(path).read_text()))
