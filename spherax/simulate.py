"""Simulators: the random-walk "simple system" and the SMD norm maps (Wan et al., SMD and Kosson et al. 2024).

* :func:`random_walk` — Kosson et al. 2024 App. J: ``f(X) = γ_out ⊙ BN(W(γ_in ⊙ X))`` with
  fresh Gaussian inputs and output gradients every step, so the rows of ``W``
  (scale-invariant under the batch norm) perform a random walk. Any optax
  optimizer can drive it; it records each row's norm and angular update per step.
* :func:`smd_sgd`, :func:`smd_sgdm` — Wan et al., SMD App. C.1: the iterative maps of the
  squared norm under SGD / SGDM with weight decay.

All loops are ``jax.lax.scan`` under ``jax.jit``.

Example:

>>> import jax.numpy as jnp
>>> from spherax import simulate, theory
>>> x = simulate.smd_sgd(10.0, 0.1, 1e-3, jnp.full(20000, 2.0))
>>> bool(jnp.isclose(x[-1], theory.smd.sqnorm_sgd(0.1, 1e-3, 2.0), rtol=1e-4))
True

References:

* Wan et al., SMD: Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission.
* Kosson et al. 2024: Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["RandomWalk", "random_walk", "smd_sgd", "smd_sgdm"]


class RandomWalk(NamedTuple):
  """Per-step, per-row records of :func:`random_walk`.

  Attributes:
    norms: ``(steps, K)``, ``||w_i||`` after each step.
    angles: ``(steps, K)``, the angle in radians between ``w_i`` before and after
      each step.
    unit_grad_norms: ``(steps, K)``, ``||g̃_i|| = ||∇w_i L|| · ||w_i||``, the
      gradient norm at unit weight norm, before each step.
  """

  norms: jax.Array
  angles: jax.Array
  unit_grad_norms: jax.Array


def _forward(kernel, x, gamma_in, gamma_out, eps):
  """``γ_out ⊙ BN(W(γ_in ⊙ X))``, batch-major: ``x (B, C)``, ``kernel (C, K)``."""
  z = (x * gamma_in) @ kernel
  z = z - jnp.mean(z, axis=0)
  z = z * jax.lax.rsqrt(jnp.mean(z * z, axis=0) + eps)
  return z * gamma_out


def _row_angles(old, new):
  """Angle between matching columns (Flax layout: one row of ``W`` per column)."""
  u_old = old / jnp.linalg.norm(old, axis=0)
  u_new = new / jnp.linalg.norm(new, axis=0)
  return 2 * jnp.arcsin(jnp.minimum(jnp.linalg.norm(u_new - u_old, axis=0) / 2, 1.0))


def random_walk(
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    key: jax.Array,
    batch: int = 32,
    channels: int = 128,
    features: int = 128,
    eps: float = 1e-5,
) -> RandomWalk:
  """Runs the random walk of Kosson et al. 2024 App. J and records every row of ``W``.

  ``W ∈ R^{K×C}`` (stored Flax-style as a ``(C, K)`` kernel, so the default
  ``groups=None`` rule groups it per row of ``W``) starts at
  ``U(−1/sqrt(C), 1/sqrt(C))``; ``γ_in ~ N(0, 1)^C`` and ``γ_out ~ N(0, 1)^K`` are
  fixed. Each step draws inputs ``X ~ N(0, 1)^{B×C}`` and output gradients
  ``G ~ N(0, (1/(KB))²)^{B×K}``, back-propagates ``G`` through the batch norm to
  get ``∇W``, and applies one ``optimizer`` update to the params ``{'kernel': W}``.
  The rows of ``W`` are scale-invariant (up to the BN ``eps``), so only the
  optimizer's geometry sets their norms and rotation.

  Args:
    optimizer: any optax transformation of the params ``{'kernel': (C, K)}``.
    steps: number of steps.
    key: PRNG key for the initialisation and the per-step noise.
    batch, channels, features: ``B``, ``C``, ``K`` (paper: 32, 128, 128).
    eps: the batch-norm epsilon.

  Raises:
    ValueError: if ``steps``, ``batch``, ``channels`` or ``features`` is not a
      positive int.

  Returns:
    A :class:`RandomWalk` of ``(steps, K)`` arrays.

  >>> import jax, optax
  >>> walk = random_walk(optax.sgd(0.1), steps=5, key=jax.random.key(0),
  ...                    batch=4, channels=3, features=2)
  >>> walk.norms.shape, bool((walk.angles > 0).all())
  ((5, 2), True)
  """
  for name, value in [("steps", steps), ("batch", batch), ("channels", channels),
                      ("features", features)]:
    if not isinstance(value, int) or value < 1:
      raise ValueError(
          f"spherax.simulate.random_walk: {name} must be a positive int, got {value!r}"
      )
  return _random_walk(optimizer, steps, key, batch, channels, features, eps)


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4, 5))
def _random_walk(optimizer, steps, key, batch, channels, features, eps):
  k_w, k_in, k_out, k_steps = jax.random.split(key, 4)
  bound = 1 / jnp.sqrt(channels)
  params = {
      "kernel": jax.random.uniform(k_w, (channels, features), minval=-bound, maxval=bound)
  }
  gamma_in = jax.random.normal(k_in, (channels,))
  gamma_out = jax.random.normal(k_out, (features,))
  grad_scale = 1.0 / (features * batch)

  def step(carry, step_key):
    params, opt_state = carry
    k_x, k_g = jax.random.split(step_key)
    x = jax.random.normal(k_x, (batch, channels))
    out_grad = grad_scale * jax.random.normal(k_g, (batch, features))
    _, vjp = jax.vjp(lambda p: _forward(p["kernel"], x, gamma_in, gamma_out, eps), params)
    (grads,) = vjp(out_grad)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    old, new = params["kernel"], new_params["kernel"]
    unit_grad = jnp.linalg.norm(grads["kernel"], axis=0) * jnp.linalg.norm(old, axis=0)
    record = (jnp.linalg.norm(new, axis=0), _row_angles(old, new), unit_grad)
    return (new_params, opt_state), record

  init = (params, optimizer.init(params))
  _, records = jax.lax.scan(step, init, jax.random.split(k_steps, steps))
  return RandomWalk(*records)


@jax.jit
def smd_sgd(x0, learning_rate, weight_decay, unit_grad_sqnorms):
  """The SMD map of ``x = ||w||²`` under SGD + L2 (Wan et al., SMD App. C.1, Eq. 42).

  ``x_{t+1} = (1 − 2λη) x_t + L_t η² / x_t`` with ``L_t = ||g̃_t||²`` the squared
  unit-gradient norm at step ``t``; its fixed point for constant ``L`` is
  ``sqrt(Lη/(2λ))`` (Theorem 1). ``x0``, ``η`` and ``λ`` may be arrays of one shape
  (independent runs); ``unit_grad_sqnorms`` then has that shape after its leading
  axis.

  Returns:
    ``x_1 … x_T``, one per entry of ``unit_grad_sqnorms`` (leading axis).

  >>> import jax.numpy as jnp
  >>> smd_sgd(1.0, 0.1, 0.5, jnp.array([10.0])).tolist()   # 0.9 + 10 * 0.01
  [1.0]
  """
  decay = 1 - 2 * weight_decay * learning_rate

  def step(x, big_l):
    x = decay * x + big_l * learning_rate**2 / x
    return x, x

  x0 = jnp.asarray(x0, jnp.result_type(float, x0))
  return jax.lax.scan(step, x0, jnp.asarray(unit_grad_sqnorms, x0.dtype))[1]


@jax.jit
def smd_sgdm(x0, learning_rate, weight_decay, momentum, unit_grad_sqnorms):
  """The SMD map of SGDM + L2 (Wan et al., SMD App. C.1).

  ``X = (||w_t||², <w_t, w_{t−1}>, ||w_{t−1}||²)``,
  ``X_{t+1} = A X_t + (L_t η² / X_t[0]) e`` with ``e = (1, 0, 0)`` and, writing
  ``s = 1 + α − λη``, ``A = [[s², −2αs, α²], [s, −α, 0], [1, 0, 0]]``. Its fixed
  point for constant ``L`` has ``X[0] = sqrt(Lη/(λ(1−α)(2 − λη/(1+α))))``
  (Theorem 2).

  Args:
    x0: the initial ``||w_0||²``, a scalar or an array of independent runs; the
      walk starts at rest (``w_{−1} = w_0``).
    learning_rate, weight_decay, momentum: ``η``, ``λ``, ``α``.
    unit_grad_sqnorms: ``L_t`` per step (leading axis ``T``; the rest broadcasts
      against ``x0``).

  Returns:
    ``(T, *x0.shape, 3)``: ``X_1 … X_T``.

  >>> import jax.numpy as jnp
  >>> smd_sgdm(1.0, 0.1, 0.5, 0.0, jnp.array([10.0]))[:, 0].tolist()
  [1.0025]
  >>> out = smd_sgdm(jnp.array([1.0, 4.0]), 0.1, 0.5, 0.0, jnp.array([10.0]))
  >>> [round(v, 4) for v in out[0, :, 0].tolist()]
  [1.0025, 3.635]
  """
  s = 1 + momentum - weight_decay * learning_rate
  a = jnp.array([[s**2, -2 * momentum * s, momentum**2], [s, -momentum, 0.0], [1.0, 0.0, 0.0]])

  def step(state, big_l):  # state: (*batch, 3)
    kick = big_l * learning_rate**2 / state[..., 0]
    state = (state @ a.T).at[..., 0].add(kick)
    return state, state

  x0 = jnp.asarray(x0, jnp.result_type(float, x0))
  state = jnp.stack([x0, x0, x0], axis=-1)
  return jax.lax.scan(step, state, jnp.asarray(unit_grad_sqnorms, x0.dtype))[1]
