"""Roburin et al. 2022, Fig. 2: SGD and AdaGradG follow the same trajectory on the sphere.

Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on
Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, §3.3,
Theorem 4 and Fig. 2. ResNet-20 on CIFAR-10 with BatchNorm and with weight
normalisation, from the same initialisation (same seed), trained by:

* SGD, lr ``η = 0.01``, coupled L2 ``λ = 1e-3`` (so ``ηλ = 1e-5``; Fig. 2);
* AdaGradG on the conv filters with Theorem 4's ``β = (1 − ηλ)⁴ ≈ 0.99996``,
  lr ``(2β)^{-1/2} ≈ 0.71`` and ``v₀ = r₀⁴/(2η²β^{1/2})``;
* AdaGrad (element-wise, optax) on the conv filters, lr 1e-3 (Fig. 2's third
  curve; the paper does not give its lr, 1e-3 is our choice).

In all three runs every non-filter parameter (BN gains and biases, the head)
gets the same SGD (lr 0.01, L2 1e-3), as in the paper (``adagradg_sgd`` and
``adagrad_sgd`` of :mod:`experiments.optimizers`).

``v₀`` (Theorem 4) depends on each filter's own initial radius ``r₀``;
``spherax.adagradg`` takes one value for every group, so this config uses the
He-normal initialisation's typical radius ``r₀ = √2`` (``E||w||² = 2`` for a
filter of ``fan_in`` entries of variance ``2/fan_in``). A per-filter ``v₀`` (a
per-group ``initial_accumulator_value``) makes the match exact to order 2; the
quick job's claim (f) does that (:func:`experiments.quick.adagradg_start`).
The paper fine-tunes a trained network (per-filter ``r₀`` between 0.9 and 2.2);
no pretrained checkpoint is part of this protocol, so these runs start from the
random initialisation. Constant learning rates, 10 epochs, batch 128 (the
paper is silent on the epochs and batch size of Fig. 2: our choice). The
comparison is the cosine similarity of the filters of the runs, from the
conv-kernel snapshots saved every 50 steps (:func:`experiments.plots.trajectories`).
"""

from __future__ import annotations

from experiments.configs import base

LR, L2 = 0.01, 1e-3  # Roburin et al. 2022, Fig. 2
R0 = 2.0**0.5  # He-normal init: E||w||² = 2 per filter (see the module docstring)
BETA = (1 - LR * L2) ** 4  # Theorem 4
ADAGRADG = dict(decay=BETA, initial_accumulator_value=R0**4 / (2 * LR**2 * BETA**0.5))
_SAME_SGD = dict(sgd_learning_rate=LR, sgd_weight_decay=L2)  # non-filter parameters
METHODS = {
    "sgd": (LR, dict(weight_decay=L2)),
    "adagradg_sgd": ((2 * BETA) ** -0.5, dict(ADAGRADG, **_SAME_SGD)),  # Theorem 4
    "adagrad_sgd": (1e-3, dict(_SAME_SGD)),  # lr: the paper is silent, our choice
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
