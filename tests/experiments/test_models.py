"""Models of experiments.models: the papers' architectures (sizes, forward passes)
and the scale invariance of their filters under BatchNorm / weight standardization
(Roburin et al., *Spherical Perspective on Learning with Normalization Layers*,
Neurocomputing 2022, arXiv:2006.13382, Lemma 1)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spherax
from experiments.models import create_model
from experiments.models import norms


def _rngs(seed):
  # Eagerly, the default threefry key compiles a kernel per parameter shape (~7 s of
  # CPU per model here); unsafe_rbg keys cost a third of that, and no model test
  # depends on the values of the initial parameters.
  return nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg"))


def _num_params(model_fn):
  model = nnx.eval_shape(model_fn)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _resnet20_count(classes):
  # Closed form from the architecture: 3x3 convs without bias, BN (2 per channel),
  # 1x1 projection conv + BN at the two stage transitions, Linear 64 -> classes.
  conv_bn = lambda k, cin, cout: k * k * cin * cout + 2 * cout
  total = conv_bn(3, 3, 16)
  for cin, cout in ((16, 16), (16, 32), (32, 64)):
    # Three blocks of two convs; only the first conv sees cin channels.
    total += conv_bn(3, cin, cout) + 5 * conv_bn(3, cout, cout)
    total += conv_bn(1, cin, cout) if cin != cout else 0
  return total + 64 * classes + classes


@pytest.mark.parametrize("name, classes, expected", [
    ("resnet20", 10, None),          # ~0.27M (closed form below)
    ("resnet18", 10, 11_173_962),    # CIFAR ResNet-18, 11.2M
    ("vgg16", 10, 14_724_042),       # 14.7M (13 convs without bias + BN, one Linear)
    ("resnet50", 1000, 25_557_032),  # torchvision resnet50
    ("deit_tiny", 1000, 5_717_416),  # timm deit_tiny_patch16_224
])
def test_parameter_counts(name, classes, expected):
  count = _num_params(lambda: create_model(name, num_classes=classes, rngs=nnx.Rngs(0)))
  if expected is None:
    expected = _resnet20_count(classes)
    assert 0.26e6 < expected < 0.28e6
  assert count == expected


@pytest.mark.parametrize("name, size, kwargs", [
    ("resnet8", 8, {}),
    ("resnet18", 4, {"width": 8}),   # full widths are covered by the counts
    ("vgg13", 4, {}),
    ("vgg16", 4, {}),
    ("resnet50", 16, {"width": 8}),
    ("deit_tiny", 32, {"image_size": 32}),
])
def test_forward_pass_tiny(name, size, kwargs):
  # Traced abstractly (the whole init + forward, no compile): shapes and dtypes.
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  logits = jax.eval_shape(
      lambda x: create_model(name, num_classes=7, rngs=nnx.Rngs(0), **kwargs)(x), x)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32


def test_vit_forward_is_finite():
  # The one architecture without convs (attention, softmax, LayerNorm) run for real;
  # the ResNet blocks run for real in the norm-variant tests below.
  model = create_model("deit_tiny", num_classes=7, rngs=_rngs(0), image_size=32)
  logits = model(jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)),
                             jnp.float32))
  assert logits.shape == (2, 7) and np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("norm", norms.NORMS)
def test_norm_variants_forward_and_modes(norm):
  model = create_model("resnet8", num_classes=3, norm=norm, gains=True, width=8,
                       rngs=_rngs(1))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 3)), jnp.float32)
  train_out = model(x)
  model.eval()
  eval_out = model(x)
  assert np.all(np.isfinite(np.asarray(train_out)))
  # Only BatchNorm differs between batch statistics and running averages.
  assert np.allclose(train_out, eval_out, atol=1e-6) == (norm != "batch")


def test_unknown_model_and_norm_raise():
  with pytest.raises(ValueError, match="unknown model"):
    create_model("resnet21", num_classes=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown norm"):
    create_model("resnet8", num_classes=2, norm="instance", rngs=nnx.Rngs(0))


def test_reparametrize_matches_numpy():
  v = np.random.default_rng(2).normal(size=(3, 3, 2, 5))
  flat = v.reshape(-1, 5)
  wn = flat / np.linalg.norm(flat, axis=0)
  ws = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-3)
  with jax.enable_x64(True):
    got_wn = norms.reparametrize(jnp.asarray(v), "weight", 1e-3)
    got_ws = norms.reparametrize(jnp.asarray(v), "weight_standardization", 1e-3)
  np.testing.assert_allclose(np.asarray(got_wn).reshape(-1, 5), wn, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(got_ws).reshape(-1, 5), ws, rtol=1e-12)
  assert norms.group_count(48, 32) == 24 and norms.group_count(16, 32) == 16


def test_gain_equals_scaling_the_filters():
  # norm="none": the conv is linear in its kernel, so gain g_o == kernel filter o * g_o.
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 6, 3)), jnp.float32)
  plain = create_model("resnet8", num_classes=3, norm="none", width=4, rngs=_rngs(0))
  gained = create_model("resnet8", num_classes=3, norm="none", width=4, gains=True,
                        rngs=_rngs(0))
  np.testing.assert_allclose(plain(x), gained(x), rtol=1e-6)
  g = np.array([0.5, 2.0, 3.0, 0.25], np.float32)
  gained.stem.conv.gain[...] = jnp.asarray(g)
  plain.stem.conv.kernel[...] = plain.stem.conv.kernel[...] * g
  np.testing.assert_allclose(plain(x), gained(x), rtol=1e-5, atol=1e-6)


@functools.cache
def _loss_and_params(norm):
  """Cross-entropy of a float64 ResNet-20 (train mode) as a function of its params.
  Call under ``jax.enable_x64(True)``."""
  model = create_model("resnet20", num_classes=5, norm=norm, rngs=_rngs(4),
                       dtype=jnp.float64, param_dtype=jnp.float64, epsilon=1e-12)
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(4, 8, 8, 3)))
  y = jnp.asarray(rng.integers(0, 5, size=4))

  def loss(pure):
    state = nnx.clone(params)
    nnx.replace_by_pure_dict(state, pure)
    logits = nnx.merge(graph, state, nnx.clone(rest))(x)
    return float(-jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y]))

  return loss, nnx.to_pure_dict(params)


def _scale(pure, rng, per_filter):
  """Scales every conv kernel by rho in {0.1, 10}: per spherax default group
  (= per output filter) if ``per_filter``, else one rho per kernel."""
  layouts = spherax.groups.resolve(None, pure)
  paths = [l.path if l is not None else None for l in layouts]

  def scale(layout, leaf):
    if layout is None or leaf.ndim != 4:
      return leaf
    # The default groups of a conv kernel are its output filters.
    assert layout.num_groups == leaf.shape[-1]
    assert layout.group_size == leaf.shape[0] * leaf.shape[1] * leaf.shape[2]
    shape = layout.stat_shape if per_filter else (1,) * leaf.ndim
    rho = jnp.asarray(rng.choice([0.1, 10.0], size=shape))
    return leaf * spherax.geometry.expand(rho, layout) if per_filter else leaf * rho

  assert sum(p is not None and p.endswith("conv/kernel") for p in paths) == 21
  return spherax.groups.tree_map_groups(scale, layouts, pure)


@pytest.mark.parametrize("norm, per_filter", [
    ("batch", True), ("weight_standardization", True), ("layer", False)])
def test_scale_invariance_resnet20(norm, per_filter):
  with jax.enable_x64(True):
    loss, pure = _loss_and_params(norm)
    base = loss(pure)
    rng = np.random.default_rng(5)
    for _ in range(2):
      scaled = loss(_scale(pure, rng, per_filter))
      assert abs(scaled - base) <= 1e-5 * abs(base)


def test_layernorm_is_not_invariant_per_filter():
  # Control: under LayerNorm single filters are scale-sensitive, and the
  # classifier is scale-sensitive under every norm.
  with jax.enable_x64(True):
    loss, pure = _loss_and_params("layer")
    base = loss(pure)
    scaled = loss(_scale(pure, np.random.default_rng(6), per_filter=True))
    head = jax.tree.map(lambda a: a, pure)
    head["head"]["kernel"] = head["head"]["kernel"] * 10.0
    assert abs(scaled - base) > 1e-3 * abs(base)
    assert abs(loss(head) - base) > 1e-3 * abs(base)
