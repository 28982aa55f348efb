"""ParameterSpec transforms: bounds by construction, round trips, errors that name the parameter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models.parameters import (
    ParameterBoundsError,
    ParameterSpec,
    UnknownParameterError,
    check_parameters,
    collect_specs,
    constrain,
    make_parameters,
    unconstrain,
)

LINEAR = ParameterSpec("q10", 2.0, 1.0, 4.0, "-", "test")
LOGLIN = ParameterSpec("rref", 1.0, 1e-3, 1e2, "gC m-2 d-1", "test", transform="loglogit")


@pytest.mark.parametrize("spec", [LINEAR, LOGLIN])
def test_physical_values_never_leave_bounds_for_extreme_inputs(spec):
    u = jnp.array([-1e30, -1e6, -50.0, -1.0, 0.0, 1.0, 50.0, 1e6, 1e30, -jnp.inf, jnp.inf])
    x = spec.to_physical(u)
    assert np.all(np.isfinite(np.asarray(x)))
    assert np.all(np.asarray(x) >= spec.lower) and np.all(np.asarray(x) <= spec.upper)
    assert float(spec.to_physical(-jnp.inf)) == pytest.approx(spec.lower, rel=1e-6)
    assert float(spec.to_physical(jnp.inf)) == pytest.approx(spec.upper, rel=1e-6)


@pytest.mark.parametrize("spec", [LINEAR, LOGLIN])
def test_round_trip_over_the_range(spec):
    key = jax.random.PRNGKey(0)
    frac = jax.random.uniform(key, (200,), minval=0.01, maxval=0.99)
    if spec.transform == "loglogit":
        x = jnp.exp(jnp.log(spec.lower) + frac * (jnp.log(spec.upper) - jnp.log(spec.lower)))
    else:
        x = spec.lower + frac * (spec.upper - spec.lower)
    back = spec.to_physical(spec.to_unconstrained(x))
    np.testing.assert_allclose(np.asarray(back), np.asarray(x), rtol=2e-4)


def test_values_at_the_bounds_map_to_finite_unconstrained_values():
    for spec in (LINEAR, LOGLIN):
        u = spec.to_unconstrained(jnp.array([spec.lower, spec.upper]))
        assert np.all(np.isfinite(np.asarray(u)))
        assert float(u[0]) < -10 and float(u[1]) > 10


def test_default_is_the_image_of_default_unconstrained():
    for spec in (LINEAR, LOGLIN):
        assert float(spec.to_physical(spec.default_unconstrained)) == pytest.approx(spec.default, rel=1e-5)


def test_gradient_of_transform_is_finite_everywhere_and_matches_finite_differences():
    for spec in (LINEAR, LOGLIN):
        grad = jax.vmap(jax.grad(lambda u, s=spec: s.to_physical(u)))
        u = jnp.linspace(-30.0, 30.0, 61)
        g = np.asarray(grad(u))
        assert np.all(np.isfinite(g)) and np.all(g >= 0)
        with jax.enable_x64(True):
            u0 = jnp.float64(0.3)
            h = 1e-6
            fd = (spec.to_physical(u0 + h) - spec.to_physical(u0 - h)) / (2 * h)
            assert float(jax.grad(spec.to_physical)(u0)) == pytest.approx(float(fd), rel=1e-6)


def test_out_of_bounds_user_value_names_the_parameter():
    with pytest.raises(ParameterBoundsError, match="'q10'.*outside its bounds"):
        make_parameters([LINEAR, LOGLIN], q10=5.0)
    with pytest.raises(ParameterBoundsError, match="'rref'"):
        unconstrain([LINEAR, LOGLIN], {"rref": np.array([1.0, -1.0])})
    with pytest.raises(ParameterBoundsError, match="non-finite"):
        check_parameters([LINEAR], {"q10": float("nan")})


def test_unknown_and_missing_names_are_errors():
    with pytest.raises(UnknownParameterError, match="q11"):
        make_parameters([LINEAR], q11=2.0)
    with pytest.raises(UnknownParameterError, match="missing.*rref"):
        check_parameters([LINEAR, LOGLIN], {"q10": 2.0})
    with pytest.raises(UnknownParameterError):
        constrain([LINEAR], {"nope": 0.0})


def test_spec_validation_rejects_inconsistent_declarations():
    with pytest.raises(ValueError, match="strictly inside"):
        ParameterSpec("a", 5.0, 0.0, 1.0, "-", "x")
    with pytest.raises(ValueError, match="lower > 0"):
        ParameterSpec("a", 0.5, 0.0, 1.0, "-", "x", transform="loglogit")
    with pytest.raises(ValueError, match="unknown transform"):
        ParameterSpec("a", 0.5, 0.0, 1.0, "-", "x", transform="tanh")


def test_collect_specs_merges_identical_and_rejects_conflicts():
    assert collect_specs([LINEAR], [LINEAR, LOGLIN]) == (LINEAR, LOGLIN)
    other = ParameterSpec("q10", 2.0, 1.0, 5.0, "-", "other source")
    with pytest.raises(ValueError, match="declared twice"):
        collect_specs([LINEAR], [other])


def test_constrain_unconstrain_are_inverse_on_mappings():
    theta = make_parameters([LINEAR, LOGLIN], q10=1.7, rref=0.05)
    back = constrain([LINEAR, LOGLIN], unconstrain([LINEAR, LOGLIN], theta))
    for k in theta:
        assert float(back[k]) == pytest.approx(float(theta[k]), rel=1e-4)


def test_default_unconstrained_is_plain_python_and_works_inside_jit():
    for spec in (LINEAR, LOGLIN):
        expected = float(spec.to_unconstrained(spec.default))
        assert isinstance(spec.default_unconstrained, float)
        assert spec.default_unconstrained == pytest.approx(expected, rel=1e-5, abs=1e-6)
        out = jax.jit(lambda x, s=spec: x + s.default_unconstrained)(jnp.float32(0.0))
        assert float(out) == pytest.approx(expected, rel=1e-5, abs=1e-6)
