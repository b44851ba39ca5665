"""The Rotational Wrapper (RV) of Kosson, Messmer, Jaggi, *Rotational Equilibrium: How
Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212
(Algorithm 1).

Per group of a *rotational* leaf, with ``n`` the group's norm frozen at the first
step, ``d`` its size and ``Δg`` the inner optimizer's gradient part (no learning
rate, no weight decay, e.g. AdamW's ``m̂ / (sqrt(v̂) + ε)``):

1. **centre** ``x_c = x − mean(x)`` and take the start ``x_s = n x_c / ||x_c||``
   on the sphere of radius ``n`` (Algorithm 1 centres and rescales the params at
   construction and keeps them so; optax cannot touch params at ``init``, so the
   first update lands where the centred start plus its first step would, and
   re-imposing the constraint from ``Σx``, ``||x||²`` measured every step keeps
   rounding from accumulating in the mean or the norm, in bfloat16 too);
2. **project** ``Δc = Δg − mean(Δg)`` (optional centring) onto the tangent space,
   ``Δ = Δc − x_c <Δc, x_c> / ||x_c||²``;
3. **track** ``S ← ζ S + (1 − ζ) ||Δ||²``, ``Ŝ = S / (1 − ζ^t)``;
4. **scale** to the angular update ``a = s η̂_r / (sqrt(Ŝ) + eps)`` (``s`` the
   group's ``rotation_scale``, 1 by default) and **retract** to the frozen norm:
   ``x' = n (x_s/n − a Δ) / ||x_s/n − a Δ||``.

``η̂_r`` (the equilibrium angular update of Kosson et al. 2024, Table 1) is
recomputed from the scheduled learning rate every step; the step counter of
``ζ``'s bias correction is float32, as in the authors' code. The rotation per
step is ``arctan(a ||Δ||)``, on average ``s η̂_r`` once ``Ŝ`` tracks ``||Δ||²``.

One reduction pass per leaf: every statistic comes from ``Σx``, ``||x||²``,
``ΣΔg``, ``<Δg, x>``, ``||Δg||²`` (:func:`spherax.geometry.centered_dot` gives the
centred inner products): with ``ρ = 1/||x_c||`` and ``c = <Δc, x_c> ρ`` (the
part of ``Δc`` along ``x_c/||x_c||``), ``Δ = Δc − c ρ x_c`` and
``||Δ||² = ||Δc||² − c²``; since ``Δ ⊥ x_s``, ``||x_s/n − a Δ||² = 1 + a² ||Δ||²``
needs no further reduction, and the update is
``x' = σ ((1 + a c) ρ x_c − a Δc)``, ``σ = n / sqrt(1 + a² ||Δ||²)``: a handful of
per-group coefficients, each computed once. A ``||Δ||²`` below the rounding floor
of its terms counts as 0 (the group does not move; element-wise, the centred Δ of
a per-group constant ``Δg`` is exactly 0). One element-wise pass then writes the
update. This per-leaf rule is one jitted function of the leaf's shape and group
layout, so a tree with many leaves of one shape traces and lowers it once (XLA
inlines it: the compiled step is the same).

Non-rotational leaves (``groups`` gives ``None``: by default every leaf with
``ndim <= 1``; or ``mask`` is False) receive the update of a separate full optax
transform (the inner optimizer with its learning rate and weight decay). Empty
leaves pass through.

**One count.** The state's only ``count`` is the wrapper's step (as in every optax
optimizer, ``optax.tree.get(state, "count")`` reads it). The inner transforms'
states are kept whole, except that a ``count`` field of theirs is stored under the
name ``inner_count`` (the NamedTuple holding it is stored as a dict of its
fields, rebuilt for the inner ``update``): whatever an inner ``count`` means
(optax's transforms count their own updates, ``optax.apply_every`` counts modulo
``k``), it keeps its value and its meaning.

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
>>> int(optax.tree.get(state, 'count'))                     # one count: the step
1
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spherax._checks import check_beta, check_learning_rate, check_nonnegative, require_params
from spherax import geometry
from spherax import groups as groups_lib

__all__ = ["RotationalState", "rotational_wrapper"]

_INNER_COUNT = "inner_count"


class RotationalState(NamedTuple):
  """State of :func:`rotational_wrapper`.

  Attributes:
    count: steps taken (int32 scalar), the state's only ``count``.
    norm: per rotational group, the frozen norm ``n`` (``stat_shape``; ``None``
      for non-rotational leaves).
    rms: per rotational group, the update-size tracker ``S``.
    direction: the inner gradient-part transform's state (rotational leaves),
      its ``count`` fields stored as ``inner_count`` (module docstring).
    nonrotational: the full transform's state (non-rotational leaves), stored
      the same way.
  """

  count: jax.Array
  norm: Any
  rms: Any
  direction: Any
  nonrotational: Any


def _has_count(node: Any) -> bool:
  return isinstance(node, tuple) and "count" in getattr(node, "_fields", ())


def _stored(state: Any) -> Any:
  """An inner state as the wrapper keeps it: each NamedTuple with a ``count``
  field becomes a dict of its fields, ``count`` named ``inner_count``."""

  def node(n):
    if not _has_count(n):
      return n
    return {(_INNER_COUNT if f == "count" else f): _stored(v) for f, v in zip(n._fields, n)}

  return jax.tree.map(node, state, is_leaf=_has_count)


def _rebuilt(template: Any, stored: Any) -> Any:
  """The inverse of :func:`_stored`, given the inner state's structure (``template``)."""
  outer = jax.tree.structure(template, is_leaf=_has_count)

  def node(t, s):
    if not _has_count(t):
      return s
    return type(t)(*(_rebuilt(getattr(t, f), s[_INNER_COUNT if f == "count" else f])
                     for f in t._fields))

  parts = zip(jax.tree.leaves(template, is_leaf=_has_count), outer.flatten_up_to(stored))
  return jax.tree.unflatten(outer, [node(t, s) for t, s in parts])


def _frame(sx, xx, n, first, *, layout, center):
  """Per group: the mean ``μ``, ``ρ = 1/||x_c||`` (0 for a constant group), the norm
  ``n`` (frozen at the first step) and ``n/||x_c||``, from ``Σx`` and ``||x||²``."""
  mu = sx / layout.group_size if center else jnp.zeros_like(sx)
  # ||x_c||² = ||x||² − 2 μ Σx + d μ² (equal to centered_dot's ||x||² − μ Σx to rounding;
  # kept in this form, in which XLA:GPU fuses rv_adam_l2's v' into its reduction pass).
  xc_xc = jnp.maximum(geometry.shifted_dot(xx, sx, sx, mu, mu, layout.group_size), 0)
  rho = geometry.safe_div(1, jnp.sqrt(xc_xc))
  n = jnp.where(first, jnp.sqrt(xx).astype(n.dtype), n)
  return mu, rho, n, geometry.safe_div(n.astype(xc_xc.dtype), jnp.sqrt(xc_xc))


@functools.partial(jax.jit, static_argnames=("layout", "center"))
def _start(x, n, first, *, layout, center):
  """``x_s = n x_c / ||x_c||``: what the inner direction sees as params (XLA drops it
  where the direction does not read params)."""
  mu, _, _, a = _frame(geometry.group_sum(x, layout), geometry.sqnorm(x, layout), n, first,
                       layout=layout, center=center)
  e = lambda v: geometry.expand(v, layout)
  return (e(a) * (x.astype(a.dtype) - e(mu))).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("layout", "center"))
def _rotate(x, dg, n, s, first, target, debias, decay, rest, eps, *, layout, center):
  """One rotational leaf's update ``x' − x``, new ``S`` and frozen norm ``n`` (module
  docstring), with ``decay = ζ`` and ``rest = 1 − ζ``."""
  dtype = geometry.compute_dtype(x, dg)
  # Raw sums and dot products (one pass over x and Δg; one kernel on a CUDA device),
  # then the centred ones.
  sx, s_dg, xx, dg_x, dg_dg = geometry.sums_and_dots(
      [x, dg], [(x, x), (dg, x), (dg, dg)], layout, one_pass=True)
  mu_x, rho, n, _ = _frame(sx, xx, n, first, layout=layout, center=center)
  mu_d = s_dg / layout.group_size if center else jnp.zeros_like(s_dg)
  # Δ = Δc − c ρ x_c, c = <Δc, x_c> ρ the component of Δc along x_c / ||x_c||.
  c = geometry.centered_dot(dg_x, s_dg, mu_x) * rho
  sq = jnp.maximum(geometry.centered_dot(dg_dg, s_dg, mu_d) - c * c, 0)  # ||Δ||²
  # Below the rounding floor of its terms ||Δ||² is 0: Δ vanishes (Δg constant
  # per group, or along x) and the group must not move by amplified rounding.
  sq = jnp.where(sq > 64 * jnp.finfo(dtype).eps * (dg_dg + c * c), sq, 0)
  s = decay * s + rest * sq.astype(s.dtype)
  # sq > 0 exactly where the group moves (the floor above is >= 0).
  angle = jnp.where(sq > 0, target / (jnp.sqrt(s.astype(dtype) / debias) + eps), 0)
  # x' = n (ρ x_c − angle Δ) / sqrt(1 + angle² ||Δ||²) = σ ((1 + angle c) ρ x_c − angle Δc).
  sigma = n.astype(dtype) / jnp.sqrt(1 + angle * angle * sq)
  e = lambda v: geometry.expand(v.astype(dtype), layout)
  xc = x.astype(dtype) - e(mu_x)
  dc = dg.astype(dtype) - e(mu_d)
  x_new = e(sigma * (1 + angle * c) * rho) * xc - e(sigma * angle) * dc
  return (x_new - x.astype(dtype)).astype(x.dtype), s, n


def rotational_wrapper(
    direction: optax.GradientTransformation,
    nonrotational: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    angular_rate: Callable[[jax.Array], jax.Array],
    *,
    rms_decay: float = 0.99,
    center: bool = True,
    eps: float = 1e-8,
    rotation_scale: Any = None,
    mask: Any = None,
    groups: Any = None,
    who: str = "rotational_wrapper",
) -> optax.GradientTransformationExtraArgs:
  """Wraps an inner optimizer so every rotational group rotates by ``η̂_r`` on average.

  Args:
    direction: the inner optimizer's gradient part ``Δg`` (a transform with no
      learning rate and no weight decay, e.g. ``optax.scale_by_adam()``); it sees
      only the rotational leaves, and as params their centred start ``x_s``.
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
    rotation_scale: ``s >= 0``, each group's target angular update is ``s η̂_r``
      (Kosson et al. 2024, Appendix N, Fig. 12: "artificially scaling η_r for a
      fraction of the neurons in each layer"). ``None`` (the default): 1. One
      float for every group; or a pytree like params whose rotational leaves
      hold arrays broadcastable to the leaf's ``stat_shape`` (entries of other
      leaves are ignored); or a function of params returning one, called on the
      params at ``init`` and at every ``update`` as optax calls a ``mask``
      function (it should read shapes, not values; under
      ``optax.inject_hyperparams`` name it in ``static_args``).
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
  per_leaf_scale = rotation_scale is not None and (callable(rotation_scale) or not (
      isinstance(rotation_scale, numbers.Real)
      or (hasattr(rotation_scale, "shape") and not rotation_scale.shape)))
  if rotation_scale is not None and not per_leaf_scale:
    check_nonnegative(who, "rotation_scale", rotation_scale)

  def layouts_of(params):
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who=who)
    keep = groups_lib.mask_leaves(mask, params, who=who)
    return [layout if k else None for layout, k in zip(layouts, keep)]

  def select(rotational: bool):
    def fn(params):
      return groups_lib.tree_map_groups(
          lambda layout, _: (layout is not None) == rotational, layouts_of(params), params
      )
    return fn

  inner_rot = optax.masked(direction, select(True))
  inner_other = optax.masked(nonrotational, select(False))

  def scales_of(layouts, params, check=False):
    """Per leaf, ``s`` broadcast to the groups (``None``: no scaling or not rotational)."""
    leaves = jax.tree.leaves(params)
    if rotation_scale is None:
      return [None] * len(leaves)
    if not per_leaf_scale:
      return [None if layout is None else rotation_scale for layout in layouts]
    tree = rotation_scale(params) if callable(rotation_scale) else rotation_scale
    try:
      values = jax.tree.structure(params).flatten_up_to(tree)
    except (ValueError, TypeError) as err:
      raise ValueError(
          f"{who}: rotation_scale must be a float or a pytree like params: {err}") from None
    out = []
    for layout, x, value, path in zip(layouts, leaves, values, groups_lib.leaf_paths(params)):
      if layout is None:
        out.append(None)
        continue
      value = jnp.asarray(value, geometry.stat_dtype(x))
      try:
        value = jnp.broadcast_to(value, layout.stat_shape)
      except ValueError:
        raise ValueError(
            f"{who}: rotation_scale for '{path}' has shape {value.shape}, not broadcastable "
            f"to the leaf's per-group shape {layout.stat_shape}") from None
      if check and not isinstance(value, jax.core.Tracer) and np.any(np.asarray(value) < 0):
        raise ValueError(f"{who}: rotation_scale for '{path}' must be >= 0")
      out.append(value)
    return out

  def init_fn(params):
    layouts = layouts_of(params)
    scales_of(layouts, params, check=True)

    def stat(layout, x):
      return None if layout is None else geometry.zeros_stat(x, layout)

    return RotationalState(
        count=jnp.zeros([], jnp.int32),
        norm=groups_lib.tree_map_groups(stat, layouts, params),
        rms=groups_lib.tree_map_groups(stat, layouts, params),
        direction=_stored(inner_rot.init(params)),
        nonrotational=_stored(inner_other.init(params)),
    )

  def update_fn(updates, state, params=None, **extra_args):
    require_params(who, params)
    layouts = layouts_of(params)
    leaves, treedef = jax.tree.flatten(params)
    count = state.count
    first = count == 0

    def start(layout, x, n):
      if layout is None:
        return x
      return _start(x, n, first, layout=layout.unnamed(), center=center)

    norms = treedef.flatten_up_to(state.norm)
    inner_params = jax.tree.unflatten(
        treedef, [start(*args) for args in zip(layouts, leaves, norms)])
    dirs, dir_state = inner_rot.update(
        updates, _rebuilt(jax.eval_shape(inner_rot.init, params), state.direction),
        inner_params, **extra_args)
    others, other_state = inner_other.update(
        updates, _rebuilt(jax.eval_shape(inner_other.init, params), state.nonrotational),
        params, **extra_args)
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    eta_r = angular_rate(lr)
    debias = 1 - jnp.asarray(rms_decay, jnp.float32) ** (count + 1).astype(jnp.float32)

    def leaf(layout, x, dg, other, n, s, scale):
      if layout is None:
        return other.astype(x.dtype), s, n
      if x.size == 0:
        return jnp.zeros_like(x), s, n
      target = eta_r if scale is None else eta_r * scale
      return _rotate(x, dg, n, s, first, target, debias, rms_decay, 1 - rms_decay, eps,
                     layout=layout.unnamed(), center=center)

    out = [
        leaf(*args) for args in zip(
            layouts, leaves, treedef.flatten_up_to(dirs), treedef.flatten_up_to(others),
            norms, treedef.flatten_up_to(state.rms), scales_of(layouts, params))
    ]
    return jax.tree.unflatten(treedef, [o[0] for o in out]), RotationalState(
        count=optax.safe_int32_increment(count),
        norm=jax.tree.unflatten(treedef, [o[2] for o in out]),
        rms=jax.tree.unflatten(treedef, [o[1] for o in out]),
        direction=_stored(dir_state),
        nonrotational=_stored(other_state),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
