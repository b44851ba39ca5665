"""Removing the radial part of an update (Roburin et al. 2022 Lemma 1; Roburin et al., ICLR 2021 submission §4, phenomenon (b)).

For a scale-invariant group ``x`` with ``u = x/||x||``, only the tangential part
``q⊥ = q − <q, u> u`` of an update changes the function; the radial part only
changes the radius. :func:`orthogonalize` keeps ``q⊥``, group by group.

References:

* Roburin et al. 2022: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382.
* Roburin et al., ICLR 2021 submission: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of Adam with Batch Normalization*, ICLR 2021 submission (OpenReview).
"""

from __future__ import annotations

from typing import Any

import optax

from spherax._checks import require_params
from spherax import geometry, groups as groups_lib

__all__ = ["orthogonalize"]


def orthogonalize(*, groups: Any = None) -> optax.GradientTransformationExtraArgs:
  """Projects each grouped update on the tangent space at the params.

  Per group (Roburin et al. 2022 §2): ``q ← q − <q, x> x / ||x||²``, so ``<q, x> = 0``
  afterwards; the map is idempotent. Zero-norm groups pass through unchanged.
  Ungrouped leaves pass through. Groups must have at least 2 elements (the
  tangent space of a 1-element group is ``{0}``: such a group could never move).

  Args:
    groups: the group specification (see :mod:`spherax.groups`).

  Returns:
    A transformation whose ``update`` needs ``params``.

  Example:

  >>> import jax.numpy as jnp
  >>> import spherax
  >>> params = {'w': jnp.array([[1., 0.], [0., 2.]])}   # groups: the columns
  >>> tx = spherax.orthogonalize()
  >>> out, _ = tx.update({'w': jnp.ones((2, 2))}, tx.init(params), params)
  >>> out['w'].tolist()
  [[0.0, 1.0], [1.0, 0.0]]
  """

  def init_fn(params):
    groups_lib.resolve(groups, params, min_group_size=2, who="orthogonalize")
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params("orthogonalize", params)
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who="orthogonalize")

    def project(layout, q, x):
      if layout is None:
        return q
      return geometry.tangent(q, x, layout).astype(q.dtype)

    return groups_lib.tree_map_groups(project, layouts, updates, params), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
