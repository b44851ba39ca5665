"""Sharding rules of the training loop, in one place, and the FSDP example protocol.

A run's mesh has the axes ``('data',)`` (pure data parallelism: every device
holds a full copy of the training state) or, with ``config.fsdp = k > 1``,
``('data', 'fsdp')`` of shape ``(n/k, k)`` over all ``n`` devices of all
processes (data parallelism + fully sharded data parallelism, FSDP):

* **batch**: the leading (example) axis is split over *every* mesh axis,
  ``P(('data', 'fsdp'))``, so each device sees ``1/n`` of the global batch;
* **state** (parameters, batch statistics, optimizer state): a leaf with at
  least ``min_size`` elements is split over ``'fsdp'`` along its largest axis
  whose length ``'fsdp'`` divides (the first such axis on ties); every other
  leaf (small leaves, scalars, RNG keys, per-group statistics) is replicated.
  Optimizer moments have their parameter's shape, so they get their
  parameter's spec. On a 1-D ``'data'`` mesh everything is replicated.

XLA inserts the collectives (all-gathers of the sharded kernels before the
forward pass, reduce-scatters of their gradients); the numbers are those of
data parallelism up to float32 summation order. The spherax optimizers reduce
only per-group statistics across devices on sharded leaves (their group
reductions become all-reduces of per-group scalars).

The protocol ``fsdp`` (:func:`runs`) is the example: ResNet-50 and DeiT-tiny
on ImageNet, data parallel × FSDP (``python -m experiments.runner fsdp
--print-commands``); its quick variant trains the digits ResNet-8 on a
``(4, 2)`` mesh of 8 devices.

Example:

>>> tuple(leaf_spec((3, 3, 256, 512), fsdp=4))   # largest divisible axis: the output axis
(None, None, None, 'fsdp')
>>> tuple(leaf_spec((1000, 2050), fsdp=4))   # 2050 is not divisible by 4
('fsdp', None)
>>> tuple(leaf_spec((512,), fsdp=4)), tuple(leaf_spec((3, 3, 3, 6), fsdp=4))   # too small
((), ())
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.configs import base

# jax is imported inside the functions: config modules load without it
# (``runner --print-commands`` must not initialise a backend).

__all__ = [
    "DATA",
    "FSDP",
    "MIN_SIZE",
    "batch_sharding",
    "config",
    "leaf_spec",
    "make_mesh",
    "runs",
    "state_shardings",
]

DATA, FSDP = "data", "fsdp"
"""The mesh axis names."""

MIN_SIZE = base.FSDP_MIN_SIZE
"""Default: leaves with fewer elements are replicated (not worth a collective)."""


def make_mesh(num_devices: int | None = None, fsdp: int = 1,
              devices: Sequence[Any] | None = None):
  """The run's mesh over the first ``num_devices`` of ``devices`` (default:
  ``jax.devices()``, every device of every process).

  ``fsdp == 1``: a 1-d ``('data',)`` mesh; ``fsdp > 1``: ``('data', 'fsdp')``
  of shape ``(num_devices // fsdp, fsdp)``. Axes are ``AxisType.Auto`` (XLA
  propagates the shardings; spherax's update rules are written for that).
  """
  import jax
  from jax.sharding import AxisType, Mesh

  devices = list(jax.devices() if devices is None else devices)
  if num_devices is not None:
    devices = devices[:num_devices]
  if not isinstance(fsdp, int) or fsdp < 1 or len(devices) % fsdp:
    raise ValueError(
        f"fsdp={fsdp!r} must be a positive int dividing the {len(devices)} devices"
    )
  if fsdp == 1:
    return Mesh(np.asarray(devices), (DATA,), axis_types=(AxisType.Auto,))
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, (DATA, FSDP), axis_types=(AxisType.Auto,) * 2)


def batch_sharding(mesh):
  """The examples of a batch split over every mesh axis (a ``NamedSharding``)."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def leaf_spec(shape: Sequence[int], fsdp: int, min_size: int = MIN_SIZE):
  """The FSDP rule for one leaf, a ``PartitionSpec``: split its largest axis
  that ``fsdp`` divides (first on ties) over ``'fsdp'``; replicate when
  ``fsdp == 1``, when the leaf has fewer than ``min_size`` elements, or when no
  axis is divisible."""
  from jax.sharding import PartitionSpec as P

  shape = tuple(int(s) for s in shape)
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  fits = [i for i, s in enumerate(shape) if s % fsdp == 0]
  if not fits:
    return P()
  axis = max(fits, key=lambda i: (shape[i], -i))
  return P(*[FSDP if i == axis else None for i in range(len(shape))])


def state_shardings(tree: Any, mesh, min_size: int = MIN_SIZE) -> Any:
  """A ``NamedSharding`` for every array leaf of ``tree`` (by :func:`leaf_spec`
  on its shape; anything with a ``shape``, e.g. ``jax.ShapeDtypeStruct``)."""
  import jax
  from jax.sharding import NamedSharding

  fsdp = mesh.shape.get(FSDP, 1)
  return jax.tree.map(lambda x: NamedSharding(mesh, leaf_spec(x.shape, fsdp, min_size)),
                      tree)


MODELS = ("resnet50", "deit_tiny")
METHODS = ("rv_adamw",)
COLUMNS = MODELS


def config(model: str = "resnet50", *, fsdp: int = 8, seed: int = 0, quick: bool = False):
  """A data-parallel + FSDP ImageNet run (``model``: ``'resnet50'`` or
  ``'deit_tiny'``) with RV-AdamW (Kosson, Messmer, Jaggi, *Rotational
  Equilibrium: How Weight Decay Balances Learning Across Neural Networks*,
  ICML 2024, arXiv:2305.17212) on a cosine schedule; each group of ``fsdp``
  devices shares the kernels, the ``'data'`` axis replicates that group.
  ``quick``: the digits ResNet-8 variant (:func:`experiments.configs.base.quick_overrides`)
  with ``fsdp=2`` and every leaf of at least 64 elements sharded.

  >>> cfg = config("deit_tiny", fsdp=4)
  >>> cfg.model, cfg.fsdp, cfg.method, cfg.norm
  ('deit_tiny', 4, 'rv_adamw', 'weight')
  """
  if model not in MODELS:
    raise ValueError(f"fsdp.config: model must be one of {MODELS}, got {model!r}")
  vit = model == "deit_tiny"
  cfg = base.run(
      name=f"{model}/fsdp{fsdp}/seed{seed}",
      protocol="fsdp",
      column=model,
      workdir=f"runs/fsdp/{model}/fsdp{fsdp}/seed{seed}",
      seed=seed,
      dataset="imagenet2012",
      model=model,
      norm="weight" if vit else "batch",  # DeiT: weight-standardised kernels + gains
      gains=vit,
      method="rv_adamw",
      learning_rate=1e-3 if vit else 2e-3,
      hparams=dict(weight_decay=0.05 if vit else 0.1),
      groups=None,
      schedule=dict(kind="cosine", warmup_epochs=5, init_value=1e-6, end_value=1e-5),
      epochs=300 if vit else 90,
      batch_size=1024,
      eval_batch_size=1024,
      validation_fraction=0.01,
      fsdp=fsdp,
  )
  if quick:
    cfg = base.quick_overrides(cfg)
    cfg.unlock()
    cfg.update(model="resnet8", norm="batch", gains=False, fsdp=2, fsdp_min_size=64)
    cfg.lock()
  return cfg


def runs(quick: bool = False) -> list:
  """ResNet-50 and DeiT-tiny, one seed, FSDP over 8 devices (``quick``: digits)."""
  return [config(m, quick=quick) for m in MODELS]
