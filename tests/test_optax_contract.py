"""The optax contract, checked for every spherax optimizer (issue: acceptance 3).

One registry, :data:`CONFIGS`, names every optimizer with small but active
hyperparameters (non-zero weight decay where it applies); :func:`make` builds
it for a learning rate (a float or a schedule). The sharding and numerics
batteries load this registry too.

Each optimizer runs on a tiny Flax-layout pytree (a conv kernel, a dense
kernel, a bias). Compiles are shared: :func:`_reference` jits one plain step
per optimizer and every test that needs the plain update on float32 trees of
the same shapes reuses that executable. The checks:

* the plain step is traced once over several calls (no recompilation) and the
  state keeps its shapes and dtypes;
* ``optax.inject_hyperparams`` gives the same trajectory with every numeric
  hyperparameter injected as an array;
* a schedule as learning rate: the first step equals the constant-rate step
  (optax evaluates ``schedule(count)`` with ``count = 0`` first), a halved rate
  at the second step changes it;
* extra keyword arguments (``loss=``, ``foo=``) are accepted and ignored;
* ``optax.partition`` / ``optax.masked`` (the grouped leaves under the spherical
  optimizer; every optimizer here acts leaf by leaf, so the grouped leaves get
  exactly the updates they get in the full tree) and ``optax.MultiSteps`` (two
  micro-steps = one step on the mean gradient);
* bfloat16 params: bfloat16 updates, float32 per-group statistics in the state,
  and the update agrees with the float32 computation on the same values;
* ``init`` on ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape`` and directly);
* zero-norm groups and zero gradients give finite updates and states.
"""

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax

# name -> (exported function, learning rate, keyword hyperparameters).
CONFIGS = {
    "adams": ("adams", 1e-2, dict(b1=0.9, b2=0.99, eps=1e-8, l2_regularization=1e-3)),
    "adamsrt": ("adamsrt", 1e-2, dict(b1=0.9, b2=0.99, eps=1e-8, l2_regularization=1e-3)),
    "adamsrt_parallel": (
        "adamsrt",
        1e-2,
        dict(b1=0.9, b2=0.99, eps=1e-8, l2_regularization=1e-3, transport="parallel"),
    ),
    "sgdmrt": ("sgdmrt", 0.1, dict(momentum=0.9, l2_regularization=1e-3)),
    "adamg": ("adamg", 1e-2, dict(b1=0.9, b2=0.99, eps=1e-8, l2_regularization=1e-3)),
    "sgdg": ("sgdg", 0.1, dict(momentum=0.9, l2_regularization=1e-3)),
    "adagradg": ("adagradg", 0.1, dict(decay=0.99, initial_accumulator_value=1.0)),
    "adamp": ("adamp", 1e-2, dict(b1=0.9, b2=0.99, eps=1e-8, weight_decay=1e-2)),
    "sgdp": ("sgdp", 0.1, dict(momentum=0.9, weight_decay=1e-3)),
    "nero": ("nero", 1e-2, dict()),
    "rotational": (
        "rotational",
        1e-2,
        dict(direction=optax.scale_by_adam(b1=0.9, b2=0.99), angular_rate=0.02, weight_decay=1e-2),
    ),
    "rv_adamw": ("rv_adamw", 1e-2, dict(b1=0.9, b2=0.99, eps=1e-8, weight_decay=1e-2)),
    "rv_sgdm": ("rv_sgdm", 0.1, dict(momentum=0.9, weight_decay=1e-3)),
    "rv_lion": ("rv_lion", 1e-3, dict(b1=0.9, b2=0.99, weight_decay=1.0)),
    "rv_adam_l2": ("rv_adam_l2", 1e-2, dict(b1=0.9, b2=0.99, eps=1e-8, l2_regularization=1e-3)),
}
NAMES = sorted(CONFIGS)
NUM_STEPS = 3
SHAPES = {"conv": {"kernel": (3, 3, 2, 4)}, "dense": {"kernel": (6, 3), "bias": (3,)}}
# The per-group statistic shapes of the grouped leaves (default rule: last axis).
STAT_SHAPES = {(1, 1, 1, 4), (1, 3)}


def _factory(name: str):
  """``(function, learning rate, kwargs, static_args)``; a missing export is a failure."""
  export, lr, kwargs = CONFIGS[name]
  fn = getattr(spherax, export, None)
  assert fn is not None, f"spherax.{export} is not exported (removed?)"
  params = inspect.signature(fn).parameters
  unknown = set(kwargs) - set(params)
  assert not unknown, f"spherax.{export} does not accept {sorted(unknown)}"
  static = tuple(
      k for k, v in kwargs.items() if not isinstance(v, (int, float)) or isinstance(v, bool)
  )
  return fn, lr, kwargs, static


def make(name: str, learning_rate=None, inject: bool = False) -> optax.GradientTransformation:
  """The registry: optimizer ``name`` at ``learning_rate`` (default: its own).

  With ``inject=True`` it is built through ``optax.inject_hyperparams`` (every
  numeric hyperparameter becomes an array in the state).
  """
  fn, lr, kwargs, static = _factory(name)
  lr = lr if learning_rate is None else learning_rate
  if inject:
    return optax.inject_hyperparams(fn, static_args=static)(learning_rate=lr, **kwargs)
  return fn(learning_rate=lr, **kwargs)


def default_learning_rate(name: str) -> float:
  return CONFIGS[name][1]


def tree(shapes, seed: int, dtype=jnp.float32):
  """A seeded normal pytree with the given leaf shapes."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s), dtype),
      shapes,
      is_leaf=lambda s: isinstance(s, tuple),
  )


def assert_finite(*trees) -> None:
  for t in trees:
    for leaf in jax.tree.leaves(t):
      if jnp.issubdtype(leaf.dtype, jnp.inexact):
        assert bool(jnp.all(jnp.isfinite(leaf))), f"non-finite leaf {leaf}"


def assert_trees_close(got, want, rtol: float, what: str = "") -> None:
  """Per leaf: ``max|got - want| <= rtol * max|want|`` (plus a tiny absolute floor)."""
  for i, (g, w) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)):
    g = np.asarray(g, np.float64)
    w = np.asarray(w, np.float64)
    assert g.shape == w.shape
    err = np.max(np.abs(g - w)) if g.size else 0.0
    scale = np.max(np.abs(w)) if w.size else 0.0
    assert err <= rtol * scale + 1e-30, f"{what} leaf {i}: error {err:.3g} vs scale {scale:.3g}"


PARAMS0 = tree(SHAPES, 0)
GRADS = [tree(SHAPES, 100 + t) for t in range(NUM_STEPS)]


@functools.cache
def _reference(name: str):
  """``(opt, jitted step, trace log)`` for the plain optimizer (compiled once)."""
  opt = make(name)
  traces = []

  def step(params, state, grads):
    traces.append(1)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), updates, state

  return opt, jax.jit(step), traces


@functools.cache
def _trajectory(name: str):
  """The plain run: ``[(params, updates, state)]`` for every step, from ``PARAMS0``."""
  opt, step, _ = _reference(name)
  params, state = PARAMS0, opt.init(PARAMS0)
  out = [(params, None, state)]
  for g in GRADS:
    params, updates, state = step(params, state, g)
    out.append((params, updates, state))
  return out


@pytest.mark.parametrize("name", NAMES)
def test_jit_traces_once_and_state_is_stable(name):
  opt, step, traces = _reference(name)
  traj = _trajectory(name)
  assert len(traces) == 1, f"{name}: the step was traced {len(traces)} times"
  assert step._cache_size() == 1
  init_state = traj[0][2]
  for params, updates, state in traj[1:]:
    chex.assert_trees_all_equal_shapes_and_dtypes(state, init_state)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, PARAMS0)
    assert_finite(params, updates, state)
  # The optimizer moves the params (the step is not a no-op).
  for a, b in zip(jax.tree.leaves(traj[-1][0]), jax.tree.leaves(PARAMS0)):
    assert float(jnp.max(jnp.abs(a - b))) > 0


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_same_trajectory(name):
  opt = make(name, inject=True)
  hyper = opt.init(PARAMS0).hyperparams
  assert "learning_rate" in hyper
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
      *opt.update(g, s, p)))
  params, state = PARAMS0, opt.init(PARAMS0)
  for t, g in enumerate(GRADS):
    params, state = step(params, state, g)
    assert_trees_close(params, _trajectory(name)[t + 1][0], 1e-5, f"{name} step {t}")
  assert step._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_schedule_learning_rate(name):
  lr = default_learning_rate(name)
  # Constant rate at count 0, then halved: step 1 must match the constant run
  # and step 2 must differ from it.
  schedule = lambda count: jnp.where(count < 1, lr, lr / 2)
  opt = make(name, learning_rate=schedule)
  step = jax.jit(lambda p, s, g: opt.update(g, s, p))
  state = opt.init(PARAMS0)
  updates, state = step(PARAMS0, state, GRADS[0])
  ref = _trajectory(name)
  assert_trees_close(updates, ref[1][1], 1e-5, f"{name} scheduled step 1")
  updates, state = step(ref[1][0], state, GRADS[1])
  diff = max(
      float(jnp.max(jnp.abs(a - b))) for a, b in zip(
          jax.tree.leaves(updates), jax.tree.leaves(ref[2][1]))
  )
  assert diff > 1e-6 * max(float(jnp.max(jnp.abs(u))) for u in jax.tree.leaves(ref[2][1]))


def _grouped_labels(params):
  return jax.tree.map(lambda x: "sphere" if x.ndim >= 2 else "adam", params)


@pytest.mark.parametrize("name", NAMES)
def test_extra_args_partition_masked_multisteps(name):
  opt = make(name)
  labels = _grouped_labels(PARAMS0)
  mask = jax.tree.map(lambda label: label == "sphere", labels)
  adam = optax.adam(1e-3)
  partitioned = optax.partition({"sphere": opt, "adam": adam}, labels)
  masked = optax.masked(opt, mask)
  multi = optax.MultiSteps(opt, every_k_schedule=2)

  @jax.jit
  def run(params, g1, g2):
    extra, _ = opt.update(g1, opt.init(params), params, loss=jnp.float32(0.5), foo=3)
    part, _ = partitioned.update(g1, partitioned.init(params), params)
    adam_updates, _ = adam.update(g1, adam.init(params), params)
    mask_updates, _ = masked.update(g1, masked.init(params), params)
    s = multi.init(params)
    first, s = multi.update(g1, s, params, loss=jnp.float32(0.5))
    second, s = multi.update(g2, s, params)
    return extra, part, adam_updates, mask_updates, first, second

  extra, part, adam_updates, mask_updates, first, second = run(PARAMS0, GRADS[0], GRADS[1])
  ref = _trajectory(name)[1][1]
  assert_trees_close(extra, ref, 1e-6, "extra args")
  for path_mask, p, a, m, r, g in zip(
      jax.tree.leaves(mask), jax.tree.leaves(part), jax.tree.leaves(adam_updates),
      jax.tree.leaves(mask_updates), jax.tree.leaves(ref), jax.tree.leaves(GRADS[0])):
    if path_mask:
      assert_trees_close(p, r, 1e-5, "partition (sphere)")
      assert_trees_close(m, r, 1e-5, "masked (in)")
    else:
      assert_trees_close(p, a, 1e-6, "partition (adam)")
      assert_trees_close(m, g, 0.0, "masked (out)")
  for leaf in jax.tree.leaves(first):
    assert float(jnp.max(jnp.abs(leaf))) == 0.0
  _, step, _ = _reference(name)
  mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, GRADS[0], GRADS[1])
  _, want, _ = step(PARAMS0, opt.init(PARAMS0), mean_grads)
  assert_trees_close(second, want, 1e-5, "MultiSteps")


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_params(name):
  opt = make(name)
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS0)
  grads = [jax.tree.map(lambda x: x.astype(jnp.bfloat16), g) for g in GRADS[:2]]
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), u, s))(
      *opt.update(g, s, p)))
  state0 = opt.init(params)
  p1, u1, s1 = step(params, state0, grads[0])
  p2, u2, s2 = step(p1, s1, grads[1])
  for tree_ in (p1, u1, p2, u2):
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(tree_))
  chex.assert_trees_all_equal_shapes_and_dtypes(s1, state0)
  chex.assert_trees_all_equal_shapes_and_dtypes(s2, state0)
  assert_finite(u1, u2, s2)
  for leaf in jax.tree.leaves(state0):
    if leaf.shape in STAT_SHAPES:
      assert leaf.dtype == jnp.float32, f"{name}: per-group statistic in {leaf.dtype}"
  # The bf16 update equals the float32 update on the same (rounded) values up to
  # bfloat16 rounding: reductions happen in float32.
  opt32, step32, _ = _reference(name)
  p32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  g32 = jax.tree.map(lambda x: x.astype(jnp.float32), grads[0])
  _, want, _ = step32(p32, opt32.init(p32), g32)
  assert_trees_close(u1, want, 2e-2, f"{name} bf16 vs f32")


@pytest.mark.parametrize("name", NAMES)
def test_init_on_shape_dtype_structs(name):
  opt = make(name)
  want = opt.init(PARAMS0)
  structs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS0)
  chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(opt.init, PARAMS0), want)
  chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(opt.init, structs), want)
  direct = opt.init(structs)
  chex.assert_trees_all_equal_shapes_and_dtypes(direct, want)


@pytest.mark.parametrize("name", NAMES)
def test_zero_groups_and_zero_gradients(name):
  opt, step, _ = _reference(name)
  params = jax.tree.map(jnp.array, PARAMS0)
  params["conv"]["kernel"] = params["conv"]["kernel"].at[..., 0].set(0.0)
  params["dense"]["kernel"] = jnp.zeros_like(params["dense"]["kernel"])
  params["dense"]["bias"] = jnp.zeros_like(params["dense"]["bias"])
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = opt.init(params)
  for grads in (zeros, GRADS[0], zeros):
    params, updates, state = step(params, state, grads)
    assert_finite(params, updates, state)
  # Zero gradients at ordinary params: finite as well.
  state = opt.init(PARAMS0)
  params, updates, state = step(PARAMS0, state, zeros)
  assert_finite(params, updates, state)


# The rotational wrapper (and the RV optimizers built on it) keeps the state of its
# inner `direction` and `nonrotational` transforms, each with its own count
# (optax.scale_by_adam, scale_by_schedule, ...) beside its own.
@pytest.mark.parametrize("name", NAMES)
def test_one_count_is_the_step(name):
  """``optax.tree.get(state, "count")`` finds exactly one count: the number of steps."""
  opt = make(name, optax.constant_schedule(default_learning_rate(name)))
  state = opt.init(PARAMS0)
  for t in range(2):
    assert int(optax.tree.get(state, "count")) == t
    _, state = opt.update(GRADS[t], state, PARAMS0)


def test_every_exported_name_exists():
  """Names in ``spherax.__all__`` resolve (a removed export fails here, not as a skip)."""
  missing = [n for n in spherax.__all__ if not hasattr(spherax, n)]
  assert not missing, missing
  assert {export for export, _, _ in CONFIGS.values()} <= set(spherax.__all__)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["0.1", None, (0.1,)], ids=["str", "None", "tuple"])
def test_bad_learning_rate_fails_at_construction(name, bad):
  """A learning rate that is neither a number, a scalar array nor a schedule: TypeError."""
  fn, _, kwargs, _ = _factory(name)
  with pytest.raises(TypeError, match="learning_rate"):
    fn(learning_rate=bad, **kwargs)
