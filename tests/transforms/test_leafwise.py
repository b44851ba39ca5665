"""The shared driver: counts, schedules, masks, dtypes, absent entries, MaskedNode."""

import re
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import geometry
from spherax.transforms.leafwise import leafwise


class _State(NamedTuple):
  count: Any
  nu: Any


def _init(layout, x):
  # A per-group accumulator on grouped leaves, nothing on the others.
  return (None if layout is None else geometry.zeros_stat(x, layout),)


def _rule(step, x, g, nu):
  lam = 0.5 if step.decayed else 0.0
  g = g.astype(jnp.float32) + lam * x.astype(jnp.float32)
  if step.layout is None:
    return -step.learning_rate * g, None
  nu = nu + geometry.sqnorm(g, step.layout)
  scale = geometry.safe_div(jnp.ones(()), jnp.sqrt(nu))
  return -step.learning_rate * geometry.expand(scale, step.layout) * g, nu


def _tx(**kw):
  return leafwise("toy", _State, _init, _rule, **kw)


def test_matches_numpy_with_schedule_mask_and_dtypes():
  params = {"w": jnp.arange(6.0, dtype=jnp.bfloat16).reshape(3, 2), "b": jnp.ones(2)}
  tx = _tx(learning_rate=lambda count: 0.1 * (count + 1), mask={"w": True, "b": False})
  state = tx.init(params)
  assert isinstance(state.nu["b"], optax.MaskedNode)
  assert state.nu["w"].shape == (1, 2) and state.nu["w"].dtype == jnp.float32
  x = {k: np.asarray(v, np.float64) for k, v in params.items()}
  nu = np.zeros((1, 2))
  step = jax.jit(tx.update)
  for t in range(3):
    g = {"w": jnp.full((3, 2), t + 1.0, jnp.bfloat16), "b": jnp.full(2, 2.0)}
    u, state = step(g, state, params)
    lr = 0.1 * (t + 1)
    gw = np.asarray(g["w"], np.float64) + 0.5 * x["w"]
    nu = nu + (gw**2).sum(0, keepdims=True)
    np.testing.assert_allclose(np.asarray(u["w"], np.float64), -lr * gw / np.sqrt(nu), rtol=1e-2)
    np.testing.assert_allclose(u["b"], -lr * 2.0 * np.ones(2), rtol=1e-6)
    assert u["w"].dtype == jnp.bfloat16 and state.nu["w"].dtype == jnp.float32
    assert int(state.count) == t + 1
  assert step._cache_size() == 1  # stable state: one compile


def test_masked_node_subtrees_and_errors():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  inner = _tx(learning_rate=0.1)
  tx = optax.masked(inner, {"w": True, "b": False})
  u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  np.testing.assert_allclose(u["b"], np.ones(2))  # untouched by the masked rule
  np.testing.assert_allclose(u["w"], -0.1 / np.sqrt(3.0) * np.ones((3, 2)), rtol=1e-6)
  with pytest.raises(ValueError, match="toy"):
    inner.update(params, inner.init(params))
  with pytest.raises(ValueError, match="count"):
    leafwise("toy", NamedTuple("Bad", [("nu", Any)]), _init, _rule)


def test_leaves_of_one_kind_share_one_traced_rule():
  """Under jit the rule is traced and lowered once per (shape, dtype, layout, mask
  bit), whatever the leaf's path: 5 + 3 grouped leaves of two shapes, 4 vectors and
  one masked-out copy of the first shape give four functions, called once per leaf;
  the results equal the rule applied op by op (eagerly)."""
  params = {f"a{i}": jnp.full((3, 4), i + 1.0) for i in range(5)}
  params |= {f"b{i}": jnp.full((2, 5), i + 1.0) for i in range(3)}
  params |= {f"v{i}": jnp.full(4, i + 1.0) for i in range(4)} | {"z": jnp.ones((3, 4))}
  tx = _tx(learning_rate=lambda count: 0.1 * (count + 1),
           mask=lambda p: {k: k != "z" for k in p})
  state = tx.init(params)
  grads = jax.tree.map(lambda x: jnp.sin(x + jnp.arange(x.shape[-1])), params)
  text = jax.jit(tx.update).lower(grads, state, params).as_text()
  defined = re.findall(r"func\.func private @(apply_rule(?:_\d+)?)\(", text)
  assert len(defined) == 4, defined
  assert sum(text.count(f"call @{d}(") for d in defined) == len(params)
  jitted, eager = jax.jit(tx.update)(grads, state, params), tx.update(grads, state, params)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-6)
  chex.assert_trees_all_equal_dtypes(jitted, eager)
