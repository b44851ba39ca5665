"""Per-group measurements of one optimisation step.

The quantities of the spherical decomposition of a step (Roburin, de Mont-Marin,
Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with
Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, Sec. 2; short:
Roburin et al. 2022) and of rotational equilibrium (Kosson, Messmer, Jaggi,
*Rotational Equilibrium: How Weight Decay Balances Learning Across Neural
Networks*, ICML 2024, arXiv:2305.17212, Sec. 2 and App. C; short: Kosson et
al. 2024).

Every function takes pytrees with the params' structure (``params`` the weights
before the step ``x``, ``new_params`` after it ``x'``, ``updates`` the applied
step ``Δ = x' − x`` as optax signs it, ``grads`` the loss gradient ``g``) and a
``groups`` argument (see :mod:`spherax.groups`; ``None`` = the default rule).
It returns a pytree with the params' structure whose grouped leaves hold one
value per group, shaped ``layout.stat_shape`` (the leaf's shape with the reduced
axes set to 1), in float32 (float64 under ``jax_enable_x64`` with float64
inputs); **ungrouped leaves map to** ``None`` and ``optax.MaskedNode`` subtrees
pass through. Zero-norm groups and zero gradients give finite values (0).

Notation (Roburin et al. 2022, Sec. 2): ``r = ||x||``, ``u = x / r``, ``q⊥ = q − <q, u> u``.

Example:

>>> import jax.numpy as jnp
>>> from spherax import diagnostics
>>> x = {'w': jnp.array([[1., 0.], [0., 2.]]), 'b': jnp.ones(2)}
>>> x_new = {'w': jnp.array([[1., 1.], [1., 0.]]), 'b': jnp.ones(2)}
>>> out = diagnostics.angular_update(x, x_new)
>>> out['b'] is None, out['w'].round(4).tolist()
(True, [[0.7854, 1.5708]])
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from spherax import geometry, groups as groups_lib

__all__ = [
    "weight_norm",
    "angular_update",
    "rms_update",
    "radial_component",
    "effective_learning_rate",
    "grad_cosine",
]


def _map(fn, groups: Any, who: str, params: Any, *rest: Any) -> Any:
  """Maps ``fn(layout, x, *rest_leaves)`` over the grouped leaves (else ``None``)."""
  layouts = groups_lib.resolve(groups, params, who=f"spherax.diagnostics.{who}")

  def leaf(layout, x, *others):
    return None if layout is None else fn(layout, x, *others)

  return groups_lib.tree_map_groups(leaf, layouts, params, *rest)


def _norm(layout, x):
  return geometry.norm(x, layout)


def weight_norm(params: Any, groups: Any = None) -> Any:
  """The weight norm ``r = ||x||`` of every group.

  Example:

  >>> import jax.numpy as jnp
  >>> from spherax import diagnostics
  >>> diagnostics.weight_norm({'w': jnp.array([[3., 0.], [4., 1.]])})['w'].tolist()
  [[5.0, 1.0]]
  """
  return _map(_norm, groups, "weight_norm", params)


def angular_update(params: Any, new_params: Any, groups: Any = None) -> Any:
  """The angle ``∠(x, x')`` in radians, in ``[0, π]``, that each group turns.

  ``∠(x, x') = atan2(||x'⊥||, <x', u>)`` with ``x'⊥ = x' − <x', u> u``
  (Kosson et al. 2024, Sec. 2: the angular update ``η_r`` is its expectation;
  Roburin et al. 2022, Theorem 2, gives it as ``arctan(η^e ||c⊥||)``). Unlike ``arccos`` of the
  cosine it is accurate for tiny angles. A group with ``x = 0`` gives 0.

  Example:

  >>> import jax.numpy as jnp
  >>> from spherax import diagnostics
  >>> x, x_new = {'w': jnp.array([[1.], [0.]])}, {'w': jnp.array([[1.], [1e-4]])}
  >>> float(diagnostics.angular_update(x, x_new)['w'][0, 0])
  0.0001
  """

  def angle(layout, x, x_new):
    r = geometry.norm(x, layout)
    along = geometry.safe_div(geometry.dot(x_new, x, layout), r)
    across = geometry.norm(geometry.tangent(x_new, x, layout), layout)
    return jnp.where(r > 0, jnp.arctan2(across, along), 0)

  return _map(angle, groups, "angular_update", params, new_params)


def rms_update(updates: Any, groups: Any = None) -> Any:
  """The size ``||Δ||`` of each group's step.

  Kosson et al. 2024 (Sec. 2) define the RMS update ``η_g = sqrt(E||Δ_g p||²)`` over steps
  for the *gradient part* ``Δ_g`` of the update (no weight decay): pass that
  part to measure ``η_g``, and take the root mean square of the returned values
  over steps. Layouts are resolved on the shapes of ``updates``.

  Example:

  >>> import jax.numpy as jnp
  >>> from spherax import diagnostics
  >>> diagnostics.rms_update({'w': jnp.array([[0.3, 0.], [0.4, 0.]])})['w'].tolist()
  [[0.5, 0.0]]
  """
  return _map(_norm, groups, "rms_update", updates)


def radial_component(
    params: Any, updates: Any, learning_rate: Any, groups: Any = None
) -> Any:
  """The weight decay ``λ_u = −<Δ, x> / (η ||x||²)`` that an update implies.

  Kosson et al. 2024, App. L: a radial component of the update acts like
  an extra weight decay. With ``Δ = −η(g + λx)`` this is
  ``<g, x>/||x||² + λ``: pass the gradient part of the update to get ``λ_u``
  alone, or the full update to get the effective weight decay
  ``λ_e = λ + λ_u``. ``learning_rate`` is the ``η`` that scaled ``Δ`` (a
  scalar); a zero group or a zero ``η`` gives 0.

  Example:

  >>> import jax.numpy as jnp
  >>> from spherax import diagnostics
  >>> x = {'w': jnp.array([[2.], [0.]])}
  >>> step = {'w': jnp.array([[-0.002], [0.3]])}    # -η λ x + tangent, η λ = 1e-3
  >>> diagnostics.radial_component(x, step, learning_rate=0.1)['w'].round(6).tolist()
  [[0.01]]
  """

  def lam(layout, x, delta):
    radial = geometry.dot(delta, x, layout)
    den = jnp.asarray(learning_rate, radial.dtype) * geometry.sqnorm(x, layout)
    return -geometry.safe_div(radial, den)

  return _map(lam, groups, "radial_component", params, updates)


def effective_learning_rate(
    params: Any, new_params: Any, direction: Any, groups: Any = None
) -> Any:
  """The effective learning rate ``η^e`` that explains the observed step.

  Roburin et al. 2022, Theorem 2: a step ``x → x'`` along a direction ``c``
  moves ``u`` exactly to ``u' = (u − η^e c⊥) / sqrt(1 + (η^e ||c⊥||)²)``, so
  ``tan ∠(x, x') = η^e ||c⊥||``. With ``c = r · direction``::

      η^e = tan∠(x, x') / (r ||direction⊥||) = ||x'⊥|| / (<x, x'> ||direction⊥||)

  ``direction`` is the step direction of the generic scheme, scaled as in
  Theorem 2: the gradient for SGD (giving ``η / r²``, or ``η/(r²(1 − ηλ))``
  with L2), the momentum ``a`` for SGD-M, ``d^{-1/2}||b|| a ⊘ b`` for Adam.
  Passing the gradient for any optimizer gives the learning rate of the
  Riemannian gradient step on the unit sphere that turns as far. A zero
  ``direction⊥`` or zero ``<x, x'>`` gives 0; ``<x, x'> < 0`` (hypothesis H1
  violated: the group turned past 90°) gives a negative value.

  Example:

  >>> import jax.numpy as jnp
  >>> from spherax import diagnostics
  >>> x, g = {'w': jnp.array([[2.], [0.]])}, {'w': jnp.array([[0.], [1.]])}
  >>> x_new = {'w': x['w'] - 0.1 * g['w']}            # SGD, lr 0.1: η^e = η / r²
  >>> diagnostics.effective_learning_rate(x, x_new, g)['w'].round(6).tolist()
  [[0.025]]
  """

  def rate(layout, x, x_new, d):
    across = geometry.norm(geometry.tangent(x_new, x, layout), layout)
    d_across = geometry.norm(geometry.tangent(d, x, layout), layout)
    return geometry.safe_div(across, geometry.dot(x, x_new, layout) * d_across)

  return _map(rate, groups, "effective_learning_rate", params, new_params, direction)


def grad_cosine(params: Any, grads: Any, groups: Any = None) -> Any:
  """The cosine ``<g, x> / (||g|| ||x||)`` of gradient and weight per group.

  A scale-invariant group has ``<∇L(x), x> = 0`` (Roburin et al. 2022,
  Lemma 1), so values near 0 support scale invariance. A zero ``g`` or ``x`` gives 0.

  Example:

  >>> import jax.numpy as jnp
  >>> from spherax import diagnostics
  >>> x, g = {'w': jnp.array([[1., 1.], [0., 1.]])}, {'w': jnp.array([[0., 2.], [3., 0.]])}
  >>> diagnostics.grad_cosine(x, g)['w'].round(4).tolist()
  [[0.0, 0.7071]]
  """

  def cosine(layout, x, g):
    den = geometry.norm(g, layout) * geometry.norm(x, layout)
    return geometry.safe_div(geometry.dot(g, x, layout), den)

  return _map(cosine, groups, "grad_cosine", params, grads)

