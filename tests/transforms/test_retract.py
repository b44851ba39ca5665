"""retract: the update that lands params + updates on a sphere, per group."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax

RNG = np.random.default_rng(2)
X = RNG.normal(size=(5, 3))


def _norms(x):
  return np.linalg.norm(np.asarray(x), axis=0)


def test_initial_norm_is_kept_over_steps():
  params = {"w": jnp.asarray(X), "b": jnp.ones(3)}
  tx = spherax.retract()
  state = tx.init(params)
  for k in range(3):
    step = {"w": jnp.asarray(RNG.normal(size=(5, 3))), "b": jnp.full(3, 0.5)}
    updates, state = tx.update(step, state, params)
    want = (X if k == 0 else np.asarray(params["w"])) + np.asarray(step["w"])
    want = want / _norms(want) * _norms(X)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], want, rtol=1e-5)
  np.testing.assert_allclose(_norms(params["w"]), _norms(X), rtol=1e-5)
  np.testing.assert_allclose(params["b"], 2.5)


@pytest.mark.parametrize("norm, radius", [("unit", 1.0), (2.0, 2.0)])
def test_fixed_radius(norm, radius):
  params = {"w": jnp.asarray(X)}
  tx = spherax.retract(norm)
  updates, _ = tx.update({"w": jnp.ones((5, 3))}, tx.init(params), params)
  np.testing.assert_allclose(_norms(optax.apply_updates(params, updates)["w"]), radius, rtol=1e-5)


def test_inject_hyperparams_radius_and_shape_structs():
  params = {"w": jnp.asarray(X, jnp.float32)}
  tx = optax.inject_hyperparams(spherax.retract)(norm=3.0)
  updates, _ = tx.update({"w": jnp.zeros((5, 3))}, tx.init(params), params)
  np.testing.assert_allclose(_norms(optax.apply_updates(params, updates)["w"]), 3.0, rtol=1e-5)
  state = jax.eval_shape(spherax.retract().init, {"w": jax.ShapeDtypeStruct((5, 3), jnp.bfloat16)})
  assert state.norms["w"].shape == (1, 3) and state.norms["w"].dtype == jnp.float32


def test_landing_on_zero_is_finite():
  params = {"w": jnp.asarray(X)}
  tx = spherax.retract()
  updates, _ = tx.update({"w": -jnp.asarray(X)}, tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], 0.0, atol=1e-6)


@pytest.mark.parametrize("norm", ["initial_norm", -1.0, 0.0])
def test_bad_norm_raises(norm):
  with pytest.raises(ValueError):
    spherax.retract(norm)
