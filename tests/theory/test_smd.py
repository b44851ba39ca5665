"""SMD theory (Wan et al., SMD) against the iterative norm maps of App. C.1.

References:

* Wan et al., SMD: Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spherax import simulate
from spherax.theory import smd

ETA, LAM, L = 0.1, 1e-3, 2.0


def _sgd(x0, eta, steps):
  return np.asarray(simulate.smd_sgd(x0, eta, LAM, jnp.full(steps, L)))


def _sgdm(x0, eta, alpha, steps):
  return np.asarray(simulate.smd_sgdm(x0, eta, LAM, alpha, jnp.full(steps, L)))[:, 0]


def test_sgd_map_converges_to_theorem_1_at_its_rate():
  with jax.enable_x64(True):
    x = _sgd(1.0, ETA, 40000)
    target = float(smd.sqnorm_sgd(ETA, LAM, L))
    np.testing.assert_allclose(x[-1], target, rtol=1e-6)
    err = np.abs(x - target)
    measured_rate = (err[20000] / err[10000]) ** (1 / 10000)
    np.testing.assert_allclose(measured_rate, float(smd.approach_rate_sgd(ETA, LAM)), rtol=1e-6)
  # ||w|| and the SGDM formula at α = 0 agree to first order in λη.
  np.testing.assert_allclose(float(smd.norm_sgd(ETA, LAM, L)) ** 2, target, rtol=1e-6)
  np.testing.assert_allclose(float(smd.sqnorm_sgdm(ETA, LAM, L, 0.0)), target, rtol=LAM * ETA)


@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_sgdm_map_converges_to_theorem_2(alpha):
  with jax.enable_x64(True):
    x = _sgdm(10.0, ETA, alpha, 20000)
    target = float(smd.sqnorm_sgdm(ETA, LAM, L, alpha))
    np.testing.assert_allclose(x[-1], target, rtol=1e-6)
    err = np.abs(x - target)
    log_rate = np.log(err[2000] / err[1000]) / 1000
    # The linearised map contracts at (1 − 4λη/(1−α)) to leading order in λη.
    np.testing.assert_allclose(
        log_rate, np.log(float(smd.approach_rate_sgdm(ETA, LAM, alpha))), rtol=0.1
    )


@pytest.mark.parametrize("alpha", [0.0, 0.9])
@pytest.mark.parametrize("k", [4.0, 10.0])
def test_lr_drop_needs_at_least_corollary_3_1_steps(k, alpha):
  """Divide η by k at equilibrium: reaching 1% of the new value takes ≥ the bound."""
  with jax.enable_x64(True):
    run = (lambda x0, eta, n: _sgd(x0, eta, n)) if alpha == 0 else (
        lambda x0, eta, n: _sgdm(x0, eta, alpha, n))
    sqnorm = smd.sqnorm_sgd if alpha == 0 else (lambda e, l, g: smd.sqnorm_sgdm(e, l, g, alpha))
    x_eq = run(1.0, ETA, 60000)[-1]
    np.testing.assert_allclose(x_eq, float(sqnorm(ETA, LAM, L)), rtol=1e-6)
    new_target = float(sqnorm(ETA / k, LAM, L))
    after = run(x_eq, ETA / k, 200000)
    close = np.abs(after / new_target - 1) < 0.01
    assert close.any()
    steps = int(np.argmax(close)) + 1
    bound = float(smd.steps_to_reequilibrate(k, ETA / k, LAM, alpha))
    assert bound <= steps < 5 * bound, (steps, bound)


def test_norm_rescale_reaches_the_new_equilibrium_at_once():
  k = 10.0
  with jax.enable_x64(True):
    x_eq = float(smd.sqnorm_sgd(ETA, LAM, L))
    rescaled = x_eq * float(smd.norm_rescale_factor(k)) ** 2
    after = _sgd(rescaled, ETA / k, 5000)
    np.testing.assert_allclose(after, float(smd.sqnorm_sgd(ETA / k, LAM, L)), rtol=1e-9)


def test_angular_update_and_rescale_closed_forms():
  # Theorem 3: angle² = 2λη/(1+α); in equilibrium for SGD, ||η g||² = 2λη ||w||² (Eq. 42).
  np.testing.assert_allclose(float(smd.angular_update_sgd(ETA, LAM)) ** 2, 2 * LAM * ETA, rtol=1e-6)
  np.testing.assert_allclose(
      float(smd.angular_update_sgdm(ETA, LAM, 0.9)) ** 2, 2 * LAM * ETA / 1.9, rtol=1e-6
  )
  # η^{1/4} scaling of the equilibrium norm ⇒ the rescale factor.
  ratio = float(smd.norm_sgd(ETA / 16, LAM, L) / smd.norm_sgd(ETA, LAM, L))
  np.testing.assert_allclose(ratio, float(smd.norm_rescale_factor(16.0)), rtol=1e-6)


def test_bad_python_numbers_raise():
  with pytest.raises(ValueError, match="weight_decay"):
    smd.norm_sgd(0.1, -1e-3, 1.0)
  with pytest.raises(ValueError, match="momentum"):
    smd.approach_rate_sgdm(0.1, 1e-3, momentum=1.0)
  with pytest.raises(ValueError, match="k"):
    smd.steps_to_reequilibrate(0.0, 0.1, 1e-3)
