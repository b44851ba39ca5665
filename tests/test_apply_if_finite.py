"""Guarding spherax optimizers against NaN/inf gradients with optax.apply_if_finite
(the README's recipe): a non-finite step leaves the optimizer state and the params
exactly as they were, and training continues as if the step had not happened."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax

_RNG = np.random.default_rng(0)
PARAMS = {"w": jnp.asarray(_RNG.normal(size=(3, 4)), jnp.float32),
          "b": jnp.asarray(_RNG.normal(size=(4,)), jnp.float32)}
GRADS = [jax.tree.map(lambda x: jnp.asarray(_RNG.normal(size=x.shape), jnp.float32), PARAMS)
         for _ in range(3)]


def _with(grads, value):
  """``grads`` with one element of the grouped (3, 4) kernel set to ``value``."""
  return {**grads, "w": grads["w"].at[1, 2].set(value)}


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.floating))


def test_one_inf_element_poisons_unguarded_rv_lion_silently():
  # Why the guard: Lion's update is a sign, finite even where the gradient is inf,
  # while its moment becomes inf, and every later step of that group follows it.
  tx = spherax.rv_lion(1e-3, weight_decay=0.1)
  update = jax.jit(tx.update)
  state = update(GRADS[0], tx.init(PARAMS), PARAMS)[1]
  updates, state = update(_with(GRADS[1], jnp.inf), state, PARAMS)
  assert _all_finite(updates)
  assert not _all_finite(state)


@pytest.mark.parametrize("make", [
    lambda: spherax.rv_lion(1e-3, weight_decay=0.1),
    lambda: spherax.rv_adamw(1e-3, weight_decay=0.1),
    lambda: spherax.adamsrt(1e-3, l2_regularization=1e-4),
], ids=["rv_lion", "rv_adamw", "adamsrt"])
def test_guarded_step_keeps_state_and_params_then_training_continues(make):
  tx = optax.apply_if_finite(make(), max_consecutive_errors=5)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params, state = step(PARAMS, tx.init(PARAMS), GRADS[0])
  for count, bad in enumerate((jnp.inf, -jnp.inf, jnp.nan), start=1):
    bad_params, bad_state = step(params, state, _with(GRADS[1], bad))
    chex.assert_trees_all_equal(bad_params, params)
    chex.assert_trees_all_equal(bad_state.inner_state, state.inner_state)
    assert int(bad_state.notfinite_count) == count and not bool(bad_state.last_finite)
    params, state = bad_params, bad_state  # consecutive skips accumulate
  # The next finite step is the one the run would have taken without the bad steps.
  clean_params, clean_state = step(PARAMS, tx.init(PARAMS), GRADS[0])
  clean_params, clean_state = step(clean_params, clean_state, GRADS[2])
  params, state = step(params, state, GRADS[2])
  chex.assert_trees_all_equal(params, clean_params)
  chex.assert_trees_all_equal(state.inner_state, clean_state.inner_state)
  assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 3
  assert _all_finite(params) and _all_finite(state)
  assert not np.allclose(np.asarray(params["w"]), np.asarray(PARAMS["w"]))
