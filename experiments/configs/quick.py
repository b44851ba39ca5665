"""The quick reproduction (``python -m experiments.quick``): nine optimizers train
the same small ResNet-8 (width 8, BatchNorm) on the offline digits set.

Multi-step schedule (×0.1 at 2/3 of training), 8 epochs of batch 64, 10%
validation split for model selection, no augmentation (8×8 digits). The other
hyperparameters are the papers' (seed 001 β2 = 0.99 and L2 grid value 5e-4 for
the Adam family; seed 004 lr 0.05 wd 0.01 for RV-AdamW) except the decays of
AdamW† (0.5) and SGD-M / RV-SGDM (5e-3), raised so that ``ηλ`` moves the filter
norms within the 160 steps of the run.

Learning rates: ``python -m experiments.quick --lr-sweep`` (each rate × {1/3, 1,
3}, best validation accuracy %, 144 validation digits, 1 digit = 0.69%) gave
adam {1e-3: 93.75, 3e-3: 97.92, 9e-3: 95.83}; AdamW† {94.44, 97.92, 97.22};
AdamG† {1e-2: 96.53, 3e-2: 97.92, 9e-2: 98.61}; AdamS {94.44, 96.53, 97.22};
Adam w/o (ab) {94.44, 97.92, 96.53}; AdamSRT {94.44, 96.53, 97.22}; SGD-M
{0.033: 97.22, 0.1: 98.61, 0.3: 96.53}; RV-AdamW {0.017: 96.53, 0.05: 97.22,
0.15: 97.92}; RV-SGDM {0.033: 97.92, 0.1: 99.31, 0.3: 100.0}. The rates below
are the best of each sweep or within one validation digit of it; we kept the
round, shared values so the Adam variants compare at one rate.
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
