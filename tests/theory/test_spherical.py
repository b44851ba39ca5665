"""Roburin et al. 2022 Theorem 2 and Table 1 against real optax steps on scale-invariant losses.

References:

* Roburin et al. 2022: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import groups
from spherax.theory import spherical

ETA, LAM, MOM = 0.05, 0.3, 0.9
SHAPE = (6, 4)  # four groups (columns) of six elements


def _loss(w, m):
  """A random smooth function of each column's direction only."""
  u = w / jnp.linalg.norm(w, axis=0)
  return jnp.sum(jnp.sin(m * u)) + jnp.sum(u[:3] * u[3:]) ** 2


def _run(opt, steps=4):
  """``steps`` optimizer steps; returns (x before the last step, x after, grad, state)."""
  key_x, key_m = jax.random.split(jax.random.key(0))
  x = jax.random.normal(key_x, SHAPE) * jnp.array([0.5, 1.0, 2.0, 3.0])
  m = 3 * jax.random.normal(key_m, SHAPE)
  state = opt.init(x)
  for _ in range(steps):
    g = jax.grad(_loss)(x, m)
    updates, state = opt.update(g, state, x)
    x_prev, x = x, optax.apply_updates(x, updates)
  return x_prev, x, g, state


def _measured(x0, x1):
  u0 = x0 / np.linalg.norm(x0, axis=0)
  u1 = x1 / np.linalg.norm(x1, axis=0)
  cos = (u0 * u1).sum(0)
  sin = np.linalg.norm(u1 - cos * u0, axis=0)
  return np.arctan2(sin, cos), u1, np.linalg.norm(x1, axis=0) / np.linalg.norm(x0, axis=0)


def _coefficients(name, x_prev, g, state):
  if name == "sgd":
    return g, 1.0
  if name == "sgd_l2":
    return g + LAM * x_prev, 1.0
  if name == "sgdm":
    return optax.tree_utils.tree_get(state, "trace"), 1.0
  mu, nu, count = (optax.tree_utils.tree_get(state, k) for k in ("mu", "nu", "count"))
  return spherical.adam_coefficients(mu, nu, count, b1=0.9, b2=0.999, eps=1e-8)


OPTIMIZERS = {
    "sgd": lambda: optax.sgd(ETA),
    "sgd_l2": lambda: optax.chain(optax.add_decayed_weights(LAM), optax.sgd(ETA)),
    "sgdm": lambda: optax.sgd(ETA, momentum=MOM),
    "adam": lambda: optax.adam(ETA, b1=0.9, b2=0.999, eps=1e-8),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_theorem_2_predicts_the_step_exactly(name):
  with jax.enable_x64(True):
    x_prev, x, g, state = _run(OPTIMIZERS[name]())
    np.testing.assert_allclose((g * x_prev).sum(0), 0, atol=1e-12)  # scale invariance
    a, b = _coefficients(name, x_prev, g, state)
    layout = groups.per_output().layout(SHAPE)
    step = spherical.spherical_step(x_prev, a, b, ETA, layout=layout)
    angle, u1, ratio = _measured(np.asarray(x_prev), np.asarray(x))
    assert bool(step.h1.all()) and bool(step.h2.all())
    assert angle.min() > 1e-3
    np.testing.assert_allclose(np.asarray(step.angle)[0], angle, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(step.radius_ratio)[0], ratio, rtol=1e-6)
    turn = np.asarray(step.effective_lr) * np.linalg.norm(np.asarray(step.direction), axis=0)
    u0 = np.asarray(x_prev) / np.linalg.norm(np.asarray(x_prev), axis=0)
    eta_e, c_perp = np.asarray(step.effective_lr), np.asarray(step.direction)
    predicted_u1 = (u0 - eta_e * c_perp) / np.sqrt(1 + turn**2)
    np.testing.assert_allclose(predicted_u1, u1, rtol=1e-6, atol=1e-12)

    # Table 1: the special-case effective learning rates equal the generic one.
    r = np.linalg.norm(np.asarray(x_prev), axis=0, keepdims=True)
    if name == "sgd":
      table = spherical.effective_lr_sgd(ETA, r)
    elif name == "sgd_l2":
      table = spherical.effective_lr_sgd_l2(ETA, r, LAM)
    elif name == "sgdm":
      table = spherical.effective_lr_sgdm(ETA, r, step.c_dot_u)
    else:
      nu = r * np.sqrt((np.asarray(b) ** 2).mean(0, keepdims=True))
      table = spherical.effective_lr_adam(ETA, r, nu, step.c_dot_u)
    np.testing.assert_allclose(np.asarray(table), np.asarray(step.effective_lr), rtol=1e-10)


def test_effective_direction_is_rescaled_update_direction():
  """c = r a ⊘ (b/ν'): independent of the scale of b, and c⊥ ⊥ x."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    x, a = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    b = rng.uniform(0.5, 2.0, size=SHAPE)
    layout = groups.per_output().layout(SHAPE)
    s1 = spherical.spherical_step(x, a, b, 0.1, layout=layout)
    s2 = spherical.spherical_step(x, a, 7.0 * b, 0.7, layout=layout)
    np.testing.assert_allclose(np.asarray(s1.direction), np.asarray(s2.direction), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(s1.effective_lr), np.asarray(s2.effective_lr), rtol=1e-12)
    np.testing.assert_allclose((np.asarray(s1.direction) * x).sum(0), 0, atol=1e-12)
    r = np.linalg.norm(x, axis=0)
    nu_p = np.sqrt((b**2).mean(0))
    c = r * nu_p * a / b
    np.testing.assert_allclose(
        np.asarray(s1.c_dot_u)[0], (c * x).sum(0) / r, rtol=1e-12
    )


def test_hypotheses_fail_for_oversized_steps():
  x = jnp.array([1.0, 0.0])
  # H1: an L2 term with ηλ > 1 flips the point through the origin.
  assert not bool(spherical.spherical_step(x, 2.0 * x, 1.0, 1.0).h1.all())
  # H2: a huge tangential step.
  big = spherical.spherical_step(x, jnp.array([0.0, 100.0]), 1.0, 1.0)
  assert bool(big.h1.all()) and not bool(big.h2.all())


def test_zero_group_is_finite():
  x = jnp.zeros((3, 2)).at[:, 1].set(1.0)
  layout = groups.per_output().layout(x.shape)
  b = jnp.zeros((3, 2)).at[:, 1].set(1.0)
  s = spherical.spherical_step(x, jnp.ones((3, 2)), b, 0.1, layout=layout)
  for field in s:
    assert bool(jnp.isfinite(field).all())


def test_adagradg_mapping_closed_form():
  eta, lam, r0 = 0.1, 1e-3, 2.5
  h = spherical.adagradg_hyperparams(eta, lam, r0)
  beta = (1 - eta * lam) ** 4
  np.testing.assert_allclose(float(h.decay), beta, rtol=1e-6)
  np.testing.assert_allclose(float(h.learning_rate), 1 / np.sqrt(2 * beta), rtol=1e-6)
  np.testing.assert_allclose(
      float(h.initial_accumulator_value), r0**4 / (2 * eta**2 * np.sqrt(beta)), rtol=1e-6
  )
  # First step, λ = 0: AdaGradG's step η_0/sqrt(v_0) = r0^{-2} η sqrt(2)·(2)^{-1/2} = η/r0²,
  # SGD's effective learning rate (Table 1).
  h0 = spherical.adagradg_hyperparams(eta, 0.0, r0)
  np.testing.assert_allclose(
      float(h0.learning_rate / jnp.sqrt(h0.initial_accumulator_value)),
      float(spherical.effective_lr_sgd(eta, r0)),
      rtol=1e-6,
  )


def test_per_filter_initial_accumulator_tracks_numpy_sgd_per_filter():
  """Theorem 4 with each filter's own r_0: AdaGradG follows a NumPy SGD + L2 run on a
  scale-invariant loss, cosine >= 1 − 1e-5 per filter over 200 steps; one shared v_0
  (r_0 = 1) does not."""
  import optax

  import spherax

  rng = np.random.default_rng(0)
  d, n, eta, lam, steps = 6, 5, 0.05, 1e-2, 200
  quad = rng.normal(size=(n, d, d))
  quad = 0.1 * (quad + quad.transpose(0, 2, 1))
  lin = 0.1 * rng.normal(size=(d, n))
  r0 = np.array([0.6, 0.9, 1.0, 1.5, 2.2])
  w0 = rng.normal(size=(d, n))
  w0 = w0 / np.linalg.norm(w0, axis=0) * r0

  def grad(w):  # L(w) = Σ_j f_j(w_j/||w_j||), f_j(u) = u'A_j u/2 + b_j'u
    r = np.linalg.norm(w, axis=0)
    u = w / r
    gu = np.einsum("jkl,lj->kj", quad, u) + lin
    return (gu - (gu * u).sum(0) * u) / r

  w, sgd = w0.copy(), []
  for _ in range(steps):
    w = w - eta * (grad(w) + lam * w)
    sgd.append(w / np.linalg.norm(w, axis=0))
  assert (sgd[-1] * w0 / r0).sum(0).min() < 0.5  # the filters really turned

  def cosines(v0):
    h = spherical.adagradg_hyperparams(eta, lam, 1.0)
    opt = spherax.adagradg(float(h.learning_rate), float(h.decay), v0)
    p = spherax.project_params({"w": jnp.asarray(w0)})
    state, step, out = opt.init(p), jax.jit(opt.update), []
    for t in range(steps):
      u, state = step({"w": jnp.asarray(grad(np.asarray(p["w"])))}, state, p)
      p = optax.apply_updates(p, u)
      out.append((np.asarray(p["w"]) * sgd[t]).sum(0))
    return np.array(out)

  with jax.enable_x64(True):
    v0 = spherical.adagradg_initial_accumulator({"w": jnp.asarray(w0)}, eta, lam)
    np.testing.assert_allclose(
        v0["w"], [r0**4 / (2 * eta**2 * (1 - eta * lam) ** 2)], rtol=1e-12)
    assert cosines(v0).min() >= 1 - 1e-5
    shared = float(spherical.adagradg_hyperparams(eta, lam, 1.0).initial_accumulator_value)
    assert cosines(shared).min() < 0.99
