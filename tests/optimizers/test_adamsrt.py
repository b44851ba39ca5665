"""AdamS / Adam w/o (ab) / AdamSRT / SGDMRT against a NumPy re-derivation of Roburin et al., ICLR 2021 submission §4 and the released AdamSRT code.

References:

* Roburin et al., ICLR 2021 submission: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *A spherical analysis of Adam with Batch Normalization*, ICLR 2021 submission (OpenReview).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import spherax

from .conftest import np_groups

LR, B1, B2, EPS, WD = 0.05, 0.9, 0.99, 1e-8, 1e-2


def _dots(a, b):
  return (a * b).sum(0)


def _numpy_adamsrt(group_moment, transport, rescale):
  """The released AdamSRT code's update (Roburin et al., ICLR 2021 submission §4), one leaf at a time (columns = groups)."""

  def init(params):
    def leaf(x):
      grouped = x.ndim >= 2
      v_shape = (x.shape[-1],) if grouped and group_moment else np_groups(x).shape if grouped else x.shape
      return {"m": np.zeros_like(np_groups(x) if grouped else x), "v": np.zeros(v_shape)}
    return jax.tree.map(leaf, params)

  def step(t, params, grads, state):
    def leaf(x, g, s):
      k = t + 1
      shape, grouped = x.shape, x.ndim >= 2
      X = np_groups(x) if grouped else x
      G = (np_groups(g) if grouped else g) + WD * X
      M = B1 * s["m"] + (1 - B1) * G
      if grouped and group_moment:
        V = B2 * s["v"] + (1 - B2) * (G * G).sum(0)
        d = X.shape[0]
      else:
        V = B2 * s["v"] + (1 - B2) * G * G
        d = 1
      S = np.sqrt(d) * (M / (1 - B1**k)) / (np.sqrt(V / (1 - B2**k)) + EPS)
      Xn = X - LR * S
      if grouped:
        xx, nn, xn = _dots(X, X), _dots(Xn, Xn), _dots(X, Xn)
        r, rn = np.sqrt(xx), np.sqrt(nn)
        U, Un = X / r, Xn / rn
        if rescale:
          V = V * xx / (nn + EPS)
        if transport == "reference" and rescale:
          M = (xn * M - _dots(M, Xn) * X) / (nn + EPS)
        elif transport == "reference":
          M = _dots(U, Un) * M - _dots(M, Un) * U
        elif transport == "parallel":
          P = M - _dots(M, U) * U
          M = P - _dots(P, Un) / (1 + _dots(U, Un)) * (U + Un)
          if rescale:
            M = M * np.sqrt(xx / (nn + EPS))
      return Xn.reshape(shape), {"m": M, "v": V}

    out = jax.tree.map(leaf, params, grads, state, is_leaf=lambda n: isinstance(n, np.ndarray))
    new_params = jax.tree.map(lambda o: o[0], out, is_leaf=lambda n: isinstance(n, tuple))
    new_state = jax.tree.map(lambda o: o[1], out, is_leaf=lambda n: isinstance(n, tuple))
    return new_params, new_state

  return step, init


VARIANTS = {
    "adams": (dict(transport=None, rescale=False), (True, None, False)),
    "wo_ab": (dict(rescale=False), (True, "reference", False)),
    "adamsrt": (dict(), (True, "reference", True)),
    "parallel": (dict(transport="parallel"), (True, "parallel", True)),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_adamsrt_variants_match_numpy(problem, name):
  kwargs, np_args = VARIANTS[name]
  opt = spherax.adamsrt(LR, B1, B2, EPS, l2_regularization=WD, **kwargs)
  want = problem.run_numpy(*_numpy_adamsrt(*np_args))
  with jax.enable_x64(True):
    got = problem.run_spherax(opt)
  problem.assert_close(got, want, 1e-10)
  got32 = problem.run_spherax(opt, dtype=jnp.float32)
  problem.assert_close(got32, want, 1e-4)


def test_adams_is_adamsrt_without_transport_or_rescale(problem):
  problem.num_steps = 5
  want = problem.run_numpy(*_numpy_adamsrt(True, None, False))
  with jax.enable_x64(True):
    got = problem.run_spherax(spherax.adams(LR, B1, B2, EPS, l2_regularization=WD))
  problem.assert_close(got, want, 1e-10)


def _numpy_sgdmrt(rescale, momentum=0.9):
  def init(params):
    return jax.tree.map(lambda x: np.zeros_like(np_groups(x) if x.ndim >= 2 else x), params)

  def step(t, params, grads, bufs):
    del t
    def leaf(x, g, buf):
      grouped = x.ndim >= 2
      X = np_groups(x) if grouped else x
      buf = momentum * buf + (np_groups(g) if grouped else g) + WD * X
      Xn = X - LR * buf
      if grouped and rescale:
        buf = (_dots(X, Xn) * buf - _dots(buf, Xn) * X) / _dots(Xn, Xn)
      elif grouped:
        U, Un = X / np.sqrt(_dots(X, X)), Xn / np.sqrt(_dots(Xn, Xn))
        buf = _dots(U, Un) * buf - _dots(buf, Un) * U
      return Xn.reshape(x.shape), buf

    out = jax.tree.map(leaf, params, grads, bufs)
    is_pair = lambda n: isinstance(n, tuple)
    return (jax.tree.map(lambda o: o[0], out, is_leaf=is_pair),
            jax.tree.map(lambda o: o[1], out, is_leaf=is_pair))

  return step, init


@pytest.mark.parametrize("rescale", [True, False])
def test_sgdmrt_matches_numpy(problem, rescale):
  opt = spherax.sgdmrt(LR, 0.9, l2_regularization=WD, rescale=rescale)
  want = problem.run_numpy(*_numpy_sgdmrt(rescale))
  with jax.enable_x64(True):
    got = problem.run_spherax(opt)
  problem.assert_close(got, want, 1e-10)
  problem.assert_close(problem.run_spherax(opt, dtype=jnp.float32), want, 1e-4)


def test_ungrouped_leaves_are_plain_adam_with_coupled_l2():
  params = {"b": jnp.array([1.0, -2.0, 0.5])}
  opt = spherax.adamsrt(0.1, l2_regularization=0.1)
  ref = optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.1, 0.9, 0.99, 1e-8))
  s1, s2 = opt.init(params), ref.init(params)
  p1 = p2 = params
  for k in range(3):
    g = {"b": jnp.array([0.3, -1.0, 2.0]) * (k + 1)}
    u1, s1 = opt.update(g, s1, p1)
    u2, s2 = ref.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  np.testing.assert_allclose(p1["b"], p2["b"], rtol=1e-6)


@pytest.mark.parametrize("transport", ["reference", "parallel"])
def test_zero_norm_groups_and_zero_gradients_stay_finite(transport):
  params = {"w": jnp.zeros((3, 2)).at[:, 1].set(1.0), "b": jnp.zeros(2)}
  opt = spherax.adamsrt(0.1, transport=transport, eps=0.0)
  state = opt.init(params)
  for grads in ({"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}, {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}):
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for leaf in jax.tree.leaves((params, state)):
      assert np.all(np.isfinite(leaf))
  sgd = spherax.sgdmrt(0.1)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, s = sgd.update(zeros, sgd.init(zeros), zeros)
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves((updates, s)))


def test_transported_momentum_is_tangent_at_the_new_point():
  params = {"w": jnp.array(np.random.default_rng(1).normal(size=(5, 3)))}
  opt = spherax.sgdmrt(0.3, l2_regularization=0.1)
  grads = {"w": jnp.array(np.random.default_rng(2).normal(size=(5, 3)))}
  updates, state = opt.update(grads, opt.init(params), params)
  new = optax.apply_updates(params, updates)["w"]
  buf = state.trace["w"]
  np.testing.assert_allclose((buf * new).sum(0), 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: spherax.adamsrt(0.1, b1=1.0),
        lambda: spherax.adamsrt(0.1, b2=-0.1),
        lambda: spherax.adamsrt(0.1, transport="exact"),
        lambda: spherax.adamsrt(learning_rate=-1e-3),
        lambda: spherax.adams(0.1, l2_regularization=-1.0),
        lambda: spherax.sgdmrt(-0.1),
        lambda: spherax.sgdmrt(0.1, momentum=1.5),
    ],
)
def test_bad_arguments_raise_at_construction(make):
  with pytest.raises(ValueError):
    make()


def test_inject_hyperparams_schedule_and_bfloat16():
  params = {"w": jnp.ones((4, 2), jnp.bfloat16), "b": jnp.ones(2, jnp.bfloat16)}
  opt = optax.inject_hyperparams(spherax.adamsrt)(learning_rate=optax.linear_schedule(0.1, 0.0, 4))
  state = jax.eval_shape(opt.init, params)
  assert state.inner_state.nu["w"].dtype == jnp.float32
  state = opt.init(params)
  grads = {"w": jnp.arange(8.0).reshape(4, 2).astype(jnp.bfloat16), "b": jnp.ones(2, jnp.bfloat16)}
  step = jax.jit(opt.update)
  new_updates, new_state = step(grads, state, params)
  assert jax.tree.map(lambda u: u.dtype, new_updates) == {"w": jnp.bfloat16, "b": jnp.bfloat16}
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  same = jax.tree.map(lambda a, b: a.dtype == b.dtype and a.shape == b.shape, new_state, state)
  assert all(jax.tree.leaves(same)), same
  assert np.all(np.isfinite(np.asarray(new_updates["w"], np.float32)))


def test_works_inside_optax_masked():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  opt = optax.masked(spherax.adamsrt(0.1), {"w": True, "b": False})
  grads = {"w": jnp.arange(6.0).reshape(3, 2), "b": jnp.ones(2)}
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_array_equal(updates["b"], grads["b"])
  alone = spherax.adamsrt(0.1)
  want, _ = alone.update({"w": grads["w"]}, alone.init({"w": params["w"]}), {"w": params["w"]})
  np.testing.assert_allclose(updates["w"], want["w"], rtol=1e-6)


def _group_adam_then(lr, **kwargs):
  return spherax.transport_moments(spherax.scale_by_group_adam(B1, B2, EPS), lr, eps=EPS, **kwargs)


COMPOSITIONS = {
    "adams": (lambda lr: spherax.adams(lr, B1, B2, EPS, l2_regularization=WD),
              lambda lr: optax.chain(spherax.scale_by_group_adam(B1, B2, EPS),
                                     optax.scale_by_learning_rate(lr))),
    "rescale_only": (lambda lr: spherax.adamsrt(lr, B1, B2, EPS, l2_regularization=WD, transport=None),
                     lambda lr: _group_adam_then(lr, kind=None)),
    "adamsrt": (lambda lr: spherax.adamsrt(lr, B1, B2, EPS, l2_regularization=WD), _group_adam_then),
    "parallel": (lambda lr: spherax.adamsrt(lr, B1, B2, EPS, l2_regularization=WD, transport="parallel"),
                 lambda lr: _group_adam_then(lr, kind="parallel")),
    "elementwise_nu": (
        lambda lr: spherax.adamsrt(lr, B1, B2, EPS, l2_regularization=WD, group_moment=False),
        lambda lr: spherax.transport_moments(optax.scale_by_adam(B1, B2, EPS), lr, eps=EPS)),
    "sgdmrt": (lambda lr: spherax.sgdmrt(lr, 0.9, l2_regularization=WD),
               lambda lr: spherax.transport_moments(
                   optax.trace(0.9), lr, first_moments=("trace",), second_moments=())),
}


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_optimizer_equals_the_public_composition(problem, name):
  """Each optimizer's per-leaf rule = coupled L2 then transport_moments(inner): the
  rule's closed-form statistics (from <x, m'>, ||m'||²) and the composition's five
  dot products of x, s, m give the same trajectory."""
  fused, inner = COMPOSITIONS[name]
  lr = optax.linear_schedule(LR, LR / 2, 4)
  problem.num_steps = 6
  with jax.enable_x64(True):
    got = problem.run_spherax(fused(lr))
    want = problem.run_spherax(optax.chain(optax.add_decayed_weights(WD), inner(lr)))
  problem.assert_close(got, want, 1e-10)


def test_complex_ungrouped_leaf_is_adam_on_abs_squared():
  """Gradient 1j: optax.adam steps by −0.1j; so must AdamS/AdamSRT (|g|², not g²)."""
  params = {"b": jnp.zeros(2, jnp.complex64)}
  grads = {"b": jnp.array([1j, 1.0 + 1.0j], jnp.complex64)}
  want, _ = optax.adam(0.1, 0.9, 0.99).update(grads, optax.adam(0.1, 0.9, 0.99).init(params))
  for opt in (spherax.adams(0.1), spherax.adamsrt(0.1)):
    got, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(got["b"], want["b"], rtol=1e-6)


def test_complex_group_uses_the_real_inner_product():
  """A complex (d, 1) group is the group of R^{2d}: AdamS's v is Σ|g|², not Σg²."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 1)) + 1j * rng.normal(size=(4, 1))
  g = rng.normal(size=(4, 1)) + 1j * rng.normal(size=(4, 1))
  opt = spherax.adams(0.1, eps=0.0)
  with jax.enable_x64(True):
    params = {"w": jnp.asarray(x)}
    got, state = opt.update({"w": jnp.asarray(g)}, opt.init(params), params)
    v = 0.01 * np.sum(np.abs(g) ** 2)
    np.testing.assert_allclose(optax.tree.get(state, "nu")["w"], [[v]], rtol=1e-12)
    # step 1: −η sqrt(d) m̂/sqrt(v̂) with m̂ = g, v̂ = Σ|g|²
    np.testing.assert_allclose(got["w"], -0.1 * 2 * g / np.sqrt(np.sum(np.abs(g) ** 2)), rtol=1e-12)


@pytest.mark.parametrize("make", [spherax.adams, spherax.adamsrt, spherax.sgdmrt])
def test_l2_mask_leaves_masked_leaves_undecayed(make):
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  zero = jax.tree.map(jnp.zeros_like, params)
  opt = make(0.1, l2_regularization=0.5, mask={"w": True, "b": False})
  updates, _ = opt.update(zero, opt.init(params), params)
  np.testing.assert_array_equal(updates["b"], 0.0)  # no L2 term on b: zero gradient, no step
  assert np.all(np.asarray(updates["w"]) != 0)
  by_fn = make(0.1, l2_regularization=0.5, mask=lambda p: {"w": True, "b": False})
  np.testing.assert_array_equal(by_fn.update(zero, by_fn.init(params), params)[0]["b"], 0.0)


@pytest.mark.parametrize("lr", ["0.1", None, [0.1]])
def test_non_numeric_learning_rate_fails_at_construction(lr):
  for make in (spherax.adams, spherax.adamsrt, spherax.sgdmrt):
    with pytest.raises(TypeError, match=f"{make.__name__}: learning_rate"):
      make(lr)


@pytest.mark.parametrize("make", [spherax.adams, spherax.adamsrt, spherax.sgdmrt])
def test_missing_params_error_names_the_factory_called(make):
  params = {"w": jnp.ones((3, 2))}
  opt = make(0.1)
  with pytest.raises(ValueError, match=f"^{make.__name__}: update needs params"):
    opt.update(params, opt.init(params))


def test_state_is_one_count_and_the_moments():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  for make, fields in ((spherax.adamsrt, ("count", "mu", "nu")), (spherax.adams, ("count", "mu", "nu")),
                       (spherax.sgdmrt, ("count", "trace"))):
    state = make(0.1).init(params)
    assert state._fields == fields
    assert int(optax.tree.get(state, "count")) == 0
  state = spherax.adamsrt(0.1).init(params)
  assert state.nu["w"].shape == (1, 2) and state.nu["b"].shape == (2,)


def test_sgdmrt_overflowing_step_resets_only_that_groups_buffer():
  """Column 0's gradient ~1e20 makes ||x'||² overflow float32: the reference formula is
  inf/inf there; its buffer is reset to 0 (finite), and column 1 keeps the reference."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(6, 2))
  g = rng.normal(size=(6, 2))
  g[:, 0] *= 1e20
  opt = spherax.sgdmrt(0.1, 0.9)
  params = {"w": jnp.asarray(x, jnp.float32)}
  updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, opt.init(params), params)
  new = np.asarray(optax.apply_updates(params, updates)["w"], np.float64)
  buf = np.asarray(state.trace["w"])
  assert np.all(np.isfinite(new)) and np.all(np.isfinite(buf))
  np.testing.assert_array_equal(buf[:, 0], 0.0)
  xn = x[:, 1] - 0.1 * g[:, 1]
  want = ((x[:, 1] @ xn) * g[:, 1] - (g[:, 1] @ xn) * x[:, 1]) / (xn @ xn)
  np.testing.assert_allclose(buf[:, 1], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new[:, 1], xn, rtol=1e-6)
