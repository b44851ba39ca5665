"""Rotational optimizer variants (RV) of Kosson, Messmer, Jaggi, *Rotational Equilibrium:
How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.

Each RV wraps an optimizer with :func:`spherax.transforms.rotational.rotational_wrapper`
(Kosson et al. 2024, Algorithm 1): rotational groups rotate by the optimizer's
equilibrium angular update ``η̂_r`` (Kosson et al. 2024, Table 1) on average at a
frozen norm, every other leaf gets the plain optimizer's update:

* RV-AdamW: ``η̂_r = sqrt(2ηλ(1−β1)/(1+β1))``, ``Δg = m̂ / (sqrt(v̂) + ε)``;
* RV-SGDM: ``η̂_r = sqrt(2ηλ/(1+α))``, ``Δg = buf``, ``buf ← α buf + g`` (the
  non-rotational leaves get SGD-momentum with coupled L2, as PyTorch's SGD);
* RV-Lion: ``η̂_r = sqrt(πηλ) sqrt((1−β1)² + β1²(1−β2)/(1+β2))``,
  ``Δg = sign(β1 m + (1−β1) g)``;
* wrapped Adam+L2: ``Δg = m̂_g / (sqrt(v̂) + ε)`` with ``m_g`` the gradient share
  of the moment and ``v`` the second moment of ``g + λx``, and AdamW's ``η̂_r``
  (Kosson et al. 2024, Table 2 and Appendix I); ``λ`` is its ``l2_regularization`` (coupled L2).

``weight_decay`` is decoupled weight decay on the non-rotational leaves of
RV-AdamW and RV-Lion, and coupled L2 on those of RV-SGDM (as PyTorch's SGD, the
paper's inner optimizer); in every RV it also sets ``η̂_r``. ``mask`` (a pytree
of bools or a callable of params, as in optax): leaves where it is False get no
decay and are not rotational.

Example:

>>> import jax.numpy as jnp, optax, spherax
>>> opt = spherax.rv_adamw(1e-3, weight_decay=0.1)
>>> params = {'w': jnp.array([[3., 0.], [4., 2.]])}
>>> state = opt.init(params)
>>> updates, state = opt.update({'w': jnp.eye(2)}, state, params)
>>> new = optax.apply_updates(params, updates)
>>> jnp.linalg.norm(new['w'], axis=0).round(4).tolist()
[5.0, 2.0]
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import check_beta, check_learning_rate, check_nonnegative, check_range, require_params
from spherax.theory import equilibrium
from spherax.transforms.rotational import rotational_wrapper

__all__ = [
    "rotational",
    "rv_adamw",
    "rv_sgdm",
    "rv_lion",
    "rv_adam_l2",
    "scale_by_adam_l2_share",
]


def _check_rv(who, learning_rate, weight_decay, rms_decay, decay_name="weight_decay"):
  check_learning_rate(who, learning_rate)
  check_range(who, decay_name, weight_decay, 0.0, low_open=True)
  check_beta(who, "rms_decay", rms_decay)


def rotational(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    angular_rate: float | Callable[[jax.Array], jax.Array],
    *,
    weight_decay: float = 0.0,
    mask: Any = None,
    nonrotational: optax.GradientTransformation | None = None,
    rms_decay: float = 0.99,
    center: bool = True,
    eps: float = 1e-8,
    rotation_scale: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """The generic Rotational Wrapper around a gradient-part transform (Kosson et al.
  2024, Algorithm 1).

  Args:
    direction: the inner optimizer's gradient part ``Δg`` (no lr, no weight decay).
    learning_rate: float or schedule.
    angular_rate: ``η̂_r``, a number or a function of the scheduled learning rate.
    weight_decay: decoupled weight decay of the non-rotational leaves when
      ``nonrotational`` is not given (their update is
      ``−lr (Δg + weight_decay · x)``).
    mask: leaves where it is False get no decay and are not rotational.
    nonrotational: the full transform for the non-rotational leaves (overrides
      the default above).
    rms_decay, center, eps, rotation_scale, groups: see :func:`rotational_wrapper`.

  Example:

  >>> import jax.numpy as jnp, optax, spherax
  >>> opt = spherax.rotational(optax.scale_by_rms(), 1e-2, 0.05)
  >>> params = {'w': jnp.ones((3, 2)) + jnp.eye(3, 2)}
  >>> updates, _ = opt.update({'w': jnp.ones((3, 2))}, opt.init(params), params)
  >>> bool(jnp.isfinite(updates['w']).all())
  True
  """
  check_learning_rate("rotational", learning_rate)
  check_nonnegative("rotational", "weight_decay", weight_decay)
  if nonrotational is None:
    nonrotational = optax.chain(
        direction,
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
  rate = angular_rate if callable(angular_rate) else (lambda lr: angular_rate)
  return rotational_wrapper(
      direction, nonrotational, learning_rate, rate,
      rms_decay=rms_decay, center=center, eps=eps, rotation_scale=rotation_scale, mask=mask,
      groups=groups, who="rotational",
  )


def rv_adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 1e-2,
    mask: Any = None,
    rms_decay: float = 0.99,
    center: bool = True,
    rotation_scale: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """RV-AdamW: AdamW's direction rotated by ``sqrt(2ηλ(1−β1)/(1+β1))`` per step.

  Non-rotational leaves get ``optax.adamw`` with the same hyperparameters.

  Args:
    learning_rate: ``η``, a float or a schedule (``η̂_r`` follows the schedule).
    b1, b2, eps: Adam's direction ``m̂ / (sqrt(v̂) + ε)``.
    weight_decay: ``λ > 0`` (sets ``η̂_r``; decoupled on non-rotational leaves).
    mask: leaves where it is False get no decay and are not rotational.
    rms_decay: ``ζ`` of the RMS tracker (paper 0.99; later code 0.9).
    center: centre the groups and their updates.
    rotation_scale: per-group factor ``s`` of the target angular update ``s η̂_r``
      (Kosson et al. 2024, Appendix N, Fig. 12); see :func:`rotational_wrapper`.
    groups: the rotational groups (see :mod:`spherax.groups`).
  """
  _check_rv("rv_adamw", learning_rate, weight_decay, rms_decay)
  check_beta("rv_adamw", "b1", b1)
  check_beta("rv_adamw", "b2", b2)
  check_nonnegative("rv_adamw", "eps", eps)
  return rotational_wrapper(
      optax.scale_by_adam(b1, b2, eps),
      optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask),
      learning_rate,
      lambda lr: equilibrium.angular_update_adamw(lr, weight_decay, b1),
      rms_decay=rms_decay, center=center, rotation_scale=rotation_scale, mask=mask,
      groups=groups, who="rv_adamw",
  )


def rv_sgdm(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    *,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
    mask: Any = None,
    rms_decay: float = 0.99,
    center: bool = True,
    rotation_scale: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """RV-SGDM: the momentum buffer rotated by ``sqrt(2ηλ/(1+α))`` per step.

  Rotational groups use ``Δg = buf``, ``buf ← α buf + g`` (Nesterov:
  ``g + α buf``); non-rotational leaves get PyTorch-style SGD with coupled L2
  ``buf ← α buf + g + λx``, ``x ← x − η buf``.

  Args:
    learning_rate: ``η``, a float or a schedule.
    momentum: ``α``, in ``[0, 1)``.
    weight_decay: ``λ > 0`` (sets ``η̂_r``; coupled L2 on non-rotational leaves).
    nesterov: Nesterov momentum.
    mask, rms_decay, center, rotation_scale, groups: as in :func:`rv_adamw`.
  """
  _check_rv("rv_sgdm", learning_rate, weight_decay, rms_decay)
  check_beta("rv_sgdm", "momentum", momentum)
  direction = optax.trace(momentum, nesterov)
  nonrot = optax.chain(
      optax.add_decayed_weights(weight_decay, mask),
      optax.trace(momentum, nesterov),
      optax.scale_by_learning_rate(learning_rate),
  )
  return rotational_wrapper(
      direction, nonrot, learning_rate,
      lambda lr: equilibrium.angular_update_sgdm(lr, weight_decay, momentum),
      rms_decay=rms_decay, center=center, rotation_scale=rotation_scale, mask=mask,
      groups=groups, who="rv_sgdm",
  )


def rv_lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    *,
    weight_decay: float = 1e-3,
    mask: Any = None,
    rms_decay: float = 0.99,
    center: bool = True,
    rotation_scale: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """RV-Lion: Lion's sign direction rotated by Lion's ``η̂_r`` (Kosson et al. 2024, Table 1).

  Non-rotational leaves get ``optax.lion`` with the same hyperparameters.

  Args:
    learning_rate: ``η``, a float or a schedule.
    b1, b2: Lion's interpolation and moment decays.
    weight_decay: ``λ > 0`` (sets ``η̂_r``; decoupled on non-rotational leaves).
    mask, rms_decay, center, rotation_scale, groups: as in :func:`rv_adamw`.
  """
  _check_rv("rv_lion", learning_rate, weight_decay, rms_decay)
  check_beta("rv_lion", "b1", b1)
  check_beta("rv_lion", "b2", b2)
  return rotational_wrapper(
      optax.scale_by_lion(b1, b2),
      optax.lion(learning_rate, b1, b2, weight_decay=weight_decay, mask=mask),
      learning_rate,
      lambda lr: equilibrium.angular_update_lion(lr, weight_decay, b1, b2),
      rms_decay=rms_decay, center=center, rotation_scale=rotation_scale, mask=mask,
      groups=groups, who="rv_lion",
  )


class ScaleByAdamL2ShareState(NamedTuple):
  """``mu``: EMA of the gradient alone; ``nu``: EMA of ``(g + λx)²``."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_adam_l2_share(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, l2_regularization: float = 0.0
) -> optax.GradientTransformation:
  """The gradient part of Adam+L2: ``m̂_g / (sqrt(v̂) + ε)`` (Kosson et al. 2024,
  "wrapped Adam+L2", Table 2 and Appendix I).

  Adam+L2's moment of ``g + λx`` splits into a gradient share ``m_g`` (EMA of
  ``g``) and an L2 share; the second moment ``v`` keeps the L2 term
  (EMA of ``|g + λx|²``), ``λ`` = ``l2_regularization``. Needs ``params``.
  """

  def init_fn(params):
    return ScaleByAdamL2ShareState(
        jnp.zeros([], jnp.int32), optax.tree.zeros_like(params), optax.tree.zeros_like(params)
    )

  def update_fn(updates, state, params=None):
    require_params('scale_by_adam_l2_share', params)
    count = optax.safe_int32_increment(state.count)
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)

    def second(v, g, x):
      z = g + l2_regularization * x
      return b2 * v + (1 - b2) * (z * jnp.conj(z)).real

    nu = jax.tree.map(second, state.nu, updates, params)
    # The bias corrections as optax.scale_by_adam has them (double under x64).
    c1, c2 = 1 - b1**count, 1 - b2**count
    out = jax.tree.map(
        lambda m, v: ((m / c1.astype(m.dtype)) / (jnp.sqrt(v / c2.astype(v.dtype)) + eps)
                      ).astype(m.dtype), mu, nu
    )
    return out, ScaleByAdamL2ShareState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def rv_adam_l2(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    l2_regularization: float = 1e-3,
    mask: Any = None,
    rms_decay: float = 0.99,
    center: bool = True,
    rotation_scale: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Wrapped Adam+L2: Adam+L2's gradient-share direction with AdamW's ``η̂_r``.

  ``l2_regularization`` is the coupled L2 coefficient ``λ`` (it enters ``v``
  and, for the non-rotational leaves, the plain Adam+L2 update ``g ← g + λx``);
  it also sets ``η̂_r = sqrt(2ηλ(1−β1)/(1+β1))`` (Kosson et al. 2024, Table 2, Appendix I).

  Args:
    learning_rate: ``η``, a float or a schedule.
    b1, b2, eps: Adam's moments and ``ε``.
    l2_regularization: ``λ > 0``, the coupled L2 coefficient.
    mask, rms_decay, center, rotation_scale, groups: as in :func:`rv_adamw`.
  """
  _check_rv("rv_adam_l2", learning_rate, l2_regularization, rms_decay, "l2_regularization")
  check_beta("rv_adam_l2", "b1", b1)
  check_beta("rv_adam_l2", "b2", b2)
  check_nonnegative("rv_adam_l2", "eps", eps)
  nonrot = optax.chain(
      optax.add_decayed_weights(l2_regularization, mask),
      optax.scale_by_adam(b1, b2, eps),
      optax.scale_by_learning_rate(learning_rate),
  )
  return rotational_wrapper(
      scale_by_adam_l2_share(b1, b2, eps, l2_regularization=l2_regularization),
      nonrot,
      learning_rate,
      lambda lr: equilibrium.angular_update_adamw(lr, l2_regularization, b1),
      rms_decay=rms_decay, center=center, rotation_scale=rotation_scale, mask=mask,
      groups=groups, who="rv_adam_l2",
  )
