"""The Rotational Wrapper (RV) of Kosson, Messmer, Jaggi, *Rotational Equilibrium: How
Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212
(Algorithm 1).

Per group of a *rotational* leaf, with ``n`` the group's norm frozen at the first
step and ``Δg`` the inner optimizer's gradient part (no learning rate, no weight
decay, e.g. AdamW's ``m̂ / (sqrt(v̂) + ε)``):

1. every step, from the measured ``Σx`` and ``||x||²``: centre the group (subtract
   its mean) and rescale it to its norm ``n`` (Algorithm 1 does this to the
   params at construction and after every step; optax cannot touch params at
   ``init``, so the first update lands exactly where the centred start plus its
   first step would, and re-imposing the constraint from measured statistics
   keeps rounding from accumulating in the mean or the norm, in bfloat16 too);
2. ``Δ ← Δg − mean(Δg)`` (optional centering), ``Δ ← Δ − x <Δ, x> / n²``;
3. ``S ← ζ S + (1 − ζ) ||Δ||²``, ``Ŝ = S / (1 − ζ^t)``;
4. ``x' = x − η̂_r · n · Δ / (sqrt(Ŝ) + eps)``, then ``x' ← x' · n / ||x'||``.

``η̂_r`` (the equilibrium angular update of Kosson et al. 2024, Table 1) is
recomputed from the scheduled learning rate every step; the step counter of
``ζ``'s bias correction is float32, as in the authors' code. Because ``Δ ⊥ x``
and ``||x|| = n``, ``||x'||² = n² + c² ||Δ||²`` with ``c = η̂_r n / (sqrt(Ŝ) + eps)``:
the final rescale needs no extra reduction.

Every per-group statistic comes from dot products of the raw inputs, ``Σx``,
``||x||²``, ``ΣΔg``, ``<Δg, x>``, ``||Δg||²``. The start is the per-group affine
map ``x_eff = a x + b`` (``a = n / ||x − μ_x||``, ``b = −a μ_x``), so
``<Δg, x_eff> = a <Δg, x> + b ΣΔg`` and ``||x_eff||² = a²||x||² + 2ab Σx + d b²``;
with ``μ = ΣΔg / d``, ``<Δc, x_eff> = <Δg, x_eff> − μ Σx_eff``,
``||Δc||² = ||Δg||² − μ ΣΔg`` and ``||Δ||² = ||Δc||² − 2 k <Δc, x_eff> + k² ||x_eff||²``
(``k = <Δc, x_eff> / n²``). A ``||Δ||²`` below the rounding floor of its terms
counts as 0 (the group does not move; element-wise, the centred Δ of a
per-group constant ``Δg`` is exactly 0). One element-wise pass then writes the
update. Non-rotational leaves (``groups`` gives ``None``: by default every leaf
with ``ndim <= 1``; or ``mask`` is False) receive the update of a separate full
optax transform (the inner optimizer with its learning rate and weight decay).
Empty leaves pass through.

Example:

>>> import jax.numpy as jnp, optax
>>> from spherax.transforms.rotational import rotational_wrapper
>>> opt = rotational_wrapper(optax.scale_by_adam(), optax.adam(1e-3), 1e-3,
...                          lambda lr: 0.01)
>>> params = {'w': jnp.array([[3., 0.], [4., 2.]]), 'b': jnp.zeros(2)}
>>> state = opt.init(params)
>>> grads = {'w': jnp.array([[1., 0.], [0., 1.]]), 'b': jnp.ones(2)}
>>> updates, state = opt.update(grads, state, params)
>>> new = optax.apply_updates(params, updates)
>>> jnp.linalg.norm(new['w'], axis=0).round(4).tolist()   # norms kept
[5.0, 2.0]
>>> new['w'].mean(axis=0).round(6).tolist()                # and centred
[0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import check_beta, check_learning_rate, check_nonnegative, require_params
from spherax import geometry
from spherax import groups as groups_lib

__all__ = ["RotationalState", "rotational_wrapper"]


class RotationalState(NamedTuple):
  """State of :func:`rotational_wrapper`.

  Attributes:
    count: steps taken (int32 scalar).
    norm: per rotational group, the frozen norm ``n`` (``stat_shape``; ``None``
      for non-rotational leaves).
    rms: per rotational group, the update-size tracker ``S``.
    direction: the inner gradient-part transform's state (rotational leaves).
    nonrotational: the full transform's state (non-rotational leaves).
  """

  count: jax.Array
  norm: Any
  rms: Any
  direction: optax.OptState
  nonrotational: optax.OptState


def rotational_wrapper(
    direction: optax.GradientTransformation,
    nonrotational: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    angular_rate: Callable[[jax.Array], jax.Array],
    *,
    rms_decay: float = 0.99,
    center: bool = True,
    eps: float = 1e-8,
    mask: Any = None,
    groups: Any = None,
    who: str = "rotational_wrapper",
) -> optax.GradientTransformationExtraArgs:
  """Wraps an inner optimizer so every rotational group rotates by ``η̂_r`` on average.

  Args:
    direction: the inner optimizer's gradient part ``Δg`` (a transform with no
      learning rate and no weight decay, e.g. ``optax.scale_by_adam()``); it sees
      only the rotational leaves.
    nonrotational: the complete inner optimizer (learning rate and weight decay
      included, e.g. ``optax.adamw(...)``); it sees only the other leaves.
    learning_rate: the inner optimizer's learning rate (float or schedule,
      evaluated at the step count); it only enters through ``angular_rate``.
    angular_rate: ``lr -> η̂_r``, the target angle per step (Kosson et al. 2024, Table 1).
    rms_decay: ``ζ``, the decay of the update-size tracker. The paper's default is
      0.99; the authors' later code uses 0.9.
    center: centre the groups at the first step and centre every ``Δ``
      (the Weight Standardization dynamics, the paper's default).
    eps: added to ``sqrt(Ŝ)`` (the reference's 1e-8).
    mask: leaves where it is False are not rotational (a pytree of bools or a
      callable of params; ``None``: every grouped leaf is rotational).
    groups: group specs (``None``: per output unit for ``ndim >= 2``, other leaves
      non-rotational); see :mod:`spherax.groups`.
    who: the name errors give (an optimizer built on the wrapper passes its own).

  Returns:
    An optax transform whose update moves rotational params to ``x'`` (above).
    It needs ``params`` in ``update``.
  """
  check_beta(who, "rms_decay", rms_decay)
  check_nonnegative(who, "eps", eps)
  check_learning_rate(who, learning_rate)

  def layouts_of(params):
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who=who)
    if mask is None:
      return layouts
    keep = jax.tree.structure(params).flatten_up_to(mask(params) if callable(mask) else mask)
    return [layout if bool(k) else None for layout, k in zip(layouts, keep)]

  def select(rotational: bool):
    def fn(params):
      return groups_lib.tree_map_groups(
          lambda layout, _: (layout is not None) == rotational, layouts_of(params), params
      )
    return fn

  inner_rot = optax.masked(direction, select(True))
  inner_other = optax.masked(nonrotational, select(False))

  def init_fn(params):
    layouts = layouts_of(params)

    def stat(layout, x):
      if layout is None:
        return None
      return geometry.zeros_stat(x, layout)

    return RotationalState(
        count=jnp.zeros([], jnp.int32),
        norm=groups_lib.tree_map_groups(stat, layouts, params),
        rms=groups_lib.tree_map_groups(stat, layouts, params),
        direction=inner_rot.init(params),
        nonrotational=inner_other.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    require_params(who, params)
    layouts = layouts_of(params)
    treedef = jax.tree.structure(params)
    first = state.count == 0

    # Σx and ||x||² are measured every step: each step re-centres the group and
    # rescales it to its frozen norm n (the reference re-centres and renormalises
    # x every step), so rounding cannot accumulate in the mean or the norm.
    def start(layout, x, n):
      """The start ``x_eff = a x + b`` per group (centred, norm ``n``), ``Σx``, ``||x||²``."""
      if layout is None:
        return None
      sx, xx = geometry.group_sum(x, layout), geometry.sqnorm(x, layout)
      mu = sx / layout.group_size if center else jnp.zeros_like(sx)
      n = jnp.where(first, jnp.sqrt(xx).astype(n.dtype), n)
      a = geometry.safe_div(n.astype(sx.dtype), jnp.sqrt(jnp.maximum(xx - mu * sx, 0)))
      return a, -a * mu, n, sx, xx

    xs = jax.tree.leaves(params)
    norms_in = treedef.flatten_up_to(state.norm)
    starts = [start(layout, x, n) for layout, x, n in zip(layouts, xs, norms_in)]
    norms = jax.tree.unflatten(treedef, [None if st is None else st[2] for st in starts])
    starts = jax.tree.unflatten(treedef, starts)

    def affine(layout, x, st):
      if layout is None:
        return x
      a, b = st[0], st[1]
      xe = geometry.expand(a, layout) * x.astype(a.dtype) + geometry.expand(b, layout)
      return xe.astype(x.dtype)

    inner_params = groups_lib.tree_map_groups(affine, layouts, params, starts)
    dirs, dir_state = inner_rot.update(updates, state.direction, inner_params, **extra_args)
    others, other_state = inner_other.update(
        updates, state.nonrotational, params, **extra_args
    )
    count = state.count
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    eta_r = angular_rate(lr)
    t = (count + 1).astype(jnp.float32)
    debias = 1 - jnp.asarray(rms_decay, jnp.float32) ** t

    def leaf(layout, x, dg, other, st, s):
      if layout is None:
        return other.astype(x.dtype), s
      if x.size == 0:
        return jnp.zeros_like(x), s
      a, b, n, sx, xx = st
      d = layout.group_size
      dtype = geometry.compute_dtype(x, dg)
      # Statistics of x_eff = a x + b and of the centred, projected Δ from the raw
      # dot products of x and Δg (see the module docstring).
      s_dg = geometry.group_sum(dg, layout)
      dg_x = geometry.dot(dg, x, layout)
      dg_dg = geometry.sqnorm(dg, layout)
      dg_xe = a * dg_x + b * s_dg
      s_xe = a * sx + d * b
      xe_xe = a * a * xx + 2 * a * b * sx + d * b * b
      mu = s_dg / d if center else jnp.zeros_like(s_dg)
      dc_xe = dg_xe - mu * s_xe
      dc_dc = dg_dg - mu * s_dg
      nd = n.astype(dtype)
      coef = geometry.safe_div(dc_xe, nd * nd)
      sq = dc_dc - 2 * coef * dc_xe + coef * coef * xe_xe
      # Below the rounding floor of its terms ||Δ||² is 0: Δ vanishes (Δg constant
      # per group, or along x) and the group must not move by amplified rounding.
      moves = sq > 64 * jnp.finfo(dtype).eps * (dg_dg + coef * coef * xe_xe)
      sq = jnp.where(moves, sq, 0)
      s = rms_decay * s + (1 - rms_decay) * sq.astype(s.dtype)
      angle = jnp.where(moves, eta_r / (jnp.sqrt(s.astype(dtype) / debias) + eps), 0)
      step = angle * nd
      scale = 1 / jnp.sqrt(1 + angle * angle * sq)  # n / ||x'||, overflow-free
      # One element-wise pass: x' = scale (x_eff − step Δ), Δ = (Δg − mu) − coef x_eff
      # (Δ element-wise, not regrouped, so that a Δ that vanishes exactly stays 0).
      e = lambda v: geometry.expand(v.astype(dtype), layout)
      xc = x.astype(dtype)
      xe = e(a) * xc + e(b)
      delta = (dg.astype(dtype) - e(mu)) - e(coef) * xe
      u = e(scale) * (xe - e(step) * delta) - xc
      return u.astype(x.dtype), s

    pairs = treedef.flatten_up_to(
        groups_lib.tree_map_groups(
            leaf, layouts, params, dirs, others, starts, state.rms
        )
    )
    new_updates = jax.tree.unflatten(treedef, [p[0] for p in pairs])
    rms = jax.tree.unflatten(treedef, [p[1] for p in pairs])
    return new_updates, RotationalState(
        count=optax.safe_int32_increment(count),
        norm=norms,
        rms=rms,
        direction=dir_state,
        nonrotational=other_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
