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
update ``p`` loses its radial part per group of that view,
``p ← p − x̂ <x̂, p>`` with ``x̂ = x / (||x|| + ε)``, and the weight decay is
multiplied by ``wd_ratio``. The choice is data-dependent and made with
``jnp.where``; the whole-tensor statistics are sums of the per-group ones.

AdamP: ``m ← β1 m + (1−β1) g``, ``v ← β2 v + (1−β2) |g|²``,
``p = m / (sqrt(v)/sqrt(1−β2^t) + ε)`` (Nesterov: ``(β1 m + (1−β1) g)/…``),
projected; ``x ← x (1 − η λ w) − η/(1−β1^t) · p`` (``w`` = ``wd_ratio`` or 1;
``m``, ``v`` are never projected). SGDP: ``buf ← μ buf + g``, ``p = buf``
(Nesterov ``g + μ buf``); without Nesterov the projected buffer is stored;
``x ← x (1 − η λ w / (1−μ)) − η p``. For SGDP ``p`` is linear in ``g`` and
``buf``, so ``<x, p>`` comes from the raw dots ``<x, g>`` and ``<x, buf>``.

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

from spherax._checks import check_beta, check_learning_rate, check_nonnegative, require_params
from spherax import geometry
from spherax import groups as groups_lib

__all__ = ["adamp", "sgdp", "AdamPState", "SGDPState", "project_if_scale_invariant"]


def _projection_coef(layout, gx, gg, xx, xp, size, delta, eps):
  """Per-group ``coef`` with ``p' = p − coef x`` and whether a view passed.

  From the per-group dots ``<g, x>``, ``||g||²``, ``||x||²``, ``<x, p>``; the
  whole-tensor view (``size`` elements) uses their sums.
  """

  def cosine(gx, gg, xx):
    return jnp.abs(gx) / (jnp.maximum(jnp.sqrt(gg), eps) * jnp.maximum(jnp.sqrt(xx), eps))

  pass_c = jnp.max(cosine(gx, gg, xx)) < delta / jnp.sqrt(float(layout.group_size))
  # The barrier (on per-group statistics only) keeps XLA:CPU from rewriting these
  # sums of per-group sums as second full-size reductions that materialise each
  # product: without it AdamP/SGDP step 8.2x adamw instead of ~2.2x (ResNet-50
  # tree, python -m experiments.benchmark --rounds 3, same loaded machine).
  gx_w, gg_w, xx_w, xp_w = (
      jnp.sum(s) for s in jax.lax.optimization_barrier((gx, gg, xx, xp)))
  pass_w = cosine(gx_w, gg_w, xx_w) < delta / jnp.sqrt(float(size))
  coef_c = xp / jnp.square(jnp.sqrt(xx) + eps)
  coef_w = xp_w / jnp.square(jnp.sqrt(xx_w) + eps)
  coef = jnp.where(pass_c, coef_c, jnp.where(pass_w, coef_w, 0.0))
  return coef, pass_c | pass_w


def project_if_scale_invariant(layout, x, g, p, delta, eps):
  """The AdamP projection of ``p`` for one leaf; returns ``(p', projected)``.

  ``projected`` is a boolean scalar (whether a view passed). ``layout`` gives
  the per-group view; the whole-tensor view is tried second.
  """
  dtype = geometry.compute_dtype(x, g, p)
  x, g, p = (a.astype(dtype) for a in (x, g, p))
  coef, projected = _projection_coef(
      layout, geometry.dot(g, x, layout), geometry.sqnorm(g, layout),
      geometry.sqnorm(x, layout), geometry.dot(x, p, layout), x.size, delta, eps)
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


def _lr(learning_rate, count):
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _decayed(mask, params, treedef):
  """Per leaf, whether it gets weight decay (``mask``: a pytree of bools or a
  callable of params, as in ``optax.add_decayed_weights``; ``None``: all)."""
  if mask is None:
    return [True] * treedef.num_leaves
  tree = mask(params) if callable(mask) else mask
  return [bool(m) for m in treedef.flatten_up_to(tree)]


def _split(treedef, tree_of_tuples, n):
  flat = treedef.flatten_up_to(tree_of_tuples)
  return tuple(jax.tree.unflatten(treedef, [f[i] for f in flat]) for i in range(n))


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
  check_learning_rate("adamp", learning_rate)
  for name, value in (("eps", eps),
                      ("weight_decay", weight_decay), ("delta", delta), ("wd_ratio", wd_ratio)):
    check_nonnegative("adamp", name, value)
  check_beta("adamp", "b1", b1)
  check_beta("adamp", "b2", b2)

  def init_fn(params):
    groups_lib.resolve(groups, params, who="adamp")
    return AdamPState(
        jnp.zeros([], jnp.int32), optax.tree.zeros_like(params), optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params("adamp", params)
    layouts = groups_lib.resolve(groups, params, who="adamp")
    treedef = jax.tree.structure(params)
    decayed = jax.tree.unflatten(treedef, _decayed(mask, params, treedef))
    count = optax.safe_int32_increment(state.count)
    lr = _lr(learning_rate, state.count)

    def leaf(layout, x, g, m, v, decay):
      if x.size == 0:
        return jnp.zeros_like(x), m, v
      dtype, real = geometry.compute_dtype(x, g), geometry.stat_dtype(x, g)
      t = count.astype(real)
      c1, c2 = 1 - jnp.asarray(b1, real) ** t, 1 - jnp.asarray(b2, real) ** t
      gc, xc = g.astype(dtype), x.astype(dtype)
      m_new = b1 * m.astype(dtype) + (1 - b1) * gc
      v_new = b2 * v.astype(dtype) + (1 - b2) * (gc * jnp.conj(gc)).real
      num = b1 * m_new + (1 - b1) * gc if nesterov else m_new
      p = num / (jnp.sqrt(v_new) / jnp.sqrt(c2) + eps)
      wd = weight_decay if decay else 0.0
      if layout is not None:
        p, projected = project_if_scale_invariant(layout, xc, gc, p, delta, eps)
        wd = wd * jnp.where(projected, wd_ratio, 1.0)
      u = -lr * wd * xc - (lr / c1) * p
      return u.astype(x.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    out = groups_lib.tree_map_groups(leaf, layouts, params, updates, state.mu, state.nu, decayed)
    u, mu, nu = _split(treedef, out, 3)
    return u, AdamPState(count, mu, nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
  check_learning_rate("sgdp", learning_rate)
  for name, value in (("eps", eps),
                      ("weight_decay", weight_decay), ("delta", delta), ("wd_ratio", wd_ratio)):
    check_nonnegative("sgdp", name, value)
  check_beta("sgdp", "momentum", momentum)

  def init_fn(params):
    groups_lib.resolve(groups, params, who="sgdp")
    return SGDPState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params("sgdp", params)
    count, trace = state
    layouts = groups_lib.resolve(groups, params, who="sgdp")
    treedef = jax.tree.structure(params)
    decayed = jax.tree.unflatten(treedef, _decayed(mask, params, treedef))
    lr = _lr(learning_rate, count)

    def leaf(layout, x, g, b, decay):
      if x.size == 0:
        return jnp.zeros_like(x), b
      dtype = geometry.compute_dtype(x, g)
      gc, xc, bc = g.astype(dtype), x.astype(dtype), b.astype(dtype)
      wd = weight_decay if decay else 0.0
      coef = 0.0
      if layout is not None:
        # p is linear in (g, buf): <x, p> from the raw dots <x, g> and <x, buf>.
        gx, xb = geometry.dot(gc, xc, layout), geometry.dot(xc, bc, layout)
        xp = (1 + momentum) * gx + momentum**2 * xb if nesterov else momentum * xb + gx
        coef, projected = _projection_coef(
            layout, gx, geometry.sqnorm(gc, layout), geometry.sqnorm(xc, layout), xp,
            x.size, delta, eps)
        coef = geometry.expand(coef, layout)
        wd = wd * jnp.where(projected, wd_ratio, 1.0)
      b_new = momentum * bc + gc
      p = gc + momentum * b_new if nesterov else b_new
      p = p - coef * xc
      if not nesterov:
        b_new = p  # the projected buffer is what momentum carries forward
      u = -lr * wd / (1 - momentum) * xc - lr * p
      return u.astype(x.dtype), b_new.astype(b.dtype)

    out = groups_lib.tree_map_groups(leaf, layouts, params, updates, trace, decayed)
    u, new_trace = _split(treedef, out, 2)
    return u, SGDPState(optax.safe_int32_increment(count), new_trace)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
