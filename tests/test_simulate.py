"""The random-walk simple system (Kosson et al. 2024 App. J) and the SMD maps (Wan et al., SMD App. C.1).

References:

* Kosson et al. 2024: Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.
* Wan et al., SMD: Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import simulate
from spherax.theory import equilibrium

KEY = jax.random.key(0)


def _last_third(walk):
  """norms, angles and E||g̃||² per row over the last third of the steps."""
  last = slice(2 * walk.norms.shape[0] // 3, None)
  norms = np.asarray(walk.norms[last], np.float64)
  angles = np.asarray(walk.angles[last], np.float64)
  unit_grad_sqnorm = (np.asarray(walk.unit_grad_norms[last], np.float64) ** 2).mean(0)
  return norms, angles, unit_grad_sqnorm


def _cv(per_row):
  return per_row.std() / per_row.mean()


def test_rows_are_scale_invariant_under_batch_norm():
  """Plain SGD: ∇W ⊥ each row, so r'² = r² + (η||g||)² and tan(angle) = η||g||/r."""
  with jax.enable_x64(True):
    walk = simulate.random_walk(
        optax.sgd(3e2), steps=6, key=KEY, batch=8, channels=5, features=3, eps=0.0
    )
    norms, angles = np.asarray(walk.norms), np.asarray(walk.angles)
    unit_grad = np.asarray(walk.unit_grad_norms)
  assert norms.dtype == np.float64
  growth = (norms[1:] ** 2 - norms[:-1] ** 2) / norms[:-1] ** 2
  assert (angles[1:] > 1e-4).all()
  np.testing.assert_allclose(np.tan(angles[1:]) ** 2, growth, rtol=1e-8)
  # ||g|| = ||g̃||/r: the recorded unit gradient gives the same angle.
  np.testing.assert_allclose(np.tan(angles[1:]), 3e2 * unit_grad[1:] / norms[:-1] ** 2, rtol=1e-8)


def test_smd_maps_follow_their_recurrences():
  rng = np.random.default_rng(0)
  big_l = rng.uniform(0.5, 3.0, size=7)
  eta, lam, alpha, x0 = 0.3, 0.05, 0.8, 2.0
  with jax.enable_x64(True):
    x = np.asarray(simulate.smd_sgd(x0, eta, lam, big_l))
    xm = np.asarray(simulate.smd_sgdm(x0, eta, lam, alpha, big_l))
  ref, cur = [], x0
  for l_t in big_l:
    cur = (1 - 2 * lam * eta) * cur + l_t * eta**2 / cur
    ref.append(cur)
  np.testing.assert_allclose(x, ref, rtol=1e-12)
  s = 1 + alpha - lam * eta
  a = np.array([[s * s, -2 * alpha * s, alpha**2], [s, -alpha, 0], [1, 0, 0]])
  ref, cur = [], np.full(3, x0)
  for l_t in big_l:
    cur = a @ cur + np.array([l_t * eta**2 / cur[0], 0, 0])
    ref.append(cur)
  np.testing.assert_allclose(xm, np.array(ref), rtol=1e-12)


def test_adamw_reaches_the_balanced_equilibrium():
  """Paper setting (lr 1e-3, wd 0.1, 30k steps): every row at η̂_r and ||ω̂||."""
  walk = simulate.random_walk(optax.adamw(1e-3, weight_decay=0.1), steps=30000, key=KEY)
  norms, angles, _ = _last_third(walk)
  np.testing.assert_allclose(
      angles.mean(), float(equilibrium.angular_update_adamw(1e-3, 0.1, b1=0.9)), rtol=0.05
  )
  np.testing.assert_allclose(
      norms.mean(), float(equilibrium.norm_adamw(1e-3, 0.1, group_size=128)), rtol=0.05
  )
  assert _cv(angles.mean(0)) < 0.05
  assert _cv(norms.mean(0)) < 0.05


def test_adam_l2_equilibrium_is_unbalanced_as_predicted():
  """Rows settle at different norms and rates, set by each row's E||g̃||² (App. I.2)."""
  eta, lam, c = 1e-3, 1e-3, 128
  opt = optax.chain(optax.add_decayed_weights(lam), optax.adam(eta))
  norms, angles, grad_sq = _last_third(simulate.random_walk(opt, steps=30000, key=KEY))
  assert _cv(angles.mean(0)) > 0.2
  assert _cv(norms.mean(0)) > 0.2
  # The cubic's root explains the spread: per-row ratios to the prediction agree
  # with each other to 5% and with 1 to 10% (the random-walk model is approximate).
  for measured, predicted in [
      (norms.mean(0), equilibrium.norm_adam_l2(eta, lam, c, grad_sq)),
      (angles.mean(0), equilibrium.angular_update_adam_l2(eta, lam, c, grad_sq)),
  ]:
    ratio = measured / np.asarray(predicted, np.float64)
    assert ratio.max() / ratio.min() < 1.05
    np.testing.assert_allclose(ratio, 1.0, rtol=0.1)


def test_sgdm_rotation_is_balanced_at_smd_rate():
  """SGDM (L2): norms depend on each row's gradient size, the angle does not."""
  eta, lam, alpha = 0.1, 1e-3, 0.9
  opt = optax.chain(optax.add_decayed_weights(lam), optax.sgd(eta, momentum=alpha))
  norms, angles, grad_sq = _last_third(simulate.random_walk(opt, steps=8000, key=KEY))
  predicted = float(equilibrium.angular_update_sgdm(eta, lam, momentum=alpha))
  np.testing.assert_allclose(angles.mean(), predicted, rtol=0.05)
  assert _cv(angles.mean(0)) < 0.05
  assert _cv(norms.mean(0)) > 0.2
  # Each row's norm follows its own gradient size: (η E||g̃||² / (2λ(1−α)))^{1/4}.
  np.testing.assert_allclose(
      norms.mean(0), equilibrium.norm_sgdm(eta, lam, grad_sq, momentum=alpha), rtol=0.03
  )


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 3, "batch": 0}, {"steps": 2.5}])
def test_random_walk_rejects_bad_sizes(kwargs):
  with pytest.raises(ValueError, match="positive int"):
    simulate.random_walk(optax.sgd(0.1), key=KEY, **kwargs)


def test_smd_sgdm_batched_starts_equal_separate_runs():
  big_l = jnp.linspace(5.0, 15.0, 40)
  starts = jnp.array([0.5, 3.0, 40.0])  # three runs: a (3,)-batch must not mix with X's 3 axes
  batched = np.asarray(simulate.smd_sgdm(starts, 0.1, 0.01, 0.9, big_l))
  assert batched.shape == (40, 3, 3)
  for i, x0 in enumerate(starts):
    np.testing.assert_allclose(batched[:, i], simulate.smd_sgdm(x0, 0.1, 0.01, 0.9, big_l), rtol=1e-6)
