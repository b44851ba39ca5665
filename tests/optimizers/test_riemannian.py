"""AdamG, SGDG and AdaGradG against NumPy re-derivations of REFERENCE §2–3."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax

from .conftest import np_groups

LR, B1, B2, EPS, WD, MOM = 0.05, 0.9, 0.99, 1e-8, 1e-2, 0.9


def _dots(a, b):
  return (a * b).sum(0)


def _sphere_move(Y, D, M):
  """exp_Y(D) and M parallel-transported along D (REFERENCE §3, AdamG)."""
  size = np.sqrt(_dots(D, D))
  W = D / size
  M = M - _dots(W, M) * (np.sin(size) * Y + (1 - np.cos(size)) * W)
  return Y * np.cos(size) + W * np.sin(size), M


def _tangent(X, G, clip):
  Y = X / np.sqrt(_dots(X, X))
  H = G - _dots(Y, G) * Y
  if clip is not None:
    H = H * np.minimum(1.0, clip / np.sqrt(_dots(H, H)))
  return Y, H


def _run_leafwise(leaf_fn):
  def step(t, params, grads, state):
    out = jax.tree.map(lambda x, g, s: leaf_fn(t + 1, x, g, s), params, grads, state,
                       is_leaf=lambda n: isinstance(n, dict) and "m" in n)
    is_pair = lambda n: isinstance(n, tuple)
    return (jax.tree.map(lambda o: o[0], out, is_leaf=is_pair),
            jax.tree.map(lambda o: o[1], out, is_leaf=is_pair))
  return step


def _numpy_adamg(clip):
  def init(params):
    return jax.tree.map(lambda x: {"m": np.zeros_like(np_groups(x) if x.ndim >= 2 else x),
                                   "v": np.zeros(x.shape[-1] if x.ndim >= 2 else x.shape)}, params)

  def leaf(k, x, g, s):
    if x.ndim < 2:  # Adam with coupled L2
      g = g + WD * x
      m = B1 * s["m"] + (1 - B1) * g
      v = B2 * s["v"] + (1 - B2) * g * g
      x = x - LR * (m / (1 - B1**k)) / (np.sqrt(v / (1 - B2**k)) + EPS)
      return x, {"m": m, "v": v}
    Y, H = _tangent(np_groups(x), np_groups(g), clip)
    m = B1 * s["m"] + (1 - B1) * H
    v = B2 * s["v"] + (1 - B2) * _dots(H, H)
    D = -LR * np.sqrt(1 - B2**k) / (1 - B1**k) * m / np.sqrt(v + EPS)
    X, m = _sphere_move(Y, D, m)
    return X.reshape(x.shape), {"m": m, "v": v}

  return _run_leafwise(leaf), init


def _numpy_sgdg():
  def init(params):
    return jax.tree.map(lambda x: {"m": np.zeros_like(np_groups(x) if x.ndim >= 2 else x)}, params)

  def leaf(k, x, g, s):
    del k
    if x.ndim < 2:  # SGD-M with coupled L2
      m = MOM * s["m"] + g + WD * x
      return x - LR * m, {"m": m}
    Y, H = _tangent(np_groups(x), np_groups(g), None)
    mom = MOM * s["m"] - LR * H
    X, mom = _sphere_move(Y, mom, mom)
    return X.reshape(x.shape), {"m": mom}

  return _run_leafwise(leaf), init


AG_LR, AG_BETA, AG_V0 = 0.7, 0.99, 50.0


def _numpy_adagradg():
  def init(params):
    return jax.tree.map(lambda x: {"m": None, "v": np.full(x.shape[-1], AG_V0)}, params)

  def leaf(k, x, g, s):
    del k
    if x.ndim < 2:
      return x - AG_LR * g, s
    X, G = np_groups(x), np_groups(g)
    Xh = X - AG_LR * G / np.sqrt(s["v"])
    X = Xh / np.sqrt(_dots(Xh, Xh))
    return X.reshape(x.shape), {"m": None, "v": AG_BETA * s["v"] + _dots(G, G)}

  return _run_leafwise(leaf), init


def _assert_unit_groups(trajectory):
  for params in trajectory:
    for x in jax.tree.leaves(params):
      if x.ndim >= 2:
        np.testing.assert_allclose(np.linalg.norm(np_groups(x), axis=0), 1.0, rtol=1e-5)


CASES = {
    "adamg": (lambda: spherax.adamg(LR, B1, B2, EPS, WD), lambda: _numpy_adamg(None)),
    "sgdg": (lambda: spherax.sgdg(LR, MOM, WD), _numpy_sgdg),
    "adagradg": (lambda: spherax.adagradg(AG_LR, AG_BETA, AG_V0), _numpy_adagradg),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_numpy_and_keeps_unit_norms(problem, name):
  make, reference = CASES[name]
  want = problem.run_numpy(*reference())
  with jax.enable_x64(True):
    got = problem.run_spherax(make())
  problem.assert_close(got, want, 1e-5)
  _assert_unit_groups(got)
  got32 = problem.run_spherax(make(), dtype=jnp.float32)
  problem.assert_close(got32, want, 1e-4)
  _assert_unit_groups(got32)


def test_adamg_clip_matches_numpy(problem):
  want = problem.run_numpy(*_numpy_adamg(0.5))
  with jax.enable_x64(True):
    got = problem.run_spherax(spherax.adamg(LR, B1, B2, EPS, WD, clip_norm=0.5))
  problem.assert_close(got, want, 1e-5)


def test_sgdg_momentum_stays_tangent():
  params = {"w": jnp.array(np.random.default_rng(3).normal(size=(4, 3)))}
  opt = spherax.sgdg(0.3, 0.9)
  state = opt.init(params)
  for k in range(3):
    grads = {"w": jnp.array(np.random.default_rng(k).normal(size=(4, 3)))}
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  mom = state.inner_states["sphere"].inner_state.mu["w"]
  np.testing.assert_allclose((mom * params["w"]).sum(0), 0.0, atol=1e-5)


@pytest.mark.parametrize("dtype, tol", [(jnp.float64, 1e-10), (jnp.float32, 1e-5)])
def test_sgdg_moves_of_any_length_match_numpy(dtype, tol):
  """Steps ||Δ|| in every quadrant (through π/2, π and past 2π) and a zero group."""
  rng = np.random.default_rng(11)
  x = rng.normal(size=(5, 6))
  m = rng.normal(size=(5, 6))
  g = rng.normal(size=(5, 6))
  g[:, 0] = m[:, 0] = 0.0
  Y, H = _tangent(x, g, None)
  M = m - _dots(Y, m) * Y  # a moment tangent at Y
  for lr in (0.1, 1.0, np.pi / 2, 2.0, np.pi, 4.0, 7.0):
    mom = 0.9 * M - lr * H
    size = np.sqrt(_dots(mom, mom))
    safe = np.where(size > 0, size, 1.0)
    X = np.where(size > 0, Y * np.cos(size) + mom / safe * np.sin(size), Y)
    mom_moved = np.where(size > 0, mom * np.cos(size) - safe * np.sin(size) * Y, mom)
    opt = spherax.sgdg(lr, 0.9)
    with jax.enable_x64(dtype == jnp.float64):
      params = {"w": jnp.asarray(x, dtype)}
      state = opt.init(params)
      masked = state.inner_states["sphere"]
      masked = masked._replace(inner_state=masked.inner_state._replace(mu={"w": jnp.asarray(M, dtype)}))
      state = state._replace(inner_states={**state.inner_states, "sphere": masked})
      updates, state = opt.update({"w": jnp.asarray(g, dtype)}, state, params)
      got_x = optax.apply_updates(params, updates)["w"]
      got_m = state.inner_states["sphere"].inner_state.mu["w"]
    np.testing.assert_allclose(got_x, X, atol=tol, err_msg=f"lr={lr}")
    np.testing.assert_allclose(got_m, mom_moved, atol=tol * max(1.0, lr), err_msg=f"lr={lr}")


@pytest.mark.parametrize(
    "make",
    [
        lambda: spherax.adamg(0.1, clip_norm=1.0),
        lambda: spherax.sgdg(0.1),
        lambda: spherax.adagradg(0.1, 0.9, 0.0),
    ],
)
def test_zero_gradients_and_zero_norm_groups_are_finite(make):
  params = {"w": jnp.zeros((3, 2)).at[:, 1].set(1.0), "b": jnp.zeros(2)}
  opt = make()
  state = opt.init(params)
  for grads in (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.ones_like, params)):
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves((params, state)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: spherax.adamg(b1=1.0),
        lambda: spherax.adamg(learning_rate=-0.1),
        lambda: spherax.sgdg(0.1, momentum=-0.5),
        lambda: spherax.adagradg(0.1, decay=1.5, initial_accumulator_value=1.0),
        lambda: spherax.adagradg(0.1, decay=0.9, initial_accumulator_value=-1.0),
    ],
)
def test_bad_arguments_raise_at_construction(make):
  with pytest.raises(ValueError):
    make()


@pytest.mark.parametrize("make", [spherax.adamg, lambda **kw: spherax.adagradg(0.1, 0.9, 1.0, **kw)])
def test_one_element_groups_fail_at_init_naming_the_path(make):
  params = {"layer": {"kernel": jnp.ones((1, 4))}}
  make().init(params)  # the default rule leaves a (1, C) kernel ungrouped
  explicit = {"layer": {"kernel": spherax.groups.per_output()}}
  with pytest.raises(ValueError, match="layer/kernel"):
    make(groups=explicit).init(params)


def test_init_on_shape_structs_with_bfloat16():
  params = {"w": jax.ShapeDtypeStruct((4, 2), jnp.bfloat16), "b": jax.ShapeDtypeStruct((2,), jnp.bfloat16)}
  state = jax.eval_shape(spherax.adamg().init, params)
  sphere = state.inner_states["sphere"].inner_state
  assert sphere.nu["w"].shape == (1, 2) and sphere.nu["w"].dtype == jnp.float32
  assert sphere.mu["w"].dtype == jnp.bfloat16


def test_inject_hyperparams_matches_plain_adamg():
  params = {"w": jnp.asarray(np.random.default_rng(6).normal(size=(4, 3))), "b": jnp.ones(3)}
  grads = {"w": jnp.asarray(np.random.default_rng(7).normal(size=(4, 3))), "b": jnp.ones(3)}
  plain = spherax.adamg(0.1, clip_norm=0.5)
  injected = optax.inject_hyperparams(spherax.adamg)(learning_rate=0.1, clip_norm=0.5)
  want, _ = plain.update(grads, plain.init(params), params)
  got, _ = jax.jit(injected.update)(grads, injected.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)
