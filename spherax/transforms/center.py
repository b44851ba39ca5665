"""Centering updates per group (Kosson et al. 2024, Algorithm 1, step 3).

References:

* Kosson et al. 2024: Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.
"""

from __future__ import annotations

from typing import Any

import optax

from spherax import geometry, groups as groups_lib

__all__ = ["center"]


def center(*, groups: Any = None) -> optax.GradientTransformationExtraArgs:
  """Subtracts each group's mean from the update.

  Per group: ``q ← q − (1/d) Σ_group q`` (the RV wrapper's optional centering,
  Kosson et al. 2024, Algorithm 1, step 3), so every group of the output sums to zero; the map is
  idempotent. Ungrouped leaves pass through. Groups must have at least 2
  elements (centering a 1-element group would erase it).

  Args:
    groups: the group specification (see :mod:`spherax.groups`).

  Example:

  >>> import jax.numpy as jnp
  >>> import spherax
  >>> q = {'w': jnp.array([[1., 4.], [3., 0.]]), 'b': jnp.array([5.])}
  >>> tx = spherax.center()
  >>> out, _ = tx.update(q, tx.init(q))
  >>> out['w'].tolist(), out['b'].tolist()
  ([[-1.0, 2.0], [1.0, -2.0]], [5.0])
  """

  def init_fn(params):
    groups_lib.resolve(groups, params, min_group_size=2, who="center")
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    # Only shapes are read: the updates have the params' structure and shapes.
    layouts = groups_lib.resolve(groups, updates, min_group_size=2, who="center")

    def centered(layout, q):
      if layout is None:
        return q
      return geometry.center(q, layout).astype(q.dtype)

    return groups_lib.tree_map_groups(centered, layouts, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
