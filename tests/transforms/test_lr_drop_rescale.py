"""The SMD norm rescale at learning-rate drops (Wan et al., SMD Corollary 3.1).

References:

* Wan et al., SMD: Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax

K = 10.0


def test_divides_norms_by_k_quarter_exactly_at_the_drop():
  """Against plain SGDM on the same stream: identical except at the drop step."""
  sched = optax.piecewise_constant_schedule(0.1, {3: 1 / K})
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    params = {"w": jnp.asarray(rng.normal(size=(5, 3))), "b": jnp.asarray(rng.normal(size=3))}
    plain = optax.sgd(sched, momentum=0.9)
    wrapped = optax.chain(optax.sgd(sched, momentum=0.9), spherax.rescale_norms_on_lr_drop(sched))
    s_plain, s_wrapped = plain.init(params), wrapped.init(params)
    x = params
    for t in range(6):
      g = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), x)
      u_p, s_plain = plain.update(g, s_plain, x)
      u_w, s_wrapped = wrapped.update(g, s_wrapped, x)
      x_plain = optax.apply_updates(x, u_p)
      x_new = optax.apply_updates(x, u_w)
      # the step before the first step at lr/K (lr(t+1) = lr(t)/K) rescales
      factor = K ** -0.25 if t == 2 else 1.0
      np.testing.assert_allclose(x_new["w"], factor * np.asarray(x_plain["w"]), rtol=1e-13)
      np.testing.assert_allclose(x_new["b"], x_plain["b"], rtol=1e-13)  # bias untouched
      if t == 2:
        ratio = np.linalg.norm(x_new["w"], axis=0) / np.linalg.norm(x_plain["w"], axis=0)
        np.testing.assert_allclose(ratio, K ** -0.25, rtol=1e-13)
      x = x_new


def test_no_rescale_when_lr_rises_or_hits_zero():
  sched = lambda c: jnp.where(c < 1, 0.1, jnp.where(c < 2, 0.2, 0.0))
  opt = spherax.rescale_norms_on_lr_drop(sched)
  x = {"w": jnp.ones((2, 2))}
  u = {"w": jnp.full((2, 2), 0.5)}
  state = opt.init(x)
  for _ in range(3):  # 0.1 → 0.2 (rise), 0.2 → 0 (stop), 0 → 0
    out, state = opt.update(u, state, x)
    np.testing.assert_array_equal(out["w"], u["w"])


def test_constant_rate_rejected():
  with pytest.raises(ValueError):
    spherax.rescale_norms_on_lr_drop(0.1)
