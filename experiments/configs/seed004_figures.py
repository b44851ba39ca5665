"""Seed 004 Figures 3, 4 and 5 (REFERENCE §5, §7).

* ``fig3``: AdamW and RV-AdamW on ResNet-20 / CIFAR-10 across learning rates at a
  fixed product ``ηλ = 5e-4`` (so the equilibrium angular update
  ``sqrt(2ηλ(1−β1)/(1+β1))`` is the same for every point); lrs 5e-4 … 0.5.
* ``fig4``: per-layer angular updates of Adam with L2 (lr 1e-3, L2 5e-4; our
  choice, the seed 001 Adam setting) against AdamW (lr 0.05, wd 0.01, the Table 2
  setting) on ResNet-20 / CIFAR-10: AdamW's layers share one angular update,
  Adam+L2's do not. The curves come from the JSONL ``angular_update`` records.
* ``fig5``: LayerNorm ResNet-18 on CIFAR-100, SGDM against RV-SGDM across
  learning rates (momentum 0.9, wd 5e-4; the lr grid is our choice).

All: 200 epochs (fig 5: 200), batch 128, cosine per step with 5 warm-up epochs.
"""

from __future__ import annotations

from experiments.configs import base

FIG3_LRS = (5e-4, 1.6e-3, 5e-3, 1.6e-2, 5e-2, 0.16, 0.5)
FIG5_LRS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
PRODUCT = 5e-4


def _run(name, *, method, lr, hparams, dataset="cifar10", model="resnet20", norm="batch",
         seed=0, quick=False):
  cfg = base.run(
      name=name,
      protocol="seed004_figures",
      workdir=f"runs/seed004_figures/{name}/seed{seed}",
      seed=seed,
      dataset=dataset,
      model=model,
      norm=norm,
      method=method,
      learning_rate=lr,
      hparams=hparams,
      groups=None,
      schedule=dict(kind="cosine", warmup_epochs=5, init_value=1e-6, end_value=1e-5),
      epochs=200,
      batch_size=128,
      log_every=20,
  )
  return base.quick_overrides(cfg) if quick else cfg


def runs(quick: bool = False) -> list:
  fig3 = [
      _run(f"fig3/{m}/lr{lr:g}", method=m, lr=lr, hparams=dict(weight_decay=PRODUCT / lr),
           quick=quick)
      for m in ("adamw", "rv_adamw")
      for lr in (FIG3_LRS[::3] if quick else FIG3_LRS)
  ]
  fig4 = [
      _run("fig4/adam_l2", method="adam", lr=1e-3, hparams=dict(weight_decay=5e-4), quick=quick),
      _run("fig4/adamw", method="adamw", lr=0.05, hparams=dict(weight_decay=0.01), quick=quick),
  ]
  fig5 = [
      _run(f"fig5/{m}/lr{lr:g}", method=m, lr=lr, hparams=dict(momentum=0.9, weight_decay=5e-4),
           dataset="cifar100", model="resnet18", norm="layer", quick=quick)
      for m in ("sgdm", "rv_sgdm")
      for lr in (FIG5_LRS[::3] if quick else FIG5_LRS)
  ]
  return fig3 + fig4 + fig5
