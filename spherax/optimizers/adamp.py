"""AdamP and SGDP: remove the radial part of the update of weights that look scale-invariant.

Heo et al., *AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights*, ICLR 2021 (Algorithm 1: SGDP, Algorithm 2: AdamP,
with their projection and its cosine-similarity test).

For a grouped leaf (by default every ``ndim >= 2`` leaf, per output unit) two
views are tried each step, on the raw gradient ``g`` and the weights ``x``
before decay: the per-group view, then the whole tensor. A view *passes* when
``max_group |cos(g, x)| < δ / sqrt(d_view)``, with
``cos(g, x) = <g, x> / (max(||g||, ε) · max(||x||, ε))`` and ``d_view`` the
number of elements of one of its groups. For the first view that passes, the
candidate update ``p`` loses its radial part per group of that view,
``p ← p − x̂ <x̂, p>`` with ``x̂ = x / (||x|| + ε)``, that is
``p ← p − x <x, p> / (||x|| + ε)²``, and the weight decay is multiplied by
``wd_ratio``. The choice is data-dependent and made with ``jnp.where``; the
whole tensor's dot products are the sums of the per-group ones.

AdamP: ``m ← β1 m + (1−β1) g``, ``v ← β2 v + (1−β2) |g|²``,
``p = m / (sqrt(v)/sqrt(1−β2^t) + ε)`` (Nesterov: ``(β1 m + (1−β1) g)/…``),
projected; ``x ← x (1 − η λ w) − η/(1−β1^t) · p`` (``w`` = ``wd_ratio`` or 1;
``m``, ``v`` are Adam's, never projected). SGDP: ``buf ← μ buf + g``,
``p = buf`` (Nesterov ``g + μ buf``), projected; without Nesterov the projected
``p`` is the stored buffer (the reference projects the buffer in place);
``x ← x (1 − η λ w / (1−μ)) − η p``. SGDP's ``p`` is linear in ``g`` and ``buf``, so
its ``<x, p>`` comes from ``<x, g>`` and ``<x, buf>`` (one reduction pass over the
inputs, none over ``p``).

Complex leaves use the real inner product ``Re <a, b>`` of ``C^d = R^{2d}``
(``|g|²`` in Adam's second moment); empty leaves pass through unchanged.

Example:

>>> import jax.numpy as jnp, spherax
>>> x = {'w': jnp.array([[1., 0.], [0., 1.]])}
>>> opt = spherax.adamp(1e-1)
>>> g = {'w': jnp.array([[0., 1.], [1., 0.]])}   # orthogonal to each unit
>>> u, _ = opt.update(g, opt.init(x), x)
>>> jnp.sum(u['w'] * x['w'], axis=0).round(6).tolist()  # no radial part
[0.0, 0.0]
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import check_beta, check_learning_rate, check_nonnegative
from spherax import geometry
from spherax.transforms.leafwise import leafwise

__all__ = ["adamp", "sgdp", "AdamPState", "SGDPState", "project_if_scale_invariant"]


def _max_cosine(gx, gg, xx, eps):
  """``max |<g, x>| / (max(||g||, ε) · max(||x||, ε))`` over the groups of a view.

  ``max(||x||, ε)`` is taken as ``sqrt(max(||x||², ε²))`` (the same wherever
  ``||x|| >= ε``): a root of its own, not the ``||x||`` of the projection's
  ``(||x|| + ε)²``, so that XLA need not keep that root as a kernel of its own
  for two consumers.
  """
  x_norm = jnp.sqrt(jnp.maximum(xx, eps * eps))
  return jnp.max(jnp.abs(gx) / (jnp.maximum(jnp.sqrt(gg), eps) * x_norm))


def _radial_coef(layout, gx, gg, xx, xp, size, delta, eps):
  """``(c, projected)`` with ``p' = p − c x`` (``c = <x, p> / (||x|| + ε)²`` in the
  first view that passes, else 0), from the per-group ``<g, x>``, ``||g||²``,
  ``||x||²``, ``<x, p>``; the whole tensor's (``size`` elements) are their sums,
  taken as one sum of the stacked statistics (summed one by one, XLA's GPU
  compiler folds each sum into the full-size reduction that made the statistic,
  a second pass over the leaf: 20 passes instead of 14 on a conv kernel)."""
  per_group = _max_cosine(gx, gg, xx, eps) < delta / jnp.sqrt(float(layout.group_size))
  gx_w, gg_w, xx_w, xp_w = jnp.sum(jnp.stack([gx, gg, xx, xp]), axis=tuple(range(1, gx.ndim + 1)))
  whole = _max_cosine(gx_w, gg_w, xx_w, eps) < delta / jnp.sqrt(float(size))
  coef = jnp.where(
      per_group, xp / jnp.square(jnp.sqrt(xx) + eps),
      jnp.where(whole, xp_w / jnp.square(jnp.sqrt(xx_w) + eps), 0.0))
  return coef, per_group | whole


def project_if_scale_invariant(layout, x, g, p, delta, eps):
  """The AdamP projection of ``p`` for one leaf; returns ``(p', projected)``.

  ``layout`` gives the per-group view, the whole tensor is tried second (module
  docstring); ``projected`` is a boolean scalar, whether a view passed.
  """
  dtype = geometry.compute_dtype(x, g, p)
  x, g, p = (a.astype(dtype) for a in (x, g, p))
  coef, projected = _radial_coef(
      layout, *geometry.dots([(g, x), (g, g), (x, x), (x, p)], layout), x.size, delta, eps)
  return p - geometry.expand(coef, layout) * x, projected


class AdamPState(NamedTuple):
  """``mu``, ``nu``: Adam's first and second moments (never projected)."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


class SGDPState(NamedTuple):
  """``trace``: the momentum buffer (projected, without Nesterov)."""

  count: jax.Array
  trace: optax.Updates


def _zeros_like(layout, x):
  """SGDP's state entries of one leaf: a zero momentum buffer like it."""
  del layout
  return (jnp.zeros_like(x),)


def _checked(who, learning_rate, eps, weight_decay, delta, wd_ratio):
  """The construction-time checks that AdamP and SGDP share."""
  check_learning_rate(who, learning_rate)
  for name, value in (("eps", eps), ("weight_decay", weight_decay), ("delta", delta),
                      ("wd_ratio", wd_ratio)):
    check_nonnegative(who, name, value)


def adamp(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    mask: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdamP: AdamW whose update loses its radial part on scale-invariant weights.

  The rule and the view detection are in the module docstring (Heo et al.,
  ICLR 2021, Algorithm 2).

  Args:
    learning_rate: ``η``, a float or a schedule.
    b1, b2: Adam's moment decays, in ``[0, 1)``.
    eps: ``ε`` of Adam's denominator, of the cosine's clamps and of ``x̂``.
    weight_decay: ``λ``, decoupled (``x ← x (1 − ηλw)``).
    delta: ``δ`` of the detection threshold ``δ / sqrt(d_view)``.
    wd_ratio: ``w`` applied to ``λ`` where a view passes.
    nesterov: use the Nesterov moment ``β1 m + (1−β1) g``.
    mask: which leaves get weight decay (a pytree of bools or a callable of
      params, as in ``optax.adamw``; ``None``: every leaf).
    groups: the per-group view (default per output unit for ``ndim >= 2``;
      ``None`` leaves are never projected).

  Returns:
    A transformation whose ``update`` needs ``params``.
  """
  _checked("adamp", learning_rate, eps, weight_decay, delta, wd_ratio)
  check_beta("adamp", "b1", b1)
  check_beta("adamp", "b2", b2)

  def init_leaf(layout, x):
    del layout
    return jnp.zeros_like(x), jnp.zeros_like(x)

  def update_leaf(step, x, g, m, v):
    if x.size == 0:
      return jnp.zeros_like(x), m, v
    dtype, real = geometry.compute_dtype(x, g), geometry.stat_dtype(x, g)
    t = step.count.astype(real)
    c1, c2 = 1 - jnp.asarray(b1, real) ** t, 1 - jnp.asarray(b2, real) ** t
    x, g = x.astype(dtype), g.astype(dtype)
    m = b1 * m.astype(dtype) + (1 - b1) * g
    v = b2 * jnp.real(v).astype(real) + (1 - b2) * geometry.abs_sq(g)  # real; stored like x
    p = (b1 * m + (1 - b1) * g if nesterov else m) / (jnp.sqrt(v) / jnp.sqrt(c2) + eps)
    wd = weight_decay if step.decayed else 0.0
    if step.layout is not None:
      p, projected = project_if_scale_invariant(step.layout, x, g, p, delta, eps)
      wd = wd * jnp.where(projected, wd_ratio, 1.0)
    lr = step.learning_rate
    return -lr * wd * x - (lr / c1) * p, m, v

  return leafwise("adamp", AdamPState, init_leaf, update_leaf,
                  learning_rate=learning_rate, groups=groups, mask=mask)


def sgdp(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    *,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    mask: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """SGDP: SGD with momentum (no dampening) and AdamP's projection (Heo et al.,
  ICLR 2021, Algorithm 1).

  Args:
    learning_rate: ``η``, a float or a schedule.
    momentum: ``μ``, in ``[0, 1)``.
    eps: ``ε`` of the cosine's clamps and of ``x̂``.
    weight_decay: ``λ``, applied as ``x ← x (1 − ηλw/(1−μ))``.
    delta, wd_ratio, mask, groups: as in :func:`adamp`.
    nesterov: ``p = g + μ buf``; without it the projected buffer is stored.

  Returns:
    A transformation whose ``update`` needs ``params``.
  """
  _checked("sgdp", learning_rate, eps, weight_decay, delta, wd_ratio)
  check_beta("sgdp", "momentum", momentum)

  def update_leaf(step, x, g, buf):
    if x.size == 0:
      return jnp.zeros_like(x), buf
    dtype = geometry.compute_dtype(x, g)
    if step.layout is not None:  # statistics of the leaf's own arrays, in one pass
      gx, gg, xx, xb = geometry.dots([(g, x), (g, g), (x, x), (x, buf)], step.layout,
                                     one_pass=True)
    x, g, b = x.astype(dtype), g.astype(dtype), buf.astype(dtype)
    buf = momentum * b + g
    p = g + momentum * buf if nesterov else buf
    wd = weight_decay if step.decayed else 0.0
    if step.layout is not None:
      # p is linear in g and the old buffer b: <x, p> from <x, g> and <x, b>.
      xp = (1 + momentum) * gx + momentum**2 * xb if nesterov else gx + momentum * xb
      coef, projected = _radial_coef(step.layout, gx, gg, xx, xp, x.size, delta, eps)
      p = p - geometry.expand(coef, step.layout) * x
      wd = wd * jnp.where(projected, wd_ratio, 1.0)
    if not nesterov:
      buf = p  # the projected buffer is what momentum carries forward
    lr = step.learning_rate
    return -lr * wd / (1 - momentum) * x - lr * p, buf

  return leafwise("sgdp", SGDPState, _zeros_like, update_leaf,
                  learning_rate=learning_rate, groups=groups, mask=mask)
