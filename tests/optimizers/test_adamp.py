"""AdamP / SGDP against a NumPy re-derivation of Heo et al., *AdamP: Slowing Down the
Slowdown for Momentum Optimizers on Scale-invariant Weights*, ICLR 2021 (Algorithms 1, 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax
from spherax import groups
from spherax.optimizers.adamp import project_if_scale_invariant
from tests.optimizers.conftest import np_groups

EPS = 1e-8


def np_project(x, g, p, delta=0.1, wd_ratio=0.1):
  """Per-output-unit view, then whole tensor; returns (p', wd factor)."""
  if x.ndim <= 1:
    return p, 1.0
  views = [lambda a: np_groups(a), lambda a: a.reshape(1, -1).T]
  for view in views:
    xv, gv = view(x), view(g)
    cos = np.abs(np.real(np.conj(xv) * gv).sum(0)) / (
        np.maximum(np.linalg.norm(gv, axis=0), EPS) * np.maximum(np.linalg.norm(xv, axis=0), EPS)
    )
    if cos.max() < delta / np.sqrt(xv.shape[0]):
      xh = xv / (np.linalg.norm(xv, axis=0) + EPS)
      pv = view(p)
      pv = pv - xh * np.real(np.conj(xh) * pv).sum(0)
      return pv.reshape(p.shape), wd_ratio
  return p, 1.0


def np_adamp(lr, b1=0.9, b2=0.999, wd=0.0, nesterov=False):
  def init_fn(params):
    return jax.tree.map(lambda x: (np.zeros_like(x), np.zeros_like(x)), params)

  def step_fn(t, params, grads, state):
    def one(x, g, s):
      m, v = s
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * np.abs(g)**2
      num = b1 * m + (1 - b1) * g if nesterov else m
      p = num / (np.sqrt(v) / np.sqrt(1 - b2 ** (t + 1)) + EPS)
      p, w = np_project(x, g, p)
      x = x * (1 - lr * wd * w) - lr / (1 - b1 ** (t + 1)) * p
      return x, (m, v)

    return _apply(one, params, grads, state)

  return init_fn, step_fn


def np_sgdp(lr, mu=0.9, wd=0.0, nesterov=False):
  def init_fn(params):
    return jax.tree.map(np.zeros_like, params)

  def step_fn(t, params, grads, state):
    def one(x, g, b):
      b = mu * b + g
      p = g + mu * b if nesterov else b
      p, w = np_project(x, g, p)
      if not nesterov:
        b = p
      x = x * (1 - lr * wd * w / (1 - mu)) - lr * p
      return x, b

    return _apply(one, params, grads, state)

  return init_fn, step_fn


def _apply(one, params, grads, state):
  leaves, treedef = jax.tree.flatten(params)
  g_leaves = treedef.flatten_up_to(grads)
  s_leaves = treedef.flatten_up_to(state)
  out = [one(x, g, s) for x, g, s in zip(leaves, g_leaves, s_leaves)]
  return (jax.tree.unflatten(treedef, [o[0] for o in out]),
          jax.tree.unflatten(treedef, [o[1] for o in out]))


CASES = {
    "adamp": (lambda: spherax.adamp(0.05, weight_decay=0.1), lambda: np_adamp(0.05, wd=0.1)),
    "adamp_nesterov": (
        lambda: spherax.adamp(0.05, weight_decay=0.1, nesterov=True),
        lambda: np_adamp(0.05, wd=0.1, nesterov=True),
    ),
    "sgdp": (lambda: spherax.sgdp(0.05, weight_decay=0.1), lambda: np_sgdp(0.05, wd=0.1)),
    "sgdp_nesterov": (
        lambda: spherax.sgdp(0.05, weight_decay=0.1, nesterov=True),
        lambda: np_sgdp(0.05, wd=0.1, nesterov=True),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_against_numpy_float64(problem, name):
  make_opt, make_np = CASES[name]
  with jax.enable_x64(True):
    got = problem.run_spherax(make_opt(), jnp.float64)
  init_fn, step_fn = make_np()
  problem.assert_close(got, problem.run_numpy(step_fn, init_fn), 1e-10)


def test_adamp_float32(problem):
  got = problem.run_spherax(spherax.adamp(0.05, weight_decay=0.1), jnp.float32)
  init_fn, step_fn = np_adamp(0.05, wd=0.1)
  problem.assert_close(got, problem.run_numpy(step_fn, init_fn), 1e-4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_adamp_moments_are_adams_float32(nesterov):
  """AdamP stores Adam's m and v themselves (never projected, never rebuilt)."""
  rng = np.random.default_rng(5)
  params = {"w": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), "b": jnp.ones(4)}
  opt, adam = spherax.adamp(0.05, weight_decay=0.1, nesterov=nesterov), optax.scale_by_adam()
  state, adam_state = opt.init(params), adam.init(params)
  for t in range(50):
    grads = jax.tree.map(
        lambda x: jnp.asarray(rng.normal(size=x.shape) * (t % 3), jnp.float32), params)
    updates, state = opt.update(grads, state, params)
    _, adam_state = adam.update(grads, adam_state)
    params = optax.apply_updates(params, updates)
  for got, want in ((state.mu, adam_state.mu), (state.nu, adam_state.nu)):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-7, atol=0)


def test_complex_ungrouped_leaf_is_adamw():
  """A complex vector is ungrouped: AdamP is AdamW there, with Adam's ``|g|²``."""
  x = {"b": jnp.array([1.0 + 2.0j, -0.5j, 3.0], jnp.complex64)}
  opt = spherax.adamp(0.1, weight_decay=0.01)
  adamw = optax.adamw(0.1, weight_decay=0.01)
  s, s_ref = opt.init(x), adamw.init(x)
  p, p_ref = x, x
  for t in range(5):
    g = {"b": jnp.array([1j, 1.0 - 1j, 0.5 * t], jnp.complex64)}
    u, s = opt.update(g, s, p)
    u_ref, s_ref = adamw.update(g, s_ref, p_ref)
    p, p_ref = optax.apply_updates(p, u), optax.apply_updates(p_ref, u_ref)
  np.testing.assert_allclose(p["b"], p_ref["b"], rtol=1e-6)


def _complex_run(opt, np_opt, steps=10):
  """``steps`` seeded complex128 steps of ``opt`` and of its NumPy re-derivation."""
  rng = np.random.default_rng(7)
  cplx = lambda shape: rng.normal(size=shape) + 1j * rng.normal(size=shape)
  params = {"w": cplx((6, 4)), "b": cplx(4)}
  grads = [jax.tree.map(lambda x: cplx(x.shape), params) for _ in range(steps)]
  init_fn, step_fn = np_opt
  want, state = params, init_fn(params)
  for t, g in enumerate(grads):
    want, state = step_fn(t, want, g, state)
  with jax.enable_x64(True):
    x = jax.tree.map(jnp.asarray, params)
    s = opt.init(x)
    for g in grads:
      u, s = opt.update(jax.tree.map(jnp.asarray, g), s, x)
      x = optax.apply_updates(x, u)
  return x, want


@pytest.mark.parametrize("name", ["adamp", "sgdp_nesterov"])
def test_complex_grouped_leaves_use_the_real_inner_product(name):
  """Complex kernels: the projection of ``C^d = R^{2d}`` (``Re <a, b>``) and
  Adam's ``|g|²``, against the NumPy re-derivation in complex arithmetic."""
  make_opt, make_np = CASES[name]
  got, want = _complex_run(make_opt(), make_np())
  for k in want:
    np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-10, atol=1e-12)


def test_empty_leaves_pass_through():
  x = {"e": jnp.zeros((5, 0)), "z": jnp.zeros((0,)), "w": jnp.ones((3, 2))}
  for opt in (spherax.adamp(0.1, weight_decay=0.1), spherax.sgdp(0.1, weight_decay=0.1)):
    u, state = jax.jit(opt.update)(x, opt.init(x), x)
    assert u["e"].shape == (5, 0) and u["z"].shape == (0,)
    contract_finite = [bool(jnp.isfinite(a).all()) for a in jax.tree.leaves((u, state))]
    assert all(contract_finite)


@pytest.mark.parametrize("factory", [spherax.adamp, spherax.sgdp])
def test_weight_decay_mask(factory):
  """``mask`` False leaves get no decay (a pytree or a callable, as in optax)."""
  rng = np.random.default_rng(3)
  x = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.ones(3)}
  g = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), x)
  full = factory(0.1, weight_decay=0.5)
  none = factory(0.1, weight_decay=0.0)
  want = {"w": full.update(g, full.init(x), x)[0]["w"], "b": none.update(g, none.init(x), x)[0]["b"]}
  for mask in ({"w": True, "b": False}, lambda p: jax.tree.map(lambda a: a.ndim > 1, p)):
    opt = factory(0.1, weight_decay=0.5, mask=mask)
    got, _ = opt.update(g, opt.init(x), x)
    for k in x:
      np.testing.assert_array_equal(got[k], want[k])


def test_signature():
  """``learning_rate`` required; only the moment hyperparameters are positional."""
  with pytest.raises(TypeError):
    spherax.adamp()
  with pytest.raises(TypeError):
    spherax.adamp(1e-3, 0.9, 0.999, 1e-8, 0.1)  # weight_decay is keyword-only
  with pytest.raises(TypeError):
    spherax.sgdp(1e-3, 0.9, 1e-8)  # eps is keyword-only


def test_projection_views():
  """Orthogonal g: per-unit projection; cancelling radial parts: whole-tensor; else none."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(8, 2))
  layout = groups.per_output().layout(x.shape)
  p = rng.normal(size=(8, 2))
  # per-unit radial parts of opposite signs that cancel over the whole tensor
  g_whole = x * np.array([1.0, -1.0]) / np.linalg.norm(x, axis=0) ** 2
  g_orth = rng.normal(size=(8, 2))
  g_orth -= x * (g_orth * x).sum(0) / (x * x).sum(0)
  g_none = x + 0.1 * rng.normal(size=(8, 2))
  for g, expect in ((g_orth, True), (g_whole, True), (g_none, False)):
    with jax.enable_x64(True):
      got, projected = project_if_scale_invariant(
          layout, jnp.asarray(x), jnp.asarray(g), jnp.asarray(p), 0.1, EPS
      )
      got = np.asarray(got)
    want, w = np_project(x, g, p)
    assert bool(projected) == expect == (w == 0.1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
  # the whole-tensor case really differs from a per-unit projection
  assert not np.allclose(np_project(x, g_whole, p)[0], np_project(x, g_orth, p)[0])


def test_zero_weights_and_gradients_finite():
  x = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  g = jax.tree.map(jnp.zeros_like, x)
  for opt in (spherax.adamp(1e-2, weight_decay=0.1), spherax.sgdp(1e-2, weight_decay=0.1)):
    u, _ = opt.update(g, opt.init(x), x)
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(u))


@pytest.mark.parametrize(
    "make",
    [
        lambda: spherax.adamp(-1.0),
        lambda: spherax.adamp(1e-3, b1=1.0),
        lambda: spherax.adamp(1e-3, delta=-0.1),
        lambda: spherax.sgdp(0.1, momentum=1.0),
        lambda: spherax.sgdp(0.1, wd_ratio=-1.0),
    ],
)
def test_bad_arguments_raise(make):
  with pytest.raises(ValueError):
    make()
