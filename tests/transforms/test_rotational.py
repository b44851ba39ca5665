"""The rotational wrapper transform: other group specs, identity direction, optax plumbing."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax
from spherax.transforms.rotational import rotational_wrapper


def np_wrapper_whole(x, grads, eta_r, zeta):
  """Kosson et al. 2024 (ICML), Algorithm 1, with one group = the whole tensor and Δg = g."""
  n = np.linalg.norm(x)
  x = x - x.mean()
  x = x * n / np.linalg.norm(x)
  s, out = 0.0, []
  for t, g in enumerate(grads):
    d = g - g.mean()
    d = d - x * (d * x).sum() / n**2
    s = zeta * s + (1 - zeta) * (d * d).sum()
    x = x - eta_r * n * d / (np.sqrt(s / (1 - zeta ** (t + 1))) + 1e-8)
    x = x * n / np.linalg.norm(x)
    out.append(x)
  return out


def test_whole_tensor_group_identity_direction():
  rng = np.random.default_rng(0)
  x0 = rng.normal(size=(4, 3))
  grads = [rng.normal(size=(4, 3)) for _ in range(5)]
  rules = spherax.groups.by_path({"": spherax.groups.whole()})
  with jax.enable_x64(True):
    opt = rotational_wrapper(optax.identity(), optax.sgd(0.1), 0.1, lambda lr: 0.05,
                             rms_decay=0.5, groups=rules)
    x = {"w": jnp.asarray(x0)}
    state = opt.init(x)
    got = []
    for g in grads:
      u, state = opt.update({"w": jnp.asarray(g)}, state, x)
      x = optax.apply_updates(x, u)
      got.append(np.asarray(x["w"]))
  for a, b in zip(got, np_wrapper_whole(x0, grads, 0.05, 0.5)):
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_generic_rotational_matches_rv_adamw():
  """spherax.rotational with Adam's direction and AdamW's rate is RV-AdamW."""
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    params = {"w": jnp.asarray(rng.normal(size=(6, 2))), "b": jnp.asarray(rng.normal(size=2))}
    lr, wd = 1e-2, 0.1
    a = spherax.rv_adamw(lr, weight_decay=wd)
    b = spherax.rotational(optax.scale_by_adam(), lr,
                           lambda l: jnp.sqrt(2 * l * wd * 0.1 / 1.9), weight_decay=wd)
    sa, sb, xa, xb = a.init(params), b.init(params), params, params
    for _ in range(3):
      g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
      ua, sa = a.update(g, sa, xa)
      ub, sb = b.update(g, sb, xb)
      xa, xb = optax.apply_updates(xa, ua), optax.apply_updates(xb, ub)
    for la, lb in zip(jax.tree.leaves(xa), jax.tree.leaves(xb)):
      np.testing.assert_allclose(la, lb, rtol=1e-12)


def test_inside_partition_with_masked_nodes():
  params = {"w": jnp.ones((3, 2)) + jnp.eye(3, 2), "v": jnp.ones((2, 2)), "b": jnp.zeros(2)}
  labels = {"w": "rv", "v": "sgd", "b": "rv"}
  opt = optax.partition({"rv": spherax.rv_sgdm(0.1, weight_decay=1e-3), "sgd": optax.sgd(0.5)},
                        labels)
  g = jax.tree.map(jnp.ones_like, params)
  u, _ = opt.update(g, opt.init(params), params)
  np.testing.assert_allclose(u["v"], -0.5)
  new_w = params["w"] + u["w"]
  np.testing.assert_allclose(jnp.linalg.norm(new_w, axis=0),
                             jnp.linalg.norm(params["w"], axis=0), rtol=1e-6)
  # the bias follows SGDM with coupled L2: -lr (g + λx), x = 0
  np.testing.assert_allclose(u["b"], -0.1)


def test_vanishing_direction_leaves_the_start_in_place():
  """Δg constant per group: the centred Δ is exactly 0, so the first update lands on
  the centred, rescaled start and stays there (no rounding amplified by 1/eps)."""
  rng = np.random.default_rng(3)
  x0 = rng.normal(size=(6, 3)).astype(np.float32)
  g = np.tile(np.array([0.3, -1.7, 2.9], np.float32), (6, 1))
  start = x0 - x0.mean(axis=0)
  start = start * np.linalg.norm(x0, axis=0) / np.linalg.norm(start, axis=0)
  opt = rotational_wrapper(optax.identity(), optax.sgd(0.1), 0.1, lambda lr: 0.05)
  x = {"w": jnp.asarray(x0)}
  state = opt.init(x)
  for _ in range(2):
    u, state = opt.update({"w": jnp.asarray(g)}, state, x)
    x = optax.apply_updates(x, u)
    np.testing.assert_allclose(np.asarray(x["w"]), start, atol=1e-6)


def _centred_start(x):
  """Algorithm 1's start: each column centred and rescaled to its norm."""
  xc = x - x.mean(axis=0)
  return xc * np.linalg.norm(x, axis=0) / np.linalg.norm(xc, axis=0)


def test_rotation_scale_first_step_angle_is_the_closed_form():
  """Per group ``tan θ = s η̂_r ||Δ|| / (||Δ|| + eps)`` at the first step (``Ŝ = ||Δ||²``),
  ``s`` the group's ``rotation_scale`` (Kosson et al. 2024, Appendix N); ``s = 0`` stays put."""
  rng = np.random.default_rng(5)
  x0, g = rng.normal(size=(2, 6, 4))
  scale = np.array([[1.0, 0.1, 10.0, 0.0]])
  eta = 0.05
  with jax.enable_x64(True):
    opt = rotational_wrapper(optax.identity(), optax.sgd(0.1), 0.1, lambda lr: eta,
                             rotation_scale={"w": jnp.asarray(scale)})
    x = {"w": jnp.asarray(x0)}
    u, _ = opt.update({"w": jnp.asarray(g)}, opt.init(x), x)
    new = np.asarray(x["w"] + u["w"])
  start = _centred_start(x0)
  d = g - g.mean(axis=0)
  d = d - start * (d * start).sum(0) / (start * start).sum(0)
  size = np.linalg.norm(d, axis=0)
  along = (start * new).sum(0) / (start * start).sum(0)
  tan = np.linalg.norm(new - along * start, axis=0) / (along * np.linalg.norm(start, axis=0))
  debias = float(np.float32(1) - np.float32(0.99))  # ζ's bias correction is float32
  rms = np.sqrt((1 - 0.99) * size**2 / debias)
  np.testing.assert_allclose(tan, scale[0] * eta * size / (rms + 1e-8), rtol=1e-10, atol=1e-13)
  np.testing.assert_allclose(np.linalg.norm(new, axis=0), np.linalg.norm(x0, axis=0), rtol=1e-12)


def test_rotation_scale_one_is_the_unscaled_trajectory_bit_for_bit():
  """``rotation_scale`` 1 (a float, a pytree, a function of params) changes nothing."""
  rng = np.random.default_rng(6)
  params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
           for _ in range(3)]
  ones = {"w": jnp.ones((1, 3)), "b": None}
  variants = [None, 1.0, ones, lambda p: ones]
  runs = []
  for scale in variants:
    opt = spherax.rv_adamw(1e-2, weight_decay=0.1, rotation_scale=scale)
    x, state = params, opt.init(params)
    for g in grads:
      u, state = opt.update(g, state, x)
      x = optax.apply_updates(x, u)
    runs.append((x, state))
  for x, state in runs[1:]:
    for a, b in zip(jax.tree.leaves((x, state)), jax.tree.leaves(runs[0])):
      np.testing.assert_array_equal(a, b)


def test_rotation_scale_bad_values_raise():
  params = {"w": jnp.ones((4, 3)) + jnp.eye(4, 3), "b": jnp.zeros(3)}
  with pytest.raises(ValueError, match="rotation_scale"):
    spherax.rv_sgdm(0.1, rotation_scale=-1.0)
  for bad, match in (({"w": jnp.ones((1, 2)), "b": None}, "'w'.*per-group shape"),
                     ({"w": -jnp.ones((1, 3)), "b": None}, "'w' must be >= 0"),
                     ([1.0], "pytree like params")):
    with pytest.raises(ValueError, match=match):
      spherax.rv_sgdm(0.1, rotation_scale=bad).init(params)


def test_one_count_whatever_the_inner_transforms_count():
  """The state's only ``count`` is the step; inner counts keep their own meaning under
  the name ``inner_count`` (``optax.apply_every``'s is the step modulo k; a nested
  ``inject_hyperparams`` state holds two), and the inner transforms behave as alone."""
  rng = np.random.default_rng(8)
  params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
  every = optax.chain(optax.sgd(0.1), optax.apply_every(k=2))
  direction = optax.inject_hyperparams(optax.adam)(learning_rate=1.0)
  opt = rotational_wrapper(direction, every, 0.1, lambda lr: 0.05)
  state, alone = opt.init(params), every.init({"b": params["b"]})
  for t in range(3):
    g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    u, state = opt.update(g, state, params)
    u_alone, alone = every.update({"b": g["b"]}, alone)
    np.testing.assert_array_equal(u["b"], u_alone["b"])
    assert int(optax.tree.get(state, "count")) == t + 1
  inner = sorted(int(c) for c in jax.tree.leaves(
      [v for _, v in optax.tree.get_all_with_path(state, "inner_count")]))
  assert inner == [1, 3, 3]  # apply_every: 3 mod 2; inject_hyperparams and its adam: 3


def test_leaves_of_one_shape_share_one_traced_rule():
  """The per-leaf rule is traced and lowered once per (shape, layout), whatever the
  leaf's path: 5 leaves of one shape and 3 of another lower to two copies of each
  function, called once per leaf. The centred start is built only for a direction that
  reads params (Adam + L2's ``g + λx_s``; not AdamW's)."""
  params = {f"a{i}": jnp.ones((3, 4)) for i in range(5)}
  params |= {f"b{i}": jnp.ones((2, 5)) for i in range(3)}
  for opt, names in ((spherax.rv_adam_l2(1e-3, l2_regularization=0.1), ("_start", "_rotate")),
                     (spherax.rv_adamw(1e-3, weight_decay=0.1), ("_rotate",))):
    text = jax.jit(opt.update).lower(params, opt.init(params), params).as_text()
    assert ("@_start" in text) == ("_start" in names)
    for name in names:
      defined = re.findall(rf"func\.func private @({name}(?:_\d+)?)\(", text)
      assert len(defined) == 2, defined
      assert sum(text.count(f"call @{d}(") for d in defined) == 8
