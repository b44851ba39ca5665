"""Retraction onto a sphere, expressed as an update, and :func:`project_params`.

The radial retraction ``x ↦ ρ x/||x||`` of Cho & Lee, *Riemannian approach to
batch normalization*, NeurIPS 2017 (their units live on the unit sphere), and
the norm-restoring step 5 of Kosson, Messmer, Jaggi, *Rotational Equilibrium:
How Weight Decay Balances Learning Across Neural Networks*, ICML 2024,
arXiv:2305.17212, Algorithm 1.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import optax

from spherax._checks import require_params
from spherax import geometry, groups as groups_lib

__all__ = ["RetractState", "retract", "project_params"]


class RetractState(NamedTuple):
  """``norms``: each group's target radius (``stat_shape``; ``MaskedNode`` when
  ungrouped). Empty (``None``) unless ``norm='initial'``."""

  norms: Any


def retract(norm: str | float = "initial", *, groups: Any = None) -> optax.GradientTransformationExtraArgs:
  """Returns the update that puts ``params + updates`` on a sphere, per group.

  optax cannot overwrite params, so the retraction
  ``x' = ρ (x + q) / ||x + q||`` is returned as the update ``x' − x``
  (Kosson et al. 2024, Algorithm 1 step 5: ``x' ← x' n/||x'||``). The radius ``ρ`` is

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


def project_params(params: Any, norm: float = 1.0, *, groups: Any = None) -> Any:
  """``params`` with every group moved radially onto the sphere of radius ``norm``.

  A one-off projection (not a transformation), e.g. before training with the
  unit-sphere optimizers :func:`spherax.adamg`, :func:`spherax.sgdg` and
  :func:`spherax.adagradg`, whose first step from a far radius cannot be exact
  as an additive update (see :mod:`spherax.optimizers.riemannian`). Zero groups
  stay zero; ungrouped leaves are returned as they are; dtypes are kept.

  >>> import jax.numpy as jnp
  >>> import spherax
  >>> spherax.project_params({'w': jnp.array([[3e7], [4e7]])})['w'].tolist()
  [[0.6000000238418579], [0.800000011920929]]
  """
  layouts = groups_lib.resolve(groups, params, min_group_size=2, who="project_params")

  def leaf(layout, x):
    if layout is None:
      return x
    return geometry.retract(x, norm, layout).astype(x.dtype)

  return groups_lib.tree_map_groups(leaf, layouts, params)
