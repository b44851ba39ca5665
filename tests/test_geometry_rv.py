"""geometry.shifted_dot against direct NumPy computations."""

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
