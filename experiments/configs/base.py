"""The run config every protocol file starts from, and the quick overrides.

Configs are ``ml_collections.ConfigDict`` rather than dataclasses: one nested,
dot-accessible, JSON-serialisable record per run that protocol files fill in
with plain ``update`` calls, that ``lock()`` protects against misspelt keys
(a typo raises instead of silently adding a field) and that command lines can
override key by key (``python -m experiments.runner quick --run sgdm/seed0
--config.learning_rate=0.01``, see :func:`experiments.configs.apply_overrides`)
without a schema per protocol. The train loop reads these keys:

* ``name``, ``protocol``, ``column`` (the results-table column), ``workdir``,
  ``seed``;
* ``dataset``, ``data_dir``, ``validation_fraction``, ``augment``;
* ``model``, ``model_kwargs`` (e.g. ``width``), ``norm``, ``gains``;
* ``method`` (:mod:`experiments.optimizers`), ``learning_rate``, ``hparams``
  (the optimizer's other arguments), ``groups`` (``'conv'``: spherical methods
  group only the conv filters, like the reference code; ``None``: spherax's
  default rule);
* ``schedule``: ``kind`` (constant / multistep / cosine) and its arguments;
* ``epochs``, ``batch_size``, ``eval_batch_size``, ``norm_rescale``;
* ``log_every``, ``checkpoint_every``, ``snapshot_every`` (conv kernels saved
  every that many steps; 0 = never), ``progress``;
* ``fsdp`` (devices sharing each large leaf; 1 = pure data parallelism) and
  ``fsdp_min_size`` (smaller leaves stay replicated): see
  :mod:`experiments.configs.fsdp`.

Example:

>>> cfg = run(method='adam', learning_rate=1e-3, dataset='digits', model='resnet8')
>>> cfg.schedule.kind, cfg.batch_size
('constant', 128)
>>> try:
...   cfg.learnig_rate = 0.1
... except AttributeError:
...   print('misspelt keys are rejected')
misspelt keys are rejected
"""

from __future__ import annotations

import ml_collections

__all__ = ["FSDP_MIN_SIZE", "base", "quick_overrides", "run"]

FSDP_MIN_SIZE = 2**14
"""Default ``fsdp_min_size``: smaller leaves stay replicated under FSDP."""


def base() -> ml_collections.ConfigDict:
  """Defaults shared by all protocols (unlocked, so protocols can extend it)."""
  return ml_collections.ConfigDict(
      dict(
          name="",
          protocol="",
          column="",
          workdir="runs/default",
          seed=0,
          dataset="cifar10",
          data_dir=None,
          validation_fraction=0.05,
          augment=True,
          model="resnet20",
          model_kwargs={},
          norm="batch",
          gains=False,
          method="sgdm",
          learning_rate=0.1,
          hparams={},
          groups="conv",
          schedule=dict(kind="constant"),
          epochs=1,
          batch_size=128,
          eval_batch_size=256,
          norm_rescale=False,
          log_every=50,
          snapshot_every=0,
          checkpoint_every=1000,
          progress=True,
          fsdp=1,
          fsdp_min_size=FSDP_MIN_SIZE,
      )
  )


def run(**fields) -> ml_collections.ConfigDict:
  """``base()`` updated with ``fields``, then locked against new keys."""
  cfg = base()
  cfg.update(fields)
  if not cfg.name:
    cfg.name = cfg.method
  cfg.lock()
  return cfg


def quick_overrides(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A protocol's quick variant: same method, schedule shape and hyperparameters,
  on the offline digits set with a small ResNet-8 for 2 epochs."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.update(
      dataset="digits",
      model="resnet8",
      model_kwargs={"width": 4},
      norm=cfg.norm if cfg.norm in ("batch", "weight", "layer") else "batch",
      epochs=2,
      batch_size=64,
      eval_batch_size=128,
      validation_fraction=0.1,
      log_every=5,
      workdir=cfg.workdir + "-quick",
  )
  if cfg.schedule.kind == "multistep":
    cfg.schedule.boundaries = (1,)
  if cfg.schedule.kind == "cosine":
    cfg.schedule.warmup_epochs = 1
  cfg.lock()
  return cfg
