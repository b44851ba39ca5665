"""Rotational equilibrium: predicted norms and update sizes (Kosson et al. 2024).

A scale-invariant group trained with weight decay reaches an equilibrium where the
gradient part of each update (which grows the norm) and the decay (which shrinks
it) balance in expectation. Kosson et al. (ICML 2024, Table 1 and App. F–I)
predict, for a group of ``C`` elements in the random-walk setting:

* ``η̂_g = sqrt(E||Δ_g p||²)``, the RMS size of the gradient part of an update
  (``rms_update_*``);
* ``η̂_r = E∠(ω_t, ω_{t+1})``, the expected angular update per step
  (``angular_update_*``), in radians;
* ``||ω̂||``, the equilibrium norm of the group (``norm_*``).

Names follow ``<quantity>_<optimizer>`` with optimizer one of ``sgdm``, ``adamw``,
``lion`` and ``adam_l2``. The weight decay ``λ`` is decoupled for AdamW and Lion
(``x ← x − ηλx``, as ``optax.adamw``/``optax.lion``) and an L2 term added to the
gradient for SGDM and Adam+L2. ``unit_grad_sqnorm`` is ``E||g̃||²`` with
``g̃ = g·||ω||`` the gradient at unit norm (scale-invariant groups have
``||g|| ∝ 1/||ω||``). In equilibrium ``η̂_r = η̂_g / ||ω̂||``.

Every function is pure ``jax.numpy`` arithmetic: it accepts floats or arrays
(broadcasting) and is jit-able.

Example:

>>> from spherax.theory import equilibrium
>>> round(float(equilibrium.angular_update_adamw(1e-3, 0.1, b1=0.9)), 6)
0.003244
>>> round(float(equilibrium.norm_adamw(1e-3, 0.1, group_size=128)), 6)
0.8

References:

* Kosson et al. 2024: Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from spherax.theory import smd
from spherax.theory.smd import _as_floats

__all__ = [
    "rms_update_sgdm",
    "angular_update_sgdm",
    "norm_sgdm",
    "rms_update_adamw",
    "angular_update_adamw",
    "norm_adamw",
    "lion_factor",
    "rms_update_lion",
    "angular_update_lion",
    "norm_lion",
    "sqnorm_adam_l2",
    "norm_adam_l2",
    "rms_update_adam_l2",
    "angular_update_adam_l2",
]


# --- SGDM (L2 weight decay, heavy-ball buffer v ← αv + g + λw, w ← w − ηv) ---


def rms_update_sgdm(learning_rate, grad_sqnorm, momentum=0.9):
  """``η̂_g = η sqrt(E||g||² / (1 − α²))`` for SGDM (Kosson et al. 2024 Table 1, App. H).

  ``grad_sqnorm`` is ``E||g||²`` at the current norm (not the unit gradient).

  >>> round(float(rms_update_sgdm(0.1, 1.0, momentum=0.0)), 6)
  0.1
  """
  eta, g, alpha = _as_floats(
      "rms_update_sgdm", learning_rate=learning_rate, grad_sqnorm=grad_sqnorm, momentum=momentum
  )
  return eta * jnp.sqrt(g / (1 - alpha**2))


def angular_update_sgdm(learning_rate, weight_decay, momentum=0.9):
  """``η̂_r = sqrt(2ηλ / (1 + α))`` for SGDM (Kosson et al. 2024 Table 1; SMD Theorem 3).

  Identical to :func:`spherax.theory.smd.angular_update_sgdm`.

  >>> round(float(angular_update_sgdm(0.1, 5e-4, momentum=0.9)), 6)
  0.007255
  """
  return smd.angular_update_sgdm(learning_rate, weight_decay, momentum)


def norm_sgdm(learning_rate, weight_decay, unit_grad_sqnorm, momentum=0.9):
  """``||ω̂|| = (η E||g̃||² / (2λ(1 − α)))^{1/4}`` for SGDM (Kosson et al. 2024 Table 1).

  This is the first-order form; :func:`spherax.theory.smd.norm_sgdm` keeps the
  ``λη/(1+α)`` correction of SMD Theorem 2.

  >>> round(float(norm_sgdm(0.1, 5e-4, 1.0, momentum=0.0)), 6)
  3.162278
  """
  eta, lam, g, alpha = _as_floats(
      "norm_sgdm",
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      unit_grad_sqnorm=unit_grad_sqnorm,
      momentum=momentum,
  )
  return (eta * g / (2 * lam * (1 - alpha))) ** 0.25


# --- AdamW (decoupled weight decay x ← x − ηλx) ---


def rms_update_adamw(learning_rate, group_size, b1=0.9):
  """``η̂_g = η sqrt(C (1 − β1) / (1 + β1))`` for AdamW (Kosson et al. 2024 Table 1, App. G).

  >>> round(float(rms_update_adamw(1e-3, 128, b1=0.0)), 6)
  0.011314
  """
  eta, c, beta = _as_floats(
      "rms_update_adamw", learning_rate=learning_rate, group_size=group_size, b1=b1
  )
  return eta * jnp.sqrt(c * (1 - beta) / (1 + beta))


def angular_update_adamw(learning_rate, weight_decay, b1=0.9):
  """``η̂_r = sqrt(2ηλ (1 − β1) / (1 + β1))`` for AdamW (Kosson et al. 2024 Table 1).

  >>> round(float(angular_update_adamw(1e-3, 0.1, b1=0.0)), 6)
  0.014142
  """
  eta, lam, beta = _as_floats(
      "angular_update_adamw", learning_rate=learning_rate, weight_decay=weight_decay, b1=b1
  )
  return jnp.sqrt(2 * eta * lam * (1 - beta) / (1 + beta))


def norm_adamw(learning_rate, weight_decay, group_size):
  """``||ω̂|| = sqrt(ηC / (2λ))`` for AdamW (Kosson et al. 2024 Table 1).

  >>> round(float(norm_adamw(5e-2, 1e-2, 16)), 6)
  6.324555
  """
  eta, lam, c = _as_floats(
      "norm_adamw", learning_rate=learning_rate, weight_decay=weight_decay, group_size=group_size
  )
  return jnp.sqrt(eta * c / (2 * lam))


# --- Lion (sign update, decoupled weight decay) ---


def lion_factor(b1=0.9, b2=0.99):
  """``(1 − β1)² + β1²(1 − β2)/(1 + β2)``, the momentum factor of Lion (Kosson et al. 2024 App. I).

  >>> round(float(lion_factor(0.9, 0.99)), 6)
  0.014070
  """
  beta1, beta2 = _as_floats("lion_factor", b1=b1, b2=b2)
  return (1 - beta1) ** 2 + beta1**2 * (1 - beta2) / (1 + beta2)


def rms_update_lion(learning_rate, group_size):
  """``η̂_g = η sqrt(C)`` for Lion: every coordinate of a sign update is ``±η``.

  >>> round(float(rms_update_lion(1e-4, 100)), 6)
  0.001
  """
  eta, c = _as_floats("rms_update_lion", learning_rate=learning_rate, group_size=group_size)
  return eta * jnp.sqrt(c)


def angular_update_lion(learning_rate, weight_decay, b1=0.9, b2=0.99):
  """``η̂_r = sqrt(πηλ) sqrt(lion_factor)`` for Lion (Kosson et al. 2024 Table 1).

  >>> round(float(angular_update_lion(5e-4, 1.0)), 6)
  0.004701
  """
  eta, lam = _as_floats(
      "angular_update_lion", learning_rate=learning_rate, weight_decay=weight_decay
  )
  return jnp.sqrt(math.pi * eta * lam * lion_factor(b1, b2))


def norm_lion(learning_rate, weight_decay, group_size, b1=0.9, b2=0.99):
  """``||ω̂|| = sqrt(ηC / (πλ)) · lion_factor^{-1/2}`` for Lion (Kosson et al. 2024 Table 1).

  >>> round(float(norm_lion(5e-4, 1.0, 16)), 6)
  0.42542
  """
  eta, lam, c = _as_floats(
      "norm_lion", learning_rate=learning_rate, weight_decay=weight_decay, group_size=group_size
  )
  base = eta * c / (math.pi * lam)
  return jnp.sqrt(base / lion_factor(b1, b2))


# --- Adam + L2 (L2 term added to the gradient before the moments) ---


def sqnorm_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm):
  """``y = ||ω̂||²`` for Adam+L2: the real root of a cubic (Kosson et al. 2024 App. I.2).

  ``4λ²y³ − Cη²λ²y² − Cη²E||g̃||² = 0``.

  With ``p = Cη²/4`` and ``q = Cη²E||g̃||²/(4λ²)`` the cubic is
  ``y³ − p y² − q = 0``; for ``q > 0`` its discriminant is positive, so it has one
  real root, given by Cardano's formula in a cancellation-free form:
  ``y = p/3 + w + p²/(9w)``, ``w = cbrt(p³/27 + q/2 + sqrt(q²/4 + p³q/27))``.

  >>> y = sqnorm_adam_l2(1e-3, 1e-3, 128, 1e-4)
  >>> lam, c, eta, g = 1e-3, 128, 1e-3, 1e-4
  >>> abs(float(4 * lam**2 * y**3 - c * eta**2 * lam**2 * y**2 - c * eta**2 * g)) < 1e-12
  True
  """
  eta, lam, c, g = _as_floats(
      "sqnorm_adam_l2",
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      group_size=group_size,
      unit_grad_sqnorm=unit_grad_sqnorm,
  )
  p = c * eta**2 / 4
  q = c * eta**2 * g / (4 * lam**2)
  w = jnp.cbrt(p**3 / 27 + q / 2 + jnp.sqrt(q**2 / 4 + p**3 * q / 27))
  return p / 3 + w + p**2 / (9 * w)


def norm_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm):
  """``||ω̂|| = sqrt(y)`` with ``y`` from :func:`sqnorm_adam_l2` (Kosson et al. 2024 Table 1).

  Unlike AdamW it depends on the gradient size ``E||g̃||²``: groups with different
  gradient magnitudes settle at different norms (unbalanced equilibrium).

  >>> round(float(norm_adam_l2(1e-3, 1e-3, 128, 0.0)), 6)
  0.005657
  """
  return jnp.sqrt(sqnorm_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm))


def rms_update_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm, b1=0.9):
  """RMS update of Adam+L2 (Kosson et al. 2024 App. I.2).

  ``η̂_g² = η² C (1−β1)/(1+β1) · E||g̃||² / (E||g̃||² + λ²||ω̂||⁴)``: the AdamW size
  times the share of the normalized update that comes from the gradient rather
  than the L2 term, at the equilibrium norm.

  >>> round(float(rms_update_adam_l2(1e-3, 1e-3, 128, 1e6, b1=0.0)), 6)
  0.011314
  """
  y = sqnorm_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm)
  lam, g = _as_floats(
      "rms_update_adam_l2", weight_decay=weight_decay, unit_grad_sqnorm=unit_grad_sqnorm
  )
  share = g / (g + lam**2 * y**2)
  return rms_update_adamw(learning_rate, group_size, b1) * jnp.sqrt(share)


def angular_update_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm, b1=0.9):
  """``η̂_r = η̂_g / ||ω̂||`` for Adam+L2 (Kosson et al. 2024 App. I.2): depends on ``E||g̃||²``.

  >>> a = angular_update_adam_l2(1e-3, 1e-3, 128, 1e-4)
  >>> b = angular_update_adam_l2(1e-3, 1e-3, 128, 1e-2)
  >>> bool(b < a)      # larger gradients: larger norm, slower rotation
  True
  """
  rms = rms_update_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm, b1)
  return rms / norm_adam_l2(learning_rate, weight_decay, group_size, unit_grad_sqnorm)
