"""scale_by_group_adam: Adam with a per-group second moment (Roburin et al., ICLR 2021 submission §4, steps 1-3 of the released code).

References:

* Roburin et al., ICLR 2021 submission: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of Adam with Batch Normalization*, ICLR 2021 submission (OpenReview).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spherax
from spherax import groups

B1, B2, EPS = 0.9, 0.99, 1e-3


def _numpy(grads, group_axes, d):
  m = v = 0.0
  outs = []
  for k, g in enumerate(grads, start=1):
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * (g * g).sum(axis=group_axes, keepdims=True)
    outs.append(np.sqrt(d) * (m / (1 - B1**k)) / (np.sqrt(v / (1 - B2**k)) + EPS))
  return outs


@pytest.mark.parametrize("spec, view, axes", [
    (None, (3, 2, 4), (0, 1)),
    (groups.channel_groups(2), (3, 2, 2, 2), (0, 1, 3)),
])
def test_matches_numpy_group_sum_and_sqrt_d(spec, view, axes):
  rng = np.random.default_rng(4)
  grads = [rng.normal(size=(3, 2, 4)) for _ in range(3)]
  d = int(np.prod([view[a] for a in axes]))
  want = _numpy([g.reshape(view) for g in grads], axes, d)
  tx = spherax.scale_by_group_adam(B1, B2, EPS, groups=None if spec is None else {"w": spec})
  state = tx.init({"w": jnp.zeros((3, 2, 4))})
  for g, w in zip(grads, want):
    out, state = tx.update({"w": jnp.asarray(g)}, state)
    np.testing.assert_allclose(out["w"], w.reshape(3, 2, 4), rtol=1e-5, atol=1e-6)
  assert state.nu["w"].shape == tuple(1 if i in axes else s for i, s in enumerate(view))


def test_ungrouped_is_elementwise_adam_and_zero_gradients_are_finite():
  tx = spherax.scale_by_group_adam(B1, B2, 0.0)
  params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 2))}
  out, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params))
  assert all(np.all(np.asarray(l) == 0) for l in jax.tree.leaves((out, state.mu, state.nu)))
  g = jnp.array([1.0, -4.0, 0.0])
  out, _ = tx.update({"b": g, "w": jnp.zeros((2, 2))}, state)
  m, v = (1 - B1) * g, (1 - B2) * g * g
  want = np.where(g != 0, (m / (1 - B1**2)) / np.sqrt(v / (1 - B2**2)), 0.0)
  np.testing.assert_allclose(out["b"], want, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(b1=1.0), dict(b2=1.2), dict(eps=-1.0)])
def test_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    spherax.scale_by_group_adam(**kwargs)


def test_a_static_zero_l2_adds_no_term():
  """``l2=0`` (a Python number) leaves ``x`` out of the moments: no ``0·x`` (XLA keeps
  ``0·inf = nan``, and the term would cost a full-size multiply and add per leaf)."""
  from spherax.transforms.group_moment import group_adam_moments
  g, mu, x = jnp.array([2.0, -1.0]), jnp.array([0.5, 0.5]), jnp.array([jnp.inf, 1.0])
  layout = groups.per_output().layout((2, 1))
  for lay, nu in ((None, jnp.zeros(2)), (layout, jnp.zeros((1, 1)))):
    g_, mu_, x_ = (a.reshape(2, 1) for a in (g, mu, x)) if lay else (g, mu, x)
    plain = group_adam_moments(lay, g_, mu_, nu, B1, B2, EPS, jnp.int32(1))
    zero = group_adam_moments(lay, g_, mu_, nu, B1, B2, EPS, jnp.int32(1), l2=0.0, x=x_)
    for a, b in zip(plain, zero):
      np.testing.assert_array_equal(a, b)
    jaxpr = jax.make_jaxpr(lambda x_: group_adam_moments(
        lay, g_, mu_, nu, B1, B2, EPS, jnp.int32(1), l2=0.0, x=x_))(x_)
    assert not jaxpr.jaxpr.eqns or all(x_v not in e.invars for e in jaxpr.jaxpr.eqns
                                       for x_v in jaxpr.jaxpr.invars)
  # A nonzero λ is applied: g + λx in both moments.
  got = group_adam_moments(None, g, mu, jnp.zeros(2), B1, B2, EPS, jnp.int32(1), l2=0.5,
                           x=jnp.array([1.0, 2.0]))[0]
  np.testing.assert_allclose(got, B1 * mu + (1 - B1) * (g + 0.5 * jnp.array([1.0, 2.0])),
                             rtol=1e-6)


@pytest.mark.parametrize("l2", [0.0, 0.25])
def test_the_coupled_moment_is_the_combination_of_its_terms(l2):
  """``coupled_first_moment``'s values are ``Σ c_k a_k`` of the terms it names (what the
  one-pass kernel reduces instead of the values): ``g + λx`` and ``β1 m + (1 − β1)(g + λx)``."""
  from spherax.transforms.group_moment import coupled_first_moment
  rng = np.random.default_rng(3)
  g, mu, x = (jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) for _ in range(3))
  for moment in coupled_first_moment(g, mu, B1, l2=l2, x=x):
    combined = sum(c * np.asarray(a, np.float64) for c, a in moment.terms)
    np.testing.assert_allclose(moment.value, combined, rtol=1e-6, atol=1e-7)
  mu_new, coupled = coupled_first_moment(g, mu, B1, l2=l2, x=x)
  np.testing.assert_allclose(coupled.value, g + l2 * x, rtol=1e-6)
  np.testing.assert_allclose(mu_new.value, B1 * mu + (1 - B1) * (g + l2 * x), rtol=1e-6,
                             atol=1e-7)
  assert len(coupled.terms) == (1 if l2 == 0.0 else 2)  # a static zero λ: no x term


def test_the_second_moment_and_scale_are_adams():
  """``group_second_moment``: ``v' = β2 v + (1 − β2)||g̃||²``, ``c = sqrt(d)/((1 − β1^t)
  (sqrt(v'/(1 − β2^t)) + ε))``, re-derived in NumPy; a zero denominator gives ``c = 0``."""
  from spherax.transforms.group_moment import group_second_moment
  layout = groups.per_output().layout((4, 3))
  nu, sq = jnp.array([[0.5, 0.0, 2.0]]), jnp.array([[1.0, 0.0, 3.0]])
  got_nu, got_c = group_second_moment(layout, nu, sq, B1, B2, 0.0, jnp.int32(3))
  want_nu = B2 * np.asarray(nu) + (1 - B2) * np.asarray(sq)
  den = np.sqrt(want_nu / (1 - B2**3))
  want_c = np.where(den != 0, np.sqrt(4) / (1 - B1**3) / np.where(den != 0, den, 1), 0)
  np.testing.assert_allclose(got_nu, want_nu, rtol=1e-6)
  np.testing.assert_allclose(got_c, want_c, rtol=1e-5)
  assert float(got_c[0, 1]) == 0.0
