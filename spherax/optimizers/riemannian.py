"""Optimizers that keep every group on the unit sphere: AdamG and SGDG (Cho & Lee,
*Riemannian approach to batch normalization*, NeurIPS 2017) and AdaGradG (Roburin,
de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with
Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, Theorem 4).

Grouped leaves follow the spherical rule; ungrouped leaves (by default: vectors,
integer, empty and ``(1, C)`` leaves, see :mod:`spherax.groups`) get the plain
Euclidean optimizer the papers use beside it (Adam, SGD-M or SGD), in the same
transformation (:func:`spherax.transforms.leafwise.leafwise`): one state, one
``count`` (the step, from 0, read by a ``learning_rate`` schedule). Groups must
have at least 2 elements (on a 0-sphere a unit cannot move): an explicit spec
with smaller groups raises at ``init``, naming the parameter.

Each step makes one pass over the group's arrays for its statistics
(``||x||²``, ``<g, x>``, ``||g||²`` and, with a moment, ``<m, g>``, ``||m||²``)
and one element-wise pass that writes the new point and moment: the norms the
exponential map, the transport and the retraction need after the step
(``||h||``, ``||m'||``, ``||x̂||``) are closed forms of those dot products, and
AdamG/SGDG's step ``x' = exp_y(Δ)`` and transported moment are linear in ``x``,
``g`` and ``m`` with per-group coefficients (:func:`_geodesic_coefficients`), so
the element-wise pass is a few multiply-adds.

**Far from the unit sphere.** The first step moves a group from its radius
``r`` to the unit sphere and, like every optax optimizer, returns the move as
an additive update ``u = x' − x``; ``optax.apply_updates`` then computes
``x + u`` in the params' dtype. Where the new entries are much smaller than the
old ones (``u ≈ −x``) that sum is a multiple of the spacing of floats near
``x``, so no update can land closer than about half that spacing
(``ulp(x_i)/2`` per entry): float32 entries of ``~1e4`` land ``~1e-3`` off the
sphere, and entries of ``~1e7`` (spacing 1) can land only on integers, which
loses the group's direction (bfloat16: entries of ``~100``). The point the
update aims at is exact, and from the second step on, with entries of the
sphere's size, every step lands on it to the dtype's rounding; what the first
step lost is not recovered. Start from unit-norm groups
(:func:`spherax.project_params`, as Cho & Lee's code does at initialisation):
then every step is exact.
"""


import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax import geometry, groups as groups_lib
from spherax._checks import check_beta, check_learning_rate, check_nonnegative
from spherax.transforms.leafwise import leafwise

__all__ = ["RiemannianState", "adamg", "sgdg", "adagradg"]


class RiemannianState(NamedTuple):
  """``count``: the step (from 0); ``mu``: the moment of every leaf (leaf dtype;
  AdamG/SGDG); ``nu``: the second moment or accumulator, one scalar per group
  (``stat_shape``) on grouped leaves and element-wise on ungrouped ones (AdamG;
  none on AdaGradG's ungrouped leaves), in the real statistic dtype (float32 or
  wider). A field an optimizer does not keep on a leaf holds ``optax.MaskedNode()``
  there (SGDG's ``nu`` and AdaGradG's ``mu`` everywhere)."""

  count: jax.Array
  mu: Any
  nu: Any


def _with_l2(step, x, g, l2):
  """``g + λx`` where the mask selects the leaf, in the compute dtype (ungrouped leaves)."""
  dtype = geometry.compute_dtype(x, g)
  return g.astype(dtype) + (l2 * x.astype(dtype) if step.decayed else 0)


def _moment_coefficients(layout, x, g, m, decay, gain, clip_norm):
  """The moment ``m' = decay·m + gain·h`` as ``decay·m + a g + b x``, per group.

  ``h = κ(g − <g, y> y)``, ``y = x/||x||``, ``κ = min(1, clip_norm/||g − <g, y> y||)``
  (1 without ``clip_norm``), so ``a = gain·κ`` and ``b = −gain·κ <g, y>/||x||``.
  Returns ``(a, b, 1/||x||, ||h||², ||m'||²)`` (``1/||x|| = 0`` for a zero group), all
  from one pass of dot products over ``x``, ``g``, ``m``:
  ``||h||² = κ²(||g||² − <g, y>²)`` (Pythagoras; ``<g, y>² ≤ ||g||²``, so it is
  finite wherever ``||g||²`` is) and
  ``||m'||² = decay²||m||² + 2 decay gain <m, h> + gain²||h||²`` with
  ``<m, h> = κ<m, g>`` (``m``, the moment transported by the previous step, is
  tangent at ``y``).
  """
  xx, gx, gg, mg, mm = geometry.dots(
      [(x, x), (g, x), (g, g), (m, g), (m, m)], layout, one_pass=True)
  inv_r = geometry.safe_div(jnp.ones((), xx.dtype), jnp.sqrt(xx))
  gy = gx * inv_r  # <g, y>
  hh = jnp.maximum(gg - gy * gy, 0)  # ||g − <g, y> y||²
  kappa = jnp.ones_like(hh)
  if clip_norm is not None:
    clip = jnp.asarray(clip_norm, hh.dtype)
    kappa = jnp.minimum(1.0, geometry.safe_div(clip, jnp.sqrt(hh)) + (hh == 0))
  a = gain * kappa
  b = -a * gy * inv_r
  hh = kappa * kappa * hh
  mm_new = jnp.maximum(decay**2 * mm + 2 * decay * gain * kappa * mg + gain**2 * hh, 0)
  return a, b, inv_r, hh, mm_new


def _geodesic_coefficients(inv_r, mm, sigma):
  """The exponential map and Cho & Lee's parallel transport as ``x' = c_x x + c_m m``
  and ``Γ(m) = t_m m + t_x x``, per group.

  With ``r = ||x||`` (``inv_r = 1/r``, 0 for a zero group, whose ``y`` is 0),
  ``y = x/r``, ``Δ = σ m`` (``m`` tangent at ``y``, ``||m||² = mm``) and
  ``θ = ||Δ|| = |σ| ||m||``: ``x' = exp_y(Δ) = cos θ y + sinc θ Δ``
  (:func:`spherax.geometry.exp_map`) and the transport of ``m`` along ``Δ``
  (Cho & Lee 2017, Algorithms 1–2, :func:`spherax.geometry.transport_along`)
  ``Γ(m) = m − <Δ, m>(sinc θ y + ½ sinc²(θ/2) Δ)`` with ``<Δ, m> = σ ||m||²``, so
  ``t_m = 1 − ½ θ² sinc²(θ/2)`` (``= cos θ``), ``c_x = t_m / r``,
  ``c_m = σ sin θ / θ`` (0 at ``θ = 0``, where ``Δ = 0``) and
  ``t_x = −||m||² c_m / r``, bounded for every ``θ``; each is one per-group value
  (a quotient, or a product of ``1/r``, ``θ`` and ``sinc(θ/2)``), so the
  element-wise pass only multiplies and adds. No move (``x' = y``, ``m`` kept)
  where ``σ = 0`` (e.g. an overflowed second moment) or ``θ² = σ² ||m||²`` is past
  the dtype's range.
  """
  sigma = jnp.asarray(sigma, mm.dtype)
  theta_sq = sigma * sigma * mm  # ||Δ||²
  still = (sigma == 0) | ~jnp.isfinite(theta_sq)
  sigma, mm = jnp.where(still, 0, sigma), jnp.where(still, 0, mm)
  theta = jnp.sqrt(jnp.where(still, 0, theta_sq))
  half = theta * geometry.sinc(theta / 2)  # 2 sin(θ/2)
  t_m = 1 - half * half / 2
  sin = sigma * jnp.sin(theta)
  c_m = geometry.safe_div(sin, theta)
  t_x = -geometry.safe_div(mm * sin * inv_r, theta)
  return t_m * inv_r, c_m, t_m, t_x


def _geodesic_step(layout, x, g, m, decay, coefficients):
  """The element-wise pass: ``m' = decay·m + a g + b x``, ``x' = c_x x + c_m m'`` and
  the moment ``t_m m' + t_x x`` (``coefficients = (a, b, c_x, c_m, t_m, t_x)``, one
  value per group; :func:`_moment_coefficients`, :func:`_geodesic_coefficients`).
  Returns the update ``x' − x`` and the moment."""
  dtype = geometry.compute_dtype(x, g, m)
  x, g, m = (a.astype(dtype) for a in (x, g, m))
  a, b, c_x, c_m, t_m, t_x = (geometry.expand(c, layout) for c in coefficients)
  m_new = decay * m + a * g + b * x
  x_new = c_x * x + c_m * m_new
  return x_new - x, t_m * m_new + t_x * x


def _check_common(who, learning_rate, l2_regularization):
  check_learning_rate(who, learning_rate)
  check_nonnegative(who, "l2_regularization", l2_regularization)


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

  adam = optax.scale_by_adam(b1, b2, eps)

  def init_leaf(layout, x):
    return jnp.zeros_like(x), geometry.zeros_stat(x, layout)

  def update_leaf(step, x, g, mu, nu):
    if step.layout is None:  # optax.adam with coupled L2
      g = _with_l2(step, x, g, l2_regularization)
      u, state = adam.update(g, optax.ScaleByAdamState(step.count - 1, mu, nu))
      return -step.learning_rate * u, state.mu, state.nu
    a, b, inv_r, hh, mm = _moment_coefficients(step.layout, x, g, mu, b1, 1 - b1, clip_norm)
    nu = b2 * nu + (1 - b2) * hh
    size = step.learning_rate * jnp.sqrt(1 - b2**step.count) / (1 - b1**step.count)
    sigma = -geometry.safe_div_sqrt(jnp.asarray(size, nu.dtype), nu + eps)  # −size/sqrt(v + ε)
    u, mu = _geodesic_step(
        step.layout, x, g, mu, b1, (a, b, *_geodesic_coefficients(inv_r, mm, sigma)))
    return u, mu, nu

  return leafwise(
      who, RiemannianState, init_leaf, update_leaf, learning_rate=learning_rate,
      groups=groups, min_group_size=2, mask=mask)


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

  trace = optax.trace(decay=momentum)

  def init_leaf(layout, x):
    del layout
    return jnp.zeros_like(x), None

  def update_leaf(step, x, g, mu, nu):
    del nu
    if step.layout is None:  # optax.sgd with momentum, coupled L2
      buf, _ = trace.update(_with_l2(step, x, g, l2_regularization), optax.TraceState(mu))
      return -step.learning_rate * buf, buf, None
    a, b, inv_r, _, mm = _moment_coefficients(
        step.layout, x, g, mu, momentum, -step.learning_rate, None)
    u, mom = _geodesic_step(
        step.layout, x, g, mu, momentum, (a, b, *_geodesic_coefficients(inv_r, mm, 1.0)))
    return u, mom, None

  return leafwise(
      who, RiemannianState, init_leaf, update_leaf, learning_rate=learning_rate,
      groups=groups, min_group_size=2, mask=mask)


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

  def init_leaf(layout, x):
    return None, (None if layout is None else geometry.zeros_stat(x, layout))

  def update_leaf(step, x, g, mu, nu):
    del mu
    if step.layout is None:  # plain SGD
      return -step.learning_rate * g, None, None
    layout = step.layout
    dtype = geometry.compute_dtype(x, g)
    xx, gx, gg = geometry.dots([(x, x), (g, x), (g, g)], layout, one_pass=True)
    x, g = x.astype(dtype), g.astype(dtype)
    r, gn = jnp.sqrt(xx), jnp.sqrt(gg)
    k = geometry.safe_div_sqrt(jnp.asarray(step.learning_rate, r.dtype), nu)  # η/sqrt(v)
    # x̂ = x − k g; ||x̂|| by the law of cosines, overflow-safe.
    x_hat_norm = geometry.sum_norm(r, k * gn, -geometry.cosine(gx, r, gn))
    # ||g||² past the dtype's range: no step this time (v becomes inf: no later
    # steps either, as optax.adam's zero update once its second moment overflows).
    finite = jnp.isfinite(x_hat_norm)
    x_hat = x - geometry.expand(jnp.where(finite, k, 0), layout) * g
    inv = geometry.safe_div(jnp.ones((), r.dtype), jnp.where(finite, x_hat_norm, r))
    x_new = geometry.expand(inv, layout) * x_hat  # x̂/||x̂||
    return x_new - x, None, decay * nu + gg

  tx = leafwise(
      who, RiemannianState, init_leaf, update_leaf, learning_rate=learning_rate,
      groups=groups, min_group_size=2)

  def init_fn(params):
    """The driver's state, with ``v_0`` added onto the zero accumulators."""
    state = tx.init(params)
    treedef = jax.tree.structure(params)
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
      values = [initial_accumulator_value] * treedef.num_leaves
    nus = []
    for zeros, value, path in zip(
        treedef.flatten_up_to(state.nu), values, groups_lib.leaf_paths(params)):
      if isinstance(zeros, optax.MaskedNode):
        nus.append(zeros)
        continue
      value = jnp.asarray(value, zeros.dtype)
      try:
        # Broadcast onto zeros placed as the statistic is (sharded like update's nu).
        nus.append(zeros + jnp.broadcast_to(value, zeros.shape))
      except ValueError:
        raise ValueError(
            f"{who}: initial_accumulator_value for '{path}' has shape {value.shape}, "
            f"not broadcastable to the leaf's per-group shape {zeros.shape}"
        ) from None
    return state._replace(nu=jax.tree.unflatten(treedef, nus))

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)
