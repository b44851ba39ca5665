""":func:`hoist`, the XLA:CPU workaround still used by :mod:`spherax.optimizers.riemannian`.

AdamS, AdamSRT and SGDMRT no longer have a fused path here: each is one per-leaf
rule (:mod:`spherax.optimizers.adamsrt`). This module goes when riemannian.py
stops importing :func:`hoist`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def hoist(*stats: jax.Array) -> tuple[jax.Array, ...]:
  """The per-group ``stats`` (same shape), unchanged, computed once per group.

  XLA:CPU fuses the scalar math that turns reductions into coefficients
  (``sqrt``, ``cos``, guarded divisions) into the element-wise loop that
  broadcasts them, re-evaluating it for every element (measured 7× slower
  for one ``cos``). Adding a zero slab and reducing over it is an exact
  identity that XLA does not fuse into a consumer, so the coefficients are
  written once and the big loop only reads them.

  >>> import jax.numpy as jnp
  >>> a, b = hoist(jnp.array([[1.0, -2.0]]), jnp.array([[0.5, 0.0]]))
  >>> a.tolist(), b.tolist()
  ([[1.0, -2.0]], [[0.5, 0.0]])
  """
  stacked = jnp.stack(jnp.broadcast_arrays(*stats))
  out = jnp.sum(jnp.stack([stacked, jnp.zeros_like(stacked)]), axis=0)
  return tuple(out)
