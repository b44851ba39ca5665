"""spherax.diagnostics.detect_groups on a small ResNet-like flax.nnx model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import spherax
from spherax import diagnostics, groups


class TinyResNet(nnx.Module):
  """conv → BN → relu → conv → BN (+ skip) → pool → dense → LayerNorm → classifier."""

  def __init__(self, rngs):
    self.conv1 = nnx.Conv(3, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(4, use_running_average=False, rngs=rngs)
    self.conv2 = nnx.Conv(4, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(4, use_running_average=False, rngs=rngs)
    self.dense = nnx.Linear(4, 6, use_bias=False, rngs=rngs)
    self.ln = nnx.LayerNorm(6, rngs=rngs)
    self.head = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.bn1(self.conv1(x)))
    h = nnx.relu(h + self.bn2(self.conv2(h)))
    h = h.mean(axis=(1, 2))
    return self.head(nnx.relu(self.ln(self.dense(h))))


@pytest.fixture(scope="module")
def problem():
  model = TinyResNet(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params, batch):
    logits = nnx.merge(graphdef, params, rest, copy=True)(batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  keys = jax.random.split(jax.random.key(1), 4)
  batches = [
      {"x": jax.random.normal(keys[2 * i], (8, 6, 6, 3)),
       "y": jax.random.randint(keys[2 * i + 1], (8,), 0, 3)}
      for i in range(2)
  ]
  return loss_fn, params, batches


def _by_path(spec_tree, params):
  layouts, paths = groups.resolve_with_paths(spec_tree, params)
  return {p: None if l is None else l.reduce_axes for p, l in zip(paths, layouts)}


WANT = {
    "conv1/kernel": (0, 1, 2),   # per output filter (BatchNorm)
    "conv2/kernel": (0, 1, 2),
    "dense/kernel": (0, 1),      # the whole kernel (LayerNorm)
    "head/kernel": None,
    "head/bias": None,
    "bn1/scale": None, "bn1/bias": None, "bn2/scale": None, "bn2/bias": None,
    "ln/scale": None, "ln/bias": None,
}


@pytest.mark.parametrize("method", ["both", "gradient"])  # "probe": next test
def test_detects_bn_filters_and_ln_layer(problem, method):
  loss_fn, params, batches = problem
  spec = diagnostics.detect_groups(loss_fn, params, batches, method=method)
  assert isinstance(spec, nnx.State)
  assert _by_path(spec, params) == WANT


def test_detected_groups_are_scale_invariant_and_usable(problem):
  # Independent check of the decision: per detected group, ∇L ⟂ x and
  # L(ρ x) = L(x); the spec drives a spherax measure directly.
  loss_fn, params, batches = problem
  spec = diagnostics.detect_groups(loss_fn, params, batches, method="probe")
  grads = jax.grad(loss_fn)(params, batches[0])
  cos = diagnostics.grad_cosine(params, grads, spec)
  for path, c in zip(groups.leaf_paths(cos), jax.tree.leaves(cos)):
    assert path in ("conv1/kernel", "conv2/kernel", "dense/kernel")
    np.testing.assert_allclose(np.asarray(c), 0.0, atol=1e-3, err_msg=path)
  base = float(loss_fn(params, batches[0]))
  scaled = lambda factors: float(loss_fn(_scale(params, factors), batches[0]))
  invariant = {"conv1/kernel": jnp.array([0.5, 2.0, 3.0, 0.7]), "dense/kernel": 2.5}
  np.testing.assert_allclose(scaled(invariant), base, rtol=1e-4)
  # Per-unit scaling of the LayerNorm layer, or scaling the classifier, is not invariant.
  assert abs(scaled({"dense/kernel": jnp.array([0.5, 2, 1, 1, 3, 1])}) - base) > 1e-3
  assert abs(scaled({"head/kernel": 2.0}) - base) > 1e-3


def _scale(params, factors):
  leaves, treedef = jax.tree.flatten(params)
  paths = groups.leaf_paths(params)
  return jax.tree.unflatten(
      treedef, [v * factors.get(p, 1.0) for p, v in zip(paths, leaves)]
  )


def test_leaves_the_loss_ignores_are_not_grouped():
  # The loss does not depend on 'unused' at all: neither probe can call it invariant.
  params = {"w": jnp.ones((3, 2)) + jnp.eye(3, 2), "unused": jnp.ones((2, 2))}
  loss_fn = lambda p, b: jnp.sum((b @ p["w"]) ** 2)
  spec = diagnostics.detect_groups(loss_fn, params, [jnp.ones((4, 3))])
  assert spec == {"w": None, "unused": None}


def test_bad_arguments():
  loss_fn = lambda p, b: jnp.sum(p["w"])
  params = {"w": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="method"):
    diagnostics.detect_groups(loss_fn, params, [0], method="cosine")
  with pytest.raises(ValueError, match="scale"):
    diagnostics.detect_groups(loss_fn, params, [0], scale=1.0)
  with pytest.raises(ValueError, match="batch"):
    diagnostics.detect_groups(loss_fn, params, [])


def test_nnx_vit_round_trip_detect_then_train():
  # A weight-normalised ViT (LayerNorm on the token stream, per-output
  # weight-normalised kernels): detect its groups, pass them unchanged as
  # ``groups=`` to an optimizer inside nnx.Optimizer, train two steps.
  from experiments.models.vit import VisionTransformer

  vit = VisionTransformer(dim=8, depth=1, heads=2, num_classes=3, image_size=8,
                          patch_size=4, norm="weight", rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(vit, nnx.Param, ...)

  def loss_fn(params, batch):
    logits = nnx.merge(graphdef, params, rest, copy=True)(batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  keys = jax.random.split(jax.random.key(2), 2)
  batch = {"x": jax.random.normal(keys[0], (4, 8, 8, 3)),
           "y": jax.random.randint(keys[1], (4,), 0, 3)}
  spec = diagnostics.detect_groups(loss_fn, params, [batch])
  leaves = jax.tree.leaves(spec, is_leaf=lambda x: x is None or isinstance(x, nnx.Variable))
  assert not any(isinstance(x, nnx.Variable) for x in leaves)  # plain specs
  grouped = {p for p, l in _by_path(spec, params).items() if l is not None}
  assert grouped == {f"blocks/0/{n}/kernel" for n in ("qkv", "proj", "fc1", "fc2")} | {"patch/kernel"}

  # the same optimizer with the same groups written by hand: the same steps
  by_hand = groups.by_path({r"^blocks/0/(qkv|proj|fc1|fc2)/kernel$|^patch/kernel$": groups.per_output()},
                           default=lambda path, leaf: None)
  results = []
  for rule in (spec, by_hand):
    model = nnx.merge(graphdef, params, rest, copy=True)
    optimizer = nnx.Optimizer(model, spherax.adamsrt(1e-2, groups=rule), wrt=nnx.Param)
    for _ in range(2):
      _vit_step(model, optimizer, batch)
    results.append(jax.tree.leaves(nnx.state(model, nnx.Param)))
  for x, y, x0 in zip(*results, jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.all(np.isfinite(np.asarray(x)))
  assert any(not np.allclose(x, x0) for x, x0 in zip(results[0], jax.tree.leaves(params)))


@nnx.jit
def _vit_step(model, optimizer, batch):
  loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(batch["x"]), batch["y"])
  optimizer.update(model, nnx.grad(lambda m: loss(m).mean())(model))
