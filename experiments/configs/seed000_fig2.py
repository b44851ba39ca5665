"""Seed 000 Figure 2: SGD and AdaGradG follow the same trajectory on the sphere.

ResNet-20 on CIFAR-10 with BatchNorm and with weight normalisation, fine-tuned
from the same initialisation (same seed) by (REFERENCE §2, Theorem 4):

* SGD, lr ``η = 0.01``, coupled L2 ``λ = 1e-3`` (so ``ηλ = 1e-5``);
* AdaGradG with ``β = (1 − ηλ)^4 ≈ 0.99996``, lr ``(2β)^{-1/2} ≈ 0.71`` and
  ``v0 = r0^4 / (2η²β^{1/2})``; REFERENCE's ``v0`` depends on each filter's
  initial radius ``r0`` while ``spherax.adagradg`` takes one scalar, so we use the
  filters' typical ``r0 = 1`` (a documented approximation);
* AdaGrad (element-wise, optax), lr 1e-3.

Constant learning rates, 10 epochs, batch 128, no weight decay elsewhere. The
comparison is the cosine similarity of the filters of the three runs, from the
conv-kernel snapshots saved every 50 steps (:func:`experiments.plots.trajectories`);
REFERENCE fine-tunes a trained network, these runs start from the same random
initialisation (no pretrained checkpoint is part of the protocol here).
"""

from __future__ import annotations

from experiments.configs import base

LR, L2, R0 = 0.01, 1e-3, 1.0
BETA = (1 - LR * L2) ** 4
ADAGRADG = dict(decay=BETA, initial_accumulator_value=R0**4 / (2 * LR**2 * BETA**0.5))
METHODS = {
    "sgd": (LR, dict(weight_decay=L2)),
    "adagradg": ((2 * BETA) ** -0.5, ADAGRADG),
    "adagrad": (1e-3, {}),
}


def runs(quick: bool = False) -> list:
  out = []
  for norm in ("batch", "weight"):
    for method, (lr, hparams) in METHODS.items():
      cfg = base.run(
          name=f"fig2/{norm}/{method}",
          protocol="seed000_fig2",
          workdir=f"runs/seed000_fig2/{norm}/{method}",
          dataset="cifar10",
          model="resnet20",
          norm=norm,
          method=method,
          learning_rate=lr,
          hparams=hparams,
          schedule=dict(kind="constant"),
          epochs=10,
          batch_size=128,
          log_every=10,
          snapshot_every=50,
      )
      if quick:
        cfg = base.quick_overrides(cfg)
        cfg.snapshot_every = 5
      out.append(cfg)
  return out
