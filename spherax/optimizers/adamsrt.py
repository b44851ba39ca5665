"""AdamS, AdamSRT and SGDMRT: Adam and SGD-M adapted to the sphere.

Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of
Adam with Batch Normalization*, ICLR 2021 submission (OpenReview), §4, and the
authors' released AdamSRT code. Each optimizer is one per-leaf rule run by
:func:`spherax.transforms.leafwise.leafwise`: coupled L2 (``g ← g + λx``), the
moments (:func:`spherax.transforms.group_moment.group_adam_moments`, or SGD-M's
buffer), the step ``x' = x − η c m`` (``c`` one scalar per group), then the
moment moved to ``x'`` and the second moment rescaled by the coefficients of
:func:`spherax.transforms.transport.moved_along_coefficients`, the algebra
:func:`spherax.transport_moments` also uses. Every per-group statistic
(``||g + λx||²``, ``||x||²``, ``<x, m'>``, ``||m'||²``) is reduced in one
pass: of the step's arrays (``g + λx``, ``m'``), or on a CUDA device as dot
products of its inputs ``x``, ``g``, ``m`` by one kernel
(:class:`spherax.geometry.Combination`); the post-step ones (``||x'||²``,
``<x, x'>``, ``<m', x'>``) follow in closed form.

The L2 term is *coupled* (added to the gradient, then adapted by the second
moment), as in the papers' Adam + L2 baselines: hence ``l2_regularization``, not
``weight_decay`` (which in optax means decoupled decay).
"""


from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax import geometry
from spherax._checks import check_beta, check_learning_rate, check_nonnegative, is_static_zero
from spherax.transforms.group_moment import (
    GroupAdamState, coupled_first_moment, group_adam_moments, group_second_moment)
from spherax.transforms.leafwise import leafwise
from spherax.transforms.transport import move_moments, moved_along_coefficients

__all__ = ["SGDMRTState", "adams", "adamsrt", "sgdmrt"]


class SGDMRTState(NamedTuple):
  """``count``: the step; ``trace``: the momentum buffer (leaf dtype), kept at the current point."""

  count: jax.Array
  trace: Any


def _adamsrt(learning_rate, b1, b2, eps, l2_regularization, mask, group_moment, transport,
             rescale, groups, who):
  check_learning_rate(who, learning_rate)
  check_nonnegative(who, "l2_regularization", l2_regularization)
  if transport not in ("reference", "parallel", None):
    raise ValueError(
        f"{who}: transport must be 'reference', 'parallel' or None, got {transport!r}"
    )
  check_beta(who, "b1", b1)
  check_beta(who, "b2", b2)
  check_nonnegative(who, "eps", eps)
  moved = transport is not None or rescale

  def init_leaf(layout, x):
    nu = geometry.zeros_stat(x, layout if group_moment else None)
    return jnp.zeros_like(x), nu

  def update_leaf(step, x, g, mu, nu):
    layout, lr = step.layout, step.learning_rate
    dtype = geometry.compute_dtype(x, g, mu)
    x, g = x.astype(dtype), g.astype(dtype)
    l2 = l2_regularization if step.decayed else 0.0
    moves = moved and layout is not None and layout.group_size >= 2
    if layout is None or not group_moment:
      mu, nu, c = group_adam_moments(None, g, mu, nu, b1, b2, eps, step.count, l2=l2, x=x)
      s = c * mu
      if not moves:
        return -lr * s, mu, nu
      # Element-wise second moment: the step is not c·m with c per group.
      (mu,), (nu,) = move_moments(layout, x, s, [mu], [nu], lr, transport, rescale, eps)
      return -lr * s, mu, nu
    mu, coupled = coupled_first_moment(g, mu, b1, l2=l2, x=x)
    pairs = [(coupled, coupled)] + ([(x, x), (x, mu), (mu, mu)] if moves else [])
    sqnorm, *moved_stats = geometry.dots(pairs, layout, one_pass=True)  # one pass
    nu, c = group_second_moment(layout, nu, sqnorm, b1, b2, eps, step.count)
    mu = mu.value
    s = geometry.expand(c, layout) * mu
    if not moves:
      return -lr * s, mu, nu
    a, b, ratio = moved_along_coefficients(*moved_stats, c, lr, transport, rescale, eps)
    moved_mu = geometry.expand(a, layout) * mu + geometry.expand(b, layout) * x
    return -lr * s, moved_mu, nu * ratio if rescale else nu

  return leafwise(who, GroupAdamState, init_leaf, update_leaf, learning_rate=learning_rate,
                  groups=groups, mask=mask)


def adamsrt(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-8,
    *,
    l2_regularization: float = 0.0,
    mask: Any = None,
    group_moment: bool = True,
    transport: str | None = "reference",
    rescale: bool = True,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdamSRT, "Adam w/o (abc)" (Roburin et al., ICLR 2021 submission, §4 and the
  released code).

  Per group of ``d`` elements, step ``t`` (from 1):

  1. ``g ← g + λx`` (coupled L2, where ``mask``); ``m ← β1 m + (1−β1) g`` element-wise;
  2. ``v ← β2 v + (1−β2) Σ_group |g|²`` (``group_moment``; else element-wise: Adam);
  3. ``x' = x − η sqrt(d) (m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + ε)``;
  4. ``rescale``: ``v ← v ||x||²/(||x'||² + ε)``; ``transport='reference'``:
     ``m ← (<x, x'> m − <m, x'> x)/(||x'||² + ε)`` (with ``rescale``) or
     ``m ← <u, u'> m − <m, u'> u`` (without); ``'parallel'``: the exact parallel
     transport of ``m``'s tangential part, times ``r/r'`` with ``rescale``.

  ``adamsrt(rescale=False)`` is "Adam w/o (ab)"; :func:`adams` is AdamS.
  Ungrouped leaves (by default vectors, see :mod:`spherax.groups`) get plain
  Adam with coupled L2, as in the reference code; so do groups of one element
  (no transport or rescale, as in the reference). Complex leaves are points of
  ``R^{2d}`` (:mod:`spherax.geometry`).

  Args:
    learning_rate: ``η``, a float or a schedule.
    b1, b2: moment decays, in ``[0, 1)``.
    eps: ``ε`` of the denominator and of ``||x'||² + ε``.
    l2_regularization: ``λ``, coupled L2 (added to the gradient).
    mask: a pytree of bools like params, or a function of params giving one:
      the leaves that get the L2 term (default: all), as in ``optax``.
    group_moment: one second moment per group (removes phenomenon (a)).
    transport: ``'reference'``, ``'parallel'`` or ``None`` (phenomenon (b)).
    rescale: rescale the moments by the radius ratio (phenomenon (c)).
    groups: the group specification (see :mod:`spherax.groups`).

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[3.], [4.]]), 'b': jnp.zeros(1)}
  >>> opt = spherax.adamsrt(learning_rate=0.1)
  >>> grads = {'w': jnp.array([[4.], [-3.]]), 'b': jnp.ones(1)}
  >>> updates, state = opt.update(grads, opt.init(params), params)
  >>> jnp.round(optax.apply_updates(params, updates)['b'], 4).tolist()
  [-0.1]
  >>> int(optax.tree.get(state, 'count'))
  1
  """
  return _adamsrt(learning_rate, b1, b2, eps, l2_regularization, mask, group_moment,
                  transport, rescale, groups, "adamsrt")


def adams(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-8,
    *,
    l2_regularization: float = 0.0,
    mask: Any = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdamS, "Adam w/o (a)": Adam with coupled L2 and one second moment per group.

  ``adamsrt(..., transport=None, rescale=False)``: steps 1–3 of :func:`adamsrt`
  (Roburin et al., ICLR 2021 submission, §4), no transport and no rescale. Per
  group the only statistic is ``||g + λx||² = ||g||² + 2λ<g, x> + λ²||x||²``,
  reduced in one pass over ``g`` and ``x``; one element-wise pass then writes
  ``m`` and the update.

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.ones((4, 1))}
  >>> opt = spherax.adams(learning_rate=0.1, eps=0.0)
  >>> updates, _ = opt.update({'w': jnp.ones((4, 1))}, opt.init(params), params)
  >>> jnp.round(updates['w'], 4).ravel().tolist()
  [-0.1, -0.1, -0.1, -0.1]
  """
  return _adamsrt(learning_rate, b1, b2, eps, l2_regularization, mask, True, None, False,
                  groups, "adams")


def sgdmrt(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    *,
    l2_regularization: float = 0.0,
    mask: Any = None,
    rescale: bool = True,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """SGD-M with the momentum transported and rescaled on the sphere (SGDMRT, the
  SGD counterpart of AdamSRT in Roburin et al., ICLR 2021 submission, §4).

  ``g ← g + λx``, ``buf ← μ buf + g``, ``x' = x − η buf``, then per group
  ``buf ← (<x, x'> buf − <buf, x'> x)/||x'||²`` (0 where ``x' = 0``, and where
  ``||x'||²`` overflows, see :func:`spherax.transforms.transport.moved_moment_coefficients`;
  the reference has no ε), or ``buf ← <u, u'> buf − <buf, u'> u`` without
  ``rescale``. Ungrouped leaves and one-element groups: SGD-M with coupled L2.

  Args:
    learning_rate: ``η``, a float or a schedule.
    momentum: ``μ``, in ``[0, 1)``.
    l2_regularization: ``λ``, coupled L2.
    mask: the leaves that get the L2 term (a pytree of bools or a function of params).
    rescale: rescale the buffer by the radius ratio ``r/r'``.
    groups: the group specification (see :mod:`spherax.groups`).

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[1.], [0.]])}
  >>> opt = spherax.sgdmrt(0.5)
  >>> updates, state = opt.update({'w': jnp.array([[0.], [2.]])}, opt.init(params), params)
  >>> optax.apply_updates(params, updates)['w'].ravel().tolist()
  [1.0, -1.0]
  """
  who = "sgdmrt"
  check_learning_rate(who, learning_rate)
  check_beta(who, "momentum", momentum)
  check_nonnegative(who, "l2_regularization", l2_regularization)

  def init_leaf(layout, x):
    del layout
    return (jnp.zeros_like(x),)

  def update_leaf(step, x, g, trace):
    layout, lr = step.layout, step.learning_rate
    dtype = geometry.compute_dtype(x, g, trace)
    x, g = x.astype(dtype), g.astype(dtype)
    terms = ((momentum, trace), (1, g))
    if step.decayed and not is_static_zero(l2_regularization):
      g = g + l2_regularization * x
      terms += ((l2_regularization, x),)
    buf = momentum * trace.astype(dtype) + g
    if layout is None or layout.group_size < 2:
      return -lr * buf, buf
    moment = geometry.Combination(buf, terms)  # reduced in one pass over x, g, trace
    xx, xb, bb = geometry.dots([(x, x), (x, moment), (moment, moment)], layout, one_pass=True)
    a, b, _ = moved_along_coefficients(xx, xb, bb, 1.0, lr, "reference", rescale, 0.0)
    return -lr * buf, geometry.expand(a, layout) * buf + geometry.expand(b, layout) * x

  return leafwise(who, SGDMRTState, init_leaf, update_leaf, learning_rate=learning_rate,
                  groups=groups, mask=mask)
