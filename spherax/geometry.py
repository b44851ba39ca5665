"""Per-group geometry on the sphere: pure functions of arrays and a :class:`GroupLayout`.

Notation (REFERENCE §1): for one group, ``x`` its values, ``d`` its size,
``r = ||x||``, ``u = x / r``, ``<a, b>`` the dot product over the group and
``q⊥ = q − <q, u> u`` the tangential part of ``q`` at ``u``.

Reductions over a group return a *statistic* of shape ``layout.stat_shape``
(``keepdims``), computed in float32 (float64 when the inputs are float64) even
for bfloat16 leaves; :func:`expand` broadcasts a statistic back against a leaf.
Element-wise results are in the promoted compute dtype: transforms cast to the
leaf dtype at their end. Every division is guarded: a zero-norm group gives
zeros (or leaves the input unchanged), never NaN or inf. Squared norms are
plain float32 sums (one pass, no rescaling), so a float32 group needs
``||x|| < ~1e19``; below ``~1e-19`` its squared norm underflows and the group
is treated as a zero group.

Example:

>>> import jax.numpy as jnp
>>> from spherax import geometry, groups
>>> x = jnp.array([[3., 0.], [4., 2.]])          # two groups: the columns
>>> layout = groups.per_output().layout(x.shape)
>>> geometry.norm(x, layout).tolist()
[[5.0, 2.0]]
>>> v = jnp.ones_like(x)
>>> geometry.dot(geometry.tangent(v, x, layout), x, layout).tolist()
[[0.0, 0.0]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spherax.groups import GroupLayout

__all__ = [
    "compute_dtype",
    "view",
    "expand",
    "group_sum",
    "dot",
    "sqnorm",
    "norm",
    "mean",
    "safe_div",
    "radial",
    "tangent",
    "retract",
    "exp_map",
    "transport_reference",
    "transport_parallel",
    "center",
]


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
  """float32, or float64 when an input is float64 (``jax_enable_x64``)."""
  return jnp.result_type(jnp.float32, *(a.dtype for a in arrays))


def view(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``x`` reshaped to the layout's view (a no-op unless channels are split)."""
  return x.reshape(layout.view_shape) if layout.is_split else x


def expand(stat: jax.Array, layout: GroupLayout) -> jax.Array:
  """Broadcasts a per-group statistic so it combines element-wise with a leaf."""
  if not layout.is_split:
    return stat
  full = jnp.broadcast_to(stat, layout.view_shape)
  return full.reshape(layout.shape)


def group_sum(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``Σ_group x``, one value per group (``stat_shape``), in the compute dtype."""
  x = x.astype(compute_dtype(x))
  return jnp.sum(view(x, layout), axis=layout.reduce_axes, keepdims=True)


def dot(a: jax.Array, b: jax.Array, layout: GroupLayout) -> jax.Array:
  """``<a, b>`` per group."""
  dtype = compute_dtype(a, b)
  return group_sum(a.astype(dtype) * b.astype(dtype), layout)


def sqnorm(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``||x||²`` per group."""
  return dot(x, x, layout)


def norm(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``||x||`` per group."""
  return jnp.sqrt(sqnorm(x, layout))


def mean(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``Σ_group x / d`` per group."""
  return group_sum(x, layout) / layout.group_size


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den`` where ``den != 0``, else 0 (no NaN, and NaN-free gradients)."""
  nonzero = den != 0
  return jnp.where(nonzero, num / jnp.where(nonzero, den, 1), 0)


def radial(v: jax.Array, x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``<v, u> u``: the component of ``v`` along ``x`` (0 where ``x = 0``)."""
  coef = safe_div(dot(v, x, layout), sqnorm(x, layout))
  return expand(coef, layout) * x.astype(coef.dtype)


def tangent(v: jax.Array, x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``v⊥ = v − <v, u> u``: the projection of ``v`` on the tangent space at ``x``.

  Idempotent, and ``<v⊥, x> = 0``. Where ``x = 0`` it returns ``v``.
  """
  return v.astype(compute_dtype(v, x)) - radial(v, x, layout)


def retract(x: jax.Array, target_norm: jax.Array | float, layout: GroupLayout) -> jax.Array:
  """``x · target / ||x||``: ``x`` moved radially onto the sphere of radius ``target``.

  ``target_norm`` is a scalar or a statistic. A zero group stays zero.
  """
  scale = safe_div(jnp.asarray(target_norm, compute_dtype(x)), norm(x, layout))
  return expand(scale, layout) * x.astype(scale.dtype)


def exp_map(y: jax.Array, delta: jax.Array, layout: GroupLayout) -> jax.Array:
  """The exponential map of the sphere: ``y cos||Δ|| + Δ/||Δ|| sin||Δ||``.

  ``y`` is on the unit sphere and ``Δ`` tangent at ``y`` (REFERENCE §3, AdamG);
  ``Δ = 0`` gives ``y``.
  """
  dtype = compute_dtype(y, delta)
  size = norm(delta, layout)
  sinc = safe_div(jnp.sin(size), size) + (size == 0)
  return (
      expand(jnp.cos(size), layout) * y.astype(dtype)
      + expand(sinc, layout) * delta.astype(dtype)
  )


def transport_reference(
    m: jax.Array,
    x: jax.Array,
    x_new: jax.Array,
    layout: GroupLayout,
    *,
    rescale: bool = True,
    eps: float = 0.0,
) -> jax.Array:
  """The reference first-order transport of a moment from ``x`` to ``x_new``.

  With ``rescale`` (AdamSRT, REFERENCE §3 step 4):
  ``Γ(m) = (<x, x'> m − <m, x'> x) / (||x'||² + eps)
  = (r / r') [<u, u'> m − <m, u'> u]``; without it ``<u, u'> m − <m, u'> u``.
  It maps tangent vectors at ``u`` to tangent vectors at ``u'``, rotates the
  in-plane part, scales the out-of-plane part by ``cos θ`` and removes the
  radial part of ``m``. Zero-norm groups give zeros.
  """
  dtype = compute_dtype(m, x, x_new)
  m, x, x_new = (a.astype(dtype) for a in (m, x, x_new))
  x_dot_new = dot(x, x_new, layout)
  m_dot_new = dot(m, x_new, layout)
  new_sq = sqnorm(x_new, layout)
  if rescale:
    den = new_sq + eps
  else:
    den = jnp.sqrt(sqnorm(x, layout) * new_sq)
  a = safe_div(x_dot_new, den)
  b = safe_div(m_dot_new, den)
  return expand(a, layout) * m - expand(b, layout) * x


def transport_parallel(
    m: jax.Array, x: jax.Array, x_new: jax.Array, layout: GroupLayout
) -> jax.Array:
  """Exact parallel transport of a tangent ``m`` along the great circle ``u → u'``.

  ``Γ(m) = m − <m, u'> / (1 + <u, u'>) · (u + u')`` (REFERENCE §3). It preserves
  norms and maps tangent vectors at ``u`` to tangent vectors at ``u'``; for
  antipodal points (``<u, u'> = −1``, undefined) and zero groups ``m`` is returned.
  """
  dtype = compute_dtype(m, x, x_new)
  m, x, x_new = (a.astype(dtype) for a in (m, x, x_new))
  inv_r = safe_div(jnp.ones((), dtype), norm(x, layout))
  inv_r_new = safe_div(jnp.ones((), dtype), norm(x_new, layout))
  u = expand(inv_r, layout) * x
  u_new = expand(inv_r_new, layout) * x_new
  cos = dot(x, x_new, layout) * inv_r * inv_r_new
  coef = safe_div(dot(m, u_new, layout), 1 + cos)
  return m - expand(coef, layout) * (u + u_new)


def center(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``x − mean_group(x)``: removes each group's mean (RV wrapper centering)."""
  dtype = compute_dtype(x)
  return x.astype(dtype) - expand(mean(x, layout), layout)
