"""Optimizers that keep every group on the unit sphere: AdamG and SGDG (Cho & Lee,
*Riemannian approach to batch normalization*, NeurIPS 2017) and AdaGradG (Roburin,
de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with
Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, Theorem 4).

Grouped leaves follow the spherical rule; ungrouped leaves (by default: vectors,
integer, empty and ``(1, C)`` leaves, see :mod:`spherax.groups`) get the plain
Euclidean optimizer the papers use beside it (Adam, SGD-M or SGD), in the same
transformation: one state, one ``count`` (the step, from 0, read by a
``learning_rate`` schedule). Groups must have at least 2 elements (on a
0-sphere a unit cannot move): an explicit spec with smaller groups raises at
``init``, naming the parameter.

**Far from the unit sphere.** The first step moves a group from its radius
``r`` to the unit sphere and, like every optax optimizer, returns the move as
an additive update ``u = x' − x``; ``optax.apply_updates`` then computes
``x + u`` in the params' dtype, which cannot resolve the new point finer than
the spacing of floats near ``x`` (``~r·eps/sqrt(d)`` per entry): float32 entries
of ``~1e4`` land ``~1e-3`` off the sphere and entries of ``~1e7`` lose the
point entirely (bfloat16: entries of ``~100``). Start from unit-norm groups
(:func:`spherax.project_params`, as Cho & Lee's code does at initialisation);
from then on every step is an update of size ``O(1)`` on ``O(1)`` entries.
"""


import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax import geometry, groups as groups_lib
from spherax.transforms._fused import hoist
from spherax._checks import check_beta, check_learning_rate, check_nonnegative, require_params

__all__ = ["RiemannianState", "adamg", "sgdg", "adagradg"]


class RiemannianState(NamedTuple):
  """``count``: the step (from 0); ``mu``: the moment of every leaf (leaf dtype;
  AdamG/SGDG, else ``None``); ``nu``: the second moment or accumulator, one
  scalar per group (``stat_shape``) on grouped leaves and element-wise on
  ungrouped ones (AdamG; ``MaskedNode`` for AdaGradG's ungrouped leaves), in
  the real statistic dtype (float32 or wider), else ``None``."""

  count: jax.Array
  mu: Any
  nu: Any


def _sphere_transform(who, groups, learning_rate, l2, mask, *, has_mu, nu_init, step, flat):
  """One transformation: ``step(layout, x, g, mu, nu, lr, count) -> (x', mu, nu)``
  per group of the grouped leaves, ``flat(x, g', mu, nu, lr, count) -> (u, mu, nu)``
  on the others (``g' = g + λ x`` where ``mask`` is True).

  ``nu_init(layout, x, value)`` gives a leaf's initial ``nu`` (``None``: no ``nu``),
  ``value`` the per-leaf entry of the resolved initial values (see :func:`adagradg`).
  """

  def init_fn(params):
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who=who)
    leaves, treedef = jax.tree.flatten(params)
    mu = nu = None
    if has_mu:
      mu = jax.tree.unflatten(treedef, [jnp.zeros_like(x) for x in leaves])
    if nu_init is not None:
      nu = jax.tree.unflatten(treedef, nu_init(layouts, params))
    return RiemannianState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(who, params)
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who=who)
    decayed = groups_lib.mask_leaves(mask, params)
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    count = optax.safe_increment(state.count)
    treedef = jax.tree.structure(params)
    xs, gs = jax.tree.leaves(params), treedef.flatten_up_to(updates)
    mus = treedef.flatten_up_to(state.mu) if has_mu else [None] * len(xs)
    nus = treedef.flatten_up_to(state.nu) if nu_init is not None else [None] * len(xs)
    out_u, out_mu, out_nu = [], [], []
    for layout, x, g, mu, nu, dec in zip(layouts, xs, gs, mus, nus, decayed):
      if layout is None:
        dtype = geometry.compute_dtype(x, g)
        g_l2 = g.astype(dtype) + (l2 * x.astype(dtype) if dec else 0)
        u, mu_new, nu_new = flat(x, g_l2, mu, nu, lr, count)
      else:
        x_new, mu_new, nu_new = step(layout, x, g, mu, nu, lr, count)
        u = x_new - x.astype(x_new.dtype)  # apply_updates: x + (x' − x) = x' to rounding of x
      out_u.append(u.astype(g.dtype))
      out_mu.append(None if mu is None else mu_new.astype(mu.dtype))
      out_nu.append(nu if nu is None or nu_new is None else nu_new.astype(nu.dtype))
    new_state = RiemannianState(
        count=count,
        mu=jax.tree.unflatten(treedef, out_mu) if has_mu else None,
        nu=jax.tree.unflatten(treedef, out_nu) if nu_init is not None else None,
    )
    return jax.tree.unflatten(treedef, out_u), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _zeros_nu(layouts, params):
  """AdamG's ``nu``: zeros, per group on grouped leaves, element-wise on the others."""
  return [
      geometry.zeros_stat(x, layout)
      for layout, x in zip(layouts, jax.tree.leaves(params))
  ]


def _geodesic_step(layout, x, g, m, clip_norm, decay, gain, sigma):
  """One step along a great circle, from per-group statistics of the raw ``x``, ``g``, ``m``.

  With ``y = x/||x||``, ``h = κ(g − <y, g> y)`` (``κ`` clips ``||h||`` to
  ``clip_norm``), the moment ``m' = decay·m + gain·h`` and the tangent step
  ``Δ = σ m'`` (``sigma(||h||²)`` gives the per-group ``σ``), returns
  ``x' = exp_y(Δ) = cos||Δ|| y + sin||Δ|| Δ/||Δ||`` and ``m'`` parallel-transported
  along ``Δ``: ``m' − <ŵ, m'>(sin||Δ|| y + (1 − cos||Δ||) ŵ)``, ``ŵ = Δ/||Δ||``
  (Cho & Lee 2017, Algorithms 1–2), plus ``||h||²``.

  Statistics (each a reduction of the raw inputs): ``r = ||x||``, ``||g||``,
  ``<g, x>`` give
  ``||h|| = κ ||g|| sqrt(1 − cos²(g, x))`` and ``h = κ(g − p x)``,
  ``p = <g, x>/r²``; ``m'`` is written once and reduced to ``||m'||``, so
  ``θ = ||Δ|| = |σ| ||m'||`` and ``<ŵ, m'> = sign(σ) ||m'||`` (``θ = 0`` when
  ``σ = 0``, e.g. an overflowed ``v``). The move rotates
  the plane of ``y`` and ``ŵ`` by ``θ``: ``x' = cos θ y + sin θ ŵ`` and the
  moved moment is ``||m'|| (cos θ ŵ − sin θ y)`` (``m'`` itself when ``σ = 0``).
  It is done as three shears, each an element-wise pass that rewrites one of
  the two buffers from both (the moment's, which holds ``m'``, then the
  point's, then the moment's):

  ``S = ς (ŵ||m'|| − t' y)``, ``x' = ς y + ς q S``, ``m_moved = S − ς t' x'``,

  with ``ς = ±1`` the sign of ``cos θ``, ``q = σ sin θ/θ`` and
  ``t' = sign(σ) sin θ ||m'|| / (1 + |cos θ|)`` (bounded coefficients for every
  ``θ``). Neither ``y``, ``h``, ``Δ`` nor ``ŵ`` is formed; the per-group
  coefficients are hoisted out of the element-wise loops
  (:func:`spherax.transforms._fused.hoist`): on XLA:CPU every pass then updates
  a donated buffer in place, and the last one reads the new point, which
  orders the passes.
  """
  dtype = geometry.compute_dtype(x, g, m)
  x, g, m = x.astype(dtype), g.astype(dtype), m.astype(dtype)
  e = lambda stat: geometry.expand(stat, layout)  # noqa: E731
  safe_div = geometry.safe_div
  r, gn = geometry.norm(x, layout), geometry.norm(g, layout)
  gx = geometry.dot(g, x, layout)
  one = jnp.ones((), r.dtype)
  inv_r = safe_div(one, r)
  cos_gx = jnp.clip(gx * inv_r * safe_div(one, gn), -1, 1)
  hn = gn * jnp.sqrt(jnp.maximum(1 - cos_gx * cos_gx, 0))  # ||g⊥||
  kappa = jnp.ones_like(hn)
  if clip_norm is not None:
    kappa = jnp.minimum(1.0, safe_div(jnp.asarray(clip_norm, hn.dtype), hn) + (hn == 0))
  hn = kappa * hn
  s = sigma(hn * hn)
  p = gx * inv_r * inv_r
  a_g, a_x = hoist(gain * kappa, -gain * kappa * p)
  m_new = decay * m + e(a_g) * g + e(a_x) * x
  mn = geometry.norm(m_new, layout)
  # No move when σ = 0 (e.g. an overflowed v) or when ||m'||² is past the dtype's range
  # (a skipped step, never 0·inf or cos(inf)).
  still = (s == 0) | ~jnp.isfinite(mn)
  theta = jnp.where(still, 0, jnp.abs(s) * mn)  # ||Δ||
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  q = jnp.where(still, 0, s * (safe_div(sin, theta) + (theta == 0)))  # x' = cos θ y + q m'
  sign = jnp.where(cos < 0, -1.0, 1.0).astype(r.dtype)
  t = jnp.where(still, 0, jnp.where(s < 0, -sin, sin) * mn / (1 + jnp.abs(cos)))
  moving = (mn > 0).astype(r.dtype)
  s_m, s_x, x_x, x_s, m_x = hoist(sign * moving, -t * inv_r, sign * inv_r, sign * q, -sign * t)
  shear = e(s_m) * m_new + e(s_x) * x  # S
  x_new = e(x_x) * x + e(x_s) * shear
  # From x + (x' − x), the updated params as optax.apply_updates writes them: the
  # moment's pass reads the point's output, so it runs after it.
  m_moved = shear + e(m_x) * (x + (x_new - x))
  return x_new, m_moved, hn * hn


def _check_common(who, learning_rate, l2_regularization):
  check_learning_rate(who, learning_rate)
  check_nonnegative(who, "l2_regularization", l2_regularization)


def _adam_flat(b1, b2, eps):
  """optax.scale_by_adam then the learning rate, on one ungrouped leaf (``nu`` real)."""

  def flat(x, g, mu, nu, lr, count):
    del x
    mu = b1 * mu.astype(g.dtype) + (1 - b1) * g
    nu = b2 * nu + (1 - b2) * geometry.abs_sq(g)
    mu_hat = mu / (1 - b1**count).astype(nu.dtype)
    nu_hat = nu / (1 - b2**count).astype(nu.dtype)
    return -lr * mu_hat / (jnp.sqrt(nu_hat) + eps), mu, nu

  return flat


def adamg(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-8,
    *,
    l2_regularization: float = 0.0,
    mask: Any = None,
    clip_norm: float | None = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdamG (Cho & Lee 2017, Algorithm 2; the AdamG† of Roburin et al., *A spherical
  analysis of Adam with Batch Normalization*, ICLR 2021 submission, Table 2).

  Per group (unit), step ``t`` from 1: ``y = x/||x||``, ``h = g − <y, g> y``
  (clipped to norm ``clip_norm`` if given), ``m ← β1 m + (1−β1) h``,
  ``v ← β2 v + (1−β2) ||h||²`` (one scalar per unit),
  ``Δ = −η sqrt(1−β2^t)/(1−β1^t) · m / sqrt(v + ε)`` (ε inside the sqrt),
  ``x ← exp_y(Δ)`` (unit norm), and ``m`` is parallel-transported along ``Δ``;
  ``v`` is not transported. Grouped leaves carry no L2. Ungrouped leaves: Adam
  (``b1``, ``b2``, ``eps``, as ``optax.adam``) with coupled L2
  ``g ← g + λx`` where ``mask`` is True.

  Args:
    learning_rate: ``η``, a float or a schedule of the step count.
    b1, b2: moment decays, in ``[0, 1)``.
    eps: ``ε`` (inside the square root on the sphere, added to it elsewhere).
    l2_regularization: ``λ`` of the ungrouped leaves' coupled L2.
    mask: a pytree of bools like params, or a function of params giving one:
      the leaves that get the L2 term (default: all).
    clip_norm: per-unit clip of ``||h||``.
    groups: the group specification (see :mod:`spherax.groups`).

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[0.6], [0.8]])}
  >>> opt = spherax.adamg(0.1)
  >>> updates, _ = opt.update({'w': jnp.array([[1.], [0.]])}, opt.init(params), params)
  >>> new = optax.apply_updates(params, updates)['w']
  >>> round(float(jnp.linalg.norm(new)), 5)
  1.0
  """
  who = "adamg"
  _check_common(who, learning_rate, l2_regularization)
  check_beta(who, "b1", b1)
  check_beta(who, "b2", b2)
  check_nonnegative(who, "eps", eps)

  def step(layout, x, g, mu, nu, lr, count):
    size = lr * jnp.sqrt(1 - b2**count) / (1 - b1**count)
    new_nu = lambda hh: b2 * nu + (1 - b2) * hh  # noqa: E731

    def sigma(hh):  # Δ = −size · m' / sqrt(v + ε)
      return -geometry.safe_div(jnp.asarray(size, nu.dtype), jnp.sqrt(new_nu(hh) + eps))

    x_new, m, hh = _geodesic_step(layout, x, g, mu, clip_norm, b1, 1 - b1, sigma)
    return x_new, m, new_nu(hh)

  return _sphere_transform(
      who, groups, learning_rate, l2_regularization, mask, has_mu=True,
      nu_init=lambda layouts, params: _zeros_nu(layouts, params), step=step,
      flat=_adam_flat(b1, b2, eps))


def sgdg(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    *,
    l2_regularization: float = 0.0,
    mask: Any = None,
    clip_norm: float | None = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """SGDG (Cho & Lee 2017, Algorithm 1): SGD with momentum on the unit sphere.

  Per unit: ``y = x/||x||``, ``h = g − <y, g> y`` (clipped to ``clip_norm`` if
  given), ``mom ← μ mom − η h``, ``x ← exp_y(mom)``, and ``mom`` is
  parallel-transported along itself. Grouped leaves carry no L2. Ungrouped
  leaves: SGD with momentum ``μ`` and coupled L2 (``buf ← μ buf + g + λx``
  where ``mask`` is True, ``x ← x − η buf``, as ``optax.sgd``).

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[1.], [0.]])}
  >>> opt = spherax.sgdg(jnp.pi / 2, momentum=0.0)   # a quarter turn
  >>> updates, _ = opt.update({'w': jnp.array([[0.], [-1.]])}, opt.init(params), params)
  >>> jnp.round(optax.apply_updates(params, updates)['w'], 5).ravel().tolist()
  [0.0, 1.0]
  """
  who = "sgdg"
  _check_common(who, learning_rate, l2_regularization)
  check_beta(who, "momentum", momentum)

  def step(layout, x, g, mu, nu, lr, count):
    del nu, count
    x_new, mom, _ = _geodesic_step(
        layout, x, g, mu, clip_norm, momentum, -lr, lambda hh: jnp.ones_like(hh))
    return x_new, mom, None

  def flat(x, g, mu, nu, lr, count):
    del x, nu, count
    buf = momentum * mu.astype(g.dtype) + g
    return -lr * buf, buf, None

  return _sphere_transform(
      who, groups, learning_rate, l2_regularization, mask, has_mu=True, nu_init=None,
      step=step, flat=flat)


def adagradg(
    learning_rate: optax.ScalarOrSchedule,
    decay: float,
    initial_accumulator_value: Any,
    *,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdaGradG (Roburin et al. 2022, Theorem 4): adaptive steps on the unit sphere.

  Per group: ``x̂ = x − η g / sqrt(v)``, ``x ← x̂ / ||x̂||``, then
  ``v ← β v + ||g||²``: the step uses ``v`` *before* the current gradient. It
  reproduces the trajectory of SGD with lr ``η_SGD``, L2 ``λ`` started at
  ``r_0 u_0`` (to order 2) with ``β = (1 − η_SGD λ)^4``, ``η = (2β)^{-1/2}``,
  ``v_0 = r_0⁴ / (2 η_SGD² β^{1/2})`` with each group's own ``r_0``
  (:func:`spherax.theory.adagradg_from_sgd` builds all three from params). A
  zero ``v`` gives no step (the division is guarded). Ungrouped leaves: plain
  SGD ``x ← x − η g``.

  Args:
    learning_rate: ``η``, a float or a schedule.
    decay: ``β``, in ``[0, 1]``.
    initial_accumulator_value: ``v_0 >= 0``: one float for every group, or a
      pytree like params whose grouped leaves hold arrays broadcastable to the
      leaf's ``stat_shape`` (entries of ungrouped leaves are ignored), or a
      function of params returning such a pytree (under
      ``optax.inject_hyperparams`` name a function in ``static_args``).
    groups: the group specification (see :mod:`spherax.groups`).

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[1.], [0.]])}
  >>> opt = spherax.adagradg(1.0, decay=0.9, initial_accumulator_value=4.0)
  >>> updates, state = opt.update({'w': jnp.array([[0.], [-2.]])}, opt.init(params), params)
  >>> jnp.round(optax.apply_updates(params, updates)['w'], 4).ravel().tolist()
  [0.7071, 0.7071]
  """
  who = "adagradg"
  _check_common(who, learning_rate, 0.0)
  if isinstance(decay, (int, float)) and not 0.0 <= decay <= 1.0:
    raise ValueError(f"{who}: decay must be in [0, 1], got {decay}")
  per_leaf = callable(initial_accumulator_value) or not (
      isinstance(initial_accumulator_value, numbers.Real)
      or (hasattr(initial_accumulator_value, "shape") and not initial_accumulator_value.shape))
  if not per_leaf:
    check_nonnegative(who, "initial_accumulator_value", initial_accumulator_value)

  def nu_init(layouts, params):
    leaves, treedef = jax.tree.flatten(params)
    if per_leaf:
      tree = initial_accumulator_value
      tree = tree(params) if callable(tree) else tree
      try:
        values = treedef.flatten_up_to(tree)
      except (ValueError, TypeError) as err:
        raise ValueError(
            f"{who}: initial_accumulator_value must be a float or a pytree like params: {err}"
        ) from None
    else:
      values = [initial_accumulator_value] * len(leaves)
    out = []
    for layout, x, value, path in zip(layouts, leaves, values, groups_lib.leaf_paths(params)):
      if layout is None:
        out.append(optax.MaskedNode())
        continue
      value = jnp.asarray(value, geometry.stat_dtype(x))
      try:
        # Broadcast onto zeros placed as the statistic is (sharded like update's nu).
        out.append(geometry.zeros_stat(x, layout) + jnp.broadcast_to(value, layout.stat_shape))
      except ValueError:
        raise ValueError(
            f"{who}: initial_accumulator_value for '{path}' has shape {value.shape}, "
            f"not broadcastable to the leaf's per-group shape {layout.stat_shape}"
        ) from None
    return out

  def step(layout, x, g, mu, nu, lr, count):
    del mu, count
    dtype = geometry.compute_dtype(x, g)
    x, g = x.astype(dtype), g.astype(dtype)
    r, gn = geometry.norm(x, layout), geometry.norm(g, layout)
    gx = geometry.dot(g, x, layout)
    k = geometry.safe_div(jnp.asarray(lr, r.dtype), jnp.sqrt(nu))
    # ||x̂|| = ||x − k g|| from r, ||g||, <g, x>, scaled by max(r, k||g||) (no overflow).
    big = jnp.maximum(r, k * gn)
    a, b = geometry.safe_div(r, big), geometry.safe_div(k * gn, big)
    one = jnp.ones((), r.dtype)
    cos_gx = jnp.clip(gx * geometry.safe_div(one, r) * geometry.safe_div(one, gn), -1, 1)
    size = big * jnp.sqrt(jnp.maximum(a * a - 2 * a * b * cos_gx + b * b, 0))
    # ||g||² past the dtype's range: no step this time (v becomes inf: no later
    # steps either, as optax.adam's zero update once its second moment overflows).
    finite = jnp.isfinite(size)
    inv = geometry.safe_div(one, jnp.where(finite, size, r))
    inv, step = hoist(inv, jnp.where(finite, -inv * k, 0))
    x_new = geometry.expand(inv, layout) * x + geometry.expand(step, layout) * g
    return x_new, None, decay * nu + gn * gn

  def flat(x, g, mu, nu, lr, count):
    del x, mu, count
    return -lr * g, None, None

  return _sphere_transform(
      who, groups, learning_rate, 0.0, None, has_mu=False, nu_init=nu_init, step=step,
      flat=flat)
