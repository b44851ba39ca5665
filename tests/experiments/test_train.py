"""The train loop: exact resume, device-count invariance, in-loop metrics."""

import collections
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

import spherax
from experiments import plots
from experiments import train as train_lib


class TinyNet(nnx.Module):
  """conv → BN → ReLU → dropout → mean pool → dense; dropout makes RNG state matter."""

  def __init__(self, seed=0):
    rngs = nnx.Rngs(seed)
    self.conv = nnx.Conv(1, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.2, rngs=rngs)
    self.head = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    h = self.drop(jax.nn.relu(self.bn(self.conv(x))))
    return self.head(h.mean((1, 2)))


class TinyData:
  """A learnable synthetic set (label = sign of the image mean); epoch-seeded order."""

  num_classes = 2
  image_shape = (4, 4, 1)

  def __init__(self, n=40, n_val=8, n_test=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n + n_val + n_test, 4, 4, 1)).astype(np.float32)
    labels = (images.mean((1, 2, 3)) > 0).astype(np.int32)
    self.splits = {
        "train": (images[:n], labels[:n]),
        "validation": (images[n : n + n_val], labels[n : n + n_val]),
        "test": (images[n + n_val :], labels[n + n_val :]),
    }
    self.num_train, self.num_validation, self.num_test = n, n_val, n_test
    self.seed = seed

  def train_batches(self, batch_size, *, epoch, augment=True, shard_index=0, shard_count=1):
    images, labels = self.splits["train"]
    order = np.random.default_rng((self.seed, epoch)).permutation(len(labels))
    for i in range(0, len(order), batch_size):
      idx = order[i : i + batch_size]
      yield {"image": images[idx], "label": labels[idx]}

  def eval_batches(self, split, batch_size, *, shard_index=0, shard_count=1):
    images, labels = self.splits[split]
    for i in range(0, len(labels), batch_size):
      yield {"image": images[i : i + batch_size], "label": labels[i : i + batch_size]}


def _config(workdir, **kw):
  cfg = ml_collections.ConfigDict(
      dict(
          method="sgdm",
          learning_rate=0.1,
          hparams=dict(momentum=0.9, weight_decay=1e-3),
          schedule=dict(kind="multistep", boundaries=(1,), factor=0.1),
          epochs=2,
          batch_size=8,
          eval_batch_size=16,
          augment=False,
          log_every=1,
          checkpoint_every=100,
          progress=False,
          seed=0,
          workdir=str(workdir),
      )
  )
  for key, value in kw.items():  # replace (ConfigDict.update would merge dicts)
    cfg[key] = value
  return cfg


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_resume_is_exact(tmp_path):
  data = TinyData()
  straight = TinyNet()
  train_lib.train(_config(tmp_path / "a", snapshot_every=5), model=straight, dataset=data)
  # interrupted mid-epoch (step 3 of 5 in epoch 0), then resumed from a fresh model
  out = train_lib.train(
      _config(tmp_path / "b", snapshot_every=5), model=TinyNet(), dataset=data,
      stop_after_steps=3,
  )
  assert out == {"kind": "interrupted", "step": 3}
  resumed = TinyNet(seed=7)  # a different init: everything must come from the checkpoint
  summary = train_lib.train(_config(tmp_path / "b", snapshot_every=5), model=resumed,
                            dataset=data)
  a, b = nnx.state(straight), nnx.state(resumed)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # the logs agree too, with no duplicate steps after the resume
  ra, rb = _records(tmp_path / "a"), _records(tmp_path / "b")
  steps = [r["step"] for r in rb if r["kind"] == "train"]
  assert steps == list(range(1, 11))
  assert [r["loss"] for r in ra if r["kind"] == "train"] == [
      r["loss"] for r in rb if r["kind"] == "train"
  ]
  # conv-kernel snapshots at steps 0, 5, 10, identical across the two runs
  assert sorted(os.listdir(tmp_path / "b" / "snapshots")) == [
      f"step_{s:07d}.npz" for s in (0, 5, 10)]
  steps, cos = plots.trajectory_cosine(str(tmp_path / "a"), str(tmp_path / "b"))
  np.testing.assert_array_equal(steps, [0, 5, 10])
  np.testing.assert_allclose(cos, 1.0, rtol=1e-12)
  with np.load(tmp_path / "b" / "snapshots" / "step_0000010.npz") as f:
    np.testing.assert_array_equal(f["conv/kernel"], np.asarray(straight.conv.kernel[...]))
  # best-validation bookkeeping matches the eval records
  vals = [r["accuracy"] for r in rb if r["kind"] == "eval"]
  assert len(vals) == 2 and summary["best_validation_accuracy"] == max(vals)
  assert summary["test_accuracy"] == ra[-1]["test_accuracy"]


@pytest.mark.parametrize("method", ["sgdm", "adamw"])
def test_logged_lr_and_predictions_follow_the_schedule(tmp_path, method):
  hparams = dict(momentum=0.9, weight_decay=1e-3) if method == "sgdm" else dict(weight_decay=0.1)
  train_lib.train(_config(tmp_path, method=method, hparams=hparams), model=TinyNet(),
                  dataset=TinyData())
  train_records = [r for r in _records(tmp_path) if r["kind"] == "train"]
  assert len(train_records) == 10
  for r in train_records:
    lr = 0.1 if r["step"] <= 5 else 0.01  # the lr of step t (0-based count t-1)
    np.testing.assert_allclose(r["lr"], lr, rtol=1e-6)
    assert set(r["angular_update"]) == {"conv/kernel"}
    if method == "sgdm":  # Kosson et al. 2024, Table 1: sqrt(2ηλ/(1+α)); norm undefined
      np.testing.assert_allclose(
          r["predicted_angular_update"], np.sqrt(2 * lr * 1e-3 / 1.9), rtol=1e-6
      )
      assert "predicted_weight_norm" not in r
    else:  # AdamW: sqrt(2ηλ(1−β1)/(1+β1)), ||ω̂|| = sqrt(ηC/(2λ)), C = 3·3·1
      np.testing.assert_allclose(
          r["predicted_angular_update"], np.sqrt(2 * lr * 0.1 * 0.1 / 1.9), rtol=1e-6
      )
      np.testing.assert_allclose(
          r["predicted_weight_norm"]["conv/kernel"], np.sqrt(lr * 9 / 0.2), rtol=1e-6
      )


def _numpy_angles_and_norms(old, new):
  """Mean over filters of the angle between old and new filter, and of the old norm."""
  old = np.asarray(old, np.float64).reshape(-1, old.shape[-1])
  new = np.asarray(new, np.float64).reshape(-1, new.shape[-1])
  cos = (old * new).sum(0) / np.linalg.norm(old, axis=0) / np.linalg.norm(new, axis=0)
  return np.arccos(np.clip(cos, -1, 1)).mean(), np.linalg.norm(old, axis=0).mean()


def _logged(state):
  """The conv layer's (angular update, norm) as train() logs them."""
  logs = spherax.diagnostics.summaries(state["opt_state"])
  return logs["conv/kernel/angular_update/mean"], logs["conv/kernel/norm/mean"]


def _step_setup(schedule, mesh):
  model = TinyNet()
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = spherax.diagnostics.track_dynamics(optax.sgd(schedule, momentum=0.9),
                                          train_lib.CONV_GROUPS)
  step = train_lib.make_train_step(graphdef, tx, schedule, mesh=mesh)
  state = {
      "params": params,
      "rest": rest,
      "opt_state": tx.init(params),
      "step": jnp.zeros((), jnp.int32),
  }
  return step, state


def test_eight_devices_match_one_device_and_metrics_match_numpy():
  assert jax.local_device_count() == 8
  batch = next(TinyData(n=16).train_batches(16, epoch=0))
  results = {}
  for n in (1, 8):
    mesh = train_lib.make_mesh(n)
    step, state = _step_setup(optax.constant_schedule(0.5), mesh)
    before = np.asarray(state["params"]["conv"]["kernel"])
    state, metrics = step(state, jax.device_put(batch))
    results[n] = (before, jax.device_get(state), jax.device_get(metrics), _logged(state))
  (_, s1, m1, _), (before, s8, m8, logged) = results[1], results[8]
  assert abs(float(m1["loss"]) - float(m8["loss"])) <= 1e-5
  for x, y in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s8["params"])):
    np.testing.assert_allclose(x, y, atol=1e-5)
  angle, norm = _numpy_angles_and_norms(before, s8["params"]["conv"]["kernel"])
  assert angle > 1e-3
  np.testing.assert_allclose(logged[0], angle, rtol=1e-3)
  np.testing.assert_allclose(logged[1], norm, rtol=1e-5)


def _primitives(jaxpr, counts=None):
  """How many times each primitive occurs in ``jaxpr`` and its sub-jaxprs."""
  counts = collections.Counter() if counts is None else counts
  for eqn in jaxpr.eqns:
    counts[eqn.primitive.name] += 1
    for value in eqn.params.values():  # sub-jaxprs: cond branches, pjit, scan bodies
      for item in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(item, "jaxpr", item)  # a ClosedJaxpr's jaxpr, or a Jaxpr
        if hasattr(sub, "eqns"):
          _primitives(sub, counts)
  return counts


def test_a_non_recording_step_is_the_bare_optimizer_step():
  # traced only (no compile): record=False holds the bare step's ops plus the
  # tracker's count increment, none of its reductions; record=True adds them
  model = TinyNet()
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  schedule = optax.constant_schedule(0.5)
  batch = next(TinyData(n=8).train_batches(8, epoch=0))

  def ops(tx, *record):
    step = train_lib.make_train_step(graphdef, tx, schedule, mesh=train_lib.make_mesh(1))
    state = {"params": params, "rest": rest, "opt_state": tx.init(params),
             "step": jnp.zeros((), jnp.int32)}
    return _primitives(step.trace(state, batch, *record).jaxpr.jaxpr)

  inner = optax.sgd(schedule, momentum=0.9)
  tracked = spherax.diagnostics.track_dynamics(inner, train_lib.CONV_GROUPS, every=5)
  bare, off, on = ops(inner), ops(tracked, False), ops(tracked, True)
  assert not bare - off
  assert sum((off - bare).values()) <= 4  # optax.safe_increment of the count
  assert not {"reduce_sum", "sqrt", "atan2", "cond"} & set(off - bare)
  assert {"reduce_sum", "atan2"} <= set(on - off) and "cond" not in on


def test_only_the_logged_steps_record_and_their_logs_match_numpy(tmp_path, monkeypatch):
  # log_every=3 over 5 steps: steps 1 and 4 (1-based) record and are logged,
  # the others run the non-recording program (the bare optimizer step)
  records = []

  def spy(*args, **kwargs):
    step = make_train_step(*args, **kwargs)

    def recorded(state, batch, record=None):
      records.append(record)
      return step(state, batch, record)
    return recorded

  make_train_step = train_lib.make_train_step
  monkeypatch.setattr(train_lib, "make_train_step", spy)
  train_lib.train(_config(tmp_path, epochs=1, log_every=3, snapshot_every=1), model=TinyNet(),
                  dataset=TinyData())
  assert records == [True, False, False, True, False]
  logged = [r for r in _records(tmp_path) if r["kind"] == "train"]
  assert [r["step"] for r in logged] == [1, 4]
  for r in logged:  # the angle between the filters before and after the logged step
    kernels = []
    for s in (r["step"] - 1, r["step"]):
      with np.load(tmp_path / "snapshots" / f"step_{s:07d}.npz") as f:
        kernels.append(f["conv/kernel"])
    angle, norm = _numpy_angles_and_norms(*kernels)
    assert angle > 1e-3
    np.testing.assert_allclose(r["angular_update"]["conv/kernel"], angle, rtol=1e-3)
    np.testing.assert_allclose(r["weight_norm"]["conv/kernel"], norm, rtol=1e-5)


def test_norm_rescale_divides_filters_by_fourth_root_of_the_drop(tmp_path):
  # plain SGD at lr 1e-12, then 1e-12/16 from step 1 on (1 step per epoch): the
  # steps are negligible, the rescale after step 0 is 16^(-1/4) = 1/2 on conv filters
  cfg = _config(tmp_path, method="sgd", learning_rate=1e-12, hparams={}, norm_rescale=True,
                schedule=ml_collections.ConfigDict(
                    dict(kind="multistep", boundaries=(1,), factor=1 / 16)))
  model = TinyNet()
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx, sched, _ = train_lib.build_optimizer(cfg, steps_per_epoch=1)
  tx = spherax.diagnostics.track_dynamics(tx, train_lib.CONV_GROUPS)
  step = train_lib.make_train_step(graphdef, tx, sched, mesh=train_lib.make_mesh(1))
  state = {"params": params, "rest": rest, "opt_state": tx.init(params),
           "step": jnp.zeros((), jnp.int32)}
  batch = next(TinyData(n=8).train_batches(8, epoch=0))
  kernel0 = np.asarray(state["params"]["conv"]["kernel"])
  head0 = np.asarray(state["params"]["head"]["kernel"])
  state, metrics = step(state, batch)  # step 0; the next step's lr is 16x smaller
  np.testing.assert_allclose(state["params"]["conv"]["kernel"], kernel0 / 2, rtol=1e-5)
  np.testing.assert_allclose(state["params"]["head"]["kernel"], head0, rtol=1e-6)
  state, _ = step(state, batch)  # no further drop: unchanged
  np.testing.assert_allclose(state["params"]["conv"]["kernel"], kernel0 / 2, rtol=1e-5)
  _, norm = _numpy_angles_and_norms(kernel0 / 2, kernel0 / 2)  # logged: before step 1
  np.testing.assert_allclose(_logged(state)[1], norm, rtol=1e-5)


def test_batch_not_divisible_by_devices_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    train_lib.train(_config(tmp_path, batch_size=6), model=TinyNet(), dataset=TinyData())


def test_evaluate_weights_by_mask_pads_to_devices_and_compiles_once():
  model = TinyNet()
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  eval_step = train_lib.make_eval_step(graphdef)
  rng = np.random.default_rng(1)
  images = rng.normal(size=(12, 4, 4, 1)).astype(np.float32)
  labels = rng.integers(0, 2, size=12).astype(np.int32)
  mask = np.arange(12) < 10  # the dataset's padding rows: excluded
  batches = [{"image": images[:6], "label": labels[:6], "mask": mask[:6]},
             {"image": images[6:], "label": labels[6:], "mask": mask[6:]}]
  mesh = train_lib.make_mesh(8)  # 6 rows are padded to 8
  result = train_lib.evaluate(eval_step, params, rest, batches, mesh)
  logits = np.asarray(model(jnp.asarray(images[:10])), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(result["loss"], -logp[np.arange(10), labels[:10]].mean(), rtol=1e-5)
  np.testing.assert_allclose(result["accuracy"], (logits.argmax(-1) == labels[:10]).mean())
  train_lib.evaluate(eval_step, params, rest, batches, mesh)
  assert eval_step._cache_size() == 1


def test_resume_drops_a_partial_last_log_line_and_rewrites_atomically(tmp_path, monkeypatch):
  log = tmp_path / "metrics.jsonl"
  records = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
  log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "train", "st')
  replaced = []
  real_replace = os.replace
  monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((a, b)), real_replace(a, b)))
  train_lib._trim_log(str(log), step=2)
  assert _records(tmp_path) == records[:2]
  assert replaced == [(str(log) + ".tmp", str(log))] and not os.path.exists(str(log) + ".tmp")
  # a bad line that is not the last one is corruption, not an interrupted write
  log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(json.JSONDecodeError):
    train_lib._trim_log(str(log), step=2)
