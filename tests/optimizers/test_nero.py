"""Nero against a NumPy re-derivation of REFERENCE §6."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spherax
from tests.optimizers.conftest import np_groups


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
        v = b2 * s["v"] + (1 - b2) * (gv**2).sum(0)
        xv = xv - lr * s["scale"] * gv / np.sqrt(v / (1 - b2 ** (t + 1)))
        xv = xv - xv.mean(0)
        xv = xv / np.linalg.norm(xv, axis=0)
        out.append((xv.reshape(x.shape), {**s, "v": v}))
      else:
        if t == 0:
          scale = np.abs(x).mean()
          s = {"v": np.zeros_like(x), "scale": scale if scale != 0 else 0.01}
        v = b2 * s["v"] + (1 - b2) * g**2
        x = x - lr * s["scale"] * g / np.sqrt(v / (1 - b2 ** (t + 1)))
        out.append((x, {**s, "v": v}))
    return (jax.tree.unflatten(treedef, [o[0] for o in out]),
            jax.tree.unflatten(treedef, [o[1] for o in out]))

  return init_fn, step_fn


def schedule(count):
  return 0.02 * 0.98**count


def test_exact_against_numpy_float64(problem):
  with jax.enable_x64(True):
    got = problem.run_spherax(spherax.nero(schedule), jnp.float64)
  init_fn, step_fn = np_nero(schedule)
  problem.assert_close(got, problem.run_numpy(step_fn, init_fn), 1e-5)


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


@pytest.mark.parametrize("make", [lambda: spherax.nero(-1.0), lambda: spherax.nero(b2=1.0)])
def test_bad_arguments_raise(make):
  with pytest.raises(ValueError):
    make()
