"""Optimizers that keep every group on the unit sphere: AdamG, SGDG (Cho & Lee 2017)
and AdaGradG (seed 000 Theorem 4), REFERENCE §2–3.

Grouped leaves follow the spherical rule; ungrouped leaves (``ndim <= 1`` by
default) get a plain Euclidean optimizer, split with ``optax.partition``.
Groups must have at least 2 elements (on a 0-sphere a unit cannot move): a
smaller group raises at ``init``, naming the parameter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax import geometry, groups as groups_lib
from spherax.transforms._fused import hoist
from spherax._checks import check_beta, check_nonnegative, require_params

__all__ = ["RiemannianState", "adamg", "sgdg", "adagradg"]


class RiemannianState(NamedTuple):
  """``mu``: the moment (leaf dtype; AdamG/SGDG); ``nu``: one scalar per group
  (``stat_shape``, float32 or wider; AdamG/AdaGradG). Unused fields are ``None``."""

  count: jax.Array
  mu: Any
  nu: Any


def _split(who, groups, sphere, flat):
  """``sphere`` on grouped leaves, ``flat`` on the others."""

  def labels(params):
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who=who)
    treedef = jax.tree.structure(params)
    return jax.tree.unflatten(treedef, ["sphere" if l else "flat" for l in layouts])

  return optax.partition({"sphere": sphere, "flat": flat}, labels)


def _sphere_transform(who, groups, learning_rate, *, has_mu, has_nu, init_nu, step):
  """A transform applying ``step(layout, x, g, mu, nu, lr, count) -> (x', mu, nu)`` per group."""

  def init_fn(params):
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who=who)

    def zeros_mu(layout, x):
      del layout
      return jnp.zeros(x.shape, x.dtype)

    def start_nu(layout, x):
      return jnp.full(layout.stat_shape, init_nu, geometry.compute_dtype(x))

    return RiemannianState(
        count=jnp.zeros([], jnp.int32),
        mu=groups_lib.tree_map_groups(zeros_mu, layouts, params) if has_mu else None,
        nu=groups_lib.tree_map_groups(start_nu, layouts, params) if has_nu else None,
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(who, params)
    layouts = groups_lib.resolve(groups, params, min_group_size=2, who=who)
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    count = optax.safe_increment(state.count)
    treedef = jax.tree.structure(params)
    xs, gs = jax.tree.leaves(params), treedef.flatten_up_to(updates)
    mus = treedef.flatten_up_to(state.mu) if has_mu else [None] * len(xs)
    nus = treedef.flatten_up_to(state.nu) if has_nu else [None] * len(xs)
    out_u, out_mu, out_nu = [], [], []
    for layout, x, g, mu, nu in zip(layouts, xs, gs, mus, nus):
      x_new, mu_new, nu_new = step(layout, x, g, mu, nu, lr, count)
      out_u.append((x_new - x.astype(x_new.dtype)).astype(g.dtype))
      out_mu.append(None if mu is None else mu_new.astype(mu.dtype))
      out_nu.append(None if nu is None else nu_new.astype(nu.dtype))
    new_state = RiemannianState(
        count=count,
        mu=jax.tree.unflatten(treedef, out_mu) if has_mu else None,
        nu=jax.tree.unflatten(treedef, out_nu) if has_nu else None,
    )
    return jax.tree.unflatten(treedef, out_u), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _geodesic_step(layout, x, g, m, clip_norm, decay, gain, sigma):
  """One step along a great circle, from dot products of the raw ``x``, ``g``, ``m``.

  With ``y = x/||x||``, ``h = κ(g − <y, g> y)`` (``κ`` clips ``||h||`` to
  ``clip_norm``), the moment ``m' = decay·m + gain·h`` and the tangent step
  ``Δ = σ m'`` (``sigma(||h||²)`` gives the per-group ``σ``), returns
  ``x' = exp_y(Δ) = cos||Δ|| y + sin||Δ|| Δ/||Δ||`` and ``m'`` parallel-transported
  along ``Δ``: ``m' − <ŵ, m'>(sin||Δ|| y + (1 − cos||Δ||) ŵ)``, ``ŵ = Δ/||Δ||``
  (REFERENCE §3, AdamG), plus ``||h||²``.

  Statistics: ``gg, gx, xx`` (reductions of the raw inputs) give, with
  ``p = gx/xx``, ``h = κ(g − p x)`` and ``||h||² = κ²(gg − p gx)``; ``m'`` is
  written once and reduced to ``||m'||²``, so ``θ = ||Δ|| = |σ| ||m'||`` and
  ``c = <ŵ, m'> = sign(σ) ||m'||``. The move rotates the plane of ``y`` and
  ``ŵ`` by ``θ``: ``x' = cos θ y + sin θ ŵ`` and the moved moment is
  ``c (cos θ ŵ − sin θ y)``. It is done as three shears, each an element-wise
  pass that rewrites one of the two buffers from both (the moment's, which
  holds ``m'``, then the point's, then the moment's):

  ``S = ς c (ŵ − t y)``, ``x' = ς y + ς sin θ S / c``, ``m_moved = S − c t x'``,

  with ``ς = ±1`` the sign of ``cos θ`` and ``t = ς sin θ / (1 + |cos θ|)``
  (``|t| ≤ 1``: the coefficients stay bounded for every ``θ``). Neither ``y``,
  ``h``, ``Δ`` nor ``ŵ`` is formed; the per-group coefficients (``cos``,
  ``sin``, divisions) are hoisted out of the element-wise loops
  (:func:`spherax.transforms._fused.hoist`). Why shears: XLA:CPU has no
  multi-output loop fusion, so writing ``x'`` and the moment directly from
  ``x`` and ``m'`` (two passes that both read both) needs a third full-size
  buffer for ``m'``, a fresh temporary every step (4 of 11 ms per (3, 3, 512,
  512) kernel in AdamG); with the shears every pass updates a donated buffer
  in place, and the last one reads the new point, which orders the passes.
  """
  dtype = geometry.compute_dtype(x, g, m)
  x, g, m = x.astype(dtype), g.astype(dtype), m.astype(dtype)
  dot = lambda a, b: geometry.dot(a, b, layout)  # noqa: E731
  e = lambda stat: geometry.expand(stat, layout)  # noqa: E731
  gx, xx = dot(g, x), dot(x, x)
  p = geometry.safe_div(gx, xx)
  hh = jnp.maximum(dot(g, g) - p * gx, 0)
  kappa = jnp.ones_like(hh)
  if clip_norm is not None:
    size = jnp.sqrt(hh)
    kappa = jnp.minimum(1.0, geometry.safe_div(clip_norm, size) + (size == 0))
  hh = kappa * kappa * hh
  s = sigma(hh)
  a_g, a_x = hoist(gain * kappa, -gain * kappa * p)
  m_new = decay * m + e(a_g) * g + e(a_x) * x
  mm = dot(m_new, m_new)
  theta = jnp.abs(s) * jnp.sqrt(mm)  # ||Δ||
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  # In terms of x and m' (ŵ = w m', w = σ/θ): q = σ sin θ/θ = sin θ/c, c w = w² ||m'||²
  # (1, or 0 where m' = 0) and ς c t = q ||m'||²/(1 + |cos θ|).
  q = s * (geometry.safe_div(sin, theta) + (theta == 0))
  cw = geometry.safe_div(s * s * mm, theta * theta)
  sign = jnp.where(cos < 0, -1.0, 1.0).astype(dtype)
  sct = q * mm / (1 + jnp.abs(cos))
  inv_r = geometry.safe_div(jnp.ones((), dtype), jnp.sqrt(xx))
  s_m, s_x, x_x, x_s, m_x = hoist(sign * cw, -sct * inv_r, sign * inv_r, sign * q, -sign * sct)
  shear = e(s_m) * m_new + e(s_x) * x  # S
  x_new = e(x_x) * x + e(x_s) * shear
  # From x + (x' − x), the updated params as optax.apply_updates writes them: the
  # moment's pass reads the point's output, so it runs after it.
  m_moved = shear + e(m_x) * (x + (x_new - x))
  return x_new, m_moved, hh


def _check_common(who, learning_rate, weight_decay):
  if not callable(learning_rate):
    check_nonnegative(who, "learning_rate", learning_rate)
  check_nonnegative(who, "weight_decay", weight_decay)


def adamg(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    clip_norm: float | None = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdamG (Cho & Lee 2017; the AdamG† of seed 001 Table 2, REFERENCE §3).

  Per group (unit), step ``t`` from 1: ``y = x/||x||``, ``h = g − <y, g> y``
  (clipped to norm ``clip_norm`` if given), ``m ← β1 m + (1−β1) h``,
  ``v ← β2 v + (1−β2) ||h||²`` (one scalar per unit),
  ``Δ = −η sqrt(1−β2^t)/(1−β1^t) · m / sqrt(v + ε)`` (ε inside the sqrt),
  ``x ← exp_y(Δ)`` (unit norm), and ``m`` is parallel-transported along ``Δ``;
  ``v`` is not transported. Grouped leaves carry no weight decay. Ungrouped
  leaves: Adam (``b1``, ``b2``, ``eps``) with coupled L2 ``weight_decay``.

  Example:

  >>> import jax.numpy as jnp
  >>> import optax, spherax
  >>> params = {'w': jnp.array([[3.], [4.]])}
  >>> opt = spherax.adamg(0.1)
  >>> updates, _ = opt.update({'w': jnp.array([[1.], [0.]])}, opt.init(params), params)
  >>> new = optax.apply_updates(params, updates)['w']
  >>> round(float(jnp.linalg.norm(new)), 5)
  1.0
  """
  who = "adamg"
  _check_common(who, learning_rate, weight_decay)
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

  sphere = _sphere_transform(who, groups, learning_rate, has_mu=True, has_nu=True, init_nu=0.0, step=step)
  flat = optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_adam(b1, b2, eps),
      optax.scale_by_learning_rate(learning_rate),
  )
  return _split(who, groups, sphere, flat)


def sgdg(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    *,
    clip_norm: float | None = None,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """SGDG (Cho & Lee 2017, REFERENCE §3): SGD with momentum on the unit sphere.

  Per unit: ``y = x/||x||``, ``h = g − <y, g> y`` (clipped to ``clip_norm`` if
  given), ``mom ← μ mom − η h``, ``x ← exp_y(mom)``, and ``mom`` is
  parallel-transported along itself. Grouped leaves carry no weight decay.
  Ungrouped leaves: SGD with momentum ``μ`` and coupled L2 ``weight_decay``
  (``buf ← μ buf + g + λx``, ``x ← x − η buf``).

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
  _check_common(who, learning_rate, weight_decay)
  check_beta(who, "momentum", momentum)

  def step(layout, x, g, mu, nu, lr, count):
    del nu, count
    x_new, mom, _ = _geodesic_step(
        layout, x, g, mu, clip_norm, momentum, -lr, lambda hh: jnp.ones_like(hh))
    return x_new, mom, None

  sphere = _sphere_transform(who, groups, learning_rate, has_mu=True, has_nu=False, init_nu=0.0, step=step)
  flat = optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.trace(decay=momentum),
      optax.scale_by_learning_rate(learning_rate),
  )
  return _split(who, groups, sphere, flat)


def adagradg(
    learning_rate: optax.ScalarOrSchedule,
    decay: float,
    initial_accumulator_value: float,
    *,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """AdaGradG (seed 000 Theorem 4, REFERENCE §2): adaptive steps on the unit sphere.

  Per group: ``x̂ = x − η g / sqrt(v)``, ``x ← x̂ / ||x̂||``, then
  ``v ← β v + ||g||²``: the step uses ``v`` *before* the current gradient. It
  reproduces the trajectory of SGD with lr ``η_SGD``, L2 ``λ`` started at
  ``r_0 u_0`` (to order 2) with ``β = (1 − η_SGD λ)^4``, ``η = (2β)^{-1/2}``,
  ``v_0 = r_0⁴ / (2 η_SGD² β^{1/2})``. A zero ``v`` gives no step (the
  division is guarded). Ungrouped leaves: plain SGD ``x ← x − η g``.

  Args:
    learning_rate: ``η``, a float or a schedule.
    decay: ``β``, in ``[0, 1]``.
    initial_accumulator_value: ``v_0 >= 0``, one value for every group.
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
  check_nonnegative(who, "initial_accumulator_value", initial_accumulator_value)

  def step(layout, x, g, mu, nu, lr, count):
    del mu, count
    # ||x̂||² = xx − 2k gx + k² gg with k = η/sqrt(v): reductions of g, x only.
    dtype = geometry.compute_dtype(x, g)
    x, g = x.astype(dtype), g.astype(dtype)
    gg, gx, xx = (geometry.dot(a, b, layout) for a, b in ((g, g), (g, x), (x, x)))
    k = geometry.safe_div(jnp.asarray(lr, dtype), jnp.sqrt(nu))
    inv = geometry.safe_div(jnp.ones((), dtype), jnp.sqrt(jnp.maximum(xx - 2 * k * gx + k * k * gg, 0)))
    inv, step = hoist(inv, -inv * k)
    x_new = geometry.expand(inv, layout) * x + geometry.expand(step, layout) * g
    return x_new, None, decay * nu + gg

  sphere = _sphere_transform(
      who, groups, learning_rate, has_mu=False, has_nu=True,
      init_nu=initial_accumulator_value, step=step,
  )
  return _split(who, groups, sphere, optax.sgd(learning_rate))
