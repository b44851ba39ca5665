"""Tests for spherax.geometry against NumPy per-group re-derivations and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spherax import geometry, groups

RNG = np.random.default_rng(0)


def _np_groups(x):
  """Flax layout, per output unit: columns of the (d, n) reshaped array."""
  return x.reshape(-1, x.shape[-1])


@pytest.fixture
def xs():
  x = RNG.normal(size=(3, 3, 2, 5)).astype(np.float64)
  x[..., 0] = 0.0  # a zero-norm group
  m = RNG.normal(size=x.shape)
  return x, m


def _layout(x):
  return groups.per_output().layout(x.shape)


def test_reductions_match_numpy(xs):
  x, m = xs
  with jax.enable_x64(True):
    layout = _layout(x)
    np.testing.assert_allclose(
        np.ravel(geometry.dot(jnp.asarray(x), jnp.asarray(m), layout)),
        np.sum(_np_groups(x) * _np_groups(m), axis=0),
    )
    np.testing.assert_allclose(
        np.ravel(geometry.norm(jnp.asarray(m), layout)), np.linalg.norm(_np_groups(m), axis=0)
    )
    np.testing.assert_allclose(
        np.ravel(geometry.mean(jnp.asarray(m), layout)), _np_groups(m).mean(axis=0)
    )


def test_bf16_reductions_are_float32():
  x = jnp.ones((64, 3), jnp.bfloat16) * 1.01
  layout = _layout(x)
  assert geometry.sqnorm(x, layout).dtype == jnp.float32
  np.testing.assert_allclose(geometry.sqnorm(x, layout), 64 * float(x[0, 0]) ** 2, rtol=1e-6)


def test_tangent_projection_is_orthogonal_idempotent_and_safe(xs):
  x, m = xs
  with jax.enable_x64(True):
    layout = _layout(x)
    t = geometry.tangent(jnp.asarray(m), jnp.asarray(x), layout)
    np.testing.assert_allclose(geometry.dot(t, jnp.asarray(x), layout), 0, atol=1e-12)
    np.testing.assert_allclose(geometry.tangent(t, jnp.asarray(x), layout), t, atol=1e-12)
    # zero-norm group: nothing removed, nothing NaN
    np.testing.assert_allclose(t[..., 0], m[..., 0])
    t_np = _np_groups(m) - _np_groups(x) * (
        np.sum(_np_groups(m) * _np_groups(x), 0) / np.maximum(np.sum(_np_groups(x) ** 2, 0), 1e-300)
    )
    np.testing.assert_allclose(_np_groups(np.asarray(t)), t_np, atol=1e-12)


def test_retract_lands_on_the_norm_and_keeps_zero_groups(xs):
  x, _ = xs
  layout = _layout(x)
  y = geometry.retract(jnp.asarray(x, jnp.float32), 2.5, layout)
  norms = np.ravel(geometry.norm(y, layout))
  np.testing.assert_allclose(norms[1:], 2.5, rtol=1e-6)
  assert norms[0] == 0 and np.all(np.isfinite(y))


def test_exp_map_stays_on_unit_sphere_and_matches_formula():
  with jax.enable_x64(True):
    y = RNG.normal(size=(7, 4))
    y /= np.linalg.norm(y, axis=0)
    layout = _layout(y)
    delta = geometry.tangent(jnp.asarray(RNG.normal(size=y.shape)), jnp.asarray(y), layout)
    delta = delta.at[:, 0].set(0.0)
    z = geometry.exp_map(jnp.asarray(y), delta, layout)
    np.testing.assert_allclose(np.ravel(geometry.norm(z, layout)), 1.0, rtol=1e-12)
    d = np.asarray(delta)
    n = np.linalg.norm(d, axis=0)
    expected = y * np.cos(n) + d / np.where(n > 0, n, 1) * np.sin(n)
    np.testing.assert_allclose(z, expected, atol=1e-12)


def _tangent_pair(shape, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape)
  x_new = x + 0.3 * rng.normal(size=shape)
  layout = _layout(x)
  m = np.asarray(geometry.tangent(jnp.asarray(rng.normal(size=shape)), jnp.asarray(x), layout))
  return x, x_new, m, layout


@pytest.mark.parametrize("rescale", [True, False])
def test_reference_transport_maps_tangent_to_tangent_and_matches_numpy(rescale):
  with jax.enable_x64(True):
    x, x_new, m, layout = _tangent_pair((6, 3), 1)
    out = geometry.transport_reference(
        jnp.asarray(m), jnp.asarray(x), jnp.asarray(x_new), layout, rescale=rescale
    )
    np.testing.assert_allclose(geometry.dot(out, jnp.asarray(x_new), layout), 0, atol=1e-12)
    r, r_new = np.linalg.norm(x, axis=0), np.linalg.norm(x_new, axis=0)
    u, u_new = x / r, x_new / r_new
    expected = np.sum(u * u_new, 0) * m - np.sum(m * u_new, 0) * u
    if rescale:
      expected = expected * r / r_new
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_parallel_transport_preserves_norms_and_tangency():
  with jax.enable_x64(True):
    x, x_new, m, layout = _tangent_pair((6, 3), 2)
    out = geometry.transport_parallel(jnp.asarray(m), jnp.asarray(x), jnp.asarray(x_new), layout)
    np.testing.assert_allclose(geometry.dot(out, jnp.asarray(x_new), layout), 0, atol=1e-12)
    np.testing.assert_allclose(
        geometry.norm(out, layout), geometry.norm(jnp.asarray(m), layout), rtol=1e-12
    )
    # moving along the great circle: the in-plane tangent turns into the new in-plane tangent
    u = x / np.linalg.norm(x, axis=0)
    u_new = x_new / np.linalg.norm(x_new, axis=0)
    w = u_new - np.sum(u * u_new, 0) * u
    w /= np.linalg.norm(w, axis=0)
    w_out = np.asarray(geometry.transport_parallel(jnp.asarray(w), jnp.asarray(x), jnp.asarray(x_new), layout))
    expected = -(u - np.sum(u * u_new, 0) * u_new)
    expected /= np.linalg.norm(expected, axis=0)
    np.testing.assert_allclose(w_out, expected, atol=1e-12)


def test_transports_are_finite_on_zero_groups():
  z = jnp.zeros((4, 2))
  m = jnp.ones((4, 2))
  layout = _layout(z)
  for out in (
      geometry.transport_reference(m, z, z, layout),
      geometry.transport_parallel(m, z, z, layout),
  ):
    assert np.all(np.isfinite(out))


def test_center_removes_group_mean_with_channel_groups():
  x = jnp.asarray(RNG.normal(size=(3, 8)), jnp.float32)
  layout = groups.channel_groups(2).layout(x.shape)
  c = geometry.center(x, layout)
  np.testing.assert_allclose(np.asarray(c)[:, :4].sum(), 0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(c)[:, 4:].sum(), 0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(c - x)[:, :4], np.full((3, 4), -np.asarray(x)[:, :4].mean()), atol=1e-6)


def test_safe_div_has_nan_free_gradients():
  g = jax.grad(lambda d: geometry.safe_div(1.0, d))(0.0)
  assert np.isfinite(g)


def _as_real(z):
  """``C^d`` as ``R^{2d}``: real and imaginary parts stacked along a new leading axis."""
  return np.concatenate([np.real(z), np.imag(z)], axis=0)


def test_complex_leaves_use_the_real_inner_product_of_r2d():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    a = rng.normal(size=(4, 3)) + 1j * rng.normal(size=(4, 3))
    b = rng.normal(size=(4, 3)) + 1j * rng.normal(size=(4, 3))
    layout = _layout(a)
    got = geometry.dot(jnp.asarray(a), jnp.asarray(b), layout)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.ravel(got), np.sum(_as_real(a) * _as_real(b), 0), rtol=1e-13)
    np.testing.assert_allclose(
        np.ravel(geometry.norm(jnp.asarray(a), layout)), np.linalg.norm(_as_real(a), axis=0),
        rtol=1e-13)
    t = geometry.tangent(jnp.asarray(b), jnp.asarray(a), layout)
    assert t.dtype == jnp.complex128
    np.testing.assert_allclose(geometry.dot(t, jnp.asarray(a), layout), 0, atol=1e-12)
    y = geometry.retract(jnp.asarray(a), 2.0, layout)
    np.testing.assert_allclose(geometry.norm(y, layout), 2.0, rtol=1e-13)
  # The example: [[1j], [1]] has squared norm 2 (not 1j² + 1 = 0).
  z = jnp.array([[1j], [1.0]], jnp.complex64)
  assert geometry.sqnorm(z, _layout(z)).tolist() == [[2.0]]
  assert geometry.sqnorm(z, _layout(z)).dtype == jnp.float32


def test_norm_and_dot_reach_float32_range_against_float64():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(64, 3)) * np.array([1e20, 1.0, 3e36])  # ||x||² overflows in 2 groups
  y = rng.normal(size=(64, 3)) * np.array([1e16, 1e25, 1e-30])
  layout = _layout(x)
  x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  x64, y64 = np.asarray(x32, np.float64), np.asarray(y32, np.float64)
  np.testing.assert_allclose(
      np.ravel(geometry.norm(x32, layout, safe=True)), np.linalg.norm(x64, axis=0), rtol=1e-5)
  np.testing.assert_allclose(
      np.ravel(geometry.dot(x32, y32, layout, safe=True)), np.sum(x64 * y64, 0), rtol=1e-4)
  # Products that overflow (a² > 3.4e38) while their sum does not: a·a − a·a = 0, a·a − 0.9a·a.
  a = 3e19
  u = jnp.array([[a, a], [a, a]], jnp.float32)
  v = jnp.array([[a, a], [-a, -0.9 * a]], jnp.float32)
  u64, v64 = np.asarray(u, np.float64), np.asarray(v, np.float64)
  # to rounding: |error| <= eps·Σ|u v| (the products may be fused into FMAs)
  np.testing.assert_allclose(
      geometry.dot(u, v, _layout(u), safe=True), [np.sum(u64 * v64, 0)], atol=1e-6 * 2 * a * a)
  # Only the squared norm itself is out of range: it is inf, as its value is.
  assert np.isinf(geometry.sqnorm(x32, layout)[0, 0])
  # Groups that were fine keep their plain one-pass value bit for bit.
  plain = geometry.norm(x32[:, 1:2], _layout(x32[:, 1:2]))
  assert geometry.norm(x32, layout, safe=True)[0, 1] == plain[0, 0]
  assert np.isinf(geometry.norm(x32, layout)[0, 0])  # the default is the plain pass


def test_non_finite_inputs_stay_non_finite_and_bf16_is_scaled_in_float32():
  x = jnp.array([[jnp.inf, 1.0], [1.0, jnp.nan]], jnp.float32)
  n = geometry.norm(x, _layout(x), safe=True)
  assert np.isinf(n[0, 0]) and np.isnan(n[0, 1])
  b = jnp.full((8, 1), 1e30, jnp.bfloat16)
  got = geometry.norm(b, _layout(b), safe=True)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, np.sqrt(8) * float(b[0, 0]), rtol=1e-6)


def test_gradients_through_the_overflow_guard_are_finite():
  x = jnp.asarray(RNG.normal(size=(5, 2)), jnp.float32)
  g = jax.grad(lambda x: jnp.sum(geometry.norm(x, _layout(x), safe=True)))(x)
  np.testing.assert_allclose(g, x / np.linalg.norm(np.asarray(x), axis=0), rtol=1e-5)


def test_empty_leaves_give_empty_or_zero_statistics():
  for shape in ((5, 0), (0, 5)):
    x = jnp.zeros(shape)
    layout = _layout(x)
    for stat in (geometry.norm(x, layout), geometry.dot(x, x, layout), geometry.sqnorm(x, layout)):
      assert stat.shape == layout.stat_shape and np.all(np.asarray(stat) == 0)
    assert geometry.retract(x, 1.0, layout).shape == shape


def test_safe_div_sqrt_is_safe_div_of_the_root_in_one_kernel():
  tiny = np.finfo(np.float32).smallest_subnormal
  sq = jnp.array([4.0, 0.0, -0.0, tiny, 1e-30, 3e38, np.inf, np.nan, -1.0], jnp.float32)
  num = jnp.array([3.0, 1.0, 1.0, 1.0, 2.0, 5.0, 1.0, 1.0, 1.0], jnp.float32)
  got = np.asarray(geometry.safe_div_sqrt(num, sq))
  want = np.asarray(geometry.safe_div(num, jnp.sqrt(sq)))
  np.testing.assert_array_equal(got, want)  # op by op: bit for bit, NaN where sq < 0 or NaN
  assert got[1] == got[2] == 0.0 and np.isnan(got[-1])
  # The guard reads sq, so the root has one use: one kernel, not two.
  hlo = jax.jit(lambda n, s: geometry.safe_div_sqrt(n, s * s)).lower(num, sq).compile().as_text()
  assert hlo.count(" fusion(") == 1
  # NaN-free gradients at sq = 0 (safe_div of sqrt(sq) has 0·inf there).
  grad = jax.grad(lambda s: geometry.safe_div_sqrt(1.0, s).sum())(jnp.array([0.0, 4.0]))
  np.testing.assert_array_equal(grad, [0.0, -0.5 * 4.0**-1.5])
