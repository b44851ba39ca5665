"""Retraction onto a sphere, expressed as an update (REFERENCE §3 AdamG, §5 step 5)."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import optax

from spherax._checks import require_params
from spherax import geometry, groups as groups_lib

__all__ = ["RetractState", "retract"]


class RetractState(NamedTuple):
  """``norms``: each group's target radius (``stat_shape``; ``MaskedNode`` when
  ungrouped). Empty (``None``) unless ``norm='initial'``."""

  norms: Any


def retract(norm: str | float = "initial", groups: Any = None) -> optax.GradientTransformationExtraArgs:
  """Returns the update that puts ``params + updates`` on a sphere, per group.

  optax cannot overwrite params, so the retraction
  ``x' = ρ (x + q) / ||x + q||`` is returned as the update ``x' − x``
  (REFERENCE §5 step 5: ``x' ← x' n/||x'||``). The radius ``ρ`` is

  * ``'initial'``: each group's norm at ``init`` (stored per group in the state);
  * ``'unit'``: 1;
  * a float: that radius for every group.

  A group with ``x + q = 0`` lands on 0. Ungrouped leaves pass through. Groups
  must have at least 2 elements.

  Args:
    norm: ``'initial'``, ``'unit'`` or a positive float.
    groups: the group specification (see :mod:`spherax.groups`).

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[3.], [4.]])}          # one group, norm 5
  >>> tx = spherax.retract()
  >>> out, _ = tx.update({'w': jnp.array([[3.], [-4.]])}, tx.init(params), params)
  >>> optax.apply_updates(params, out)['w'].tolist()
  [[5.0], [0.0]]
  """
  if isinstance(norm, str):
    if norm not in ("initial", "unit"):
      raise ValueError(f"retract: norm must be 'initial', 'unit' or a float, got {norm!r}")
  elif isinstance(norm, numbers.Real) and not norm > 0:
    raise ValueError(f"retract: norm must be positive, got {norm}")

  # ``norm`` may be a traced array under ``optax.inject_hyperparams``.
  initial = isinstance(norm, str) and norm == "initial"
  radius = 1.0 if isinstance(norm, str) else norm

  def init_fn(params):
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who="retract")
    if not initial:
      return RetractState(None)

    def initial_norm(layout, x):
      if layout is None:
        return optax.MaskedNode()
      return geometry.norm(x, layout)

    return RetractState(groups_lib.tree_map_groups(initial_norm, layouts, params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params("retract", params)
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who="retract")
    if initial:
      targets = state.norms
    else:
      targets = jax.tree.map(lambda _: radius, params)

    def land(layout, q, x, target):
      if layout is None:
        return q
      new = x.astype(geometry.compute_dtype(x, q)) + q
      return (geometry.retract(new, target, layout) - x).astype(q.dtype)

    return groups_lib.tree_map_groups(land, layouts, updates, params, targets), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
