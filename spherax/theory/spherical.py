"""The spherical framework: effective learning rate and direction.

Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on
Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, §2.
Roburin et al. write a generic first-order step on one group as
``x_{k+1} = x_k − η_k a_k ⊘ b_k`` (``a_k = β a_{k−1} + ∇L(x_k) + λx_k``; SGD ``b = 1``;
Adam ``a = m/(1−β1)``, ``b = (1−β1^{k+1})/(1−β1) · sqrt(v̂)``). With ``r = ||x||``,
``u = x/r``, ``d`` the group size, ``ν' = d^{-1/2}||b||`` (the RMS of ``b``),

* effective direction ``c = r a ⊘ (b/ν')`` and its tangential part
  ``c⊥ = c − <c, u>u``;
* ``A = η/(r²ν')`` and effective learning rate ``η^e = A (1 − A<c, u>)^{-1}``.

Theorem 2 (exact, under H1 ``1 − A<c, u> > 0``):
``u_{k+1} = (u_k − η^e c⊥) / sqrt(1 + (η^e||c⊥||)²)``, so one step turns the group by
``arctan(η^e||c⊥||)`` (H2 ``η^e||c⊥|| < π``), and
``r_{k+1}/r_k = (1 − A<c, u>) sqrt(1 + (η^e||c⊥||)²)``.

Table 1 gives ``η^e`` for SGD, SGD+L2, SGD-M and Adam; Theorem 4 maps SGD with L2
onto AdaGradG on the unit sphere (:func:`adagradg_hyperparams`).

Example: an SGD step ``x − η g`` with ``g ⊥ x`` turns ``x`` by ``arctan(η||g||/r)``.

>>> import jax.numpy as jnp
>>> from spherax.theory import spherical
>>> x, g = jnp.array([2., 0.]), jnp.array([0., 1.])
>>> step = spherical.spherical_step(x, g, 1.0, learning_rate=0.5)
>>> step.effective_lr.tolist(), step.angle.tolist() == [float(jnp.arctan(0.5 / 2))]
([0.125], True)

References:

* Roburin et al. 2022: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from spherax import geometry, groups
from spherax import groups as groups_lib
from spherax.groups import GroupLayout

__all__ = [
    "SphericalStep",
    "spherical_step",
    "adam_coefficients",
    "effective_lr_sgd",
    "effective_lr_sgd_l2",
    "effective_lr_sgdm",
    "effective_lr_adam",
    "AdaGradGHyperparams",
    "adagradg_hyperparams",
    "adagradg_initial_accumulator",
]


class SphericalStep(NamedTuple):
  """Theorem 2 quantities of one step; per-group fields have ``layout.stat_shape``.

  Attributes:
    effective_lr: ``η^e``.
    direction: ``c⊥``, the effective direction (shape of ``x``).
    c_dot_u: ``<c, u>``, the radial part of ``c``.
    scale: ``A = η/(r² d^{-1/2}||b||)``.
    angle: ``arctan(η^e||c⊥||)``, the predicted angle between ``x_k`` and ``x_{k+1}``.
    radius_ratio: ``r_{k+1}/r_k = (1 − A<c, u>) sqrt(1 + (η^e||c⊥||)²)``.
    h1: hypothesis H1, ``1 − A<c, u> > 0``.
    h2: hypothesis H2, ``η^e||c⊥|| < π``.
  """

  effective_lr: jax.Array
  direction: jax.Array
  c_dot_u: jax.Array
  scale: jax.Array
  angle: jax.Array
  radius_ratio: jax.Array
  h1: jax.Array
  h2: jax.Array


def spherical_step(x, a, b, learning_rate, layout: GroupLayout | None = None) -> SphericalStep:
  """Effective learning rate, direction and predicted rotation of ``x − η a ⊘ b``.

  Roburin et al. 2022 Theorem 2 (see the module docstring). ``a`` and ``b`` broadcast against
  ``x`` (``b = 1`` for SGD); ``layout`` splits ``x`` into groups
  (:mod:`spherax.groups`), default one group for the whole array. Divisions are
  guarded: a zero group or a zero ``b`` gives zeros, not NaN.

  >>> import jax.numpy as jnp
  >>> x = jnp.array([[3., 0.], [4., 1.]])        # two groups: the columns
  >>> a = jnp.array([[4., 1.], [-3., 0.]])       # tangent to each column
  >>> from spherax import groups
  >>> lay = groups.per_output().layout(x.shape)
  >>> s = spherical_step(x, a, 1.0, 0.1, layout=lay)
  >>> s.effective_lr.tolist(), s.h1.tolist()
  ([[0.004, 0.1]], [[True, True]])
  """
  if layout is None:
    layout = groups.whole().layout(jnp.shape(x))
  dtype = geometry.compute_dtype(jnp.asarray(x), jnp.asarray(a), jnp.asarray(b))
  x = jnp.asarray(x, dtype)
  a = jnp.broadcast_to(jnp.asarray(a, dtype), x.shape)
  b = jnp.broadcast_to(jnp.asarray(b, dtype), x.shape)
  eta = jnp.asarray(learning_rate, dtype)
  r = geometry.norm(x, layout)
  u = geometry.expand(geometry.safe_div(1.0, r), layout) * x
  b_rms = jnp.sqrt(geometry.mean(b * b, layout))
  c = geometry.expand(r * b_rms, layout) * geometry.safe_div(a, b)
  c_dot_u = geometry.dot(c, u, layout)
  direction = c - geometry.expand(c_dot_u, layout) * u
  scale = geometry.safe_div(eta, r**2 * b_rms)
  shrink = 1 - scale * c_dot_u
  effective_lr = geometry.safe_div(scale, shrink)
  turn = effective_lr * geometry.norm(direction, layout)
  return SphericalStep(
      effective_lr=effective_lr,
      direction=direction,
      c_dot_u=c_dot_u,
      scale=scale,
      angle=jnp.arctan(turn),
      radius_ratio=shrink * jnp.sqrt(1 + turn**2),
      h1=shrink > 0,
      h2=turn < jnp.pi,
  )


def adam_coefficients(mu, nu, count, b1=0.9, b2=0.999, eps=1e-8):
  """``(a, b)`` of Roburin et al. 2022 (§2) for an Adam state, so that ``η a ⊘ b`` is the Adam step.

  ``a = m/(1−β1)``, ``b = (1−β1^t)/(1−β1) · (sqrt(v/(1−β2^t)) + ε)`` with ``t`` the
  step count *after* the update (``optax.ScaleByAdamState.count``) and ``ε``
  outside the square root, as ``optax.adam`` (Roburin et al. 2022 put it inside).

  >>> import jax.numpy as jnp
  >>> a, b = adam_coefficients(jnp.array([0.1]), jnp.array([1e-3]), 1, eps=0.0)
  >>> float((a / b)[0])      # first Adam step: m̂/sqrt(v̂) = g/|g| = 1
  1.0
  """
  t = jnp.asarray(count)
  a = jnp.asarray(mu) / (1 - b1)
  v_hat = jnp.asarray(nu) / (1 - jnp.asarray(b2) ** t)
  b = (1 - jnp.asarray(b1) ** t) / (1 - b1) * (jnp.sqrt(v_hat) + eps)
  return a, b


def effective_lr_sgd(learning_rate, radius):
  """SGD (Roburin et al. 2022, Table 1): ``η^e = η/r²``.

  >>> float(effective_lr_sgd(0.1, 2.0))
  0.025
  """
  return jnp.asarray(learning_rate) / jnp.asarray(radius) ** 2


def effective_lr_sgd_l2(learning_rate, radius, weight_decay):
  """SGD + L2 (Roburin et al. 2022, Table 1): ``η^e = η/(r²(1 − ηλ))``.

  >>> round(float(effective_lr_sgd_l2(0.1, 1.0, 1.0)), 6)
  0.111111
  """
  eta = jnp.asarray(learning_rate)
  return eta / (jnp.asarray(radius) ** 2 * (1 - eta * jnp.asarray(weight_decay)))


def effective_lr_sgdm(learning_rate, radius, c_dot_u):
  """SGD-M (Roburin et al. 2022, Table 1): ``η^e = η/r² · (1 − η<c, u>/r²)^{-1}``.

  ``<c, u> = r<a, u>``: the radial part of the momentum buffer times the radius.

  >>> float(effective_lr_sgdm(0.1, 1.0, 0.0))
  0.1
  """
  base = jnp.asarray(learning_rate) / jnp.asarray(radius) ** 2
  return base / (1 - base * jnp.asarray(c_dot_u))


def effective_lr_adam(learning_rate, radius, nu, c_dot_u):
  """Adam (Roburin et al. 2022, Table 1): ``η^e = η/(rν) · (1 − η<c, u>/(rν))^{-1}``.

  ``ν = r d^{-1/2}||b||``.

  >>> float(effective_lr_adam(0.1, 1.0, 2.0, 0.0))
  0.05
  """
  base = jnp.asarray(learning_rate) / (jnp.asarray(radius) * jnp.asarray(nu))
  return base / (1 - base * jnp.asarray(c_dot_u))


class AdaGradGHyperparams(NamedTuple):
  """Arguments of ``spherax.adagradg`` that reproduce an SGD + L2 run (Theorem 4)."""

  learning_rate: jax.Array
  decay: jax.Array
  initial_accumulator_value: jax.Array


def adagradg_hyperparams(learning_rate, weight_decay, radius) -> AdaGradGHyperparams:
  """SGD (lr ``η``, L2 ``λ``, start radius ``r_0``) → AdaGradG (Roburin et al. 2022, Theorem 4).

  ``β = (1 − ηλ)^4``, ``η_k = (2β)^{-1/2}``, ``v_0 = r_0^4 / (2η²β^{1/2})``: AdaGradG
  started at ``u_0 = x_0/r_0`` follows SGD's trajectory on the sphere to order 2 in
  the step.

  >>> h = adagradg_hyperparams(0.1, 0.0, 1.0)
  >>> float(h.decay), round(float(h.learning_rate), 6), round(float(h.initial_accumulator_value), 6)
  (1.0, 0.707107, 50.0)
  """
  eta = jnp.asarray(learning_rate, jnp.result_type(float, learning_rate))
  beta = (1 - eta * weight_decay) ** 4
  return AdaGradGHyperparams(
      learning_rate=(2 * beta) ** -0.5,
      decay=beta,
      initial_accumulator_value=jnp.asarray(radius) ** 4 / (2 * eta**2 * jnp.sqrt(beta)),
  )


def adagradg_initial_accumulator(params, learning_rate, weight_decay, *, groups=None):
  """Per-group ``v_0 = r_0⁴ / (2 η² β^{1/2})`` of Theorem 4, from each group's own ``r_0``.

  ``η`` and ``λ`` are the SGD run's learning rate and L2, ``β = (1 − ηλ)⁴`` and
  ``r_0 = ||x_0||`` per group (``groups`` as in :mod:`spherax.groups`). Returns a
  pytree like ``params``: an array of the leaf's ``stat_shape`` on grouped leaves,
  ``None`` elsewhere; pass it as ``initial_accumulator_value`` to
  :func:`spherax.adagradg` (with ``learning_rate`` and ``decay`` from
  :func:`adagradg_hyperparams`) and start AdaGradG at the unit directions
  (:func:`spherax.project_params`).

  >>> import jax.numpy as jnp
  >>> params = {'w': jnp.array([[1., 0.], [0., 2.]])}      # filters of norm 1 and 2
  >>> v0 = adagradg_initial_accumulator(params, 0.1, 0.0)
  >>> jnp.round(v0['w'], 3).tolist()
  [[50.0, 800.0]]
  """
  h = adagradg_hyperparams(learning_rate, weight_decay, 1.0)
  layouts = groups_lib.resolve(groups, params, min_group_size=2, who="adagradg_initial_accumulator")

  def leaf(layout, x):
    if layout is None:
      return None
    r = geometry.norm(x, layout)
    return (r * r) ** 2 * h.initial_accumulator_value.astype(r.dtype)

  return groups_lib.tree_map_groups(leaf, layouts, params)
