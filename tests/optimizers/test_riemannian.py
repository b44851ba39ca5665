"""AdamG, SGDG and AdaGradG against NumPy re-derivations of Cho & Lee, *Riemannian approach to batch normalization*, NeurIPS 2017, and Roburin et al. 2022 Theorem 4.

References:

* Roburin et al. 2022: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382.
"""

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
  """exp_Y(D) and M parallel-transported along D (Cho & Lee 2017)."""
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
    "adamg": (lambda: spherax.adamg(LR, B1, B2, EPS, l2_regularization=WD), lambda: _numpy_adamg(None)),
    "sgdg": (lambda: spherax.sgdg(LR, MOM, l2_regularization=WD), _numpy_sgdg),
    "adagradg": (lambda: spherax.adagradg(AG_LR, AG_BETA, AG_V0), _numpy_adagradg),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_numpy_and_keeps_unit_norms(problem, name):
  make, reference = CASES[name]
  want = problem.run_numpy(*reference())
  with jax.enable_x64(True):
    got = problem.run_spherax(make())
  problem.assert_close(got, want, 1e-10)
  _assert_unit_groups(got)
  got32 = problem.run_spherax(make(), dtype=jnp.float32)
  problem.assert_close(got32, want, 1e-4)
  _assert_unit_groups(got32)


def test_adamg_clip_matches_numpy(problem):
  want = problem.run_numpy(*_numpy_adamg(0.5))
  with jax.enable_x64(True):
    got = problem.run_spherax(spherax.adamg(LR, B1, B2, EPS, l2_regularization=WD, clip_norm=0.5))
  problem.assert_close(got, want, 1e-10)


def test_sgdg_momentum_stays_tangent():
  params = {"w": jnp.array(np.random.default_rng(3).normal(size=(4, 3)))}
  opt = spherax.sgdg(0.3, 0.9)
  state = opt.init(params)
  for k in range(3):
    grads = {"w": jnp.array(np.random.default_rng(k).normal(size=(4, 3)))}
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  mom = state.mu["w"]
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
      state = state._replace(mu={"w": jnp.asarray(M, dtype)})
      updates, state = opt.update({"w": jnp.asarray(g, dtype)}, state, params)
      got_x = optax.apply_updates(params, updates)["w"]
      got_m = state.mu["w"]
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
        lambda: spherax.adamg(0.1, b1=1.0),
        lambda: spherax.adamg(learning_rate=-0.1),
        lambda: spherax.sgdg(0.1, momentum=-0.5),
        lambda: spherax.adagradg(0.1, decay=1.5, initial_accumulator_value=1.0),
        lambda: spherax.adagradg(0.1, decay=0.9, initial_accumulator_value=-1.0),
    ],
)
def test_bad_arguments_raise_at_construction(make):
  with pytest.raises(ValueError):
    make()


@pytest.mark.parametrize("make", [lambda **kw: spherax.adamg(0.1, **kw), lambda **kw: spherax.adagradg(0.1, 0.9, 1.0, **kw)])
def test_one_element_groups_fail_at_init_naming_the_path(make):
  params = {"layer": {"kernel": jnp.ones((1, 4))}}
  make().init(params)  # the default rule leaves a (1, C) kernel ungrouped
  explicit = {"layer": {"kernel": spherax.groups.per_output()}}
  with pytest.raises(ValueError, match="layer/kernel"):
    make(groups=explicit).init(params)


def test_init_on_shape_structs_with_bfloat16():
  params = {"w": jax.ShapeDtypeStruct((4, 2), jnp.bfloat16), "b": jax.ShapeDtypeStruct((2,), jnp.bfloat16)}
  state = jax.eval_shape(spherax.adamg(0.1).init, params)
  sphere = state
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


@pytest.mark.parametrize("make", [
    lambda **kw: spherax.adamg(0.1, **kw), lambda **kw: spherax.sgdg(0.1, **kw),
    lambda **kw: spherax.adagradg(0.1, 0.9, 1.0, **kw)])
def test_integer_leaves_are_left_alone(make):
  params = {"ids": jnp.arange(6).reshape(3, 2), "w": jnp.ones((3, 2))}
  opt = make()
  grads = {"ids": jnp.zeros((3, 2), jnp.int32), "w": jnp.ones((3, 2))}
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_array_equal(optax.apply_updates(params, updates)["ids"], params["ids"])
  with pytest.raises(ValueError, match="'ids'"):
    make(groups={"ids": spherax.groups.per_output(), "w": None}).init(params)


def test_adamg_and_sgdg_l2_mask():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "c": jnp.ones(2)}
  zero = jax.tree.map(jnp.zeros_like, params)
  for make in (spherax.adamg, spherax.sgdg):
    opt = make(0.1, l2_regularization=0.5, mask={"w": True, "b": True, "c": False})
    updates, _ = opt.update(zero, opt.init(params), params)
    assert np.all(np.asarray(updates["b"]) < 0)
    np.testing.assert_array_equal(updates["c"], 0.0)


@pytest.mark.parametrize("make", [spherax.adamg, spherax.sgdg,
                                  lambda lr: spherax.adagradg(lr, 0.9, 1.0)])
def test_one_count_schedule_reads_the_step(make):
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  seen = []
  opt = make(lambda count: (seen.append(count), 0.1)[1])
  state = opt.init(params)
  assert int(optax.tree.get(state, "count")) == 0
  _, state = opt.update(params, state, params)
  assert int(optax.tree.get(state, "count")) == 1 and [int(c) for c in seen] == [0]


def _unit_norm_error(opt, x, grads):
  params = {"w": x}
  updates, _ = opt.update({"w": grads}, opt.init(params), params)
  new = np.asarray(optax.apply_updates(params, updates)["w"], np.float64)
  return np.abs(np.linalg.norm(new, axis=0) - 1).max()


UNIT_OPTS = {
    "adamg": lambda: spherax.adamg(0.1),
    "sgdg": lambda: spherax.sgdg(0.1),
    "adagradg": lambda: spherax.adagradg(0.1, 0.9, 1.0),
}


@pytest.mark.parametrize("name", sorted(UNIT_OPTS))
@pytest.mark.parametrize("scale, dtype", [(1e7, jnp.float32), (100.0, jnp.bfloat16)])
def test_far_start_is_exact_after_project_params(name, scale, dtype):
  """From entries of 1e7 (f32) / 100 (bf16), project_params then one step lands on the
  unit sphere to the dtype's rounding; the additive jump alone cannot (module docstring)."""
  rng = np.random.default_rng(12)
  x = jnp.asarray(rng.normal(size=(16, 4)) * scale, dtype)
  g = jnp.asarray(rng.normal(size=(16, 4)), dtype)
  eps = float(jnp.finfo(dtype).eps)
  start = spherax.project_params({"w": x})["w"]
  assert start.dtype == dtype
  np.testing.assert_allclose(np.linalg.norm(np.asarray(start, np.float64), axis=0), 1, atol=4 * eps)
  assert _unit_norm_error(UNIT_OPTS[name](), start, g) <= 8 * eps


@pytest.mark.parametrize("name", sorted(UNIT_OPTS))
def test_bfloat16_holds_the_unit_norm_for_20k_steps(name):
  """20,000 steps on a tiny bf16 leaf in one lax.scan: every group stays on the unit sphere."""
  opt = UNIT_OPTS[name]()
  x0 = spherax.project_params(
      {"w": jnp.asarray(np.random.default_rng(13).normal(size=(9, 3)), jnp.bfloat16)})
  keys = jax.random.split(jax.random.key(0), 20_000)

  @jax.jit
  def run(params):
    def step(carry, key):
      p, s = carry
      g = {"w": jax.random.normal(key, (9, 3), jnp.bfloat16)}
      u, s = opt.update(g, s, p)
      p = optax.apply_updates(p, u)
      err = jnp.abs(jnp.linalg.norm(p["w"].astype(jnp.float32), axis=0) - 1).max()
      return (p, s), err

    return jax.lax.scan(step, (params, opt.init(params)), keys)[1]

  errors = np.asarray(run(x0))
  assert errors.max() <= 2e-2, f"max |‖x‖−1| = {errors.max():.3g} (bf16 eps 7.8e-3)"
  assert errors[-1000:].max() <= 2e-2


def test_adagradg_initial_accumulator_per_group_forms():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  for value, want in ((np.float64(2.0), [[2.0, 2.0]]), (jnp.asarray(2.0), [[2.0, 2.0]]),
                      ({"w": jnp.array([[1.0, 4.0]]), "b": None}, [[1.0, 4.0]]),
                      (lambda p: {"w": 3.0, "b": None}, [[3.0, 3.0]])):
    state = spherax.adagradg(0.1, 0.9, value).init(params)
    np.testing.assert_array_equal(state.nu["w"], want)
  with pytest.raises(ValueError, match="'w'.*\\(1, 2\\)"):
    spherax.adagradg(0.1, 0.9, {"w": jnp.ones(3), "b": None}).init(params)
  # per-group v0 = 1 and 4: the first step's size is η/sqrt(v0) per group
  opt = spherax.adagradg(1.0, 0.9, {"w": jnp.array([[1.0, 4.0]]), "b": None})
  x = {"w": jnp.array([[1.0, 1.0], [0.0, 0.0]]), "b": jnp.ones(2)}
  g = {"w": jnp.array([[0.0, 0.0], [-1.0, -1.0]]), "b": jnp.zeros(2)}
  new = optax.apply_updates(x, opt.update(g, opt.init(x), x)[0])["w"]
  np.testing.assert_allclose(new[1] / new[0], [1.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize("scale", [1e4, 1e7])
def test_adagradg_far_start_is_exact_from_the_second_step(scale):
  """The first step from radius r lands only as close as x + (x' − x) rounds in float32
  (module docstring); AdaGradG restarts from the point it has, so step 2 is exact."""
  rng = np.random.default_rng(12)
  params = {"w": jnp.asarray(rng.normal(size=(16, 4)) * scale, jnp.float32)}
  opt = spherax.adagradg(0.1, 0.9, 1.0)
  state = opt.init(params)
  errors = []
  for k in range(3):
    grads = {"w": jnp.asarray(np.random.default_rng(20 + k).normal(size=(16, 4)), jnp.float32)}
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    errors.append(np.abs(np.linalg.norm(np.asarray(params["w"], np.float64), axis=0) - 1).max())
  eps = float(jnp.finfo(jnp.float32).eps)
  assert errors[0] > 8 * eps  # the first landing is off by the rounding of x + u near x
  assert max(errors[1:]) <= 8 * eps


def test_sgdg_steps_are_geometry_exp_map_and_transport_along():
  """SGDG's closed-form per-group coefficients equal the geometry they stand for: Cho &
  Lee 2017, Algorithm 1, composed from ``spherax.geometry`` (tangent projection,
  ``exp_map``, ``transport_along``), three steps in float64 with large rotations."""
  from spherax import geometry, groups
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    d, k, lr, mu = 6, 3, 0.7, 0.9
    layout = groups.per_output().layout((d, k))
    x = rng.normal(size=(d, k))
    x = jnp.asarray(x / np.linalg.norm(x, axis=0))
    opt = spherax.sgdg(lr, momentum=mu)
    state = opt.init({"w": x})
    ref_x, ref_m = x, jnp.zeros_like(x)
    for _ in range(3):
      g = jnp.asarray(rng.normal(size=(d, k)))
      u, state = opt.update({"w": g}, state, {"w": x})
      x = x + u["w"]
      h = geometry.tangent(g, ref_x, layout)
      delta = mu * ref_m - lr * h
      new_x = geometry.exp_map(ref_x, delta, layout)
      ref_m = geometry.transport_along(delta, ref_x, delta, layout)
      ref_x = new_x
      np.testing.assert_allclose(x, ref_x, atol=1e-12)
      np.testing.assert_allclose(state.mu["w"], ref_m, atol=1e-12)


def test_sgdg_no_move_where_the_rotation_angle_overflows():
  """Where ``θ² = ||m'||²`` is past float32's range the group does not move and keeps its
  moment (``x' = y``, moment ``m' = μ m − η h``, finite), while the other group steps
  normally (module docstring, ``_geodesic_coefficients``)."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 2))
  g = rng.normal(size=(4, 2))
  Y, H = _tangent(x, g, None)
  m = np.zeros((4, 2))
  m[:, 0] = 1e20 * (Y[:, 1] - _dots(Y[:, :1], Y[:, 1:2]) * Y[:, 0])  # tangent at y_0, ||m||² = inf
  m[:, 1] = 0.1 * (Y[:, 0] - _dots(Y[:, 1:2], Y[:, :1]) * Y[:, 1])
  opt = spherax.sgdg(0.1, 0.9)
  params = {"w": jnp.asarray(x, jnp.float32)}
  state = opt.init(params)._replace(mu={"w": jnp.asarray(m, jnp.float32)})
  updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
  new_x = np.asarray(optax.apply_updates(params, updates)["w"])
  new_m = np.asarray(state.mu["w"])
  assert np.all(np.isfinite(new_x)) and np.all(np.isfinite(new_m))
  np.testing.assert_allclose(new_x[:, 0], Y[:, 0], atol=1e-6)  # no move
  np.testing.assert_allclose(new_m[:, 0], 0.9 * m[:, 0] - 0.1 * H[:, 0], rtol=1e-6)
  mom = 0.9 * m[:, 1] - 0.1 * H[:, 1]
  want_x, want_m = _sphere_move(Y[:, 1:2], mom[:, None], mom[:, None])
  np.testing.assert_allclose(new_x[:, 1], want_x[:, 0], atol=1e-5)
  np.testing.assert_allclose(new_m[:, 1], want_m[:, 0], atol=1e-5)
