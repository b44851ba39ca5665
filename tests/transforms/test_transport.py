"""transport_moments: moments moved to x' = x − η s and rescaled (Roburin et al., ICLR 2021 submission §4, step 4 of the released code).

References:

* Roburin et al., ICLR 2021 submission: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of Adam with Batch Normalization*, ICLR 2021 submission (OpenReview).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax
from spherax import geometry, groups

RNG = np.random.default_rng(5)
X = RNG.normal(size=(6, 3))
S = RNG.normal(size=(6, 3))
M_RAW = RNG.normal(size=(6, 3))
M_TAN = M_RAW - (M_RAW * X).sum(0) / (X * X).sum(0) * X  # tangent at x
LR, EPS = 0.3, 1e-8


class _State(NamedTuple):
  mu: Any
  nu: Any


def _fixed_inner(m):
  """Direction = the incoming update; moments: m and a per-group nu of ones."""
  def init(params):
    return _State(jax.tree.map(jnp.zeros_like, params), {"w": jnp.ones((1, 3)), "b": jnp.ones(2)})

  def update(updates, state, params=None):
    del params
    return updates, state._replace(mu={"w": jnp.asarray(m), "b": jnp.ones(2)})

  return optax.GradientTransformation(init, update)


def _run(m, **kwargs):
  params = {"w": jnp.asarray(X), "b": jnp.zeros(2)}
  tx = spherax.transport_moments(_fixed_inner(m), LR, eps=EPS, **kwargs)
  updates, state = tx.update({"w": jnp.asarray(S), "b": jnp.ones(2)}, tx.init(params), params)
  return np.asarray(updates["w"]), state.inner, updates


def _dots(a, b):
  return (a * b).sum(0)


XN = X - LR * S
U, UN = X / np.sqrt(_dots(X, X)), XN / np.sqrt(_dots(XN, XN))


def test_reference_rescaled_matches_numpy_and_geometry():
  with jax.enable_x64(True):
    upd, inner, _ = _run(M_RAW)
    np.testing.assert_allclose(upd, -LR * S, rtol=1e-12)
    want = (_dots(X, XN) * M_RAW - _dots(M_RAW, XN) * X) / (_dots(XN, XN) + EPS)
    np.testing.assert_allclose(inner.mu["w"], want, rtol=1e-10)
    layout = groups.per_output().layout(X.shape)
    explicit = geometry.transport_reference(jnp.asarray(M_RAW), jnp.asarray(X), jnp.asarray(XN), layout, eps=EPS)
    np.testing.assert_allclose(inner.mu["w"], explicit, rtol=1e-10)
    np.testing.assert_allclose(inner.nu["w"], (_dots(X, X) / (_dots(XN, XN) + EPS))[None], rtol=1e-10)
    np.testing.assert_array_equal(inner.nu["b"], 1.0)  # ungrouped: untouched
    np.testing.assert_array_equal(inner.mu["b"], 1.0)


def test_reference_without_rescale_and_parallel_match_numpy():
  with jax.enable_x64(True):
    _, inner, _ = _run(M_RAW, rescale=False)
    want = _dots(U, UN) * M_RAW - _dots(M_RAW, UN) * U
    np.testing.assert_allclose(inner.mu["w"], want, rtol=1e-10)
    np.testing.assert_array_equal(inner.nu["w"], 1.0)
    _, inner, _ = _run(M_RAW, kind="parallel")
    P = M_RAW - _dots(M_RAW, U) * U
    want = (P - _dots(P, UN) / (1 + _dots(U, UN)) * (U + UN)) * np.sqrt(_dots(X, X) / (_dots(XN, XN) + EPS))
    np.testing.assert_allclose(inner.mu["w"], want, rtol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(), dict(rescale=False), dict(kind="parallel"), dict(kind="parallel", rescale=False)])
def test_tangent_vectors_go_to_tangent_vectors(kwargs):
  _, inner, _ = _run(M_TAN, **kwargs)
  np.testing.assert_allclose(_dots(np.asarray(inner.mu["w"]), XN), 0.0, atol=1e-5)


def test_parallel_transport_preserves_norms_without_rescale():
  _, inner, _ = _run(M_TAN, kind="parallel", rescale=False)
  np.testing.assert_allclose(np.linalg.norm(inner.mu["w"], axis=0), np.linalg.norm(M_TAN, axis=0), rtol=1e-5)


def test_no_transport_only_rescales():
  with jax.enable_x64(True):
    _, inner, _ = _run(M_RAW, kind=None)
    np.testing.assert_allclose(inner.mu["w"], M_RAW * np.sqrt(_dots(X, X) / (_dots(XN, XN) + EPS)), rtol=1e-10)


def test_schedule_is_evaluated_at_the_count():
  params = {"w": jnp.asarray(X, jnp.float32)}
  tx = spherax.transport_moments(optax.trace(0.0), lambda count: 0.1 * (count + 1),
                                 first_moments=("trace",), second_moments=())
  state = tx.init(params)
  for k in range(2):
    updates, state = tx.update({"w": jnp.ones((6, 3))}, state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * (k + 1), rtol=1e-6)


def test_one_element_groups_and_zero_groups_are_finite():
  params = {"w": jnp.zeros((1, 3)), "v": jnp.zeros((4, 2))}
  tx = spherax.transport_moments(spherax.scale_by_group_adam(), 0.1, kind="parallel")
  updates, state = tx.update({"w": jnp.ones((1, 3)), "v": jnp.zeros((4, 2))}, tx.init(params), params)
  np.testing.assert_allclose(state.inner.mu["w"], 0.1)  # size-1 groups: not transported
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves((updates, state)))


@pytest.mark.parametrize("kwargs", [dict(kind="exact"), dict(learning_rate=-1.0), dict(eps=-1.0)])
def test_bad_arguments(kwargs):
  args = dict(learning_rate=0.1) | kwargs
  with pytest.raises(ValueError):
    spherax.transport_moments(optax.trace(0.9), **args)


def test_extra_args_reach_an_inner_without_extra_args_support():
  """``optax.trace`` takes no ``loss=``; the wrapper must still accept and drop it."""
  params = {"w": jnp.array([[1.0], [0.0]])}
  tx = spherax.transport_moments(optax.trace(0.9), 0.5, first_moments=("trace",), second_moments=())
  grads = {"w": jnp.array([[0.0], [2.0]])}
  with_loss, _ = tx.update(grads, tx.init(params), params, loss=jnp.float32(1.0))
  plain, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(with_loss["w"], plain["w"])
  np.testing.assert_array_equal(with_loss["w"], [[0.0], [-1.0]])


@pytest.mark.parametrize("kind, rescale", [("reference", True), ("reference", False), ("parallel", True), (None, True)])
def test_overflowing_new_point_resets_the_moment_and_keeps_the_other_groups(kind, rescale):
  """A step ~1e19 per entry makes ||x'||² overflow float32 (the reference formula is
  inf/inf): that group's moment and ratio are 0, finite; the other group is unchanged."""
  s = S.copy()
  s[:, 0] *= 1e20
  params = {"w": jnp.asarray(X, jnp.float32), "b": jnp.zeros(2)}
  tx = spherax.transport_moments(_fixed_inner(M_RAW), LR, kind=kind, rescale=rescale, eps=EPS)
  _, state = tx.update({"w": jnp.asarray(s, jnp.float32), "b": jnp.ones(2)}, tx.init(params), params)
  mu, nu = np.asarray(state.inner.mu["w"]), np.asarray(state.inner.nu["w"])
  assert np.all(np.isfinite(mu)) and np.all(np.isfinite(nu))
  np.testing.assert_array_equal(mu[:, 0], 0.0)
  if rescale:
    assert nu[0, 0] == 0.0
  _, plain, _ = _run(M_RAW, kind=kind, rescale=rescale)  # the same leaf without the huge column
  np.testing.assert_allclose(mu[:, 1:], np.asarray(plain.mu["w"])[:, 1:], rtol=1e-5, atol=1e-6)
