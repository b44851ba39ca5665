"""The shared exactness problem for every optimizer (issue: acceptance 1).

A conv kernel, a dense kernel and a bias in Flax layout; 50 steps of seeded
gradients, every other one made orthogonal to the current weights per output
unit (as a scale-invariant loss would give). A test runs a spherax optimizer
with :func:`run_spherax` and its own NumPy re-derivation of the papers' update rules with
:func:`run_numpy` on the same gradient stream, then compares with
:meth:`Problem.assert_close`.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

NUM_STEPS = 50
SHAPES = {
    "conv": {"kernel": (3, 3, 4, 6)},
    "dense": {"kernel": (12, 5), "bias": (5,)},
}


def _initial_params(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda shape: rng.normal(size=shape),
      SHAPES,
      is_leaf=lambda s: isinstance(s, tuple),
  )


def np_groups(x: np.ndarray) -> np.ndarray:
  """Per-output-unit groups in Flax layout: the columns of a ``(d, n)`` view."""
  return x.reshape(-1, x.shape[-1])


def _gradient(step: int, path: str, x: np.ndarray) -> np.ndarray:
  seed = (step * 7919 + sum(map(ord, path))) % (2**31)
  g = np.random.default_rng(seed).normal(size=x.shape)
  if step % 2 == 0 and x.ndim >= 2:  # orthogonal to each output unit's weights
    gx, xx = np_groups(g), np_groups(x)
    coef = (gx * xx).sum(0) / (xx * xx).sum(0)
    g = (gx - coef * xx).reshape(x.shape)
  return g


def gradients(step: int, params: dict) -> dict:
  """The seeded gradient of ``step`` at ``params`` (a NumPy float64 pytree)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = [
      _gradient(step, jax.tree_util.keystr(p), np.asarray(x, np.float64)) for p, x in flat
  ]
  return jax.tree.unflatten(treedef, out)


@dataclasses.dataclass
class Problem:
  params: dict
  num_steps: int = NUM_STEPS

  def run_spherax(self, opt: optax.GradientTransformation, dtype=jnp.float64) -> list[dict]:
    """Runs ``opt`` for ``num_steps``; returns the params after every step (NumPy f64)."""
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), self.params)
    state = opt.init(params)

    @jax.jit
    def step(params, state, grads):
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    trajectory = []
    for t in range(self.num_steps):
      grads = jax.tree.map(
          lambda g: jnp.asarray(g, dtype), gradients(t, jax.tree.map(np.asarray, params))
      )
      params, state = step(params, state, grads)
      trajectory.append(jax.tree.map(lambda x: np.asarray(x, np.float64), params))
    return trajectory

  def run_numpy(self, step_fn: Callable, init_fn: Callable) -> list[dict]:
    """Runs a NumPy reference: ``state = init_fn(params)``,
    ``params, state = step_fn(t, params, grads, state)`` with ``t`` from 0."""
    params = jax.tree.map(np.array, self.params)
    state = init_fn(params)
    trajectory = []
    for t in range(self.num_steps):
      params, state = step_fn(t, params, gradients(t, params), state)
      trajectory.append(jax.tree.map(np.array, params))
    return trajectory


  @staticmethod
  def assert_close(got: list[dict], want: list[dict], rtol: float) -> None:
    """Every step's params agree to ``rtol`` relative error (per leaf, max-norm)."""
    _assert_trajectories_close(got, want, rtol)


def _assert_trajectories_close(got: list[dict], want: list[dict], rtol: float) -> None:
  assert len(got) == len(want)
  for t, (g, w) in enumerate(zip(got, want)):
    for path, gl, wl in zip(
        (jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(w)[0]),
        jax.tree.leaves(g),
        jax.tree.leaves(w),
    ):
      err = np.max(np.abs(gl - wl)) / max(np.max(np.abs(wl)), 1e-30)
      assert err <= rtol, f"step {t}, {path}: relative error {err:.3g} > {rtol:g}"


@pytest.fixture
def problem() -> Problem:
  return Problem(_initial_params())
