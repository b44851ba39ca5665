"""geometry.centered_dot against a direct NumPy computation of the centred inner product."""

import jax
import jax.numpy as jnp
import numpy as np

from spherax import geometry, groups


def test_centered_dot_is_the_dot_of_the_centred_arrays():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 3, 7, 4)) + 5.0  # non-zero means
  layout = groups.per_output().layout(a.shape)
  with jax.enable_x64(True):
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    got = geometry.centered_dot(geometry.dot(ja, jb, layout), geometry.group_sum(ja, layout),
                                geometry.mean(jb, layout))
    plain = geometry.centered_dot(geometry.dot(ja, jb, layout), geometry.group_sum(ja, layout),
                                  0.0)
  ac, bc = a - a.mean(axis=(0, 1)), b - b.mean(axis=(0, 1))
  np.testing.assert_allclose(got, (ac * bc).sum(axis=(0, 1), keepdims=True), rtol=1e-10)
  np.testing.assert_allclose(plain, (a * b).sum(axis=(0, 1), keepdims=True), rtol=1e-12)
