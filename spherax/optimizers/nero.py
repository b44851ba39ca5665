"""Nero (Liu et al.; REFERENCE §6): per-neuron relative updates on centred unit spheres.

Grouped leaves (by default ``ndim >= 2``, one group per output unit in Flax
layout — PyTorch's rows): the reference centres each group and sets it to unit
norm at construction; optax cannot modify params at ``init``, so the first
update lands exactly where that normalised start plus its first step would.
Each step, per group, ``v ← β v + (1−β) ||g||²`` and

``x ← x − η · s · g / sqrt(v / (1 − β^t))``, then ``x ← center(x) / ||center(x)||``,

with ``s`` the mean group norm at the start (1 unless a group is zero). Other
leaves are treated per element: ``v ← β v + (1−β) g²``, the same step with
``s = mean |x|`` at the start (0.01 if that is 0), no constraint. Only ``v`` is
bias-corrected, there is no ε: ``0/0 → 0``. No momentum, no weight decay.

Example:

>>> import jax.numpy as jnp, optax, spherax
>>> x = {'w': jnp.array([[3., 0.], [4., 2.]]), 'b': jnp.ones(2)}
>>> opt = spherax.nero(0.01)
>>> u, _ = opt.update(jax.tree.map(jnp.ones_like, x), opt.init(x), x)
>>> w = optax.apply_updates(x, u)['w']
>>> jnp.linalg.norm(w, axis=0).round(5).tolist(), w.mean(axis=0).round(6).tolist()
([1.0, 1.0], [0.0, 0.0])
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax import geometry
from spherax import groups as groups_lib

__all__ = ["nero", "NeroState"]


class NeroState(NamedTuple):
  """``nu``: per group (``stat_shape``) or per element; ``scale``: one scalar per leaf."""

  count: jax.Array
  nu: Any
  scale: Any


def nero(
    learning_rate: optax.ScalarOrSchedule = 0.01,
    b2: float = 0.999,
    *,
    constraints: bool = True,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Nero. ``constraints=False`` skips the centring and normalisation of groups."""
  if isinstance(learning_rate, (int, float)) and learning_rate < 0:
    raise ValueError(f"nero: learning_rate must be >= 0, got {learning_rate}")
  if isinstance(b2, (int, float)) and not 0.0 <= b2 < 1.0:
    raise ValueError(f"nero: b2 must be in [0, 1), got {b2}")

  def layouts_of(params):
    return groups_lib.resolve(groups, params, min_group_size=2, who="nero")

  def init_fn(params):
    def one(layout, x):
      dtype = jnp.result_type(jnp.float32, x.dtype)
      shape = x.shape if layout is None else layout.stat_shape
      return jnp.zeros(shape, dtype), jnp.zeros([], dtype)

    pairs = jax.tree.structure(params).flatten_up_to(
        groups_lib.tree_map_groups(one, layouts_of(params), params)
    )
    treedef = jax.tree.structure(params)
    return NeroState(
        jnp.zeros([], jnp.int32),
        jax.tree.unflatten(treedef, [p[0] for p in pairs]),
        jax.tree.unflatten(treedef, [p[1] for p in pairs]),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("nero needs params in update()")
    layouts = layouts_of(params)
    treedef = jax.tree.structure(params)
    first = state.count == 0
    count = optax.safe_int32_increment(state.count)
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    debias = 1 - jnp.asarray(b2, jnp.float32) ** count.astype(jnp.float32)

    def leaf(layout, x, g, nu, scale):
      dtype = geometry.compute_dtype(x, g)
      xc, gc = x.astype(dtype), g.astype(dtype)
      if layout is None:
        start_scale = jnp.mean(jnp.abs(xc))
        x0 = xc
        sq = gc * gc
      else:
        x0 = xc
        if constraints:
          x0 = geometry.retract(geometry.center(xc, layout), 1.0, layout)
        start_scale = jnp.mean(geometry.norm(x0, layout))
        x0 = jnp.where(first, x0, xc)
        sq = geometry.sqnorm(gc, layout)
      start_scale = jnp.where(start_scale == 0, 0.01, start_scale)
      scale = jnp.where(first, start_scale.astype(scale.dtype), scale)
      nu = b2 * nu + (1 - b2) * sq.astype(nu.dtype)
      rms = jnp.sqrt(nu.astype(dtype) / debias)
      if layout is not None:
        rms = geometry.expand(rms, layout)
      x_new = x0 - lr * scale.astype(dtype) * geometry.safe_div(gc, rms)
      if layout is not None and constraints:
        x_new = geometry.retract(geometry.center(x_new, layout), 1.0, layout)
      return (x_new - xc).astype(x.dtype), nu, scale

    out = treedef.flatten_up_to(
        groups_lib.tree_map_groups(leaf, layouts, params, updates, state.nu, state.scale)
    )
    u, nu, scale = (jax.tree.unflatten(treedef, [o[i] for o in out]) for i in range(3))
    return u, NeroState(count, nu, scale)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
