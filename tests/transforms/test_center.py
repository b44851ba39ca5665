"""center: subtract each group's mean (Kosson et al. 2024, Algorithm 1, step 3).

References:

* Kosson et al. 2024: Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.
"""

import jax.numpy as jnp
import numpy as np

import spherax
from spherax import groups

Q = np.random.default_rng(1).normal(size=(2, 3, 4))


def test_per_output_groups_match_numpy_and_sum_to_zero():
  tx = spherax.center()
  out, _ = tx.update({"w": jnp.asarray(Q), "b": jnp.ones(4)}, tx.init({"w": Q, "b": np.ones(4)}))
  want = Q - Q.mean(axis=(0, 1), keepdims=True)
  np.testing.assert_allclose(out["w"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["b"], 1.0)
  again, _ = tx.update(out, tx.init(out))
  np.testing.assert_allclose(again["w"], out["w"], atol=1e-6)


def test_channel_groups_split_the_output_axis():
  spec = {"w": groups.channel_groups(2)}
  tx = spherax.center(groups=spec)
  out, _ = tx.update({"w": jnp.asarray(Q)}, tx.init({"w": Q}))
  view = Q.reshape(2, 3, 2, 2)
  want = (view - view.mean(axis=(0, 1, 3), keepdims=True)).reshape(Q.shape)
  np.testing.assert_allclose(out["w"], want, rtol=1e-5, atol=1e-6)
