"""geometry's closed forms for AdamG, SGDG and AdaGradG: ``cosine``, ``sum_norm``,
``transport_along`` and ``exp_map``'s given ``delta_norm``, against NumPy and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spherax import geometry, groups

RNG = np.random.default_rng(5)


def _layout(x):
  return groups.per_output().layout(x.shape)


def _unit_and_tangent(shape, seed):
  rng = np.random.default_rng(seed)
  y = rng.normal(size=shape)
  y /= np.linalg.norm(y, axis=0)
  m = rng.normal(size=shape)
  m -= (m * y).sum(0) * y
  return y, m


def test_cosine_and_sum_norm_match_numpy():
  a, b = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4))
  with jax.enable_x64(True):
    layout = _layout(a)
    ab, an, bn = geometry.dot(a, b, layout), geometry.norm(a, layout), geometry.norm(b, layout)
    cos = geometry.cosine(ab, an, bn)
    want = (a * b).sum(0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)
    np.testing.assert_allclose(np.ravel(cos), want, rtol=1e-14)
    np.testing.assert_allclose(
        np.ravel(geometry.sum_norm(an, bn, cos)), np.linalg.norm(a + b, axis=0), rtol=1e-13)
    np.testing.assert_allclose(  # a − 3b: scale one norm, flip the cosine
        np.ravel(geometry.sum_norm(an, 3 * bn, -cos)), np.linalg.norm(a - 3 * b, axis=0),
        rtol=1e-13)


def test_cosine_is_zero_for_zero_or_infinite_norms_and_clipped():
  got = geometry.cosine(jnp.array([1.0, 1.0, 5.0, -5.0]), jnp.array([0.0, jnp.inf, 1.0, 1.0]),
                        jnp.array([1.0, 1.0, 1.0, 1.0]))
  np.testing.assert_array_equal(got, [0.0, 0.0, 1.0, -1.0])


def test_sum_norm_past_the_squares_range():
  """float32 norms of 1e30 (squares overflow) against float64; inf in, not finite out."""
  an, bn, cos = np.array([1e30, 3e-30, 2e38]), np.array([2e30, 4e-30, 1e38]), np.array([0.3, 0.0, -1.0])
  want = np.sqrt(an**2 + 2 * cos * an * bn + bn**2)
  got = geometry.sum_norm(*(jnp.asarray(v, jnp.float32) for v in (an, bn, cos)))
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6)
  assert not np.isfinite(float(geometry.sum_norm(jnp.inf, jnp.float32(1), jnp.float32(0))))
  assert float(geometry.sum_norm(jnp.float32(0), jnp.float32(0), jnp.float32(0))) == 0.0


@pytest.mark.parametrize("theta", [0.0, 0.3, 2.0, np.pi, 4.0, 7.0])
def test_transport_along_is_cho_and_lee_and_an_isometry_onto_the_new_tangent_space(theta):
  y, m = _unit_and_tangent((5, 3), 1)
  _, w = _unit_and_tangent((5, 3), 2)
  w -= (w * y).sum(0) * y
  w /= np.linalg.norm(w, axis=0)
  delta = theta * w
  # Cho & Lee 2017: m − <ŵ, m>(sin θ y + (1 − cos θ) ŵ), and exp_y(Δ)
  want = m - (w * m).sum(0) * (np.sin(theta) * y + (1 - np.cos(theta)) * w)
  with jax.enable_x64(True):
    layout = _layout(y)
    got = np.asarray(geometry.transport_along(jnp.asarray(m), jnp.asarray(y), jnp.asarray(delta), layout))
    new = np.asarray(geometry.exp_map(jnp.asarray(y), jnp.asarray(delta), layout))
    given = geometry.transport_along(
        jnp.asarray(m), jnp.asarray(y), jnp.asarray(delta), layout,
        delta_norm=jnp.full((1, 3), theta), delta_dot_m=jnp.asarray((delta * m).sum(0, keepdims=True)))
  np.testing.assert_allclose(got, want, atol=1e-13)
  np.testing.assert_allclose(given, want, atol=1e-13)
  np.testing.assert_allclose(np.linalg.norm(got, axis=0), np.linalg.norm(m, axis=0), rtol=1e-13)
  np.testing.assert_allclose((got * new).sum(0), 0.0, atol=1e-13)


def test_transport_along_agrees_with_transport_parallel_away_from_pi():
  y, m = _unit_and_tangent((4, 6), 3)
  _, d = _unit_and_tangent((4, 6), 4)
  d -= (d * y).sum(0) * y
  d *= np.array([0.1, 1.0, 2.5, 3.5, 5.0, 8.0]) / np.linalg.norm(d, axis=0)  # θ up past 2π
  with jax.enable_x64(True):
    layout = _layout(y)
    y_, m_, d_ = (jnp.asarray(v) for v in (y, m, d))
    new = geometry.exp_map(y_, d_, layout)
    np.testing.assert_allclose(geometry.transport_along(m_, y_, d_, layout),
                               geometry.transport_parallel(m_, y_, new, layout), atol=1e-12)


def test_exp_map_with_given_norm():
  y, d = _unit_and_tangent((4, 3), 6)
  with jax.enable_x64(True):
    layout = _layout(y)
    plain = geometry.exp_map(jnp.asarray(y), jnp.asarray(d), layout)
    given = geometry.exp_map(jnp.asarray(y), jnp.asarray(d), layout,
                             delta_norm=jnp.asarray(np.linalg.norm(d, axis=0, keepdims=True)))
    zero = geometry.exp_map(jnp.asarray(y), jnp.zeros((4, 3)), layout, delta_norm=jnp.zeros((1, 3)))
  np.testing.assert_allclose(given, plain, rtol=1e-14)
  np.testing.assert_array_equal(zero, y)
