"""Rotational-equilibrium predictions (Kosson et al. 2024 Table 1, App. F–I).

References:

* Kosson et al. 2024: Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import simulate
from spherax.theory import equilibrium as eq


@pytest.mark.parametrize(
    "eta, lam, c, g",
    [
        (1e-3, 1e-3, 128, 1e-4),
        (1e-3, 5e-4, 64, 1e-2),
        (0.1, 1.0, 9, 3.0),
        (1e-2, 1e-4, 1000, 1e-8),
    ],
)
def test_adam_l2_norm_is_the_real_root_of_the_cubic(eta, lam, c, g):
  with jax.enable_x64(True):
    y = float(eq.sqnorm_adam_l2(eta, lam, c, g))
  roots = np.roots([4 * lam**2, -c * eta**2 * lam**2, 0.0, -c * eta**2 * g])
  real = roots[np.abs(roots.imag) < 1e-9 * np.abs(roots).max()].real
  assert real.size == 1
  np.testing.assert_allclose(y, real[0], rtol=1e-9)
  np.testing.assert_allclose(float(eq.norm_adam_l2(eta, lam, c, g)) ** 2, y, rtol=1e-5)


def test_adam_l2_limits():
  eta, lam, c = 1e-3, 1e-3, 128
  # No gradient: the L2 term alone, y = Cη²/4.
  np.testing.assert_allclose(
      float(eq.norm_adam_l2(eta, lam, c, 0.0)), math.sqrt(c) * eta / 2, rtol=1e-6
  )
  # Gradient-dominated: y ≈ (Cη²E||g̃||²/(4λ²))^{1/3} and the AdamW update size.
  with jax.enable_x64(True):
    g = 1e6
    y = float(eq.sqnorm_adam_l2(eta, lam, c, g))
    np.testing.assert_allclose(y, (c * eta**2 * g / (4 * lam**2)) ** (1 / 3), rtol=1e-3)
    np.testing.assert_allclose(
        float(eq.rms_update_adam_l2(eta, lam, c, g)), float(eq.rms_update_adamw(eta, c)), rtol=1e-3
    )


def test_adam_l2_update_sizes_match_a_numpy_rederivation():
  eta, lam, c, g, b1 = 1e-3, 1e-3, 128, 1e-4, 0.9
  roots = np.roots([4 * lam**2, -c * eta**2 * lam**2, 0.0, -c * eta**2 * g])
  y = roots[np.argmin(np.abs(roots.imag))].real
  rms = math.sqrt(eta**2 * c * (1 - b1) / (1 + b1) * (1 - lam**2 * y**2 / (g + lam**2 * y**2)))
  with jax.enable_x64(True):
    np.testing.assert_allclose(float(eq.rms_update_adam_l2(eta, lam, c, g, b1)), rms, rtol=1e-9)
    np.testing.assert_allclose(
        float(eq.angular_update_adam_l2(eta, lam, c, g, b1)), rms / math.sqrt(y), rtol=1e-9
    )


def test_angular_update_is_rms_update_over_norm():
  """Table 1 is self-consistent: η̂_r = η̂_g / ||ω̂|| for every optimizer."""
  eta, lam, c, b1, b2, g_unit = 3e-3, 0.05, 72, 0.8, 0.98, 2.5
  np.testing.assert_allclose(
      float(eq.rms_update_adamw(eta, c, b1) / eq.norm_adamw(eta, lam, c)),
      float(eq.angular_update_adamw(eta, lam, b1)),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      float(eq.rms_update_lion(eta, c) / eq.norm_lion(eta, lam, c, b1, b2)),
      float(eq.angular_update_lion(eta, lam, b1, b2)),
      rtol=1e-5,
  )
  # SGDM: ||g||² = E||g̃||²/||ω̂||² at the equilibrium norm.
  norm = float(eq.norm_sgdm(eta, lam, g_unit, momentum=b1))
  np.testing.assert_allclose(
      float(eq.rms_update_sgdm(eta, g_unit / norm**2, momentum=b1)) / norm,
      float(eq.angular_update_sgdm(eta, lam, momentum=b1)),
      rtol=1e-5,
  )


def test_closed_forms_against_numpy():
  eta, lam, c, b1, b2 = 5e-4, 1.0, 16, 0.9, 0.99
  f = (1 - b1) ** 2 + b1**2 * (1 - b2) / (1 + b2)
  close = lambda got, want: np.testing.assert_allclose(float(got), want, rtol=1e-6)
  close(eq.angular_update_lion(eta, lam, b1, b2), math.sqrt(math.pi * eta * lam * f))
  close(eq.norm_lion(eta, lam, c, b1, b2), math.sqrt(eta * c / (math.pi * lam) / f))
  close(eq.rms_update_adamw(eta, c, b1), eta * math.sqrt(c * 0.1 / 1.9))
  close(eq.norm_sgdm(0.1, 1e-3, 2.0, 0.9), (0.1 * 2.0 / (2e-3 * 0.1)) ** 0.25)


def test_traced_hyperparameters_and_broadcasting():
  lrs = jnp.array([1e-3, 2e-3, 4e-3])
  jitted = jax.jit(eq.norm_adam_l2)(lrs, 1e-3, 128, jnp.array([1e-4, 1e-3, 1e-2]))
  eager = [float(eq.norm_adam_l2(float(l), 1e-3, 128, g)) for l, g in zip(lrs, [1e-4, 1e-3, 1e-2])]
  np.testing.assert_allclose(jitted, eager, rtol=1e-5)
  assert jitted.shape == (3,)


def test_lion_random_walk_rotates_at_the_predicted_rate():
  eta, lam = 1e-3, 1.0
  walk = simulate.random_walk(optax.lion(eta, weight_decay=lam), steps=6000, key=jax.random.key(1))
  angles = np.asarray(walk.angles[4000:], np.float64)
  np.testing.assert_allclose(angles.mean(), float(eq.angular_update_lion(eta, lam)), rtol=0.05)
  norms = np.asarray(walk.norms[4000:], np.float64)
  np.testing.assert_allclose(norms.mean(), float(eq.norm_lion(eta, lam, 128)), rtol=0.05)


@pytest.mark.parametrize(
    "fn, args, name",
    [
        (eq.norm_adamw, (1e-3, -0.1, 128), "weight_decay"),
        (eq.angular_update_adamw, (1e-3, 0.1, 1.0), "b1"),
        (eq.norm_sgdm, (0.1, 1e-3, 1.0, 1.0), "momentum"),
        (eq.norm_adam_l2, (1e-3, 1e-3, 128, -1.0), "unit_grad_sqnorm"),
        (eq.rms_update_lion, (-1e-3, 128), "learning_rate"),
        (eq.lion_factor, (0.9, 1.5), "b2"),
    ],
)
def test_bad_python_numbers_raise(fn, args, name):
  with pytest.raises(ValueError, match=name):
    fn(*args)


def test_no_weight_decay_means_no_equilibrium():
  assert float(eq.angular_update_adamw(1e-3, 0.0)) == 0.0
  assert bool(jnp.isinf(eq.norm_adamw(1e-3, 0.0, 128)))
  assert bool(jnp.isinf(eq.norm_adam_l2(1e-3, 0.0, 128, 1e-4)))
