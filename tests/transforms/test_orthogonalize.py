"""orthogonalize: the tangential part of each grouped update (REFERENCE §1)."""

import jax.numpy as jnp
import numpy as np
import pytest

import spherax

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 3))
Q = RNG.normal(size=(4, 3))


def _apply(tx, updates, params):
  return tx.update(updates, tx.init(params), params)[0]


def test_matches_numpy_projection_and_is_tangent_and_idempotent():
  params = {"w": jnp.asarray(X), "b": jnp.ones(3)}
  tx = spherax.orthogonalize()
  out = _apply(tx, {"w": jnp.asarray(Q), "b": jnp.full(3, 2.0)}, params)
  want = Q - (Q * X).sum(0) / (X * X).sum(0) * X
  np.testing.assert_allclose(out["w"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose((np.asarray(out["w"]) * X).sum(0), 0.0, atol=1e-5)
  np.testing.assert_array_equal(out["b"], 2.0)
  again = _apply(tx, out, params)
  np.testing.assert_allclose(again["w"], out["w"], atol=1e-6)


def test_zero_norm_group_passes_through():
  x = jnp.asarray(X).at[:, 0].set(0.0)
  out = _apply(spherax.orthogonalize(), {"w": jnp.asarray(Q)}, {"w": x})
  np.testing.assert_allclose(out["w"][:, 0], Q[:, 0], rtol=1e-6)
  assert np.all(np.isfinite(out["w"]))


def test_needs_params_and_groups_of_two():
  tx = spherax.orthogonalize()
  with pytest.raises(ValueError):
    tx.update({"w": jnp.ones((2, 2))}, tx.init({"w": jnp.ones((2, 2))}))
  # (1, C) is ungrouped by default; an explicit per-output spec on it is refused.
  tx.init({"dense": {"kernel": jnp.ones((1, 5))}})
  bad = spherax.orthogonalize(groups={"dense": {"kernel": spherax.groups.per_output()}})
  with pytest.raises(ValueError, match="dense/kernel"):
    bad.init({"dense": {"kernel": jnp.ones((1, 5))}})

