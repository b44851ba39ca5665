"""geometry.shifted_dot and geometry.tangent_sqnorm against direct NumPy computations."""

import jax
import jax.numpy as jnp
import numpy as np

from spherax import geometry, groups


def test_shifted_dot_is_the_dot_of_the_shifted_arrays():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 3, 7, 4))
  alpha, beta = rng.normal(size=(2, 1, 1, 4))
  layout = groups.per_output().layout(a.shape)
  with jax.enable_x64(True):
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    got = geometry.shifted_dot(geometry.dot(ja, jb, layout), geometry.group_sum(ja, layout),
                               geometry.group_sum(jb, layout), jnp.asarray(alpha),
                               jnp.asarray(beta), layout.group_size)
    centred = geometry.shifted_dot(
        geometry.dot(ja, jb, layout), geometry.group_sum(ja, layout),
        geometry.group_sum(jb, layout), geometry.mean(ja, layout), geometry.mean(jb, layout),
        layout.group_size)
  want = ((a - alpha) * (b - beta)).sum(axis=(0, 1), keepdims=True)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  ac, bc = a - a.mean(axis=(0, 1)), b - b.mean(axis=(0, 1))
  np.testing.assert_allclose(centred, (ac * bc).sum(axis=(0, 1), keepdims=True), rtol=1e-12)


def test_tangent_sqnorm_is_the_squared_norm_of_the_tangent_part():
  rng = np.random.default_rng(1)
  v, x = rng.normal(size=(2, 5, 3))
  x[:, 2] = 0  # a zero group: the tangent of v is v
  layout = groups.per_output().layout(v.shape)
  with jax.enable_x64(True):
    jv, jx = jnp.asarray(v), jnp.asarray(x)
    got = geometry.tangent_sqnorm(geometry.sqnorm(jv, layout), geometry.dot(jv, jx, layout),
                                  geometry.sqnorm(jx, layout))
    want = geometry.sqnorm(geometry.tangent(jv, jx, layout), layout)
  perp = v - x * np.where((x * x).sum(0) > 0, (v * x).sum(0) / np.maximum((x * x).sum(0), 1e-300), 0)
  np.testing.assert_allclose(got[0], (perp * perp).sum(0), rtol=1e-12)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  # Clipped at zero: v along x.
  assert float(geometry.tangent_sqnorm(jnp.float32(1.0), jnp.float32(1.0000001),
                                       jnp.float32(1.0))) == 0.0
