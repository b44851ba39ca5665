"""The quick reproduction (``python -m experiments.quick``): nine optimizers train
the same small ResNet-8 (width 8, BatchNorm) on the offline digits set.

Multi-step schedule (×0.1 at 2/3 of training), batch 64, 10% validation split for
model selection, no augmentation (8×8 digits). Learning rates were chosen on the
validation split (``python -m experiments.quick --lr-sweep``, see
:mod:`experiments.quick`); the other hyperparameters are the papers' (seed 001
β2 = 0.99 and L2 grid value 5e-4 for the Adam family, seed 004 wd 0.01 / 1e-4 for
the AdamW / SGDM families).
"""

from __future__ import annotations

from experiments.configs import base

EPOCHS = 8
METHODS = (
    "adam",
    "adamw_dagger",
    "adamg_dagger",
    "adams",
    "adam_wo_ab",
    "adamsrt",
    "sgdm",
    "rv_adamw",
    "rv_sgdm",
)
_ADAM = dict(b1=0.9, b2=0.99)
SETTINGS = {
    "adam": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "adamw_dagger": (3e-3, dict(_ADAM, weight_decay=0.5)),
    "adamg_dagger": (3e-2, dict(_ADAM, adam_weight_decay=5e-4)),
    "adams": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "adam_wo_ab": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "adamsrt": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "sgdm": (0.1, dict(momentum=0.9, weight_decay=5e-3)),
    "rv_adamw": (0.05, dict(weight_decay=1e-2)),
    "rv_sgdm": (0.1, dict(momentum=0.9, weight_decay=5e-3)),
}


def config(method: str, *, seed: int = 0, workdir: str = "runs/quick", epochs: int = EPOCHS,
           learning_rate: float | None = None):
  lr, hparams = SETTINGS[method]
  return base.run(
      name=method,
      protocol="quick",
      workdir=f"{workdir}/{method}",
      seed=seed,
      dataset="digits",
      validation_fraction=0.1,
      augment=False,
      model="resnet8",
      model_kwargs={"width": 8},
      method=method,
      learning_rate=lr if learning_rate is None else learning_rate,
      hparams=hparams,
      groups=None if method.startswith("rv_") else "conv",
      schedule=dict(kind="multistep", boundaries=(2 * epochs // 3,), factor=0.1),
      epochs=epochs,
      batch_size=64,
      eval_batch_size=128,
      log_every=5,
      checkpoint_every=10_000,
      progress=False,
  )


def runs(quick: bool = False) -> list:
  """The nine runs (``quick``: 2 epochs each)."""
  if quick:
    return [config(m, epochs=2, workdir="runs/quick-short") for m in METHODS]
  return [config(m) for m in METHODS]
