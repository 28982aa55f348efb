"""Masked data losses, each at its observation's own resolution (daily tower and chamber fluxes, monthly
tower means, annual yields), combined into one weighted multi-task loss.

Every loss pools all observed values of a batch (sum of squared errors / number of observations), so a
window with one observation counts once, not as much as a fully observed one. Errors are divided by a
per-target ``scale`` (its typical spread, in the target's units) so tasks in different units are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = [
    "annual_sums",
    "annual_values",
    "masked_mean",
    "masked_mse",
    "monthly_means",
    "multitask_loss",
    "paired_anomaly_mse",
]


def masked_mean(values: Array, mask: Array) -> Array:
    """Mean of ``values`` over ``mask``; 0 (with zero gradient) when nothing is observed. NaN in masked
    entries does not leak into the value or the gradient (double ``where``)."""
    m = mask.astype(values.dtype)
    safe = jnp.where(mask, values, 0.0)
    n = m.sum()
    return jnp.where(n > 0, (safe * m).sum() / jnp.maximum(n, 1.0), 0.0)


def masked_mse(pred: Array, obs: Array, mask: Array, scale: float | Array = 1.0) -> Array:
    """Σ mask·((pred − obs)/scale)² / Σ mask over any shape; 0 when nothing is observed."""
    err = (jnp.where(mask, pred, 0.0) - jnp.where(mask, obs, 0.0)) / scale
    return masked_mean(err**2, mask)


def monthly_means(
    daily: Float[Array, "*batch time"], month_index: Int[Array, "*batch time"], n_months: int  # noqa: F722
) -> Float[Array, "*batch month"]:  # noqa: F722
    """Mean daily value of each month slot (``month_index`` in 0..n_months−1; −1 = outside every month), the
    resolution of monthly tower products (mean flux in gC m-2 d-1). Empty slots are 0."""
    onehot = jax.nn.one_hot(month_index, n_months, dtype=daily.dtype)  # (..., time, month)
    total = jnp.einsum("...t,...tm->...m", daily, onehot)
    count = onehot.sum(axis=-2)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def annual_values(
    daily: Float[Array, "*batch time"], days_per_year: int = 365  # noqa: F722
) -> Float[Array, "*batch year"]:  # noqa: F722
    """The value on the last day of each whole year of a window that starts on 1 January (the process
    model reports the latest harvest's yield, so the year-end value is that year's yield)."""
    n_years = daily.shape[-1] // days_per_year
    idx = jnp.arange(n_years) * days_per_year + days_per_year - 1
    return jnp.take(daily, idx, axis=-1)


def annual_sums(
    daily: Float[Array, "*batch time"], days_per_year: int = 365  # noqa: F722
) -> Float[Array, "*batch year"]:  # noqa: F722
    """Sum over each whole year of a window that starts on 1 January (e.g. annual GPP, gC m-2 yr-1)."""
    n_years = daily.shape[-1] // days_per_year
    blocks = daily[..., : n_years * days_per_year].reshape(*daily.shape[:-1], n_years, days_per_year)
    return blocks.sum(axis=-1)


def multitask_loss(
    predictions: Mapping[str, Array],
    observations: Mapping[str, Array],
    masks: Mapping[str, Bool[Array, "..."]],  # noqa: F722
    weights: Mapping[str, float],
    scales: Mapping[str, float],
) -> tuple[Array, dict[str, Array]]:
    """Σ_k w_k · masked_mse(pred_k, obs_k, mask_k, scale_k) over the targets named in ``observations``.

    Returns the total and each target's (unweighted, scaled) loss. A target without a weight gets weight 1;
    a target without a scale is an error (name it in the config or let the experiment derive it from data).
    """
    parts: dict[str, Array] = {}
    total = jnp.zeros(())
    for name, obs in observations.items():
        if name not in scales:
            raise KeyError(f"no loss scale for target {name!r} (scales given: {sorted(scales)})")
        if name not in predictions:
            raise KeyError(f"target {name!r} has no prediction (predicted: {sorted(predictions)})")
        parts[name] = masked_mse(predictions[name], obs, masks[name], scales[name])
        total = total + weights.get(name, 1.0) * parts[name]
    return total, parts


def paired_anomaly_mse(
    pred: Float[Array, "batch month"],  # noqa: F722
    obs: Float[Array, "batch month"],  # noqa: F722
    mask: Bool[Array, "batch month"],  # noqa: F722
    pair: Bool[Array, " half"],  # noqa: F722
    scale: float | Array = 1.0,
) -> Array:
    """Error of year-to-year differences: window i of the first half of the batch is paired with window
    i + half (``half = batch // 2``); where ``pair[i]`` (the same site, another year, both windows starting on
    1 January) the month-by-month differences pred_i − pred_(i+half) and obs_i − obs_(i+half) are compared on
    the months observed in both years. The site's mean seasonal cycle, and any constant bias of the site,
    cancel in the difference: what is left is the difference of the two years' anomalies, i.e. this is the
    masked MSE of the anomalies (value − the site's mean seasonal cycle), pairwise. Unpaired rows and an odd
    last window do not count; 0 when no month is paired."""
    half = pred.shape[0] // 2
    a, b = slice(0, half), slice(half, 2 * half)
    both = mask[a] & mask[b] & pair[:half, None]
    d_pred = jnp.where(both, pred[a], 0.0) - jnp.where(both, pred[b], 0.0)
    d_obs = jnp.where(both, obs[a], 0.0) - jnp.where(both, obs[b], 0.0)
    return masked_mse(d_pred, d_obs, both, scale)
