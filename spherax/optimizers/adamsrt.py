"""AdamS, AdamSRT and SGDMRT: Adam and SGD-M adapted to the sphere.

Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of
Adam with Batch Normalization*, ICLR 2021 submission (OpenReview), §4, and the
authors' released AdamSRT code. Each optimizer is defined as a short chain:
coupled L2 (``g ← g + λx``, ``optax.add_decayed_weights(λ, mask)``), then the
moment transform wrapped by :func:`spherax.transport_moments`, which owns the
learning rate because transporting the moments needs the new point
``x' = x − η s`` (AdamS: no transport and no rescale). With per-group second
moments the returned transformation has that chain's state but computes its
update in one pass (:mod:`spherax.transforms._fused`: every per-group statistic
from dot products of the raw ``g``, ``x``, ``m``), which is several times faster
on CPU; the results agree to rounding. The state has one ``count``, the step.

The L2 term is *coupled* (added to the gradient, then adapted by the second
moment), as in the papers' Adam + L2 baselines: hence ``l2_regularization``, not
``weight_decay`` (which in optax means decoupled decay).
"""


from typing import Any

import optax

from spherax.transforms._fused import fused_moment_transport
from spherax._checks import check_beta, check_learning_rate, check_nonnegative
from spherax.transforms.group_moment import scale_by_group_adam
from spherax.transforms.transport import transport_moments

__all__ = ["adams", "adamsrt", "sgdmrt"]


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
  moments = (scale_by_group_adam(b1, b2, eps, groups=groups) if group_moment
             else optax.scale_by_adam(b1, b2, eps))
  step = transport_moments(
      moments, learning_rate, kind=transport, rescale=rescale, eps=eps, groups=groups, who=who)
  composition = optax.chain(optax.add_decayed_weights(l2_regularization, mask), step)
  if not group_moment:  # element-wise second moments: nothing to fuse with
    return composition
  return fused_moment_transport(
      composition, learning_rate, first="mu", decay=b1, gain=1 - b1, adam=(b2, eps),
      l2_regularization=l2_regularization, mask=mask, kind=transport, rescale=rescale,
      eps=eps, groups=groups, who=who,
  )


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
  group the only statistic is ``||g + λx||²``, one reduction of the raw ``g``
  and ``x``; one element-wise pass then writes ``m`` and the update.

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
  ``buf ← (<x, x'> buf − <buf, x'> x)/||x'||²`` (0 where ``x' = 0``; the
  reference has no ε), or ``buf ← <u, u'> buf − <buf, u'> u`` without
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
  composition = optax.chain(
      optax.add_decayed_weights(l2_regularization, mask),
      transport_moments(
          optax.trace(decay=momentum), learning_rate, kind="reference", rescale=rescale,
          first_moments=("trace",), second_moments=(), groups=groups, who=who,
      ),
  )
  return fused_moment_transport(
      composition, learning_rate, first="trace", decay=momentum, gain=1.0, adam=None,
      l2_regularization=l2_regularization, mask=mask, kind="reference", rescale=rescale,
      eps=0.0, groups=groups, who=who,
  )
