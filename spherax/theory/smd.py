"""Spherical Motion Dynamics: SGD/SGDM + weight decay equilibrium (Wan et al., SMD).

Wan et al. study SGD with L2 weight decay on a scale-invariant group,
``w ← w − η(g + λw)``, and SGDM ``v ← αv + g + λw``, ``w ← w − ηv``. With the
unit gradient ``g̃ = g·||w||`` and ``L = E||g̃||²`` (SGDM:
``L = E[||g̃||² + 2α<v_{t−1}, g̃>]``) the squared norm converges geometrically:

* SGD (Theorem 1): ``||w||² → sqrt(Lη / (2λ))`` at rate ``(1 − 4λη)^T``;
* SGDM (Theorem 2): ``||w||² → sqrt(Lη / (λ(1−α)(2 − λη/(1+α))))`` at rate
  ``(1 − 4λη/(1−α))^T``;
* angular update (Theorem 3): ``Δ_t → sqrt(2λη)`` (SGD), ``sqrt(2λη/(1+α))`` (SGDM).

After the learning rate is divided by ``k`` the new equilibrium needs at least
``log(k)(1−α)/(4λη)`` steps (Corollary 3.1); dividing every scale-invariant
group's norm by ``k^{1/4}`` at the drop reaches it at once.

Names follow ``<quantity>_<optimizer>`` (``sgd`` or ``sgdm``). All functions are pure
``jax.numpy`` arithmetic (floats or arrays, jit-able).

Example:

>>> from spherax.theory import smd
>>> round(float(smd.angular_update_sgdm(0.1, 1e-4, momentum=0.9)), 6)
0.003244
>>> round(float(smd.norm_rescale_factor(10.0)), 6)
0.562341

References:

* Wan et al., SMD: Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = [
    "sqnorm_sgd",
    "norm_sgd",
    "angular_update_sgd",
    "approach_rate_sgd",
    "sqnorm_sgdm",
    "norm_sgdm",
    "angular_update_sgdm",
    "approach_rate_sgdm",
    "steps_to_reequilibrate",
    "norm_rescale_factor",
]


_RULES = {
    "learning_rate": (lambda v: v >= 0, ">= 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "group_size": (lambda v: v > 0, "> 0"),
    "grad_sqnorm": (lambda v: v >= 0, ">= 0"),
    "unit_grad_sqnorm": (lambda v: v >= 0, ">= 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "b1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "k": (lambda v: v > 0, "> 0"),
}


def _as_floats(who, **values):
  """Validates Python-number arguments (traced ones pass) and returns float arrays.

  ``weight_decay = 0`` is allowed: there is no equilibrium, and norms and step
  counts come out as ``inf`` (angular updates as 0).
  """
  out = []
  for name, value in values.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      ok, rule = _RULES[name]
      if not ok(value):
        raise ValueError(f"spherax.theory.{who}: {name} must be {rule}, got {value!r}")
    out.append(jnp.asarray(value, dtype=jnp.result_type(float, value)))
  return out


def sqnorm_sgd(learning_rate, weight_decay, unit_grad_sqnorm):
  """Equilibrium ``||w||² = sqrt(Lη/(2λ))`` of SGD + L2 (Wan et al., SMD Theorem 1).

  The fixed point of the first-order map ``x ← (1−2λη)x + Lη²/x``.

  >>> round(float(sqnorm_sgd(0.1, 1e-3, 1.0)), 4)
  7.0711
  """
  eta, lam, g = _as_floats(
      "sqnorm_sgd",
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      unit_grad_sqnorm=unit_grad_sqnorm,
  )
  return jnp.sqrt(g * eta / (2 * lam))


def norm_sgd(learning_rate, weight_decay, unit_grad_sqnorm):
  """Equilibrium ``||w|| = (Lη/(2λ))^{1/4}`` of SGD + L2 (Wan et al., SMD Theorem 1).

  >>> round(float(norm_sgd(0.1, 1e-3, 1.0)), 4)
  2.6591
  """
  return jnp.sqrt(sqnorm_sgd(learning_rate, weight_decay, unit_grad_sqnorm))


def angular_update_sgd(learning_rate, weight_decay):
  """Equilibrium angular update ``sqrt(2λη)`` of SGD + L2 (Wan et al., SMD Theorem 3).

  >>> round(float(angular_update_sgd(0.1, 1e-3)), 6)
  0.014142
  """
  eta, lam = _as_floats(
      "angular_update_sgd", learning_rate=learning_rate, weight_decay=weight_decay
  )
  return jnp.sqrt(2 * lam * eta)


def approach_rate_sgd(learning_rate, weight_decay):
  """Per-step contraction ``1 − 4λη`` of the distance to equilibrium (Theorem 1).

  >>> round(float(approach_rate_sgd(0.1, 1e-3)), 6)
  0.9996
  """
  eta, lam = _as_floats(
      "approach_rate_sgd", learning_rate=learning_rate, weight_decay=weight_decay
  )
  return 1 - 4 * lam * eta


def sqnorm_sgdm(learning_rate, weight_decay, unit_grad_sqnorm, momentum=0.9):
  """Equilibrium ``||w||²`` of SGDM + L2 (Wan et al., SMD Theorem 2).

  ``sqrt(Lη / (λ(1−α)(2 − λη/(1+α))))``, the fixed point of the SGDM map of
  App. C.1 (:func:`spherax.simulate.smd_sgdm`).

  >>> round(float(sqnorm_sgdm(0.1, 1e-3, 1.0, momentum=0.9)), 4)
  22.36
  """
  eta, lam, g, alpha = _as_floats(
      "sqnorm_sgdm",
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      unit_grad_sqnorm=unit_grad_sqnorm,
      momentum=momentum,
  )
  den = lam * (1 - alpha) * (2 - lam * eta / (1 + alpha))
  return jnp.sqrt(g * eta / den)


def norm_sgdm(learning_rate, weight_decay, unit_grad_sqnorm, momentum=0.9):
  """Equilibrium ``||w||``: the square root of :func:`sqnorm_sgdm`.

  >>> round(float(norm_sgdm(0.1, 1e-3, 1.0, momentum=0.0)), 4)
  2.6592
  """
  return jnp.sqrt(sqnorm_sgdm(learning_rate, weight_decay, unit_grad_sqnorm, momentum))


def angular_update_sgdm(learning_rate, weight_decay, momentum=0.9):
  """Equilibrium angular update ``sqrt(2λη/(1+α))`` of SGDM + L2 (Wan et al., SMD Theorem 3).

  >>> round(float(angular_update_sgdm(0.1, 1e-3, momentum=0.0)), 6)
  0.014142
  """
  eta, lam, alpha = _as_floats(
      "angular_update_sgdm",
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      momentum=momentum,
  )
  return jnp.sqrt(2 * lam * eta / (1 + alpha))


def approach_rate_sgdm(learning_rate, weight_decay, momentum=0.9):
  """Per-step contraction ``1 − 4λη/(1−α)`` of the distance to equilibrium (Theorem 2).

  >>> round(float(approach_rate_sgdm(0.1, 1e-3, momentum=0.9)), 6)
  0.996
  """
  eta, lam, alpha = _as_floats(
      "approach_rate_sgdm",
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      momentum=momentum,
  )
  return 1 - 4 * lam * eta / (1 - alpha)


def steps_to_reequilibrate(k, learning_rate, weight_decay, momentum=0.0):
  """Lower bound on the steps to the new equilibrium after the lr is divided by ``k``.

  Wan et al., SMD Corollary 3.1: ``log(k)(1−α)/(4λη)`` (``momentum=0`` for SGD). Its
  proof bounds the shrinking of ``||w||²`` per step by ``(1 − 2λη)`` (SGD), so
  ``learning_rate`` is the rate in effect *after* the drop; ``||w||²`` has to
  shrink by ``sqrt(k)``. Returned as a real number (take the ceiling for a step
  count).

  >>> round(float(steps_to_reequilibrate(10.0, 0.01, 1e-3)), 2)
  57564.63
  """
  k, eta, lam, alpha = _as_floats(
      "steps_to_reequilibrate",
      k=k,
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      momentum=momentum,
  )
  return jnp.log(k) * (1 - alpha) / (4 * lam * eta)


def norm_rescale_factor(k):
  """``k^{-1/4}``: multiply scale-invariant norms by this when the lr is divided by ``k``.

  The equilibrium ``||w||`` scales like ``η^{1/4}`` (Theorems 1–2), so the rescaled
  weights sit at the new equilibrium at once (Wan et al., SMD §5).

  >>> float(norm_rescale_factor(16.0))
  0.5
  """
  (k,) = _as_floats("norm_rescale_factor", k=k)
  return k**-0.25
