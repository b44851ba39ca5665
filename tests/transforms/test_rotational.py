"""The rotational wrapper transform: other group specs, identity direction, optax plumbing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
