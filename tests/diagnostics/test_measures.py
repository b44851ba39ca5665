"""spherax.diagnostics.measures against NumPy re-derivations and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import diagnostics, groups

SPECS = {
    "conv": groups.per_output(),      # (3, 3, 2, 4): 4 filters of 18
    "ln": groups.whole(),             # (5, 3): one group of 15
    "gn": groups.channel_groups(2),   # (4, 6): 2 groups of 4 x 3
    "bias": None,
}
SHAPES = {"conv": (3, 3, 2, 4), "ln": (5, 3), "gn": (4, 6), "bias": (4,)}


def _np_groups(name, a):
  """The groups of leaf ``name`` as rows of a 2-D array, in stat_shape order."""
  a = np.asarray(a, np.float64)
  if name == "conv":
    return a.reshape(-1, a.shape[-1]).T
  if name == "ln":
    return a.reshape(1, -1)
  if name == "gn":
    return a.reshape(a.shape[0], 2, 3).transpose(1, 0, 2).reshape(2, -1)
  raise ValueError(name)


def _tree(rng, scale=1.0):
  return {k: scale * rng.standard_normal(s) for k, s in SHAPES.items()}


def _flat(tree):
  return {k: None if v is None else np.asarray(v).ravel() for k, v in tree.items()}


def _np_per_group(fn, *trees):
  out = {}
  for name in SHAPES:
    if SPECS[name] is None:
      out[name] = None
      continue
    rows = [_np_groups(name, t[name]) for t in trees]
    out[name] = np.array([fn(*vals) for vals in zip(*rows)])
  return out


def _np_angle(x, y):
  cos = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
  return np.arccos(np.clip(cos, -1, 1))


def _tangent(v, x):
  return v - (v @ x) / (x @ x) * x


def _check(got, want, rtol=1e-10, atol=1e-12):
  got = _flat(got)
  for name in SHAPES:
    if want[name] is None:
      assert got[name] is None, name
    else:
      np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def test_all_measures_match_numpy_float64():
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    x, g = _tree(rng), _tree(rng)
    delta = _tree(rng, 0.3)
    x_new = {k: x[k] + delta[k] for k in x}
    lr = 0.05
    j = lambda t: {k: jnp.asarray(v) for k, v in t.items()}
    jx, jg, jd, jn = j(x), j(g), j(delta), j(x_new)

    _check(diagnostics.weight_norm(jx, SPECS), _np_per_group(np.linalg.norm, x))
    _check(diagnostics.rms_update(jd, SPECS), _np_per_group(np.linalg.norm, delta))
    _check(diagnostics.angular_update(jx, jn, SPECS), _np_per_group(_np_angle, x, x_new))
    _check(
        diagnostics.radial_component(jx, jd, lr, SPECS),
        _np_per_group(lambda a, d: -(d @ a) / (lr * (a @ a)), x, delta),
    )
    _check(
        diagnostics.grad_cosine(jx, jg, SPECS),
        _np_per_group(lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), x, g),
    )
    # η^e = tan∠(x, x') / ||c⊥||, c = r · direction (Roburin et al., Spherical
    # Perspective on Learning with Normalization Layers, Neurocomputing 2022,
    # arXiv:2006.13382, Theorem 2).
    _check(
        diagnostics.effective_learning_rate(jx, jn, jg, SPECS),
        _np_per_group(
            lambda a, b, d: np.tan(_np_angle(a, b))
            / (np.linalg.norm(a) * np.linalg.norm(_tangent(d, a))),
            x, x_new, g,
        ),
        rtol=1e-8,
    )


@pytest.mark.parametrize(
    "dtype, thetas, tol",
    [("float64", (1e-9, 0.5, 3.1), 1e-12), ("float32", (1e-3, 1.0, 3.1), 2e-6)],
)
def test_exact_rotation_by_theta_gives_theta(dtype, thetas, tol):
  # x' = r'(cos θ u + sin θ v), v ⊥ u: the angle is θ whatever the radii.
  rng = np.random.default_rng(1)
  with jax.enable_x64(dtype == "float64"):
    q, _ = np.linalg.qr(rng.standard_normal((8, 2 * len(thetas))))
    u, v = q[:, ::2], q[:, 1::2]
    theta = np.array(thetas)
    x = 2.0 * u
    x_new = 0.7 * (np.cos(theta) * u + np.sin(theta) * v)
    got = diagnostics.angular_update(
        {"w": jnp.asarray(x, dtype)}, {"w": jnp.asarray(x_new, dtype)}
    )["w"]
    assert got.shape == (1, len(thetas))
    np.testing.assert_allclose(np.asarray(got)[0], theta, rtol=tol, atol=tol)


def _sgd_setup(rng):
  """A per-filter kernel and a gradient orthogonal to each filter (scale invariance)."""
  x = rng.standard_normal((6, 3))
  g = rng.standard_normal((6, 3))
  g -= (g * x).sum(0) / (x * x).sum(0) * x
  return x, g


def test_effective_lr_closed_forms_table1():
  rng = np.random.default_rng(2)
  eta, lam, mom = 0.1, 0.01, 0.9
  with jax.enable_x64(True):
    x, g = _sgd_setup(rng)
    r2 = (x * x).sum(0)
    measure = lambda x_new, d: np.asarray(
        diagnostics.effective_learning_rate({"w": x}, {"w": x_new}, {"w": d})["w"]
    )[0]
    # SGD: η / r².
    np.testing.assert_allclose(measure(x - eta * g, g), eta / r2, rtol=1e-12)
    # SGD + L2: η / (r²(1 − ηλ)).
    a = g + lam * x
    np.testing.assert_allclose(measure(x - eta * a, a), eta / (r2 * (1 - eta * lam)), rtol=1e-12)
    # SGD-M, a = μ a_prev + g + λx, c = r a: η/r² (1 − η<c,u>/r²)^{-1}.
    a = mom * rng.standard_normal((6, 3)) + g + lam * x
    c_u = (a * x).sum(0)  # <c, u> = r <a, u> = <a, x>
    want = eta / r2 / (1 - eta * c_u / r2)
    np.testing.assert_allclose(measure(x - eta * a, a), want, rtol=1e-12)


def test_effective_lr_reproduces_theorem2_exact_step():
  # For x' = x − s·d, u' = (u − η^e c⊥)/sqrt(1 + (η^e ||c⊥||)²) with c = r d.
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    x, d = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    s = rng.uniform(0.05, 0.4, 5)
    x_new = x - s * d
    eta_e = np.asarray(
        diagnostics.effective_learning_rate({"w": x}, {"w": x_new}, {"w": d})["w"]
    )[0]
    r = np.linalg.norm(x, axis=0)
    u, u_new = x / r, x_new / np.linalg.norm(x_new, axis=0)
    c = r * d
    c_perp = c - (c * u).sum(0) * u
    pred = (u - eta_e * c_perp) / np.sqrt(1 + (eta_e * np.linalg.norm(c_perp, axis=0)) ** 2)
    np.testing.assert_allclose(pred, u_new, atol=1e-12)


def test_radial_component_recovers_weight_decay():
  # Δ = −η(g⊥ + λx): the radial part is exactly the weight decay λ.
  rng = np.random.default_rng(4)
  x, g = _sgd_setup(rng)
  eta, lam = 0.3, 0.02
  delta = -eta * (g + lam * x)
  got = diagnostics.radial_component(
      {"w": jnp.asarray(x, jnp.float32)}, {"w": jnp.asarray(delta, jnp.float32)}, eta
  )["w"]
  np.testing.assert_allclose(np.asarray(got)[0], lam, rtol=1e-4)


def test_grad_cosine_vanishes_for_scale_invariant_loss():
  # L(x) = Σ_groups f(x_j / ||x_j||) is scale-invariant per column.
  x = jax.random.normal(jax.random.key(0), (5, 3))
  target = jax.random.normal(jax.random.key(1), (5, 3))
  loss = lambda w: jnp.sum(jnp.sin(w / jnp.linalg.norm(w, axis=0) - target) ** 2)
  g = jax.grad(loss)(x)
  cos = diagnostics.grad_cosine({"w": x}, {"w": g})["w"]
  np.testing.assert_allclose(np.asarray(cos), 0.0, atol=1e-5)
  # A loss that is not scale-invariant has a clearly non-zero cosine.
  g2 = jax.grad(lambda w: jnp.sum((w - 2 * w) ** 2))(x)
  np.testing.assert_allclose(
      np.asarray(diagnostics.grad_cosine({"w": x}, {"w": g2})["w"]), 1.0, rtol=1e-5
  )


def test_zero_groups_bf16_and_masked_trees_are_finite():
  x = jnp.zeros((4, 3), jnp.bfloat16).at[:, 0].set(1.0)
  x_new = x.at[1, 0].set(0.5)
  zero = jnp.zeros_like(x)
  params = {"w": x, "masked": optax.MaskedNode()}
  outs = [
      diagnostics.weight_norm(params),
      diagnostics.angular_update(params, {"w": x_new, "masked": optax.MaskedNode()}),
      diagnostics.rms_update({"w": x_new - x, "masked": optax.MaskedNode()}),
      diagnostics.radial_component(params, {"w": zero, "masked": optax.MaskedNode()}, 0.0),
      diagnostics.effective_learning_rate(
          params, params, {"w": zero, "masked": optax.MaskedNode()}
      ),
      diagnostics.grad_cosine(params, {"w": zero, "masked": optax.MaskedNode()}),
  ]
  for out in outs:
    assert isinstance(out["masked"], optax.MaskedNode)
    assert out["w"].shape == (1, 3) and out["w"].dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out["w"])))
  # Columns 1 and 2 are zero groups: every measure gives 0 there.
  for out in outs[1:]:
    np.testing.assert_array_equal(np.asarray(out["w"])[0, 1:], 0.0)
  want = _np_angle(np.ones(4), np.array([1.0, 0.5, 1.0, 1.0]))
  np.testing.assert_allclose(float(outs[1]["w"][0, 0]), want, rtol=1e-6)
