"""The one training loop of the experiments (REFERENCE §7).

``train(config)`` trains ``config.model`` on ``config.dataset`` with the optimizer
``config.method`` (see :mod:`experiments.optimizers`) and writes
``<workdir>/metrics.jsonl`` and orbax checkpoints under ``<workdir>/checkpoints``.

* **Data parallel**: one ``'data'`` mesh axis over the local devices; each batch is
  sharded along it, parameters, batch statistics and optimizer state are
  replicated. BatchNorm statistics are computed on the global batch (jit sees the
  global array), so the loss does not depend on the device count.
* **Metrics** (JSONL, one record per line, ``kind`` in ``train``/``eval``/
  ``summary``): loss, accuracy, learning rate, and for every conv kernel (4-d
  leaf, grouped per output filter: the scale-invariant groups of a BN network)
  the mean angular update per step ``∠(x_t, x_{t+1}) = 2 asin(||u_t − u_{t+1}||/2)``
  (``u = x/||x||``, REFERENCE §5 ``η_r``) and the mean filter norm, measured
  in-loop from the parameters before and after the step; plus the predicted
  equilibrium angular update and per-layer filter norm
  (:func:`experiments.optimizers.predicted_angular_update`,
  :func:`experiments.optimizers.predicted_weight_norm`) where they are defined.
* **Exact resume**: a checkpoint holds parameters, optimizer state, batch
  statistics and model RNG state, the step, and the data position (epoch, batch
  within the epoch); the data order of an epoch is a pure function of
  ``(seed, epoch)``, so resuming skips the batches already seen.
* **Model selection**: after each epoch the validation split is evaluated; the
  best-validation parameters are kept (also in the checkpoint) and evaluated on
  the test split at the end.
* **Snapshots** (``config.snapshot_every > 0``): the conv kernels every that many
  steps under ``<workdir>/snapshots/``, to compare trajectories across runs
  (:func:`experiments.plots.trajectory_cosine`, seed 000 Fig. 2).
* **SMD norm rescale** (seed 002 Corollary 3.1, ``config.norm_rescale``):
  ``spherax.rescale_norms_on_lr_drop`` is chained after the optimizer, so when
  the learning rate drops by a factor ``k`` every conv filter is divided by
  ``k^{1/4}``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import spherax
from experiments import optimizers

__all__ = [
    "CONV_GROUPS",
    "build_optimizer",
    "conv_layouts",
    "evaluate",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "train",
]


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-d ``'data'`` mesh over the first ``num_devices`` local devices (default all)."""
  devices = jax.local_devices()
  if num_devices is not None:
    devices = devices[:num_devices]
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


def _conv_filter_rule(path: str, leaf) -> spherax.GroupSpec | None:
  del path
  return spherax.GroupSpec((-1,)) if len(leaf.shape) == 4 else None


# one group per output filter of every conv kernel, nothing else grouped (REFERENCE §3)
CONV_GROUPS = spherax.groups.by_path((), default=_conv_filter_rule)


def conv_layouts(params: Any) -> tuple[list, list[str]]:
  """Per-filter layouts of the conv kernels (4-d leaves); ``None`` elsewhere."""
  return spherax.groups.resolve_with_paths(CONV_GROUPS, params)


def _group_geometry(layouts, old, new) -> tuple[list, list]:
  """Mean angular update and mean norm (after the step) of each grouped leaf."""
  geo = spherax.geometry
  angles, norms = [], []
  for layout, x, y in zip(layouts, jax.tree.leaves(old), jax.tree.leaves(new)):
    if layout is None:
      continue
    nx, ny = geo.norm(x, layout), geo.norm(y, layout)
    u = x / geo.expand(jnp.maximum(nx, 1e-30), layout)
    v = y / geo.expand(jnp.maximum(ny, 1e-30), layout)
    chord = geo.norm(u - v, layout)
    angles.append(jnp.mean(2 * jnp.arcsin(jnp.clip(chord / 2, 0.0, 1.0))))
    norms.append(jnp.mean(ny))
  return angles, norms


def _cross_entropy(logits, labels, weights=None):
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels
  )
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if weights is None:
    return losses.mean(), correct.mean()
  return (losses * weights).sum(), (correct * weights).sum()


def make_train_step(graphdef, tx, lr_schedule, layouts, *, mesh=None):
  """A jitted ``step(state, batch) -> (state, metrics)``.

  ``state`` is ``{'params', 'rest', 'opt_state', 'step'}`` (``rest``: batch
  statistics and RNG state of the nnx model split by ``nnx.split(model,
  nnx.Param, ...)``, in train mode). With ``mesh``, the batch is sharded on
  ``'data'`` and everything else replicated.
  """

  def loss_fn(params, rest, batch):
    model = nnx.merge(graphdef, params, rest, copy=True)
    logits = model(batch["image"])
    loss, acc = _cross_entropy(logits, batch["label"])
    _, _, new_rest = nnx.split(model, nnx.Param, ...)
    return loss, (acc, new_rest)

  def step(state, batch):
    params, count = state["params"], state["step"]
    (loss, (acc, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state["rest"], batch
    )
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    angles, norms = _group_geometry(layouts, params, new_params)
    metrics = {
        "loss": loss,
        "accuracy": acc,
        "lr": jnp.asarray(lr_schedule(count), jnp.float32),
        "angular_update": angles,
        "weight_norm": norms,
    }
    new_state = {
        "params": new_params,
        "rest": rest,
        "opt_state": opt_state,
        "step": count + 1,
    }
    return new_state, metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  repl = NamedSharding(mesh, P())
  return jax.jit(
      step,
      in_shardings=(repl, NamedSharding(mesh, P("data"))),
      out_shardings=repl,
      donate_argnums=0,
  )


def _pad(batch: dict, multiple: int) -> tuple[dict, np.ndarray]:
  """Pads a batch to a multiple of the device count; weights are 0 on padding
  (and where the dataset's own ``mask`` entry is False)."""
  batch = dict(batch)
  n = len(batch["label"])
  weights = np.asarray(batch.pop("mask", np.ones(n)), np.float32)
  pad = (-n) % multiple
  weights = np.concatenate([weights, np.zeros(pad, np.float32)])
  padded = {
      k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()
  }
  return padded, weights


def make_eval_step(eval_graphdef):
  """A jitted ``(params, rest, batch, weights) -> (Σ loss, Σ correct)`` in eval mode
  (built once per run: a fresh closure per call would recompile every time)."""

  @jax.jit
  def sums(params, rest, batch, weights):
    model = nnx.merge(eval_graphdef, params, rest, copy=True)
    return _cross_entropy(model(batch["image"]), batch["label"], weights)

  return sums


def evaluate(eval_step, params, rest, batches: Iterable[dict], mesh) -> dict:
  """Mean loss and accuracy over ``batches`` (padded to the device count, masked)."""
  data = NamedSharding(mesh, P("data"))
  total_loss = total_correct = count = 0.0
  for batch in batches:
    batch, weights = _pad(batch, mesh.size)
    batch = jax.device_put(batch, data)
    loss, correct = eval_step(params, rest, batch, jax.device_put(weights, data))
    total_loss += float(loss)
    total_correct += float(correct)
    count += float(weights.sum())
  return {"loss": total_loss / max(count, 1), "accuracy": total_correct / max(count, 1)}


# ---------------------------------------------------------------- checkpoints


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(tree) -> dict:
  leaves = jax.tree.leaves(tree)
  return {
      f"{i:06d}": np.asarray(jax.random.key_data(x) if _is_key(x) else x)
      for i, x in enumerate(leaves)
  }


def _from_saved(template, saved: dict):
  leaves, treedef = jax.tree.flatten(template)
  out = []
  for i, t in enumerate(leaves):
    x = saved[f"{i:06d}"]
    out.append(jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x)
  return jax.tree.unflatten(treedef, out)


def _abstract(saveable: dict) -> dict:
  return {k: np.zeros(v.shape, v.dtype) for k, v in saveable.items()}


class _Checkpoints:
  """Latest training state + best-validation params under one orbax manager."""

  def __init__(self, directory: str):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=1)
    )

  def save(self, step: int, state, best, meta: dict) -> None:
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state)),
            best=ocp.args.StandardSave(_to_saveable(best)),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )
    self.manager.wait_until_finished()

  def restore(self, state_template, best_template):
    step = self.manager.latest_step()
    if step is None:
      return None
    s, b = _to_saveable(state_template), _to_saveable(best_template)
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(s)),
            best=ocp.args.StandardRestore(_abstract(b)),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return (
        _from_saved(state_template, out["state"]),
        _from_saved(best_template, out["best"]),
        dict(out["meta"]),
    )

  def close(self) -> None:
    self.manager.close()


# ---------------------------------------------------------------- the loop


def _build_model(config, dataset):
  from experiments import models  # the colleague's module; imported only when needed

  return models.create_model(
      config.model,
      num_classes=dataset.num_classes,
      norm=config.get("norm", "batch"),
      gains=config.get("gains", False),
      rngs=nnx.Rngs(config.seed),
      **{"in_channels": dataset.image_shape[-1], **dict(config.get("model_kwargs", {}))},
  )


def _build_dataset(config):
  from experiments import data

  return data.load_dataset(
      config.dataset,
      data_dir=config.get("data_dir"),
      validation_fraction=config.validation_fraction,
      seed=config.seed,
  )


def build_optimizer(config, steps_per_epoch: int):
  """``(tx, schedule, hparams)`` of a run config: the optimizer named by
  ``config.method`` on the config's schedule, with ``config.groups``."""
  sched = optimizers.schedule(
      config.schedule.kind,
      learning_rate=config.learning_rate,
      steps_per_epoch=steps_per_epoch,
      epochs=config.epochs,
      **{k: v for k, v in dict(config.schedule).items() if k != "kind"},
  )
  groups = CONV_GROUPS if config.get("groups") == "conv" else None
  tx = optimizers.build(config.method, learning_rate=sched, groups=groups, **config.hparams)
  if config.get("norm_rescale", False):
    tx = optax.chain(tx, spherax.rescale_norms_on_lr_drop(sched, groups=CONV_GROUPS))
  return tx, sched, dict(config.hparams)


def _train_batches(dataset, config, epoch: int, skip: int) -> Iterator[dict]:
  batches = dataset.train_batches(config.batch_size, epoch=epoch, augment=config.augment)
  full = (b for b in batches if len(b["label"]) == config.batch_size)
  return itertools.islice(full, skip, None)


def _read_records(path: str) -> list[dict]:
  """The complete JSON records of a log; a last line cut off mid-write (no
  trailing newline, or not valid JSON) is dropped, any other bad line raises."""
  with open(path) as f:
    lines = f.read().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:  # the partial last line of an interrupted write
        break
      raise
  return records


def _trim_log(path: str, step: int) -> None:
  """Drops records logged after ``step`` (written before an interruption) and a
  partial last line; the rewrite is atomic (a temporary file, then ``os.replace``),
  so an interruption leaves either the old log or the trimmed one."""
  if not os.path.exists(path):
    return
  kept = [r for r in _read_records(path) if r.get("step", 0) <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _snapshot(workdir: str, step: int, params, layouts, paths) -> None:
  """Saves the conv kernels to ``snapshots/step_XXXXXXX.npz`` (seed 000 Fig. 2)."""
  directory = os.path.join(workdir, "snapshots")
  os.makedirs(directory, exist_ok=True)
  leaves = jax.device_get(jax.tree.leaves(params))
  arrays = {p: np.asarray(x) for p, l, x in zip(paths, layouts, leaves) if l is not None}
  np.savez(os.path.join(directory, f"step_{step:07d}.npz"), **arrays)


def _late_averages(log_path: str, total_steps: int) -> dict:
  """Final train loss and the angular update (measured, predicted, and their
  ratio step by step) averaged over the second half of training, from the log."""
  records = _read_records(log_path)
  train_records = [r for r in records if r["kind"] == "train"]
  late = [r for r in train_records if r["step"] > total_steps // 2] or train_records[-1:]
  angles = [np.mean(list(r["angular_update"].values())) for r in late if r["angular_update"]]
  predicted = [r["predicted_angular_update"] for r in late if "predicted_angular_update" in r]
  ratios = [
      np.mean(list(r["angular_update"].values())) / r["predicted_angular_update"]
      for r in late
      if r["angular_update"] and r.get("predicted_angular_update")
  ]
  return {
      "final_train_loss": train_records[-1]["loss"] if train_records else None,
      "mean_angular_update": float(np.mean(angles)) if angles else None,
      "mean_predicted_angular_update": float(np.mean(predicted)) if predicted else None,
      "mean_angular_update_ratio": float(np.mean(ratios)) if ratios else None,
  }


def train(
    config,
    *,
    model: nnx.Module | None = None,
    dataset=None,
    mesh: jax.sharding.Mesh | None = None,
    stop_after_steps: int | None = None,
) -> dict:
  """Trains one run; returns the summary record (also the last JSONL line).

  Args:
    config: a run config (see :mod:`experiments.configs`).
    model, dataset: override the config's model / dataset (tests, notebooks);
      a given model ends holding the final parameters and statistics.
    mesh: the ``'data'`` mesh (default: all local devices).
    stop_after_steps: stop (after checkpointing) once this many steps are done,
      without the final test evaluation: simulates an interruption.
  """
  t0 = time.time()
  dataset = _build_dataset(config) if dataset is None else dataset
  model = _build_model(config, dataset) if model is None else model
  mesh = make_mesh() if mesh is None else mesh
  steps_per_epoch = dataset.num_train // config.batch_size
  total_steps = steps_per_epoch * config.epochs
  if config.batch_size % mesh.size:
    raise ValueError(
        f"batch size {config.batch_size} must be a multiple of the {mesh.size} devices"
    )
  tx, sched, predict_hparams = build_optimizer(config, steps_per_epoch)

  model.eval()
  eval_step = make_eval_step(nnx.split(model, nnx.Param, ...)[0])
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  layouts, paths = conv_layouts(params)
  layer_names = [p for p, l in zip(paths, layouts) if l is not None]
  group_sizes = [l.group_size for l in layouts if l is not None]
  state = {
      "params": params,
      "rest": rest,
      "opt_state": tx.init(params),
      "step": jnp.zeros((), jnp.int32),
  }
  best = jax.device_get({"params": params, "rest": rest})  # host copy: state is donated
  meta = {"step": 0, "epoch": 0, "batch": 0, "best_val": -1.0, "best_step": 0}

  workdir = config.workdir
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, "metrics.jsonl")
  ckpts = _Checkpoints(os.path.join(workdir, "checkpoints"))
  restored = ckpts.restore(state, best)
  if restored is not None:
    state, best, meta = restored
  _trim_log(log_path, meta["step"])

  repl = NamedSharding(mesh, P())
  state = jax.device_put(state, repl)
  train_step = make_train_step(graphdef, tx, sched, layouts, mesh=mesh)
  data = NamedSharding(mesh, P("data"))
  has_val = getattr(dataset, "num_validation", 0) > 0

  from tqdm.auto import tqdm

  bar = tqdm(
      total=total_steps,
      initial=meta["step"],
      disable=not config.get("progress", True),
      desc=f"{config.method}",
  )
  step = meta["step"]
  snapshot_every = config.get("snapshot_every", 0)
  if snapshot_every and step == 0:
    _snapshot(workdir, 0, state["params"], layouts, paths)
  with open(log_path, "a") as log:

    def write(record):
      log.write(json.dumps(record) + "\n")
      log.flush()

    for epoch in range(meta["epoch"], config.epochs):
      skip = meta["batch"] if epoch == meta["epoch"] else 0
      for index, batch in enumerate(_train_batches(dataset, config, epoch, skip), start=skip):
        state, metrics = train_step(state, jax.device_put(batch, data))
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == total_steps:
          m = jax.device_get(metrics)
          angles = [float(a) for a in m["angular_update"]]
          record = {
              "kind": "train",
              "step": step,
              "epoch": epoch,
              "loss": float(m["loss"]),
              "accuracy": float(m["accuracy"]),
              "lr": float(m["lr"]),
              "angular_update": dict(zip(layer_names, angles)),
              "weight_norm": dict(zip(layer_names, [float(n) for n in m["weight_norm"]])),
          }
          predicted = optimizers.predicted_angular_update(
              config.method, float(m["lr"]), **predict_hparams
          )
          if predicted is not None:
            record["predicted_angular_update"] = float(predicted)
          norms = {
              name: optimizers.predicted_weight_norm(
                  config.method, float(m["lr"]), size, **predict_hparams
              )
              for name, size in zip(layer_names, group_sizes)
          }
          if any(v is not None for v in norms.values()):
            record["predicted_weight_norm"] = {k: float(v) for k, v in norms.items()}
          bar.set_postfix(loss=f"{record['loss']:.3f}")
          write(record)
        if snapshot_every and step % snapshot_every == 0:
          _snapshot(workdir, step, state["params"], layouts, paths)
        at_end_of_epoch = index + 1 == steps_per_epoch
        position = (epoch + 1, 0) if at_end_of_epoch else (epoch, index + 1)
        if at_end_of_epoch and has_val:
          val = evaluate(
              eval_step,
              state["params"],
              state["rest"],
              dataset.eval_batches("validation", config.eval_batch_size),
              mesh,
          )
          write({"kind": "eval", "split": "validation", "step": step, "epoch": epoch, **val})
          if val["accuracy"] > meta["best_val"]:
            best = jax.device_get({"params": state["params"], "rest": state["rest"]})
            meta.update(best_val=val["accuracy"], best_step=step)
        stopping = stop_after_steps is not None and step >= stop_after_steps
        if stopping or at_end_of_epoch or step % config.checkpoint_every == 0:
          meta.update(step=step, epoch=position[0], batch=position[1])
          ckpts.save(step, state, best, meta)
        if stopping:
          bar.close()
          ckpts.close()
          return {"kind": "interrupted", "step": step}
    bar.close()
    ckpts.close()
    final = jax.device_put(best, repl) if has_val else state
    test = evaluate(
        eval_step,
        final["params"],
        final["rest"],
        dataset.eval_batches("test", config.eval_batch_size),
        mesh,
    )
    log.flush()
    nnx.update(model, jax.device_get(state["params"]), jax.device_get(state["rest"]))
    summary = {
        "kind": "summary",
        "step": step,
        "name": config.get("name", config.method),
        "method": config.method,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_validation_accuracy": meta["best_val"] if has_val else None,
        "wall_time_s": time.time() - t0,
        **_late_averages(log_path, total_steps),
    }
    write(summary)
  return summary
