"""The one training loop of the experiments: single- or multi-host, data parallel
or data parallel × FSDP.

``train(config)`` trains ``config.model`` on ``config.dataset`` with the optimizer
``config.method`` (see :mod:`experiments.optimizers`) and writes
``<workdir>/metrics.jsonl`` and orbax checkpoints under ``<workdir>/checkpoints``.

* **Parallelism** (:mod:`experiments.configs.fsdp` holds the rules): a mesh over
  every device of every process, ``('data',)`` or, with ``config.fsdp > 1``,
  ``('data', 'fsdp')``; each batch is split over all devices; parameters, batch
  statistics and optimizer state are replicated, or with FSDP their large leaves
  split along their largest divisible axis. BatchNorm statistics are computed on
  the global batch (jit sees the global array), so the loss does not depend on
  the device or process count.
* **Multi-host** (``jax.distributed``, :func:`initialize_distributed`): every
  process reads its own shard of each batch (``shard_index=process,
  shard_count=processes`` of :mod:`experiments.data`) and the global batch is
  assembled with ``jax.make_array_from_process_local_data``; only process 0
  writes the metrics, snapshots and the progress bar; checkpoints are written
  and restored by all processes together (orbax, global arrays).
* **Metrics** (JSONL, one record per line, ``kind`` in ``train``/``eval``/
  ``summary``): loss, accuracy, learning rate, and for every conv kernel (4-d
  leaf, grouped per output filter: the scale-invariant groups of a BN network)
  the mean over its filters of the angular update of the step ``∠(x_t,
  x_{t+1})`` (Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay
  Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212,
  Sec. 2: the expected angular update ``η_r``) and of the filter norm ``||x_t||``
  before the step, both recorded by :func:`spherax.diagnostics.track_dynamics`
  inside the optimizer state and read with
  :func:`spherax.diagnostics.summaries`. Only the logged steps record (the train
  step's static ``record``: two compiled programs, the other steps' one the bare
  optimizer step). A train record is written after each
  recorded step: steps ``1, 1 + log_every, 1 + 2·log_every, …`` (1-based). Beside
  them the predicted equilibrium angular update and per-layer filter norm
  (:func:`experiments.optimizers.predicted_angular_update`,
  :func:`experiments.optimizers.predicted_weight_norm`; Kosson et al. 2024,
  Table 1) where they are defined.
* **Exact resume**: a checkpoint holds parameters, optimizer state, batch
  statistics and model RNG state, the step, and the data position (epoch, batch
  within the epoch); the data order of an epoch is a pure function of
  ``(seed, epoch)``, so resuming skips the batches already seen. A metrics line
  cut off by the interruption is dropped.
* **Model selection**: after each epoch the validation split is evaluated; the
  best-validation parameters are kept (also in the checkpoint) and evaluated on
  the test split at the end.
* **Snapshots** (``config.snapshot_every > 0``): the conv kernels every that many
  steps under ``<workdir>/snapshots/``, to compare trajectories across runs
  (:func:`experiments.plots.trajectory_cosine`; Roburin, de Mont-Marin, Bursuc,
  Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization
  Layers*, Neurocomputing 2022, arXiv:2006.13382, Fig. 2).
* **SMD norm rescale** (Wan et al., *Spherical Motion Dynamics: Learning
  Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR
  2021 submission, Corollary 3.1; ``config.norm_rescale``):
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
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

import spherax
from experiments import optimizers
from experiments.configs import fsdp as sharding

__all__ = [
    "CONV_GROUPS",
    "build_optimizer",
    "conv_layouts",
    "evaluate",
    "initialize_distributed",
    "is_main_process",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "train",
]


# ---------------------------------------------------------------- processes, mesh


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    from_environment: bool = False,
) -> None:
  """Starts ``jax.distributed`` before any other JAX call, or does nothing.

  ``from_environment``: ``jax.distributed.initialize()`` with no arguments (TPU
  pods, SLURM, Open MPI: JAX reads the peers from the environment). Otherwise,
  when ``coordinator`` (process 0's ``host:port``), ``num_processes`` and
  ``process_id`` are all given, an explicit cluster; with none of them, a
  single process. CPU devices use the gloo collectives (XLA:CPU has no others
  across processes).
  """
  given = [coordinator, num_processes, process_id]
  if from_environment:
    if any(v is not None for v in given):
      raise ValueError("give either --distributed or --coordinator/--num-processes/"
                       "--process-id, not both")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize()
    return
  if all(v is None for v in given):
    return
  if any(v is None for v in given):
    raise ValueError("a multi-process run needs --coordinator, --num-processes and "
                     f"--process-id together; got {given}")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"need 0 <= process id < {num_processes}, got {process_id}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def is_main_process() -> bool:
  """Whether this is process 0 (the one that writes logs and prints)."""
  return jax.process_index() == 0


def make_mesh(num_devices: int | None = None, fsdp: int = 1) -> jax.sharding.Mesh:
  """The run's mesh over the first ``num_devices`` devices of all processes
  (default all): :func:`experiments.configs.fsdp.make_mesh`."""
  return sharding.make_mesh(num_devices, fsdp)


def _conv_filter_rule(path: str, leaf) -> spherax.GroupSpec | None:
  del path
  return spherax.GroupSpec((-1,)) if len(leaf.shape) == 4 else None


# One group per output filter of every conv kernel, nothing else grouped, as the
# released code of Roburin et al., *A spherical analysis of Adam with Batch
# Normalization* (ICLR 2021 submission, Sec. 4) does.
CONV_GROUPS = spherax.groups.by_path((), default=_conv_filter_rule)


def conv_layouts(params: Any) -> tuple[list, list[str]]:
  """Per-filter layouts of the conv kernels (4-d leaves); ``None`` elsewhere."""
  return spherax.groups.resolve_with_paths(CONV_GROUPS, params)


# ---------------------------------------------------------------- steps


def _cross_entropy(logits, labels, weights=None):
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels
  )
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if weights is None:
    return losses.mean(), correct.mean()
  return (losses * weights).sum(), (correct * weights).sum()


def make_train_step(graphdef, tx, lr_schedule, layouts=None, *, mesh=None, shardings=None):
  """A jitted ``step(state, batch, record=None) -> (state, metrics)``,
  ``metrics`` the batch's ``loss``, ``accuracy`` and the step's ``lr``.

  ``record`` (a Python bool, static: one compiled program per value; pass it
  positionally, as ``jax.jit`` with ``in_shardings`` takes no keyword
  arguments) is passed to ``tx.update`` as ``record=record`` unless it is
  ``None``: with a :func:`spherax.diagnostics.track_dynamics` ``tx``,
  ``record=False`` steps run the bare optimizer step and ``record=True`` ones
  record its dynamics.

  ``state`` is ``{'params', 'rest', 'opt_state', 'step'}`` (``rest``: batch
  statistics and RNG state of the nnx model split by ``nnx.split(model,
  nnx.Param, ...)``, in train mode). With ``mesh``, the batch is split over
  every mesh axis and the state has ``shardings`` (a pytree of
  ``NamedSharding`` like ``state``; default: replicated). ``layouts`` is
  ignored (the angular updates are recorded by the optimizer's
  :func:`spherax.diagnostics.track_dynamics`); it is accepted so that callers
  of the earlier signature keep working.
  """
  del layouts

  def loss_fn(params, rest, batch):
    model = nnx.merge(graphdef, params, rest, copy=True)
    logits = model(batch["image"])
    loss, acc = _cross_entropy(logits, batch["label"])
    _, _, new_rest = nnx.split(model, nnx.Param, ...)
    return loss, (acc, new_rest)

  def step(state, batch, record=None):
    params, count = state["params"], state["step"]
    (loss, (acc, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state["rest"], batch
    )
    extra = {} if record is None else {"record": record}
    updates, opt_state = tx.update(grads, state["opt_state"], params, **extra)
    metrics = {
        "loss": loss,
        "accuracy": acc,
        "lr": jnp.asarray(lr_schedule(count), jnp.float32),
    }
    new_state = {
        "params": optax.apply_updates(params, updates),
        "rest": rest,
        "opt_state": opt_state,
        "step": count + 1,
    }
    return new_state, metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=0, static_argnums=2)
  repl = NamedSharding(mesh, P())
  shardings = repl if shardings is None else shardings
  return jax.jit(
      step,
      in_shardings=(shardings, sharding.batch_sharding(mesh)),
      out_shardings=(shardings, repl),
      donate_argnums=0,
      static_argnums=2,
  )


def make_eval_step(eval_graphdef):
  """A jitted ``(params, rest, batch, weights) -> (Σ loss, Σ correct, Σ weights)``
  in eval mode (built once per run: a fresh closure per call would recompile
  every time)."""

  @jax.jit
  def sums(params, rest, batch, weights):
    model = nnx.merge(eval_graphdef, params, rest, copy=True)
    loss, correct = _cross_entropy(model(batch["image"]), batch["label"], weights)
    return loss, correct, weights.sum()

  return sums


# ---------------------------------------------------------------- data


def _local_devices(mesh) -> int:
  return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def _pad(batch: dict, multiple: int) -> tuple[dict, np.ndarray]:
  """Pads a batch to a multiple of ``multiple`` rows; weights are 0 on padding
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


def _global_batch(local, mesh):
  """The global batch whose rows of this process are ``local`` (a pytree of
  host arrays), split over every mesh axis."""
  data = sharding.batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), local)


def _shard_kwargs() -> dict:
  """This process's shard of the data (nothing to ask for on one process, so
  datasets without the shard arguments keep working there)."""
  if jax.process_count() == 1:
    return {}
  return dict(shard_index=jax.process_index(), shard_count=jax.process_count())


def evaluate(eval_step, params, rest, batches: Iterable[dict], mesh) -> dict:
  """Mean loss and accuracy over ``batches`` (this process's rows of each
  batch; padded to its device count, masked); the sums run over all processes."""
  total_loss = total_correct = count = 0.0
  for batch in batches:
    batch, weights = _pad(batch, _local_devices(mesh))
    loss, correct, n = eval_step(params, rest, *_global_batch((batch, weights), mesh))
    total_loss += float(loss)
    total_correct += float(correct)
    count += float(n)
  return {"loss": total_loss / max(count, 1), "accuracy": total_correct / max(count, 1)}


def _train_batches(dataset, config, epoch: int, skip: int) -> Iterator[dict]:
  """This process's rows of the epoch's full batches, from batch ``skip`` on."""
  local = config.batch_size // jax.process_count()
  batches = dataset.train_batches(local, epoch=epoch, augment=config.augment,
                                  **_shard_kwargs())
  full = (b for b in batches if len(b["label"]) == local)
  return itertools.islice(full, skip, None)


def _eval_batches(dataset, config, split: str) -> Iterator[dict]:
  local = max(config.eval_batch_size // jax.process_count(), 1)
  return dataset.eval_batches(split, local, **_shard_kwargs())


# ---------------------------------------------------------------- arrays across processes


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _place(tree, shardings):
  """Host or single-device values (equal on every process) as global arrays."""

  def place(x, s):
    if _is_key(x):
      return jax.random.wrap_key_data(place(jax.random.key_data(x), s),
                                      impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, s, lambda index: host[index])

  return jax.tree.map(place, tree, shardings)


def _to_host(tree):
  """NumPy copies of global arrays (gathered across processes where sharded:
  collective, every process must call it)."""

  def get(x):
    if _is_key(x):
      return jax.random.wrap_key_data(get(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(get, tree)


def _copy(tree):
  """Device copies with the same shardings (the train step donates its input)."""
  return jax.tree.map(lambda x: x.copy(), tree)


# ---------------------------------------------------------------- checkpoints


def _to_saveable(tree) -> dict:
  leaves = jax.tree.leaves(tree)
  return {f"{i:06d}": jax.random.key_data(x) if _is_key(x) else x for i, x in enumerate(leaves)}


def _from_saved(template, saved: dict):
  leaves, treedef = jax.tree.flatten(template)
  out = []
  for i, t in enumerate(leaves):
    x = saved[f"{i:06d}"]
    out.append(jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x)
  return jax.tree.unflatten(treedef, out)


def _abstract(saveable: dict) -> dict:
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding)
          for k, v in saveable.items()}


class _Checkpoints:
  """Latest training state + best-validation params under one orbax manager;
  every process calls every method (orbax writes each shard once and restores
  the arrays with the shardings of the templates)."""

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


# ---------------------------------------------------------------- logging


class _Log:
  """``metrics.jsonl``, written by process 0 only (the others hold no file)."""

  def __init__(self, path: str, step: int):
    self.path = path
    self.file = None
    if is_main_process():
      _trim_log(path, step)
      self.file = open(path, "a")

  def write(self, record: dict) -> None:
    if self.file is not None:
      self.file.write(json.dumps(record) + "\n")
      self.file.flush()

  def close(self) -> None:
    if self.file is not None:
      self.file.close()


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


def _snapshot(workdir: str, step: int, params, layouts, paths) -> None:
  """Saves the conv kernels to ``snapshots/step_XXXXXXX.npz`` (Roburin et al.
  2022, Fig. 2); collective (sharded kernels are gathered), process 0 writes."""
  leaves = _to_host(jax.tree.leaves(params))
  if not is_main_process():
    return
  directory = os.path.join(workdir, "snapshots")
  os.makedirs(directory, exist_ok=True)
  arrays = {p: np.asarray(x) for p, l, x in zip(paths, layouts, leaves) if l is not None}
  np.savez(os.path.join(directory, f"step_{step:07d}.npz"), **arrays)


# ---------------------------------------------------------------- building a run


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
      **config.get("dataset_kwargs", {}),
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


def _check_sizes(config, mesh) -> None:
  processes = jax.process_count()
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % processes:
      raise ValueError(f"{key} {config[key]} must be a multiple of the {processes} processes")
  if config.batch_size % mesh.size:
    raise ValueError(
        f"batch size {config.batch_size} must be a multiple of the {mesh.size} devices"
    )


def _init_state(model, tx, mesh, min_size: int):
  """``(graphdef, eval_step, state, shardings)``: the model split in train mode,
  its eval step, and the training state placed on ``mesh`` by the sharding rules
  (the optimizer state is built in place by a jitted ``tx.init``)."""
  model.eval()
  eval_step = make_eval_step(nnx.split(model, nnx.Param, ...)[0])
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  model_shardings = sharding.state_shardings({"params": params, "rest": rest}, mesh, min_size)
  placed = _place({"params": params, "rest": rest}, model_shardings)
  opt_shardings = sharding.state_shardings(jax.eval_shape(tx.init, placed["params"]), mesh,
                                           min_size)
  repl = NamedSharding(mesh, P())
  state = {
      **placed,
      "opt_state": jax.jit(tx.init, out_shardings=opt_shardings)(placed["params"]),
      "step": _place(np.zeros((), np.int32), repl),
  }
  return graphdef, eval_step, state, {**model_shardings, "opt_state": opt_shardings, "step": repl}


def _predictions(config, lr: float, hparams: dict, layers: dict) -> dict:
  """The theory's equilibrium angular update and filter norms at ``lr`` (Kosson
  et al. 2024, Table 1), where the method has them."""
  out = {}
  predicted = optimizers.predicted_angular_update(config.method, lr, **hparams)
  if predicted is not None:
    out["predicted_angular_update"] = float(predicted)
  norms = {name: optimizers.predicted_weight_norm(config.method, lr, size, **hparams)
           for name, size in layers.items()}
  if any(v is not None for v in norms.values()):
    out["predicted_weight_norm"] = {k: float(v) for k, v in norms.items()}
  return out


def _train_record(config, step: int, epoch: int, metrics, opt_state, hparams: dict,
                  layers: dict) -> dict:
  """A ``train`` record: the step's loss, accuracy, lr, the tracker's per-layer
  mean angular update and mean filter norm (before the step), predictions."""
  m = jax.device_get(metrics)
  dynamics = spherax.diagnostics.summaries(opt_state)
  record = {
      "kind": "train",
      "step": step,
      "epoch": epoch,
      "loss": float(m["loss"]),
      "accuracy": float(m["accuracy"]),
      "lr": float(m["lr"]),
      "angular_update": {n: dynamics[f"{n}/angular_update/mean"] for n in layers},
      "weight_norm": {n: dynamics[f"{n}/norm/mean"] for n in layers},
  }
  return {**record, **_predictions(config, record["lr"], hparams, layers)}


def _progress_bar(config, total: int, initial: int):
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc=f"{config.method}",
              disable=not (config.get("progress", True) and is_main_process()))


class _Run:
  """One run's fixed parts: config, data, mesh, steps, optimizer, checkpoints."""

  def __init__(self, config, model, dataset, mesh):
    self.config, self.dataset, self.mesh = config, dataset, mesh
    self.steps_per_epoch = dataset.num_train // config.batch_size
    self.total_steps = self.steps_per_epoch * config.epochs
    _check_sizes(config, mesh)
    tx, self.schedule, self.hparams = build_optimizer(config, self.steps_per_epoch)
    # the angular updates and norms logged are recorded on the logged steps only: the
    # loop passes the static record= (every= is the schedule of callers that do not)
    self.tx = spherax.diagnostics.track_dynamics(tx, CONV_GROUPS, every=config.log_every)
    min_size = config.get("fsdp_min_size", sharding.MIN_SIZE)
    self.graphdef, self.eval_step, state, shardings = _init_state(model, self.tx, mesh,
                                                                  min_size)
    self.layouts, self.paths = conv_layouts(state["params"])
    self.layers = {p: l.group_size for p, l in zip(self.paths, self.layouts) if l is not None}
    self.train_step = make_train_step(self.graphdef, self.tx, self.schedule, mesh=mesh,
                                      shardings=shardings)
    self.has_val = getattr(dataset, "num_validation", 0) > 0
    os.makedirs(config.workdir, exist_ok=True)
    self.log_path = os.path.join(config.workdir, "metrics.jsonl")
    self.ckpts = _Checkpoints(os.path.join(config.workdir, "checkpoints"))
    self.initial = state

  def start(self):
    """``(state, best, meta)`` from the latest checkpoint, or fresh."""
    best = _copy({"params": self.initial["params"], "rest": self.initial["rest"]})
    meta = {"step": 0, "epoch": 0, "batch": 0, "best_val": -1.0, "best_step": 0}
    restored = self.ckpts.restore(self.initial, best)
    return (self.initial, best, meta) if restored is None else restored

  def evaluate(self, params_and_rest, split: str) -> dict:
    return evaluate(self.eval_step, params_and_rest["params"], params_and_rest["rest"],
                    _eval_batches(self.dataset, self.config, split), self.mesh)

  def snapshot(self, step: int, params) -> None:
    if self.config.get("snapshot_every", 0):
      _snapshot(self.config.workdir, step, params, self.layouts, self.paths)


def _run_epochs(run: _Run, state, best, meta, log: _Log, bar, stop_after_steps):
  """The loop over the remaining batches; returns ``(state, best, meta,
  interrupted)``. Logs after recorded steps, validates and checkpoints at the
  end of each epoch, checkpoints every ``checkpoint_every`` steps."""
  config, step = run.config, meta["step"]
  snapshot_every = config.get("snapshot_every", 0)
  for epoch in range(meta["epoch"], config.epochs):
    skip = meta["batch"] if epoch == meta["epoch"] else 0
    for index, batch in enumerate(_train_batches(run.dataset, config, epoch, skip), start=skip):
      # the logged steps' program records, the others' is the bare optimizer step
      state, metrics = run.train_step(state, _global_batch(batch, run.mesh),
                                      step % config.log_every == 0)
      step += 1
      bar.update(1)
      if (step - 1) % config.log_every == 0:  # the tracker recorded this step
        record = _train_record(config, step, epoch, metrics, state["opt_state"], run.hparams,
                               run.layers)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        log.write(record)
      if snapshot_every and step % snapshot_every == 0:
        run.snapshot(step, state["params"])
      at_end_of_epoch = index + 1 == run.steps_per_epoch
      if at_end_of_epoch and run.has_val:
        val = run.evaluate(state, "validation")
        log.write({"kind": "eval", "split": "validation", "step": step, "epoch": epoch, **val})
        if val["accuracy"] > meta["best_val"]:
          best = _copy({"params": state["params"], "rest": state["rest"]})
          meta.update(best_val=val["accuracy"], best_step=step)
      stopping = stop_after_steps is not None and step >= stop_after_steps
      if stopping or at_end_of_epoch or step % config.checkpoint_every == 0:
        position = (epoch + 1, 0) if at_end_of_epoch else (epoch, index + 1)
        meta.update(step=step, epoch=position[0], batch=position[1])
        run.ckpts.save(step, state, best, meta)
      if stopping:
        return state, best, meta, True
  return state, best, meta, False


def train(
    config,
    *,
    model: nnx.Module | None = None,
    dataset=None,
    mesh: jax.sharding.Mesh | None = None,
    stop_after_steps: int | None = None,
) -> dict:
  """Trains one run; returns the summary record (also the last JSONL line).

  Every process of a multi-host run calls it with the same arguments (see
  :func:`initialize_distributed`).

  Args:
    config: a run config (see :mod:`experiments.configs`).
    model, dataset: override the config's model / dataset (tests, notebooks);
      a given model ends holding the final parameters and statistics.
    mesh: the mesh (default: every device, with ``config.fsdp``; see
      :func:`make_mesh`).
    stop_after_steps: stop (after checkpointing) once this many steps are done,
      without the final test evaluation: simulates an interruption.

  Returns:
    The summary record; on processes other than 0 the entries read from the
    log (final train loss, late angular-update averages) are absent.
  """
  t0 = time.time()
  dataset = _build_dataset(config) if dataset is None else dataset
  model = _build_model(config, dataset) if model is None else model
  mesh = make_mesh(fsdp=config.get("fsdp", 1)) if mesh is None else mesh
  run = _Run(config, model, dataset, mesh)
  state, best, meta = run.start()
  log = _Log(run.log_path, meta["step"])
  bar = _progress_bar(config, run.total_steps, meta["step"])
  if meta["step"] == 0:
    run.snapshot(0, state["params"])
  try:
    state, best, meta, interrupted = _run_epochs(run, state, best, meta, log, bar,
                                                 stop_after_steps)
    run.ckpts.close()
    if interrupted:
      return {"kind": "interrupted", "step": meta["step"]}
    test = run.evaluate(best if run.has_val else state, "test")
    nnx.update(model, *_to_host((state["params"], state["rest"])))
    summary = {
        "kind": "summary",
        "step": meta["step"],
        "name": config.get("name", config.method),
        "method": config.method,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_validation_accuracy": meta["best_val"] if run.has_val else None,
        "wall_time_s": time.time() - t0,
    }
    if is_main_process():
      log.file.flush()
      summary.update(_late_averages(run.log_path, run.total_steps))
    log.write(summary)
    return summary
  finally:
    bar.close()
    log.close()
