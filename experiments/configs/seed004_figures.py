"""Kosson et al. 2024, Figures 3, 4 and 5.

Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances
Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212; settings from its
App. O unless a comment says otherwise.

* ``fig3`` (§5 "Learning Rate vs Weight Decay", App. O): AdamW and RV-AdamW on
  ResNet-20 / CIFAR-10 (the Table 4 B = 128 setting: cosine, 5 warm-up epochs,
  200 epochs, full training set, test accuracy) across learning rates at the
  fixed product ``ηλ = 5e-4``; the grid includes the three monitored rates
  1e-4, 8.3e-3 and 0.3 (App. O "Scheduling Effects"); the other points are our
  choice (the paper does not list its grid).
* ``fig4`` (App. O "Adam vs AdamW"): ResNet-18 on a 90/10 train/validation
  split, step-wise cosine, 200 epochs, no warm-up; a 2-D sweep of lr × L2 (Adam)
  and lr × wd (AdamW) on a grid of powers of 2 around the best configurations
  the paper reports (Adam lr 7.813e-4, L2 1.25e-4; AdamW lr 1.25e-2, wd 8e-2);
  the grid's extent is our choice (the paper gives only the best points).
  Batch 128 (Table 4's CIFAR-10 setting; the paragraph is silent).
* ``fig5`` (App. O "Training Poorly Normalized Networks"): LayerNorm ResNet-18
  on CIFAR-100, 90/10 split, batch 256, wd 5e-4, SGDM against RV-SGDM across
  learning rates (the lr grid is our choice), 5 runs per point (Fig. 5 caption:
  mean ± std of 5 runs). The paper reports the validation accuracy; the train
  loop reports the test accuracy of the best-validation checkpoint (the
  validation accuracies are in each run's ``metrics.jsonl``).
* Fig. 12 (App. O "Imbalanced Rotation": a portion ``p`` of the neurons rotates
  ``f`` times slower or faster) is its own config,
  :mod:`experiments.configs.seed004_fig12` (the RV optimizers' ``rotation_scale=``).

Weight decay on gains and biases: the paper follows timm (λ = 0 there), and so do
these configs (``decay_mask="kernels"``: only ``ndim ≥ 2`` weights are decayed).
"""

from __future__ import annotations

from experiments.configs import base

PRODUCT = 5e-4  # App. O: ηλ = 5e-4 for the ResNet-20 sweep
FIG3_LRS = (1e-4, 5e-4, 1.6e-3, 5e-3, 8.3e-3, 1.6e-2, 5e-2, 0.16, 0.3, 0.5)
FIG4_BEST = {"adam": (7.813e-4, 1.25e-4), "adamw": (1.25e-2, 8e-2)}  # App. O
FIG4_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # our grid around the best points
FIG5_LRS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
FIG5_SEEDS = (0, 1, 2, 3, 4)
_COSINE = dict(kind="cosine", warmup_epochs=5, init_value=1e-6, end_value=1e-5)


def _run(name, *, method, lr, hparams, dataset="cifar10", model="resnet20", norm="batch",
         seed=0, quick=False, schedule=None, batch_size=128, validation_fraction=0.0):
  cfg = base.run(
      name=name,
      protocol="seed004_figures",
      workdir=f"runs/seed004_figures/{name}/seed{seed}",
      seed=seed,
      dataset=dataset,
      validation_fraction=validation_fraction,
      model=model,
      norm=norm,
      method=method,
      learning_rate=lr,
      hparams=dict(hparams, decay_mask="kernels"),  # timm: λ = 0 on gains and biases
      groups=None,
      schedule=dict(schedule or _COSINE),
      epochs=200,
      batch_size=batch_size,
      log_every=20,
  )
  return base.quick_overrides(cfg) if quick else cfg


def runs(quick: bool = False) -> list:
  fig3 = [
      _run(f"fig3/{m}/lr{lr:g}", method=m, lr=lr, hparams=dict(weight_decay=PRODUCT / lr),
           quick=quick)
      for m in ("adamw", "rv_adamw")
      for lr in (FIG3_LRS[::4] if quick else FIG3_LRS)
  ]
  factors = FIG4_FACTORS[2:3] if quick else FIG4_FACTORS
  fig4 = [
      _run(f"fig4/{m}/lr{lr0 * f:.4g}/wd{wd0 * g:.4g}", method=m, lr=lr0 * f,
           hparams=dict(weight_decay=wd0 * g), model="resnet18",
           schedule=dict(_COSINE, warmup_epochs=0),
           validation_fraction=0.1, quick=quick)  # App. O: no warm-up, 90/10 split
      for m, (lr0, wd0) in FIG4_BEST.items()
      for f in factors
      for g in factors
  ]
  fig5 = [
      _run(f"fig5/{m}/lr{lr:g}", method=m, lr=lr, hparams=dict(momentum=0.9, weight_decay=5e-4),
           dataset="cifar100", model="resnet18", norm="layer", seed=seed, batch_size=256,
           validation_fraction=0.1, quick=quick)
      for m in ("sgdm", "rv_sgdm")
      for lr in (FIG5_LRS[::3] if quick else FIG5_LRS)
      for seed in (FIG5_SEEDS[:1] if quick else FIG5_SEEDS)
  ]
  return fig3 + fig4 + fig5
