"""Nero: per-neuron relative updates on centred unit spheres.

Liu, Bernstein, Meister, Yue, *Learning by Turning: Neural Architecture Aware
Optimisation*, ICML 2021 (Algorithm 1, the Nero optimiser).

Grouped leaves (by default ``ndim >= 2``, one group per output unit in Flax
layout — PyTorch's rows): the reference centres each group and sets it to unit
norm at construction; optax cannot modify params at ``init``, so the first
update lands exactly where that normalised start plus its first step would.
Each step, per group, ``v ← β v + (1−β) ||g||²`` and

``x ← x − η · s · g / sqrt(v / (1 − β^t))``, then ``x ← center(x) / ||center(x)||``,

with ``s`` the mean group norm at the start (1 unless a group is zero). Other
leaves are treated per element: ``v ← β v + (1−β) |g|²``, the same step with
``s = mean |x|`` at the start (0.01 if that is 0), no constraint. Only ``v`` is
bias-corrected (in the compute dtype: double under ``jax_enable_x64``), there is
no ε: ``0/0 → 0``. No momentum, no weight decay. Empty leaves pass through.

A grouped leaf needs only the per-group sums ``Σx``, ``Σg``, ``||x||²``,
``||g||²``, ``<g, x>`` and one element-wise pass. The start is
``x0 = a (x − μx)`` (``a = 1 / ||x − μx||`` at step 1, else ``a = 1`` and
``x0 = x``); centring removes constants, so with ``k = η s / sqrt(v̂)``
``center(x0 − k g) = a (x − μx) − k (g − μg)`` and its squared norm is
``a² (||x||² − d |μx|²) − 2ak (<g, x> − d Re(μx* μg)) + k² (||g||² − d |μg|²)``
(complex leaves: the real inner product of ``C^d = R^{2d}``).

The first update is additive (``x' − x``, as every optax update): from a start
of radius ``r`` the landing point is resolved to ``ulp(r)``, so starts far off
the unit sphere (float32 entries ~1e7, bfloat16 ~100) lose the landing point's
digits in ``optax.apply_updates``; later steps move on the unit sphere.

Example:

>>> import jax.numpy as jnp, optax, spherax
>>> x = {'w': jnp.array([[3., 0.], [4., 2.]]), 'b': jnp.ones(2)}
>>> opt = spherax.nero(0.01)
>>> u, _ = opt.update(jax.tree.map(jnp.ones_like, x), opt.init(x), x)
>>> w = optax.apply_updates(x, u)['w']
>>> jnp.linalg.norm(w, axis=0).round(5).tolist(), w.mean(axis=0).round(6).tolist()
([1.0, 1.0], [0.0, 0.0])
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import check_beta, check_learning_rate
from spherax import geometry
from spherax.transforms.leafwise import leafwise

__all__ = ["nero", "NeroState"]


def _nonzero(start_scale):
  """The reference's fallback: a zero start scale becomes 0.01."""
  return jnp.where(start_scale == 0, 0.01, start_scale)


class NeroState(NamedTuple):
  """``nu``: per group (``stat_shape``) or per element; ``scale``: one scalar per leaf."""

  count: jax.Array
  nu: Any
  scale: Any


def nero(
    learning_rate: optax.ScalarOrSchedule,
    b2: float = 0.999,
    *,
    constraints: bool = True,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Nero: per-group relative updates on centred unit spheres (module docstring).

  Args:
    learning_rate: ``η``, a float or a schedule.
    b2: ``β`` of the per-group (per-element for ungrouped leaves) second moment.
    constraints: centre and renormalise grouped leaves (``False`` skips it).
    groups: the group specification (see :mod:`spherax.groups`); groups need
      at least 2 elements.

  Returns:
    A transformation whose ``update`` needs ``params``.
  """
  check_learning_rate("nero", learning_rate)
  check_beta("nero", "b2", b2)

  def init_leaf(layout, x):
    return geometry.zeros_stat(x, layout), jnp.zeros([], geometry.stat_dtype(x))

  def update_leaf(step, x, g, nu, scale):
    if x.size == 0:
      return jnp.zeros_like(x), nu, scale
    layout, lr, first = step.layout, step.learning_rate, step.count == 1
    dtype = geometry.compute_dtype(x, g)
    real = nu.dtype  # the real compute dtype
    debias = 1 - jnp.asarray(b2, real) ** step.count.astype(real)
    if layout is None:
      x, g = x.astype(dtype), g.astype(dtype)
      start_scale = _nonzero(jnp.mean(jnp.abs(x))).astype(real)
      scale = jnp.where(first, start_scale, scale)
      nu = b2 * nu + (1 - b2) * geometry.abs_sq(g).astype(real)
      return -lr * scale * geometry.safe_div(g, jnp.sqrt(nu / debias)), nu, scale
    # Per-group sums only (module docstring): Σx, Σg, ||x||², ||g||², <g, x>.
    d = layout.group_size
    sx, sg, xx, gg, gx = geometry.sums_and_dots(
        [x, g], [(x, x), (g, g), (g, x)], layout, one_pass=True)
    x, g = x.astype(dtype), g.astype(dtype)
    nu = b2 * nu + (1 - b2) * gg.astype(real)
    one = jnp.ones((), real)
    inv_rms = geometry.safe_div_sqrt(one, nu / debias)
    e = lambda v: geometry.expand(v, layout)
    if constraints:
      mx, mg = sx / d, sg / d
      xc_sq = jnp.maximum(xx - geometry.re_conj_mul(mx, sx), 0)   # ||x − μx||²
      a0 = geometry.safe_div_sqrt(one, xc_sq)
      start_scale = jnp.mean(a0 * jnp.sqrt(xc_sq))     # mean ||x0||: 1 per nonzero group
      a = jnp.where(first, a0, 1)
    else:
      start_scale = jnp.mean(jnp.sqrt(xx))
    scale = jnp.where(first, _nonzero(start_scale).astype(real), scale)
    k = lr * scale * inv_rms                           # x_new = x0 − k g
    if not constraints:
      return -e(k) * g, nu, scale
    # center(a x + b − k g) = a (x − μx) − k (g − μg); its squared norm from the
    # sums. k = 0 where v̂ overflowed: its terms are 0, not 0 · inf.
    gc_xc = gx - geometry.re_conj_mul(mg, sx)
    gc_gc = jnp.maximum(gg - geometry.re_conj_mul(mg, sg), 0)
    sq = a * a * xc_sq - 2 * a * jnp.where(k == 0, 0, k * gc_xc)
    sq = sq + jnp.where(k == 0, 0, k * k * gc_gc)
    inv = geometry.safe_div_sqrt(one, jnp.maximum(sq, 0))
    x_new = e(a * inv) * (x - e(mx)) - e(k * inv) * (g - e(mg))
    return x_new - x, nu, scale

  return leafwise("nero", NeroState, init_leaf, update_leaf,
                  learning_rate=learning_rate, groups=groups, min_group_size=2)
