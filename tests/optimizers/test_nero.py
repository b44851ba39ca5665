"""Nero against a NumPy re-derivation of Liu et al., *Learning by Turning: Neural
Architecture Aware Optimisation*, ICML 2021 (Algorithm 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax
from tests.optimizers.conftest import Problem, _initial_params, np_groups


def np_nero(lr_fn, b2=0.999):
  """Rows in PyTorch = columns of the Flax (d, n) view; normalised at step 0."""

  def init_fn(params):
    return jax.tree.map(lambda x: None, params)

  def step_fn(t, params, grads, state):
    leaves, treedef = jax.tree.flatten(params)
    g_leaves = treedef.flatten_up_to(grads)
    s_leaves = treedef.flatten_up_to(state)
    lr = lr_fn(t)
    out = []
    for x, g, s in zip(leaves, g_leaves, s_leaves):
      if x.ndim >= 2:
        xv, gv = np_groups(x), np_groups(g)
        if t == 0:
          xv = xv - xv.mean(0)
          xv = xv / np.linalg.norm(xv, axis=0)
          s = {"v": np.zeros(xv.shape[1]), "scale": np.linalg.norm(xv, axis=0).mean()}
        v = b2 * s["v"] + (1 - b2) * (np.abs(gv)**2).sum(0)
        xv = xv - lr * s["scale"] * gv / np.sqrt(v / (1 - b2 ** (t + 1)))
        xv = xv - xv.mean(0)
        xv = xv / np.linalg.norm(xv, axis=0)
        out.append((xv.reshape(x.shape), {**s, "v": v}))
      else:
        if t == 0:
          scale = np.abs(x).mean()
          s = {"v": np.zeros_like(x), "scale": scale if scale != 0 else 0.01}
        v = b2 * s["v"] + (1 - b2) * np.abs(g)**2
        x = x - lr * s["scale"] * g / np.sqrt(v / (1 - b2 ** (t + 1)))
        out.append((x, {**s, "v": v}))
    return (jax.tree.unflatten(treedef, [o[0] for o in out]),
            jax.tree.unflatten(treedef, [o[1] for o in out]))

  return init_fn, step_fn


def schedule(count):
  return 0.02 * 0.98**count


@pytest.mark.parametrize("zero_bias", [False, True])
def test_exact_against_numpy_float64(zero_bias):
  """Also with a zero-initialised bias (scale 0.01: the bias correction's
  precision shows in full there)."""
  params = _initial_params()
  if zero_bias:
    params["dense"]["bias"] = np.zeros_like(params["dense"]["bias"])
  problem = Problem(params)
  with jax.enable_x64(True):
    got = problem.run_spherax(spherax.nero(schedule), jnp.float64)
  init_fn, step_fn = np_nero(schedule)
  problem.assert_close(got, problem.run_numpy(step_fn, init_fn), 1e-10)


def test_exact_against_numpy_float32(problem):
  got = problem.run_spherax(spherax.nero(0.02), jnp.float32)
  init_fn, step_fn = np_nero(lambda t: 0.02)
  problem.assert_close(got, problem.run_numpy(step_fn, init_fn), 1e-4)


def test_zero_scale_and_zero_gradient():
  """A zero bias gets scale 0.01; zero gradients give 0/0 → 0 (no NaN)."""
  x = {"w": jnp.array([[1., 2.], [3., 5.], [0., 1.]]), "b": jnp.zeros(2)}
  opt = spherax.nero(0.1)
  g = {"w": jnp.zeros((3, 2)), "b": jnp.array([1., 0.])}
  u, state = opt.update(g, opt.init(x), x)
  np.testing.assert_allclose(state.scale["b"], 0.01)
  # first step with |g| = sqrt(v̂): the element moves by lr · scale
  np.testing.assert_allclose(u["b"], [-0.1 * 0.01, 0.0], rtol=1e-4)
  w = np.asarray(x["w"] + u["w"])
  np.testing.assert_allclose(w, (np.asarray(x["w"]) - np.asarray(x["w"]).mean(0))
                             / np.linalg.norm(np.asarray(x["w"]) - np.asarray(x["w"]).mean(0),
                                              axis=0), rtol=1e-6)


def test_complex_ungrouped_leaf_uses_abs_squared():
  """A complex vector is per element: ``v`` is the EMA of ``|g|²``."""
  x = {"b": jnp.array([1.0 + 2.0j, -0.5j, 3.0], jnp.complex64)}
  g = {"b": jnp.array([1j, 1.0 - 1j, 2.0], jnp.complex64)}
  opt = spherax.nero(0.1)
  u, state = opt.update(g, opt.init(x), x)
  np.testing.assert_allclose(state.nu["b"], 0.001 * np.abs(np.asarray(g["b"]))**2, rtol=1e-6)
  scale = np.abs(np.asarray(x["b"])).mean()
  np.testing.assert_allclose(u["b"], -0.1 * scale * g["b"] / np.abs(np.asarray(g["b"])),
                             rtol=1e-5)


def test_complex_grouped_leaves_against_numpy():
  """Complex kernels: centred unit spheres of ``C^d = R^{2d}`` (``||g||² = Σ|g|²``)."""
  rng = np.random.default_rng(7)
  cplx = lambda shape: rng.normal(size=shape) + 1j * rng.normal(size=shape)
  params = {"w": cplx((6, 4)), "b": cplx(4)}
  grads = [jax.tree.map(lambda x: cplx(x.shape), params) for _ in range(10)]
  init_fn, step_fn = np_nero(schedule)
  want, state = params, init_fn(params)
  for t, g in enumerate(grads):
    want, state = step_fn(t, want, g, state)
  with jax.enable_x64(True):
    opt = spherax.nero(schedule)
    x = jax.tree.map(jnp.asarray, params)
    s = opt.init(x)
    for g in grads:
      u, s = opt.update(jax.tree.map(jnp.asarray, g), s, x)
      x = optax.apply_updates(x, u)
  for k in want:
    np.testing.assert_allclose(np.asarray(x[k]), want[k], rtol=1e-10, atol=1e-12)


def test_empty_leaves_pass_through():
  x = {"e": jnp.zeros((5, 0)), "z": jnp.zeros((0,)), "w": jnp.ones((3, 2)) + jnp.eye(3, 2)}
  opt = spherax.nero(0.1)
  u, state = jax.jit(opt.update)(x, opt.init(x), x)
  assert u["e"].shape == (5, 0) and u["z"].shape == (0,)
  for leaf in jax.tree.leaves(state):
    assert bool(jnp.isfinite(leaf).all()), state


def test_bfloat16_constraint_holds_over_20k_steps():
  """Centred unit groups in bfloat16 over 20k steps of random gradients (one
  jitted scan): the norm stays 1 and the mean 0 to a few bf16 ulps, measured
  and re-imposed every step, not drifting."""
  x0 = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 4, 8)), jnp.bfloat16)
  opt = spherax.nero(0.01)

  def body(carry, t):
    x, state = carry
    g = jax.random.normal(jax.random.fold_in(jax.random.key(1), t), x.shape, jnp.bfloat16)
    u, state = opt.update(g, state, x)
    return (optax.apply_updates(x, u), state), None

  (x, _), _ = jax.jit(lambda x: jax.lax.scan(body, (x, opt.init(x)), jnp.arange(20_000)))(x0)
  xv = np.asarray(x, np.float64).reshape(-1, 8)
  assert np.max(np.abs(np.linalg.norm(xv, axis=0) - 1)) <= 1e-2
  assert np.max(np.abs(xv.mean(0))) <= 1e-2 / np.sqrt(xv.shape[0])


def test_signature():
  with pytest.raises(TypeError):
    spherax.nero()
  with pytest.raises(TypeError):
    spherax.nero(0.1, 0.999, False)  # constraints is keyword-only


@pytest.mark.parametrize("make", [lambda: spherax.nero(-1.0), lambda: spherax.nero(0.1, b2=1.0)])
def test_bad_arguments_raise(make):
  with pytest.raises(ValueError):
    make()
