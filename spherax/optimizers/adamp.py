"""AdamP and SGDP (Heo et al.; REFERENCE §6): remove the radial part of the update
of weights that look scale-invariant.

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

Speed: the per-group dots ``<g, x>``, ``||g||²``, ``||x||²`` are reductions of raw
inputs; for SGDP ``p`` is linear in ``g`` and ``buf``, so ``<x, p>`` comes from
``<x, g>`` and ``<x, buf>`` too. AdamP's ``<x, p>`` needs the Adam ratio itself.
Without Nesterov, one pass writes ``p`` over ``m`` (reading ``g``, ``m``, ``v'``),
``<x, p>`` is a plain reduction of ``x`` and ``p``, the update pass reads ``x``
and ``p``, and a last pass restores ``m' = p (sqrt(v'/(1−β2^t)) + ε)`` (equal to
Adam's ``m'`` up to a few ulp, an error that decays with ``β1``). With Nesterov,
``m'`` is kept and ``<x, p>`` is reduced from ``x``, ``m'``, ``v'``, ``g`` as its
own expression (its scalars pass through a per-leaf optimization barrier, so
XLA:CPU neither shares it with the update pass nor one scalar broadcast between
leaves of one shape). Measured on XLA:CPU: full-size temporaries cost more than
the passes they save (ResNet-50: 97.6 MB of them, rewritten every step), and a
reduction fused with the Adam ratio's arithmetic (YNNPACK) is about twice as
slow as writing ``p`` and reducing it. ResNet-50, same run: AdamP 3.15× → 2.68×
``optax.adamw``, with Nesterov 5.17× → 3.66×. The projection then rides in the
pass that writes the update.

AdamP: ``m ← β1 m + (1−β1) g``, ``v ← β2 v + (1−β2) g²``,
``p = m / (sqrt(v)/sqrt(1−β2^t) + ε)`` (Nesterov: ``(β1 m + (1−β1) g)/…``),
projected; ``x ← x (1 − η λ w) − η/(1−β1^t) · p`` (``w`` = ``wd_ratio`` or 1;
``m``, ``v`` are never projected). SGDP: ``buf ← μ buf + g``, ``p = buf``
(Nesterov ``g + μ buf``); without Nesterov the projected buffer is stored;
``x ← x (1 − η λ w / (1−μ)) − η p``.

Example:

>>> import jax.numpy as jnp, spherax
>>> x = {'w': jnp.array([[1., 0.], [0., 1.]])}
>>> opt = spherax.adamp(1e-1)
>>> g = {'w': jnp.array([[0., 1.], [1., 0.]])}   # orthogonal to each unit
>>> u, _ = opt.update(g, opt.init(x), x)
>>> jnp.sum(u['w'] * x['w'], axis=0).round(6).tolist()  # no radial part
[0.0, 0.0]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import check_beta, check_nonnegative, require_params
from spherax import geometry
from spherax import groups as groups_lib
from spherax.transforms._fused import hoist

__all__ = ["adamp", "sgdp", "AdamPState", "SGDPState", "project_if_scale_invariant"]


def _projection_coef(layout, gx, gg, xx, xp, size, delta, eps):
  """Per-group ``coef`` with ``p' = p − coef x`` and whether a view passed.

  From the per-group dots ``<g, x>``, ``||g||²``, ``||x||²``, ``<x, p>``; the
  whole-tensor view (``size`` elements) uses their sums.
  """

  def cosine(gx, gg, xx):
    return jnp.abs(gx) / (jnp.maximum(jnp.sqrt(gg), eps) * jnp.maximum(jnp.sqrt(xx), eps))

  pass_c = jnp.max(cosine(gx, gg, xx)) < delta / jnp.sqrt(float(layout.group_size))
  # The barrier keeps XLA from rewriting these sums of per-group sums as second
  # full-size reductions (which materialise each product: measured ~5× slower).
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
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


class SGDPState(NamedTuple):
  count: jax.Array
  trace: optax.Updates


def _lr(learning_rate, count):
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _zeros(params):
  return jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), params)


def _split(treedef, tree_of_tuples, n):
  flat = treedef.flatten_up_to(tree_of_tuples)
  return tuple(jax.tree.unflatten(treedef, [f[i] for f in flat]) for i in range(n))


def adamp(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    *,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdamP: AdamW whose update loses its radial part on scale-invariant weights.

  The rule and the view detection are in the module docstring (REFERENCE §6).

  Args:
    learning_rate: ``η``, a float or a schedule.
    b1, b2: Adam's moment decays, in ``[0, 1)``.
    eps: ``ε`` of Adam's denominator, of the cosine's clamps and of ``x̂``.
    weight_decay: ``λ``, decoupled (``x ← x (1 − ηλw)``).
    delta: ``δ`` of the detection threshold ``δ / sqrt(d_view)``.
    wd_ratio: ``w`` applied to ``λ`` where a view passes.
    nesterov: use the Nesterov moment ``β1 m + (1−β1) g``.
    groups: the per-group view (default per output unit for ``ndim >= 2``;
      ``None`` leaves are never projected).

  Returns:
    A transformation whose ``update`` needs ``params``.
  """
  for name, value in (("learning_rate", learning_rate), ("eps", eps),
                      ("weight_decay", weight_decay), ("delta", delta), ("wd_ratio", wd_ratio)):
    check_nonnegative("adamp", name, value)
  check_beta("adamp", "b1", b1)
  check_beta("adamp", "b2", b2)

  def init_fn(params):
    groups_lib.resolve(groups, params, who="adamp")
    return AdamPState(jnp.zeros([], jnp.int32), _zeros(params), _zeros(params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params("adamp", params)
    layouts = groups_lib.resolve(groups, params, who="adamp")
    treedef = jax.tree.structure(params)
    count = optax.safe_int32_increment(state.count)
    lr = _lr(learning_rate, state.count)
    t = count.astype(jnp.float32)
    c1, c2 = 1 - b1**t, 1 - b2**t

    def leaf(layout, x, g, m, v):
      dtype = geometry.compute_dtype(x, g)
      gc, xc = g.astype(dtype), x.astype(dtype)
      v_new = b2 * v.astype(dtype) + (1 - b2) * gc * gc
      den = jnp.sqrt(v_new) / jnp.sqrt(c2) + eps
      if layout is None:
        m_new = b1 * m.astype(dtype) + (1 - b1) * gc
        num = b1 * m_new + (1 - b1) * gc if nesterov else m_new
        u = -lr * weight_decay * xc - (lr / c1) * (num / den)
        return u.astype(x.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)
      gx = geometry.dot(gc, xc, layout)
      if nesterov:
        m_new = b1 * m.astype(dtype) + (1 - b1) * gc
        p = (b1 * m_new + (1 - b1) * gc) / den
        # <x, p> as its own expression: its scalars tied to this leaf (module docstring).
        b1_r, inv_c2, eps_r, _ = jax.lax.optimization_barrier(
            (jnp.asarray(b1, dtype), 1 / c2, jnp.asarray(eps, dtype), gx))
        num_r = b1_r * m_new + (1 - b1_r) * gc
        xp = geometry.group_sum(xc * num_r / (jnp.sqrt(v_new * inv_c2) + eps_r), layout)
      else:
        # p is written over m; m' = p·den is restored after the update pass.
        p = (b1 * m.astype(dtype) + (1 - b1) * gc) / den
        xp = geometry.dot(xc, p, layout)
      coef, projected = _projection_coef(
          layout, gx, geometry.sqnorm(gc, layout), geometry.sqnorm(xc, layout), xp,
          x.size, delta, eps)
      wd = weight_decay * jnp.where(projected, wd_ratio, 1.0)
      a_x, a_p = hoist(-lr * wd + (lr / c1) * coef, jnp.broadcast_to(-lr / c1, coef.shape))
      u = geometry.expand(a_x, layout) * xc + geometry.expand(a_p, layout) * p
      if not nesterov:
        # Its own den (no shared full-size sqrt); an exact +0 from one row of x + u
        # (a NaN or −0 there changes nothing) orders this pass after the update's,
        # which reads p from the same buffer.
        x_row = (xc + u)[(0,) * (x.ndim - 1)]
        m_new = p * (jnp.sqrt(v_new * (1 / c2)) + eps) - jnp.abs(jnp.nan_to_num(0 * x_row))
      return u.astype(x.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    out = groups_lib.tree_map_groups(leaf, layouts, params, updates, state.mu, state.nu)
    u, mu, nu = _split(treedef, out, 3)
    return u, AdamPState(count, mu, nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgdp(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    eps: float = 1e-8,
    *,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """SGDP: SGD with momentum (no dampening) and AdamP's projection (REFERENCE §6).

  Args:
    learning_rate: ``η``, a float or a schedule.
    momentum: ``μ``, in ``[0, 1)``.
    weight_decay: ``λ``, applied as ``x ← x (1 − ηλw/(1−μ))``.
    delta, wd_ratio, eps, groups: as in :func:`adamp`.
    nesterov: ``p = g + μ buf``; without it the projected buffer is stored.

  Returns:
    A transformation whose ``update`` needs ``params``.
  """
  for name, value in (("learning_rate", learning_rate), ("eps", eps),
                      ("weight_decay", weight_decay), ("delta", delta), ("wd_ratio", wd_ratio)):
    check_nonnegative("sgdp", name, value)
  check_beta("sgdp", "momentum", momentum)

  def init_fn(params):
    groups_lib.resolve(groups, params, who="sgdp")
    return SGDPState(jnp.zeros([], jnp.int32), _zeros(params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params("sgdp", params)
    count, trace = state
    layouts = groups_lib.resolve(groups, params, who="sgdp")
    treedef = jax.tree.structure(params)
    lr = _lr(learning_rate, count)

    def leaf(layout, x, g, b):
      dtype = geometry.compute_dtype(x, g)
      gc, xc, bc = g.astype(dtype), x.astype(dtype), b.astype(dtype)
      wd = weight_decay
      coef = 0.0
      if layout is not None:
        # p is linear in (g, buf): <x, p> from the raw dots <x, g> and <x, buf>.
        gx, xb = geometry.dot(gc, xc, layout), geometry.dot(xc, bc, layout)
        xp = (1 + momentum) * gx + momentum**2 * xb if nesterov else momentum * xb + gx
        coef, projected = _projection_coef(
            layout, gx, geometry.sqnorm(gc, layout), geometry.sqnorm(xc, layout), xp,
            x.size, delta, eps)
        coef = geometry.expand(coef, layout)
        wd = weight_decay * jnp.where(projected, wd_ratio, 1.0)
      b_new = momentum * bc + gc
      p = gc + momentum * b_new if nesterov else b_new
      p = p - coef * xc
      if not nesterov:
        b_new = p  # the projected buffer is what momentum carries forward
      u = -lr * wd / (1 - momentum) * xc - lr * p
      return u.astype(x.dtype), b_new.astype(b.dtype)

    out = groups_lib.tree_map_groups(leaf, layouts, params, updates, trace)
    u, new_trace = _split(treedef, out, 2)
    return u, SGDPState(optax.safe_int32_increment(count), new_trace)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
