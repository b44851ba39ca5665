"""AdamS / AdamSRT / SGDMRT in two or three element-wise passes, and :func:`hoist` (shared).

Why a fused path: the public composition (``add_decayed_weights``, then
:func:`spherax.transport_moments` around :func:`spherax.scale_by_group_adam` or
``optax.trace``) materialises ``g + λx``, the new moment, the direction ``s``
and the transported moment, reducing several of them. Here, per group, with
``g' = g + λx``, the moment ``m' = a m + b g'`` (AdamSRT: ``a, b = β1, 1 − β1``;
SGDMRT: ``μ, 1``) and the direction ``s = c m'`` (``c`` one scalar per group;
AdamSRT: ``sqrt(d) / ((1 − β1^t)(sqrt(v'/(1 − β2^t)) + ε))`` with
``v' = β2 v + (1 − β2)||g'||²``; SGDMRT: 1), as in the released AdamSRT code of
Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of
Adam with Batch Normalization*, ICLR 2021 submission (OpenReview), §4:

* ``||g'||²`` and ``||x||²`` are reductions of the raw inputs (``g'`` is never
  written: XLA:CPU reduces an element-wise expression of its entry arrays in one
  fast pass);
* ``m'`` is written once and reduced to ``<x, m'>`` and ``||m'||``;
* ``<x, s> = c <x, m'>``, ``||s||² = (c ||m'||)²``, ``<m', s> = (c ||m'||) ||m'||``
  (products ordered so that a zero ``c`` from an overflowed ``v`` gives 0, not
  ``0·inf``), which
  :func:`spherax.transforms.transport.moved_moment_coefficients` turns into the
  moved moment ``α m' + β x + γ s``;
* two element-wise passes write the update ``u = −η c m'`` (``x' = x + u``) and
  the moment ``(α + γc + βηc) m' + β x'`` (``= (α + γc) m' + β x``).

AdamS (no transport, no rescale) needs only ``||g'||²``: one reduction of the
raw ``g``, ``x``, then one pass writing ``m'`` and ``u = −η c m'`` (measured
on four (3, 3, 512, 512) kernels: 1.29× adamw, vs 2.78× for the chain, which
materialises ``g'`` and reduces it).

The state is the composition's ``(add_decayed_weights(λ, mask),
transport_moments(inner))`` (AdamS: ``transport_moments`` with no transport and
no rescale, which only owns the learning rate), with one ``count``: Adam's
(:class:`spherax.transforms.transport.TransportInnerCountState`), or the
transport's own for SGDMRT.

Writing ``m'`` once matters: XLA:CPU otherwise recomputes it in both output
passes, which then both read the donated ``x`` and ``m`` and force copies of
them. Writing the moment from ``x'`` rather than ``x`` orders the two passes
(the moment's reads ``x'``), so ``x`` is updated in place: without it XLA
copied every kernel (16 ms of a 95 ms AdamSRT step on ResNet-50). The state is the composition's, so the two are interchangeable (the
tests check they agree to 1e-9 in float64).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from spherax._checks import require_params
from spherax import geometry, groups as groups_lib
from spherax.transforms.transport import TransportState, moved_moment_coefficients, step_count


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


def fused_moment_transport(
    composition: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    first: str,
    decay: Any,
    gain: Any,
    adam: tuple[Any, Any] | None,
    l2_regularization: Any,
    mask: Any,
    kind: str | None,
    rescale: bool,
    eps: Any,
    groups: Any,
    who: str,
) -> optax.GradientTransformationExtraArgs:
  """``composition`` = ``chain(add_decayed_weights(λ, mask), transport_moments(inner, ...))``
  computed in one pass; ``inner``'s state has the moment field ``first`` and, when
  ``adam = (β2, ε_adam)``, is a :class:`spherax.GroupAdamState` (``nu``, ``count``).
  ``m' = decay·m + gain·g'``.
  """

  moved = kind is not None or rescale

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(who, params)
    wd_state, tstate = state
    inner = tstate.inner
    lr = learning_rate(step_count(tstate)) if callable(learning_rate) else learning_rate
    layouts = groups_lib.resolve(groups, params, who=who)
    decayed = groups_lib.mask_leaves(mask, params)
    treedef = jax.tree.structure(params)
    if adam is not None:
      b2, adam_eps = adam
      count = optax.safe_increment(inner.count)
      bc1, bc2 = 1 - decay**count, 1 - b2**count
      nus = treedef.flatten_up_to(inner.nu)
    else:
      nus = [None] * treedef.num_leaves
    out_u, out_m, out_v = [], [], []
    for layout, x, g, m, v, dec in zip(
        layouts, jax.tree.leaves(params), treedef.flatten_up_to(updates),
        treedef.flatten_up_to(getattr(inner, first)), nus, decayed,
    ):
      lam = l2_regularization if dec else 0.0
      dtype = geometry.compute_dtype(x, g, m)
      x32, g32, m32 = x.astype(dtype), g.astype(dtype), m.astype(dtype)
      if layout is None:  # element-wise Adam / SGD-M with coupled L2
        g_l2 = g32 + lam * x32
        m_new = decay * m32 + gain * g_l2
        if adam is None:
          s = m_new
        else:
          v = b2 * v + (1 - b2) * geometry.abs_sq(g_l2)
          s = m_new / bc1 * geometry.safe_div(jnp.ones((), v.dtype), jnp.sqrt(v / bc2) + adam_eps)
        out_u.append((-lr * s).astype(g.dtype))
        out_m.append(m_new.astype(m.dtype))
        out_v.append(v)
        continue
      if adam is None:
        c = geometry.zeros_stat(x32, layout) + 1  # ones placed as the statistics are
      else:
        # ||g'||²: a reduction of the raw g, x (g' only inside it: one fast pass).
        v = b2 * v + (1 - b2) * geometry.sqnorm(g32 + lam * x32, layout)
        d = jnp.sqrt(jnp.asarray(layout.group_size, v.dtype))
        c = geometry.safe_div(d, jnp.sqrt(v / bc2) + adam_eps) / bc1
      # m' written without g' so that g' is never materialised.
      m_prime = decay * m32 + gain * g32 + (gain * lam) * x32
      if not moved:  # AdamS: one pass writes m' and the update (m' not reduced)
        (step,) = hoist(-lr * c)
        out_u.append((geometry.expand(step, layout) * m_prime).astype(g.dtype))
        out_m.append(m_prime.astype(m.dtype))
        out_v.append(v)
        continue
      # The moved moment is coef_mp m' + coef_x x.
      coef_mp, coef_x = jnp.ones_like(c), jnp.zeros_like(c)
      if layout.group_size >= 2:  # a one-element group is not moved
        xx = geometry.sqnorm(x32, layout)
        xm = geometry.dot(m_prime, x32, layout)  # <x, m'>
        mn = geometry.norm(m_prime, layout)  # ||m'||
        cmn = jnp.where(c == 0, 0, c * mn)  # ||s||: 0 when an overflowed v zeroes c
        alpha, beta, gamma, ratio = moved_moment_coefficients(
            xx, c * xm, cmn * cmn, xm, jnp.where(cmn == 0, 0, cmn * mn), lr, kind, rescale, eps)
        coef_mp, coef_x = alpha + gamma * c, beta
        if rescale and adam is not None:
          v = v * ratio
      e = lambda s: geometry.expand(s, layout)  # noqa: E731
      step, coef_mp, coef_x = hoist(-lr * c, coef_x * lr * c + coef_mp, coef_x)
      u = (e(step) * m_prime).astype(g.dtype)
      x_new = (x + u).astype(dtype)
      out_u.append(u)
      out_m.append((e(coef_mp) * m_prime + e(coef_x) * x_new).astype(m.dtype))
      out_v.append(v)
    moments = jax.tree.unflatten(treedef, out_m)
    if adam is None:
      inner = inner._replace(**{first: moments})
    else:
      nu = jax.tree.unflatten(treedef, [v.astype(old.dtype) for v, old in zip(out_v, nus)])
      inner = inner._replace(count=count, **{first: moments, "nu": nu})
    updates = jax.tree.unflatten(treedef, out_u)
    if isinstance(tstate, TransportState):
      tstate = tstate._replace(count=optax.safe_increment(tstate.count), inner=inner)
    else:
      tstate = tstate._replace(inner=inner)
    return updates, (wd_state, tstate)

  return optax.GradientTransformationExtraArgs(composition.init, update_fn)
