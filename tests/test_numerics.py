"""Numerics of every spherax optimizer (issue: acceptance 3).

The params hold a leaf with large groups (``(1024, 2)``: two groups of 1024
elements), a conv kernel and a bias. For every optimizer of the registry of
``test_optax_contract.py``:

* bfloat16 params: updates are bfloat16, per-group statistics float32, and
  the update agrees with the float32 computation on the same bf16 values to
  bfloat16 rounding (the group reductions of 1024 elements run in float32);
* float64 params (``jax.enable_x64``): float64 updates and float64 statistics
  (the compute dtype is float32 *or wider*);
* huge and tiny groups, in float32: grouped params scaled by 1e-20 (``||x||²``
  underflows to 0: the group is treated as a zero group) or 1e15 with O(1)
  gradients, a 1e15 group with the 1e-15 gradient a scale-invariant loss gives
  it (``∇L(ρx) = ∇L(x)/ρ``, Roburin et al., *Spherical Perspective on Learning
  with Normalization Layers*, Neurocomputing 2022, Lemma 1), 1e-20 gradients, and
  1e20 gradients (``||g||²`` overflows float32; ``optax.adam`` stays finite with a
  zero step, and so must every spherax optimizer: norms and dot products are
  overflow-safe in ``spherax.geometry``), keep updates, params and state finite
  for several steps;
* state shapes and dtypes are the same after every step, in every dtype.
"""

import functools
import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

_spec = importlib.util.spec_from_file_location(
    "spherax_test_registry", pathlib.Path(__file__).with_name("test_optax_contract.py")
)
contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contract)

SHAPES = {"big": (1024, 2), "conv": (3, 3, 2, 4), "bias": (4,)}
STAT_SHAPES = {(1, 2), (1, 1, 1, 4)}
NUM_STEPS = 3


@functools.cache
def _optimizer(name):
  """``(opt, jitted step)``: one jitted function per optimizer (retraced per dtype)."""
  opt = contract.make(name)
  return opt, jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), u, s))(
      *opt.update(g, s, p)))


def _run(opt, step, params, grads):
  """``[(params, updates, state)]`` after every step, checking state stability."""
  state0 = opt.init(params)
  state, out = state0, []
  for g in grads:
    params, updates, state = step(params, state, g)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
    out.append((params, updates, state))
  return state0, out


def _cast(t, dtype):
  return jax.tree.map(lambda x: x.astype(dtype), t)


@pytest.mark.parametrize("name", contract.NAMES)
def test_bfloat16_reductions_in_float32(name):
  opt, step = _optimizer(name)
  params = _cast(contract.tree(SHAPES, 0), jnp.bfloat16)
  grads = [_cast(contract.tree(SHAPES, 10 + t), jnp.bfloat16) for t in range(NUM_STEPS)]
  state0, out = _run(opt, step, params, grads)
  for p, u, s in out:
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves((p, u)))
    contract.assert_finite(p, u, s)
  for leaf in jax.tree.leaves(state0):
    if leaf.shape in STAT_SHAPES:
      assert leaf.dtype == jnp.float32, f"{name}: statistic {leaf.shape} in {leaf.dtype}"
  # Same values in float32: the first update agrees to bfloat16 rounding.
  _, want = _run(opt, step, _cast(params, jnp.float32), [_cast(grads[0], jnp.float32)])
  contract.assert_trees_close(out[0][1], want[0][1], 2e-2, f"{name} bf16 vs f32")


@pytest.mark.parametrize("name", contract.NAMES)
def test_float64_stays_float64(name):
  with jax.enable_x64(True):
    opt, step = _optimizer(name)
    params = _cast(contract.tree(SHAPES, 0), jnp.float64)
    grads = [_cast(contract.tree(SHAPES, 10 + t), jnp.float64) for t in range(2)]
    state0, out = _run(opt, step, params, grads)
    for p, u, s in out:
      assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves((p, u)))
      contract.assert_finite(p, u, s)
    for leaf in jax.tree.leaves(state0):
      if leaf.shape in STAT_SHAPES:
        assert leaf.dtype == jnp.float64, f"{name}: statistic {leaf.shape} in {leaf.dtype}"


# (params scale, gradient scale): tiny and huge groups with O(1) gradients, a huge
# group with the gradient a scale-invariant loss gives it, and vanishing gradients.
SCALES = {
    "tiny_params": (1e-20, 1.0),
    "huge_params": (1e15, 1.0),
    "huge_params_invariant_grads": (1e15, 1e-15),
    "tiny_grads": (1.0, 1e-20),
    "huge_grads": (1.0, 1e20),
}


@pytest.mark.parametrize("name", contract.NAMES)
@pytest.mark.parametrize("case", sorted(SCALES))
def test_huge_and_tiny_norms_stay_finite(name, case):
  param_scale, grad_scale = SCALES[case]
  opt, step = _optimizer(name)
  base = contract.tree(SHAPES, 0)
  params = jax.tree.map(lambda x: x * param_scale if x.ndim >= 2 else x, base)
  grads = [
      jax.tree.map(lambda g: g * grad_scale if g.ndim >= 2 else g, contract.tree(SHAPES, 10 + t))
      for t in range(NUM_STEPS)
  ]
  _, out = _run(opt, step, params, grads)
  for t, (p, u, s) in enumerate(out):
    for what, tree_ in (("params", p), ("updates", u), ("state", s)):
      for leaf in jax.tree.leaves(tree_):
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
          continue
        # optax.adam's own second moment is +inf at |g| ~ 1e20: state may be +inf, never NaN
        ok = ~jnp.isnan(leaf) & (leaf > -jnp.inf) if what == "state" and case == "huge_grads" \
            else jnp.isfinite(leaf)
        assert bool(jnp.all(ok)), f"{name} {case} step {t}: non-finite {what} leaf {leaf.shape}"


EMPTY = {"a": jnp.zeros((5, 0)), "b": jnp.zeros((0, 5)), "c": jnp.zeros((0,)), "w": jnp.ones((3, 4))}


@pytest.mark.parametrize("name", contract.NAMES)
def test_empty_leaves_pass_through_unchanged(name):
  """Leaves with a zero-size axis: zero-size updates, state shapes kept, no error or NaN."""
  opt = contract.make(name)
  state0 = opt.init(EMPTY)
  updates, state = opt.update(EMPTY, state0, EMPTY)
  for key in ("a", "b", "c"):
    assert updates[key].shape == EMPTY[key].shape
  chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
  contract.assert_finite(updates, state)
