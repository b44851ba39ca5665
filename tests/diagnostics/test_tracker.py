"""spherax.diagnostics.track_dynamics against the measures functions."""

import re

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import diagnostics, groups

SPECS = {"conv": groups.per_output(), "dense": groups.whole(), "bias": None}


def _params(dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(0), 3)
  return {
      "conv": jax.random.normal(keys[0], (3, 3, 2, 4), dtype),
      "dense": jax.random.normal(keys[1], (5, 3), dtype),
      "bias": jax.random.normal(keys[2], (4,), dtype),
  }


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {k: jax.random.normal(kk, v.shape, v.dtype) for (k, v), kk in zip(params.items(), keys)}


def _expected(params, grads, updates):
  """mean/min/max over groups of the measures functions, per tracked leaf."""
  new = jax.tree.map(lambda x, d: x.astype(jnp.float32) + d.astype(jnp.float32), params, updates)
  f32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  per_metric = {
      "angular_update": diagnostics.angular_update(f32, new, SPECS),
      "norm": diagnostics.weight_norm(params, SPECS),
      "rms_update": diagnostics.rms_update(updates, SPECS),
      "grad_cosine": diagnostics.grad_cosine(params, grads, SPECS),
  }
  out = {}
  for metric, tree in per_metric.items():
    for name in ("conv", "dense"):
      v = np.asarray(tree[name], np.float64)
      for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        out[f"{name}/{metric}/{stat}"] = fn(v)
  return out


def _check(logs, want, rtol):
  assert set(logs) == set(want)
  for key in want:
    np.testing.assert_allclose(logs[key], want[key], rtol=rtol, atol=rtol * 1e-2, err_msg=key)


def test_tracker_matches_measures_stable_state_and_single_compile():
  params = _params()
  inner = optax.adamw(0.1, weight_decay=0.1)
  tx = diagnostics.track_dynamics(inner, SPECS)
  state = tx.init(params)
  ref_state = inner.init(params)
  step = jax.jit(tx.update)
  for seed in (1, 2):
    grads = _grads(params, seed)
    updates, new_state = step(grads, state, params)
    ref_updates, ref_state = inner.update(grads, ref_state, params)
    # The wrapped transform's updates pass through unchanged.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), updates, ref_updates)
    # Shapes, dtypes and structure of the state are stable across steps.
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or pytest.fail("state"),
                 new_state, state)
    assert new_state.dynamics["bias"] is None
    assert new_state.dynamics["conv"].shape == (4, 3)
    _check(diagnostics.summaries(new_state), _expected(params, grads, updates), rtol=1e-5)
    state, params = new_state, optax.apply_updates(params, updates)
  assert step._cache_size() == 1
  # The state is reachable by name, as for optax.monitor.
  assert optax.tree.get(state, "dynamics")["conv"].shape == (4, 3)


def test_tracker_with_bf16_params():
  params = _params(jnp.bfloat16)
  tx = diagnostics.track_dynamics(optax.sgd(0.05, momentum=0.9), SPECS)
  state = tx.init(jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params))
  grads = _grads(params, 3)
  updates, state = jax.jit(tx.update)(grads, state, params)
  assert updates["conv"].dtype == jnp.bfloat16
  assert state.dynamics["conv"].dtype == jnp.float32
  logs = diagnostics.summaries(state)
  assert all(np.isfinite(v) for v in logs.values())
  _check(logs, _expected(params, grads, updates), rtol=2e-3)


def test_tracker_in_chain_masked_and_inject_hyperparams():
  params = _params()
  mask = {"conv": True, "dense": False, "bias": False}
  inner = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
  tracked = diagnostics.track_dynamics(inner, SPECS)
  tx = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.masked(tracked, mask),
      optax.masked(optax.sgd(0.1), {"conv": False, "dense": True, "bias": True}),
  )
  state = tx.init(params)
  grads = _grads(params, 4)
  clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  updates, state = jax.jit(tx.update)(grads, state, params)
  logs = diagnostics.summaries(state)
  assert {k.split("/")[0] for k in logs} == {"conv"}
  want = {k: v for k, v in _expected(params, clipped, updates).items() if k.startswith("conv/")}
  _check(logs, want, rtol=1e-5)
  # The wrapped inject_hyperparams state still exposes its hyperparameters.
  assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(0.1)


def test_tracker_needs_params():
  params = _params()
  tx = diagnostics.track_dynamics(optax.sgd(0.1))
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


def test_every_k_records_on_steps_0_k_2k_and_keeps_the_last_summary():
  # A stateful inner transform: the recording branch recomputes its step from the
  # same inputs, and the updates and inner state still pass through unchanged.
  params = _params()
  inner = optax.adamw(0.1, weight_decay=0.1)
  tx = diagnostics.track_dynamics(inner, SPECS, every=3)
  step = jax.jit(tx.update)
  state, ref_state = tx.init(params), inner.init(params)
  recorded = {}
  for t in range(5):
    grads = _grads(params, 10 + t)
    updates, state = step(grads, state, params)
    ref_updates, ref_state = inner.update(grads, ref_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
                 (updates, state.inner_state), (ref_updates, ref_state))
    if t % 3 == 0:
      recorded = _expected(params, grads, updates)
    _check(diagnostics.summaries(state), recorded, rtol=1e-5)
    params = optax.apply_updates(params, updates)
  assert step._cache_size() == 1


def test_record_true_false_overrides_every_and_record_false_holds_no_tracker_code():
  # record= is static: record=False compiles to the inner step (no cond, no
  # reductions: the same ops as the bare step's program but the count), and
  # record=True records whatever every says; the counts and the inner state
  # advance the same either way, so every=k resumes its schedule.
  params = _params()
  inner = optax.adamw(0.1, weight_decay=0.1)
  tx = diagnostics.track_dynamics(inner, SPECS, every=3)
  step = jax.jit(tx.update, static_argnames="record")
  state, ref_state = tx.init(params), inner.init(params)
  recorded = {k: 0.0 for k in _expected(params, _grads(params, 0), params)}
  for t, record in enumerate([False, True, False, None, True]):
    grads = _grads(params, 20 + t)
    updates, state = step(grads, state, params, record=record)
    ref_updates, ref_state = inner.update(grads, ref_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
                 (updates, state.inner_state), (ref_updates, ref_state))
    if record or (record is None and t % 3 == 0):
      recorded = _expected(params, grads, updates)
    _check(diagnostics.summaries(state), recorded, rtol=1e-5)
    assert int(state.count) == t + 1
    params = optax.apply_updates(params, updates)
  args = (_grads(params, 0), state, params)
  ops = lambda **kw: _primitives(jax.make_jaxpr(lambda *a: tx.update(*a, **kw))(*args).jaxpr)
  bare = _primitives(jax.make_jaxpr(inner.update)(*args[:1], ref_state, params).jaxpr)
  assert "cond" in ops() and "cond" not in ops(record=True) + ops(record=False)
  assert "reduce_sum" in ops(record=True)
  off = ops(record=False)
  assert sorted(off) == sorted(bare + _increment_ops()), (sorted(off), sorted(bare))


def _primitives(jaxpr):
  """The primitive names of ``jaxpr``'s equations, those of nested jits' included
  (in place of the jit's own)."""
  out = []
  for eqn in jaxpr.eqns:
    inner = eqn.params.get("jaxpr")
    out += _primitives(inner.jaxpr) if hasattr(inner, "jaxpr") else [eqn.primitive.name]
  return out


def _increment_ops():
  return _primitives(jax.make_jaxpr(optax.safe_increment)(jnp.int32(0)).jaxpr)


def test_record_passes_through_chains_and_must_be_a_bool():
  params = _params()
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   diagnostics.track_dynamics(optax.sgd(0.1), SPECS, every=5))
  state = tx.init(params)
  grads = _grads(params, 8)
  _, state = tx.update(grads, state, params, record=False)
  assert all(v == 0 for v in diagnostics.summaries(state).values())
  clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  updates, state = tx.update(grads, state, params, record=True)
  _check(diagnostics.summaries(state), _expected(params, clipped, updates), rtol=1e-5)
  with pytest.raises(TypeError, match="static_argnames"):
    jax.jit(tx.update)(grads, state, params, record=True)


@pytest.mark.parametrize("every", [1, 2])
def test_a_non_finite_leaf_does_not_leak_into_the_other_leaves(every):
  # The updates do not depend on the summaries: a NaN gradient in one leaf
  # leaves every other leaf's update as the inner gives it.
  params = _params()
  inner = optax.sgd(0.1, momentum=0.9)
  tx = diagnostics.track_dynamics(inner, SPECS, every=every)
  grads = _grads(params, 5)
  grads["conv"] = grads["conv"].at[0, 0, 0, 0].set(jnp.nan)
  grads["bias"] = grads["bias"].at[0].set(-0.0)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  ref_updates, _ = inner.update(grads, inner.init(params), params)
  assert np.isnan(diagnostics.summaries(state)["conv/rms_update/max"])
  for name in ("dense", "bias"):
    np.testing.assert_array_equal(updates[name], ref_updates[name])
  assert np.signbit(updates["bias"][0]) == np.signbit(ref_updates["bias"][0])


@pytest.mark.parametrize("every", [0, 1.5, True])
def test_every_must_be_a_positive_int(every):
  with pytest.raises(ValueError, match="every"):
    diagnostics.track_dynamics(optax.sgd(0.1), every=every)


def _input_dependencies(fn, *args):
  """For each output leaf of ``fn(*args)``, the set of input leaf indices its
  value depends on in the traced program (an equation's outputs depend on all
  of its inputs: conservative for cond and nested jits)."""
  closed = jax.make_jaxpr(fn)(*args)
  deps = {v: {i} for i, v in enumerate(closed.jaxpr.invars)}
  for eqn in closed.jaxpr.eqns:
    used = set().union(*[deps.get(v, set()) for v in eqn.invars
                         if isinstance(v, jex_core.Var)])
    for v in eqn.outvars:
      deps[v] = used
  return [deps.get(v, set()) if isinstance(v, jex_core.Var) else set()
          for v in closed.jaxpr.outvars]


@pytest.mark.parametrize("every", [1, 3])
def test_each_update_depends_on_its_own_leaf_only(every):
  # No all-leaves term (such as one sum of every leaf's summary) may feed the
  # updates: it made compile time grow quadratically with the number of leaves.
  params = _params()
  tx = diagnostics.track_dynamics(optax.sgd(0.1, momentum=0.9), SPECS, every=every)
  state = tx.init(params)
  args = (_grads(params, 6), state, params)
  names = [p.split("/")[-1] if p.split("/")[-1] in params else p
           for p in _leaf_names(args)]
  deps = _input_dependencies(tx.update, *args)
  update_names = sorted(params)  # dict leaves are flattened in key order
  for name, used in zip(update_names, deps[: len(params)]):
    assert {names[i] for i in used} <= {name}, (name, {names[i] for i in used})


def _leaf_names(tree):
  """The last dict key on each leaf's path (the parameter name), else the path."""
  out = []
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    out.append(keys[-1] if keys else jax.tree_util.keystr(path))
  return out


@pytest.mark.parametrize("every", [1, 2])
def test_empty_leaves_pass_through_untracked(every):
  params = {**_params(), "empty": jnp.ones((5, 0)), "none": jnp.ones((0,))}
  specs = {**SPECS, "empty": groups.per_output(), "none": None}
  inner = optax.sgd(0.1, momentum=0.9)
  tx = diagnostics.track_dynamics(inner, specs, every=every)
  grads = {**_grads(_params(), 7), "empty": jnp.ones((5, 0)), "none": jnp.ones((0,))}
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  ref, _ = inner.update(grads, inner.init(params), params)
  assert state.dynamics["empty"] is None and state.dynamics["none"] is None
  assert updates["empty"].shape == (5, 0)
  jax.tree.map(np.testing.assert_array_equal, updates, ref)
  want = _expected(_params(), {k: grads[k] for k in SPECS}, {k: updates[k] for k in SPECS})
  _check(diagnostics.summaries(state), want, rtol=1e-5)


def test_leaves_of_one_shape_share_one_traced_summary():
  """The per-leaf summary is traced and lowered once per (shape, layout), whatever
  the leaf's path: 4 + 2 kernels of two shapes give two functions, one call per
  tracked leaf (the vector is not tracked)."""
  params = {f"a{i}": jnp.ones((3, 4)) for i in range(4)}
  params |= {f"b{i}": jnp.ones((2, 5)) for i in range(2)} | {"v": jnp.ones(3)}
  tx = diagnostics.track_dynamics(optax.sgd(0.1))
  text = jax.jit(tx.update).lower(params, tx.init(params), params).as_text()
  defined = re.findall(r"func\.func private @(_leaf_summary(?:_\d+)?)\(", text)
  assert len(defined) == 2, defined
  assert sum(text.count(f"call @{d}(") for d in defined) == 6
