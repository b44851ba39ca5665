"""Adam with one second moment per group: AdamS, which removes phenomenon (a) of
Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of Adam
with Batch Normalization*, ICLR 2021 submission (OpenReview), §4."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import check_beta, check_nonnegative, is_static_zero
from spherax import geometry, groups as groups_lib

__all__ = ["GroupAdamState", "group_adam_moments", "scale_by_group_adam"]


class GroupAdamState(NamedTuple):
  """``count``: the step; ``mu``: element-wise first moment (leaf dtype); ``nu``:
  second moment, one scalar per group (``stat_shape``) for grouped leaves and
  element-wise for ungrouped ones, in float32 (float64 for float64 leaves).
  Also the state of :func:`spherax.adams` and :func:`spherax.adamsrt`."""

  count: jax.Array
  mu: Any
  nu: Any


def coupled_first_moment(g, mu, b1, *, l2=0.0, x=None):
  """Adam's first moment with coupled L2: ``(mu', g̃)``, two :class:`spherax.geometry.Combination`.

  ``g̃ = g + λx`` (``λ = l2``, with ``x``) and ``mu' = β1 mu + (1 − β1) g̃``, each
  with its terms in the arrays ``g``, ``mu``, ``x`` (so that their per-group dot
  products can be reduced from those in one pass, :func:`spherax.geometry.dots`).
  The L2 term is written into the moment (``(1 − β1)λ x`` in ``mu'``) rather than
  formed once: XLA:CPU would otherwise write ``g + λx`` to memory for its two
  consumers. A static ``λ = 0`` (a Python number) adds no term: ``0·x`` would cost
  a full-size multiply and add per leaf (XLA does not fold ``0·x``), and for
  finite ``x`` the values are the same. ``g`` is in the compute dtype.

  >>> import jax.numpy as jnp
  >>> mu, coupled = coupled_first_moment(jnp.array([2.0]), jnp.ones(1), 0.9, l2=0.5,
  ...                                    x=jnp.array([4.0]))
  >>> [round(float(v[0]), 4) for v in (mu.value, coupled.value)]   # 0.9 + 0.1·4, 2 + 2
  [1.3, 4.0]
  """
  value = b1 * mu.astype(g.dtype) + (1 - b1) * g
  terms = ((b1, mu), (1 - b1, g))
  if x is None or is_static_zero(l2):
    return geometry.Combination(value, terms), geometry.Combination(g, ((1, g),))
  value = value + ((1 - b1) * l2) * x
  return (geometry.Combination(value, terms + (((1 - b1) * l2, x),)),
          geometry.Combination(g + l2 * x, ((1, g), (l2, x))))


def group_second_moment(layout, nu, sqnorm, b1, b2, eps, count):
  """AdamS's second moment and step scale: ``(nu', c)``, with the direction ``c·mu'``.

  On a group of ``d`` elements (``layout``) ``nu' = β2 nu + (1 − β2) ||g̃||²``
  (``sqnorm``: the groups' ``||g̃||²``) and
  ``c = sqrt(d) / ((1 − β1^t)(sqrt(nu'/(1 − β2^t)) + ε))``, one scalar per group
  (``stat_shape``); for ``layout=None`` element-wise (``sqnorm = |g̃|²``,
  ``d = 1``): Adam. ``c = 0`` where the denominator is 0 (never NaN). ``count``
  is ``t``, from 1.

  >>> import jax.numpy as jnp
  >>> nu, c = group_second_moment(None, jnp.zeros(1), jnp.array([4.0]), 0.9, 0.99, 0.0,
  ...                             jnp.int32(1))
  >>> round(float(c[0] * 0.2), 4)                     # Adam's first step, mu' = 0.1·2: 1
  1.0
  """
  bc1, bc2 = 1 - b1**count, 1 - b2**count
  nu = b2 * nu + (1 - b2) * sqnorm
  if layout is None:
    d = jnp.ones((), nu.dtype)
  else:
    d = jnp.asarray(math.sqrt(layout.group_size), nu.dtype)  # a constant, not a sqrt op
  den = jnp.sqrt(nu / bc2) + eps
  nonzero = den != 0
  return nu, jnp.where(nonzero, d / bc1, 0) / jnp.where(nonzero, den, 1)


def group_adam_moments(layout, g, mu, nu, b1, b2, eps, count, *, l2=0.0, x=None):
  """One leaf's AdamS moments: ``(mu', nu', c)`` with the direction ``c·mu'``.

  :func:`coupled_first_moment` (``g̃ = g + λx`` with ``x``), then
  :func:`group_second_moment` of ``||g̃||²`` per group (``layout``), or of
  ``|g̃|²`` element-wise for ``layout=None`` (Adam).

  >>> import jax.numpy as jnp
  >>> mu, nu, c = group_adam_moments(None, jnp.array([2.0]), jnp.zeros(1), jnp.zeros(1),
  ...                                0.9, 0.99, 0.0, jnp.int32(1))
  >>> jnp.round(c * mu, 4).tolist()                   # Adam's first step: sign(g)
  [1.0]
  """
  mu, coupled = coupled_first_moment(g, mu, b1, l2=l2, x=x)
  g = coupled.value
  sq = geometry.abs_sq(g) if layout is None else geometry.sqnorm(g, layout)
  nu, c = group_second_moment(layout, nu, sq, b1, b2, eps, count)
  return mu.value, nu, c


def scale_by_group_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, groups: Any = None
) -> optax.GradientTransformationExtraArgs:
  """Adam's direction with a per-group scalar second moment (AdamS, Roburin et al.,
  ICLR 2021 submission, §4).

  With ``t`` the step count (from 1) and, for a group of ``d`` elements,

  * ``m ← β1 m + (1 − β1) g`` (element-wise),
  * ``v ← β2 v + (1 − β2) Σ_group |g|²`` (one scalar per group),
  * output ``sqrt(d) · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)``,

  i.e. Adam on the group's mean square ``v/d`` with ``ε`` effectively
  ``ε/sqrt(d)``: exactly the authors' released AdamSRT code (steps 1–3).
  Ungrouped leaves are a group of one element per entry: plain Adam
  (``|g|²`` element-wise, so complex leaves behave as in ``optax.adam``). No learning rate is applied (chain
  ``optax.scale_by_learning_rate`` or :func:`spherax.transport_moments`).
  A zero second moment gives a zero direction, never NaN.

  Args:
    b1: decay of the first moment, in ``[0, 1)``.
    b2: decay of the second moment, in ``[0, 1)``.
    eps: added to ``sqrt(v̂)``, ``>= 0``.
    groups: the group specification (see :mod:`spherax.groups`).

  Example:

  >>> import jax.numpy as jnp
  >>> import spherax
  >>> params = {'w': jnp.ones((4, 1))}                  # one group, d = 4
  >>> tx = spherax.scale_by_group_adam(eps=0.0)
  >>> g = {'w': jnp.array([[1.], [1.], [1.], [1.]])}
  >>> out, state = tx.update(g, tx.init(params))
  >>> jnp.round(out['w'], 4).ravel().tolist(), state.nu['w'].shape
  ([1.0, 1.0, 1.0, 1.0], (1, 1))
  """
  who = "scale_by_group_adam"
  check_beta(who, "b1", b1)
  check_beta(who, "b2", b2)
  check_nonnegative(who, "eps", eps)

  def init_fn(params):
    layouts = groups_lib.resolve(groups, params, who=who)

    return GroupAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params),
        nu=groups_lib.tree_map_groups(lambda layout, x: geometry.zeros_stat(x, layout), layouts, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    layouts = groups_lib.resolve(groups, updates, who=who)
    count = optax.safe_increment(state.count)

    def step(layout, g, mu, nu):
      g32 = g.astype(geometry.compute_dtype(g, mu, nu))
      mu, nu, c = group_adam_moments(layout, g32, mu, nu, b1, b2, eps, count)
      scale = c if layout is None else geometry.expand(c, layout)
      return (scale * mu).astype(g.dtype), mu, nu

    out = groups_lib.tree_map_groups(step, layouts, updates, state.mu, state.nu)
    treedef = jax.tree.structure(updates)
    triples = treedef.flatten_up_to(out)
    direction, mu, nu = (
        jax.tree.unflatten(treedef, [t[i] for t in triples]) for i in range(3)
    )
    mu = jax.tree.map(lambda new, old: new.astype(old.dtype), mu, state.mu)
    nu = jax.tree.map(lambda new, old: new.astype(old.dtype), nu, state.nu)
    return direction, GroupAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
