"""Every config of every protocol builds; each distinct optimizer set-up of them
traces the experiments' train step and trains 2 steps; every real model of the
configs builds abstractly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments import configs, models, optimizers, train
from experiments.configs import seed000_fig2, seed001_table2

_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn_cropped": 10, "imagenet2012": 1000,
                "digits": 10, "mnist1d": 10}
_IMAGE = {"cifar10": 32, "cifar100": 32, "svhn_cropped": 32, "imagenet2012": 224, "digits": 8}


def _all_runs():
  return [cfg for p in configs.PROTOCOLS for q in (False, True) for cfg in configs.runs(p, q)]


ALL = _all_runs()


def test_every_config_is_complete_and_consistent():
  assert len(ALL) > 300
  names = set()
  for cfg in ALL:
    assert cfg.method in optimizers.METHODS, cfg.name
    assert cfg.dataset in _NUM_CLASSES, cfg.name
    assert cfg.schedule.kind in ("constant", "multistep", "cosine"), cfg.name
    assert cfg.batch_size % 8 == 0 or cfg.batch_size < 8, cfg.name
    names.add((cfg.protocol, cfg.workdir))
  assert len(names) == len(ALL), "two runs share a workdir"


def test_seed001_table2_protocol():
  runs = seed001_table2.runs()
  assert len(runs) == 7 * 7 * 5
  for cfg in runs:
    assert (cfg.epochs, cfg.batch_size, cfg.validation_fraction) == (405, 128, 0.05)
    assert tuple(cfg.schedule.boundaries) == (135, 225, 315) and cfg.schedule.factor == 0.1
    assert cfg.augment == (not cfg.dataset.startswith("svhn"))
  sched = optimizers.schedule("multistep", learning_rate=1e-3, steps_per_epoch=10, epochs=405,
                              boundaries=(135, 225, 315))
  np.testing.assert_allclose([sched(1349), sched(1350), sched(2250), sched(3150)],
                             [1e-3, 1e-4, 1e-5, 1e-6], rtol=1e-5)


def test_cosine_schedule_warmup_and_floor():
  sched = optimizers.schedule("cosine", learning_rate=0.05, steps_per_epoch=10, epochs=200,
                              warmup_epochs=5, init_value=1e-6, end_value=1e-5)
  np.testing.assert_allclose(sched(0), 1e-6, atol=1e-8)  # float32 interpolation
  np.testing.assert_allclose(sched(25), 1e-6 + (0.05 - 1e-6) / 2, rtol=1e-5)
  np.testing.assert_allclose(sched(50), 0.05, rtol=1e-5)
  # cosine from the peak over the remaining 1950 steps to the floor
  t = 975 / 1950
  np.testing.assert_allclose(sched(50 + 975), 1e-5 + (0.05 - 1e-5) * 0.5 * (1 + np.cos(np.pi * t)),
                             rtol=1e-4)
  np.testing.assert_allclose(sched(2000), 1e-5, rtol=1e-4)


def test_seed000_adagradg_matches_theorem_4():
  lr, hp = seed000_fig2.METHODS["adagradg_sgd"]
  beta = (1 - 0.01 * 1e-3) ** 4
  np.testing.assert_allclose(hp["decay"], beta)
  np.testing.assert_allclose(lr, (2 * beta) ** -0.5)
  r0 = 2.0**0.5  # He-normal start, E||w||² = 2 per filter
  np.testing.assert_allclose(hp["initial_accumulator_value"], r0**4 / (2 * 0.01**2 * beta**0.5))


def test_every_real_model_builds_abstractly():
  combos = {(c.model, c.norm, c.dataset, tuple(sorted(dict(c.model_kwargs).items())))
            for c in ALL}
  for model, norm, dataset, kwargs in sorted(combos):
    abstract = nnx.eval_shape(lambda: models.create_model(
        model, num_classes=_NUM_CLASSES[dataset], norm=norm, rngs=nnx.Rngs(0),
        in_channels=1 if dataset in ("digits", "mnist1d") else 3, **dict(kwargs)))
    params = nnx.state(abstract, nnx.Param)
    sizes = [x.size for x in jax.tree.leaves(params)]
    assert sum(sizes) > 0
    head = [x for x in jax.tree.leaves(params) if x.shape[-1] == _NUM_CLASSES[dataset]]
    assert head, (model, dataset)


class _Tiny(nnx.Module):
  """ConvNorm (the config's normalization) → ReLU → mean pool → Linear."""

  def __init__(self, norm):
    rngs = nnx.Rngs(0)
    self.conv = models.norms.ConvNorm(3, 4, 3, norm=norm, rngs=rngs)
    self.head = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(jax.nn.relu(self.conv(x)).mean((1, 2)))


def _signatures():
  sigs = {}
  for c in ALL:
    key = (c.method, tuple(sorted(c.hparams)), c.schedule.kind, c.groups, c.norm,
           c.norm_rescale)
    sigs.setdefault(key, c)
  return sorted(sigs.values(), key=lambda c: c.name)


def _loss(graphdef, params, rest, batch):
  model = nnx.merge(graphdef, params, rest, copy=True)
  logits = model(batch["image"])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  return loss, nnx.split(model, nnx.Param, ...)[2]


# One compile per norm (the graphdef is static). The optimizers run eagerly: their
# primitives compile once for all the signatures (a jitted train step per signature
# cost a 1-2 s compile each).
_GRAD = jax.jit(jax.value_and_grad(_loss, argnums=1, has_aux=True), static_argnums=0)


def _shapes(tree):
  return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


@pytest.mark.parametrize("cfg", _signatures(), ids=lambda c: f"{c.protocol}:{c.name}")
def test_config_trains_two_steps(cfg):
  model = _Tiny(cfg.norm)
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx, sched, _ = train.build_optimizer(cfg, steps_per_epoch=2)
  layouts, _ = train.conv_layouts(params)
  state = {"params": params, "rest": rest, "opt_state": tx.init(params),
           "step": jnp.zeros((), jnp.int32)}
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(4, 6, 6, 3)).astype(np.float32),
           "label": np.array([0, 1, 2, 0], np.int32)}
  # The experiments' train step, traced abstractly: the state keeps its structure,
  # shapes and dtypes.
  step = train.make_train_step(graphdef, tx, sched, layouts, mesh=train.make_mesh(1))
  new_state, metrics = jax.eval_shape(step, state, batch)
  assert _shapes(new_state) == _shapes(state)
  assert metrics["loss"].shape == ()
  # Two real steps of the config's optimizer on the tiny model's gradients.
  before = jax.device_get(params)
  opt_state = state["opt_state"]
  for _ in range(2):
    (loss, rest), grads = _GRAD(graphdef, params, rest, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  assert np.isfinite(float(loss))
  assert _shapes(opt_state) == _shapes(state["opt_state"])
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
           for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params))]
  assert all(np.isfinite(moved)) and max(moved) > 0


def test_dagger_rule_adamw_on_filters_adam_elsewhere():
  # first step closed forms: Adam's m̂/sqrt(v̂) = g/|g| (elementwise, ε aside);
  # AdamW: −η(g/|g| + λx); Adam with coupled L2: g ← g + λ'x, then −η·sign(g).
  rng = np.random.default_rng(0)
  params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)))},
            "head": {"kernel": jnp.asarray(rng.normal(size=(4, 3))),
                     "bias": jnp.asarray(rng.normal(size=(3,)))}}
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
  assert optimizers.conv_filter_labels(params) == {
      "conv": {"kernel": "sphere"}, "head": {"kernel": "adam", "bias": "adam"}}
  lr, wd, l2 = 1e-2, 0.5, 0.3
  tx = optimizers.build("adamw_dagger", learning_rate=lr, weight_decay=wd, adam_weight_decay=l2)
  updates, _ = tx.update(grads, tx.init(params), params)
  x, g = np.asarray(params["conv"]["kernel"]), np.asarray(grads["conv"]["kernel"])
  np.testing.assert_allclose(updates["conv"]["kernel"], -lr * (np.sign(g) + wd * x), rtol=1e-5,
                             atol=2e-7)  # float32
  for name in ("kernel", "bias"):
    x, g = np.asarray(params["head"][name]), np.asarray(grads["head"][name])
    np.testing.assert_allclose(updates["head"][name], -lr * np.sign(g + l2 * x), rtol=1e-5,
                               atol=2e-7)


def test_decay_mask_kernels_spares_gains_and_biases():
  """Kosson et al. 2024 follow timm: no weight decay on 1-d leaves. With zero
  gradients, one AdamW / SGD-M / RV-AdamW step must shrink only the kernel."""
  params = {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  for name, hp in (("adamw", dict(weight_decay=0.1)), ("sgdm", dict(weight_decay=0.1)),
                   ("rv_adamw", dict(weight_decay=0.1))):
    tx = optimizers.build(name, learning_rate=0.1, decay_mask="kernels", **hp)
    updates, _ = tx.update(zeros, tx.init(params), params)
    assert float(jnp.abs(updates["bias"]).max()) == 0.0, name
    if name != "rv_adamw":  # RV holds the kernel's norm; its decay acts through rotation
      assert float(jnp.abs(updates["kernel"]).max()) > 0.0, name
  assert all(c.hparams.decay_mask == "kernels" for c in configs.runs("seed004_tables"))
  with pytest.raises(ValueError, match="unknown decay_mask"):
    optimizers.build("adamw", learning_rate=0.1, decay_mask="everything")
