"""Transporting moments to the new point and rescaling them by the radius ratio.

Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of
Adam with Batch Normalization*, ICLR 2021 submission (OpenReview), §4,
phenomena (b) and (c): after the step ``x' = x − η s``, the momentum still
lives at ``x``; :func:`transport_moments` moves it to ``x'`` (removing its
radial part) and rescales the moments by ``r/r'``, as the authors' released
AdamSRT code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import check_learning_rate, check_nonnegative, require_params
from spherax import geometry, groups as groups_lib

__all__ = ["TransportState", "TransportInnerCountState", "transport_moments"]

_KINDS = ("reference", "parallel", None)


class TransportState(NamedTuple):
  """``count``: steps taken (for a ``learning_rate`` schedule); ``inner``: the
  wrapped transformation's state, whose moments are kept at the current point."""

  count: jax.Array
  inner: Any


class TransportInnerCountState(NamedTuple):
  """The state when ``inner``'s own state counts the steps (a ``count`` field, as
  Adam's): that ``count`` is the step a schedule reads, and the only one, so
  ``optax.tree.get(state, "count")`` finds the optimizer's step."""

  inner: Any


def step_count(state: Any) -> jax.Array:
  """The step count (before this update) of a :func:`transport_moments` state."""
  if isinstance(state, TransportState):
    return state.count
  return optax.tree.get(state.inner, "count")


def transport_moments(
    inner: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    kind: str | None = "reference",
    rescale: bool = True,
    eps: float = 0.0,
    first_moments: Sequence[str] = ("mu",),
    second_moments: Sequence[str] = ("nu",),
    groups: Any = None,
    who: str = "transport_moments",
) -> optax.GradientTransformationExtraArgs:
  """Takes the step ``−η s`` of ``inner`` and moves ``inner``'s moments to ``x'``.

  The transport needs the new point ``x' = x − η s``, so this block owns the
  learning rate: it returns the final update ``−η s`` and the optimizer is a
  short chain (coupled L2, then this wrapper around the moment transform).
  The moments stay in ``inner``'s own state (a NamedTuple whose fields
  ``first_moments`` hold param-shaped moments and ``second_moments`` per-group
  or element-wise second moments), so ``inner`` keeps a single concern.

  Per group, with ``r = ||x||``, ``r' = ||x'||``, ``u = x/r``, ``u' = x'/r'``
  (the authors' AdamSRT code, step 4):

  * ``kind='reference'``, ``rescale=True`` (AdamSRT, SGDMRT):
    ``m ← (<x, x'> m − <m, x'> x) / (||x'||² + ε) = (r/r')[<u, u'> m − <m, u'> u]``;
  * ``kind='reference'``, ``rescale=False`` (Adam w/o (ab)):
    ``m ← <u, u'> m − <m, u'> u``;
  * ``kind='parallel'``: the exact parallel transport along the great circle of
    the tangential part ``m⊥ = m − <m, u> u``:
    ``m ← k [m⊥ − <m⊥, u'>/(1 + <u, u'>) (u + u')]``;
  * ``kind=None``: ``m ← k m``;

  with ``k = sqrt(||x||² / (||x'||² + ε))`` (``≈ r/r'``) when ``rescale`` else 1,
  and, when ``rescale``, ``v ← v ||x||² / (||x'||² + ε)`` (R). The post-step
  statistics are computed algebraically from ``x``, ``m`` and ``s``
  (``||x'||² = ||x||² − 2η<x, s> + η²||s||²``, ``<x, x'> = ||x||² − η<x, s>``,
  ``<m, x'> = <m, x> − η<m, s>``) in one pass, without forming ``x'``.

  Ungrouped leaves and groups of one element (whose sphere is two points) get
  the step only, as in the authors' code. Zero-norm groups give finite results.

  Args:
    inner: the transformation producing the direction ``s`` and owning moments.
    learning_rate: ``η``, a float or a schedule of the step count (from 0).
    kind: ``'reference'``, ``'parallel'`` or ``None``.
    rescale: whether to rescale by the radius ratio (phenomenon (c)).
    eps: ``ε`` in ``||x'||² + ε`` (the reference AdamSRT uses Adam's ``eps``).
    first_moments: field names of ``inner``'s state to transport.
    second_moments: field names of ``inner``'s state to rescale.
    groups: the group specification (see :mod:`spherax.groups`).
    who: the name errors give (a factory built on this one passes its own).

  Returns:
    A transformation whose ``update`` needs ``params``. Its state is a
    :class:`TransportState` (its own step ``count`` and ``inner``'s state), or a
    :class:`TransportInnerCountState` when ``inner``'s state has a ``count``
    (Adam's), which is then the step: one ``count`` either way.

  Example: SGD with momentum whose buffer follows the sphere (SGDMRT).

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[1.], [0.]])}
  >>> tx = spherax.transport_moments(optax.trace(0.9), 0.5,
  ...                                first_moments=('trace',), second_moments=())
  >>> state = tx.init(params)
  >>> out, state = tx.update({'w': jnp.array([[0.], [2.]])}, state, params)
  >>> new = optax.apply_updates(params, out)['w']
  >>> new.ravel().tolist(), state.inner.trace['w'].ravel().tolist()
  ([1.0, -1.0], [1.0, 1.0])
  """
  if kind not in _KINDS:
    raise ValueError(f"{who}: transport must be one of {_KINDS}, got {kind!r}")
  check_learning_rate(who, learning_rate)
  check_nonnegative(who, "eps", eps)
  first_moments, second_moments = tuple(first_moments), tuple(second_moments)
  inner = optax.with_extra_args_support(inner)  # e.g. optax.trace rejects loss=...

  def init_fn(params):
    groups_lib.resolve(groups, params, who=who)
    inner_state = inner.init(params)
    if optax.tree.get(inner_state, "count") is not None:
      return TransportInnerCountState(inner=inner_state)
    return TransportState(count=jnp.zeros([], jnp.int32), inner=inner_state)

  def update_fn(updates, state, params=None, **extra_args):
    require_params(who, params)
    direction, inner_state = inner.update(updates, state.inner, params, **extra_args)
    lr = learning_rate(step_count(state)) if callable(learning_rate) else learning_rate
    layouts = groups_lib.resolve(groups, params, who=who)
    treedef = jax.tree.structure(params)
    firsts = [treedef.flatten_up_to(getattr(inner_state, f)) for f in first_moments]
    seconds = [treedef.flatten_up_to(getattr(inner_state, f)) for f in second_moments]
    x_leaves = jax.tree.leaves(params)
    s_leaves = treedef.flatten_up_to(direction)
    for i, (layout, x, s) in enumerate(zip(layouts, x_leaves, s_leaves)):
      if layout is None or layout.group_size < 2 or (kind is None and not rescale):
        continue
      ms = [f[i] for f in firsts]
      vs = [v[i] for v in seconds]
      ms, vs = move_moments(layout, x, s, ms, vs, lr, kind, rescale, eps)
      for f, m in zip(firsts, ms):
        f[i] = m
      for v_list, v in zip(seconds, vs):
        v_list[i] = v
    inner_state = inner_state._replace(
        **{f: jax.tree.unflatten(treedef, l) for f, l in zip(first_moments, firsts)},
        **{f: jax.tree.unflatten(treedef, l) for f, l in zip(second_moments, seconds)},
    )
    step = jax.tree.map(lambda s: (-lr * s).astype(s.dtype), direction)
    if isinstance(state, TransportState):
      return step, TransportState(count=optax.safe_increment(state.count), inner=inner_state)
    return step, TransportInnerCountState(inner=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def new_sqnorm(xx, xs, ss, lr):
  """``||x − η s||² = ||x||² − 2η<x, s> + η²||s||²`` per group, clamped at 0 (rounding)."""
  return jnp.maximum(xx - 2 * lr * xs + lr * lr * ss, 0)


def moved_moment_coefficients(xx, xs, ss, mx, ms, lr, kind, rescale, eps):
  """Per-group ``(a, b, c, ratio)`` with the moved first moment ``a m + b x + c s``.

  Everything follows from five dot products at the current point (``xx = ||x||²``,
  ``xs = <x, s>``, ``ss = ||s||²``, ``mx = <m, x>``, ``ms = <m, s>``):
  ``||x'||² = xx − 2η xs + η² ss``, ``<x, x'> = xx − η xs``, ``<m, x'> = mx − η ms``;
  ``ratio = ||x||² / (||x'||² + ε)`` rescales the second moments.

  Where ``||x'||²`` overflows (a step of ``~1e19`` per entry in float32, which
  the reference formula turns into ``inf/inf``) the coefficients are 0: the
  moment is reset, as ``optax.adam``'s step is 0 where its second moment
  overflows; the exact moved moment there is of size ``~||x||/η``, negligible
  next to the moment ``~||x' − x||/η`` whose step overflowed.
  """
  new_sq = new_sqnorm(xx, xs, ss, lr)
  x_new = xx - lr * xs  # <x, x'>
  m_new = mx - lr * ms  # <m, x'>
  finite = jnp.isfinite(new_sq)  # else inf/inf: the moment is reset (see above)

  def guard(den):  # where den != 0 and ||x'||² is finite; elsewhere the coefficients are 0
    ok = finite & (den != 0)
    return ok, jnp.where(ok, den, 1)

  ok, den = guard(new_sq + eps)
  ratio = jnp.where(ok, xx, 0) / den
  if kind == "reference":  # one division per coefficient, the step's last operation
    if not rescale:
      ok, den = guard(jnp.sqrt(xx) * jnp.sqrt(new_sq))
    # Divisions, not one shared reciprocal: 1/den overflows for a subnormal den
    # (eps = 0) where the quotient is finite.
    a, b = jnp.where(ok, x_new, 0) / den, jnp.where(ok, -m_new, 0) / den
    return a, b, jnp.zeros_like(xx), ratio
  k = jnp.sqrt(ratio) if rescale else jnp.ones_like(xx)
  r, r_new = jnp.sqrt(xx), jnp.sqrt(new_sq)
  zero = jnp.zeros_like(xx)
  if kind == "parallel":
    radial = geometry.safe_div(mx, xx)  # m⊥ = m − radial·x
    perp_new = m_new - radial * x_new  # <m⊥, x'>
    cos = geometry.safe_div(x_new, r * r_new)
    c = geometry.safe_div(geometry.safe_div(perp_new, r_new), 1 + cos)
    # k [m⊥ − c (x/r + (x − η s)/r')].
    inv_r, inv_r_new = geometry.safe_div(1.0, r), geometry.safe_div(1.0, r_new)
    coefs = k, -k * (radial + c * (inv_r + inv_r_new)), k * c * lr * inv_r_new
  else:
    coefs = k, zero, zero
  return (*(jnp.where(finite, coef, 0) for coef in coefs), ratio)


def moved_along_coefficients(xx, xm, mm, c, lr, kind, rescale, eps):
  """Per-group ``(a, b, ratio)``: the moment ``m`` moved to ``x' = x − η c m`` is ``a m + b x``.

  The step is the moment itself times one scalar per group ``c`` (AdamS's
  ``sqrt(d)/((1 − β1^t)(sqrt(v̂) + ε))``, SGD-M's 1), so the five dot products of
  :func:`moved_moment_coefficients` follow from ``xx = ||x||²``, ``xm = <x, m>``
  and ``mm = ||m||²`` (``<x, s> = c<x, m>``, ``||s||² = c²||m||²``,
  ``<m, s> = c||m||²``), which the caller reduces with its other statistics
  (:class:`spherax.geometry.Combination`). A zero ``c`` (an
  overflowed second moment) is a zero step even where ``||m||²`` overflowed.
  """
  if isinstance(c, (int, float)) and c != 0:  # a static c (SGD-M's 1): no guard
    ms = c * mm
    ss = c * ms
  else:
    zero_step = c == 0
    ms = jnp.where(zero_step, 0, c * mm)  # <m, s>, not 0·inf
    ss = jnp.where(zero_step, 0, c * ms)  # ||s||²
  a, b, gamma, ratio = moved_moment_coefficients(
      xx, c * xm, ss, xm, ms, lr, kind, rescale, eps)
  return (a + gamma * c if kind == "parallel" else a), b, ratio  # gamma = 0 otherwise


def move_moments(layout, x, s, ms, vs, lr, kind, rescale, eps):
  """The first moments ``ms`` moved to ``x' = x − η s`` and the second moments ``vs``
  rescaled (``rescale``) on one leaf: the step of :func:`transport_moments`.

  ``vs`` are per group (``layout.stat_shape``) or element-wise. Ungrouped leaves and
  one-element groups are not to be passed (their moments stay as they are).
  """
  dtype = geometry.compute_dtype(x, s, *ms)
  x, s = x.astype(dtype), s.astype(dtype)
  xx, xs, ss = geometry.dots([(x, x), (x, s), (s, s)], layout)
  out_m = []
  for m in ms:
    mm = m.astype(dtype)
    mx, m_s = geometry.dots([(mm, x), (mm, s)], layout)
    coef_m, coef_x, coef_s, _ = moved_moment_coefficients(
        xx, xs, ss, mx, m_s, lr, kind, rescale, eps)
    new = (
        geometry.expand(coef_m, layout) * mm
        + geometry.expand(coef_x, layout) * x
        + geometry.expand(coef_s, layout) * s
    )
    out_m.append(new.astype(m.dtype))
  if not rescale:
    return out_m, list(vs)
  zero = jnp.zeros_like(xx)  # the ratio does not depend on the moment's dot products
  ratio = moved_moment_coefficients(xx, xs, ss, zero, zero, lr, kind, rescale, eps)[3]
  out_v = [
      (v * (ratio if v.shape == layout.stat_shape else geometry.expand(ratio, layout))).astype(v.dtype)
      for v in vs
  ]
  return out_m, out_v
