"""SGD ≡ AdaGradG (Roburin et al. 2022 Theorem 4, Fig. 2) on a small BatchNorm network.

Two hidden ``Linear → BatchNorm`` layers make every hidden filter (kernel column)
scale-invariant. Those filters are trained by SGD + L2, by ``spherax.adagradg``
with the Theorem 4 hyperparameters, or by AdaGrad with a matched first step; the
rest of the network (BN gains/offsets, classifier) by plain SGD in every run.
After 200 steps the SGD and AdaGradG filters point the same way; AdaGrad's do not.

References:

* Roburin et al. 2022: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import spherax
from spherax.theory import spherical

ETA, LAM, R0, STEPS, BATCH = 0.1, 1e-2, 1.0, 200, 64
HIDDEN = ("l1", "l2")


class Net(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(64, 32, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(32, use_running_average=False, rngs=rngs)
    self.l2 = nnx.Linear(32, 16, use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(16, use_running_average=False, rngs=rngs)
    self.head = nnx.Linear(16, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn1(self.l1(x)))
    x = nnx.relu(self.bn2(self.l2(x)))
    return self.head(x)


def _is_filter(path):
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return names[0] in HIDDEN and names[-1] == "kernel"


def _setup():
  digits = load_digits()
  data = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-6)
  idx = np.random.default_rng(0).integers(0, len(data), size=(STEPS, BATCH))
  batches = (jnp.asarray(data[idx], jnp.float32), jnp.asarray(digits.target[idx]))
  graphdef, params, rest = nnx.split(Net(nnx.Rngs(0)), nnx.Param, ...)
  # Every filter starts at radius r0, so one v0 serves all groups.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: R0 * p / jnp.linalg.norm(p, axis=0) if _is_filter(path) else p, params
  )
  labels = jax.tree_util.tree_map_with_path(
      lambda path, _: "sphere" if _is_filter(path) else "rest", params
  )

  def loss(p, x, y):
    logits = nnx.merge(graphdef, p, rest, copy=True)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, labels, batches, loss


def _train(opt, params, batches, loss):
  @jax.jit
  def run(p):
    def step(carry, batch):
      p, s = carry
      u, s = opt.update(jax.grad(loss)(p, *batch), s, p)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(step, (p, opt.init(p)), batches)[0][0]

  return run(params)


def _raw_filters(p):
  leaves = jax.tree_util.tree_flatten_with_path(p)[0]
  return [np.asarray(leaf) for path, leaf in leaves if _is_filter(path)]


def _filters(p):
  """Unit filter directions, one column per filter."""
  return [leaf / np.linalg.norm(leaf, axis=0) for leaf in _raw_filters(p)]


def _cosines(p, q):
  return np.concatenate([(a * b).sum(0) for a, b in zip(_filters(p), _filters(q))])


def test_sgd_and_adagradg_share_a_trajectory_adagrad_does_not():
  params, labels, batches, loss = _setup()

  def on_filters(opt):
    return optax.partition({"sphere": opt, "rest": optax.sgd(ETA)}, labels)

  h = spherical.adagradg_hyperparams(ETA, LAM, R0)
  # AdaGrad's first step (|g|/sqrt(g²) per element) scaled to SGD's first step norm.
  g0 = jax.grad(loss)(params, batches[0][0], batches[1][0])
  grads = _raw_filters(g0)
  sgd_step = ETA * np.sqrt(sum(float((g**2).sum()) for g in grads))
  adagrad_lr = sgd_step / np.sqrt(sum(int((g != 0).sum()) for g in grads))

  sgd = _train(
      on_filters(optax.chain(optax.add_decayed_weights(LAM), optax.sgd(ETA))), params, batches, loss
  )
  agg = _train(
      on_filters(
          spherax.adagradg(
              float(h.learning_rate), float(h.decay), float(h.initial_accumulator_value)
          )
      ),
      params,
      batches,
      loss,
  )
  ada = _train(
      on_filters(optax.adagrad(adagrad_lr, initial_accumulator_value=0.0)), params, batches, loss
  )

  moved = _cosines(sgd, params)
  assert moved.min() < 0.9  # the filters really turned
  for leaf in _raw_filters(agg):  # AdaGradG keeps its filters on the unit sphere
    np.testing.assert_allclose(np.linalg.norm(leaf, axis=0), 1.0, atol=1e-5)
  assert _cosines(sgd, agg).min() > 0.999
  assert _cosines(sgd, ada).min() < 0.99
