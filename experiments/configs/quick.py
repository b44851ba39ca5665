"""The quick protocol (``python -m experiments.quick``): the papers' claims on digits.

Data and model: scikit-learn's 8×8 digits (:mod:`experiments.data.digits`, 1437
training / 360 test images), a BatchNorm ResNet-8 of width 8 (every conv filter
scale-invariant). :data:`STEPS` steps of batch 64 (≈ 36 epochs) with 20% of each
batch's labels re-drawn uniformly at random every step (:data:`LABEL_NOISE`): the
gradient stays noisy, so the loss does not collapse and the weight norms reach the
equilibrium that weight decay and gradient noise balance (Wan et al., *Spherical
Motion Dynamics*, ICLR 2021 submission, §3; Kosson, Messmer, Jaggi, *Rotational
Equilibrium*, ICML 2024, arXiv:2305.17212, §3). The learning rate is constant
after a linear warm-up over the first :data:`WARMUP` steps from 1/10 of it: a
multistep drop would add a second transient that the run is too short to follow
(claim (e) shows that transient on purpose).

Settings per method (``(lr, hyperparameters)``):

* AdamW† (AdamW on the conv filters, Adam+L2 elsewhere; Roburin et al., *A
  spherical analysis of Adam with Batch Normalization*, ICLR 2021 submission):
  lr 3e-3, decoupled wd 1.5 on the filters, so ``ηλ = 4.5e-3`` and ``1/(ηλ) ≈ 220``
  steps fit the run several times (Kosson et al. 2024, §3: the transient lasts
  about ``1/(ηλ)`` for AdamW); β = (0.9, 0.99) as in Roburin et al., §5.
* SGD-M: lr 0.1, momentum 0.9, coupled L2 5e-3 (``ηλ = 5e-4``; the approach
  rate is ``4ηλ/(1−α)``, ≈ 50 steps, Wan et al., SMD, Theorem 2).
* RV-AdamW, RV-SGDM (Kosson et al. 2024, §4): the same lr and decay as their base
  optimizers, tracker decay ``rms_decay = 0.9`` (the reference code's later
  default; the paper's ζ = 0.99 remembers the large early updates for ~100
  steps, which the first 10% of this run would show as a lag).
* Adam (+L2), AdamS, Adam w/o (ab), AdamSRT: lr 3e-3, L2 5e-4 (the L2 value of
  Roburin et al., ICLR 2021 submission, Table 2's released settings); AdamG†
  lr 3e-2 with the same L2 on the non-filter parameters.
* Claim (e), an lr drop (Wan et al., SMD, Corollary 3.1): SGD-M lr 0.1 then
  ×0.1 at step :data:`DROP_AT`, L2 5e-2 (so the bound ``log(k)(1−α)/(4λη)`` is
  115 steps after the drop and fits the run), with and without
  ``spherax.rescale_norms_on_lr_drop``.
* Claim (f), Theorem 4 of Roburin et al., *Spherical Perspective on Learning
  with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382: SGD lr
  0.01, L2 1e-3 (that paper's Fig. 2 values) against AdaGradG with
  ``β = (1−ηλ)⁴``, lr ``(2β)^{-1/2}`` and each filter's own
  ``v₀ = r₀⁴/(2η²β^{1/2})``; both runs give the non-filter parameters the same
  SGD (as the paper does), and see the same batches.

Every learning rate is the one the issue's CPU measurements used or the paper's;
the (d) accuracies use the rates of the previous quick protocol's sweep
(lr × {1/3, 1, 3}, best validation accuracy).
"""

from __future__ import annotations

STEPS = 800
BATCH = 64
WARMUP = 40
LABEL_NOISE = 0.2
SEED = 0
DROP_AT = 200  # claim (e): the lr drop, then DROP_STEPS more steps
DROP_STEPS = 400
DROP_FACTOR = 10.0
COSINE_STEPS = 400  # claim (f)

_ADAM = dict(b1=0.9, b2=0.99)
# (method of experiments.optimizers, lr, hyperparameters, label)
RUNS = {
    "rv_adamw": (3e-3, dict(_ADAM, weight_decay=1.5, rms_decay=0.9)),
    "rv_sgdm": (0.1, dict(momentum=0.9, weight_decay=5e-3, rms_decay=0.9)),
    "adamw_dagger": (3e-3, dict(_ADAM, weight_decay=1.5, adam_weight_decay=5e-4)),
    "sgdm": (0.1, dict(momentum=0.9, weight_decay=5e-3)),
    "adam": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "adams": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "adam_wo_ab": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "adamsrt": (3e-3, dict(_ADAM, weight_decay=5e-4)),
    "adamg_dagger": (3e-2, dict(_ADAM, adam_weight_decay=5e-4)),
}
METHODS = tuple(RUNS)
DROP = (0.1, dict(momentum=0.9, weight_decay=5e-2))  # claim (e), SGD-M
SGD_FOR_ADAGRADG = (0.01, 1e-3)  # claim (f): SGD lr, L2

# thresholds of the claims (issue text / the papers)
THRESHOLDS = dict(
    rv_whole=0.9,  # (a) RV at >= 0.9 η̂_r over the whole run
    rv_early=0.8,  # (a) and >= 0.8 η̂_r in the first 10% of the steps
    base_late=0.85,  # (b) AdamW†, SGD-M at >= 0.85 η̂_r late (last 25% of steps)
    base_early_gap=0.7,  # (b) "far below" early: early ratio <= 0.7 × late ratio
    spread=3.0,  # (c) Adam+L2's per-layer spread >= 3× AdamW†'s
    variant_margin=0.5,  # (d) each variant >= Adam's test accuracy − 0.5 points
    reach=0.9,  # (e) "at the new equilibrium": 10-step mean ratio >= 0.9
    rescaled_fraction=0.25,  # (e) with the rescale: steps <= 0.25 × the bound
    cosine=1e-4,  # (f) per-filter 1 − cos <= 1e-4 at every step
)


def config(method: str, *, seed: int = SEED, workdir: str = "runs/quick-train",
           steps: int = STEPS):
  """The train-loop run of ``method`` (for ``python -m experiments.runner quick``):
  the quick protocol's data, model, optimizer and rate on a constant schedule,
  without the label noise and warm-up that only ``python -m experiments.quick``'s
  own loop applies (the claims are measured there)."""
  from experiments.configs import base

  lr, hparams = RUNS[method]
  return base.run(
      name=method,
      protocol="quick",
      workdir=f"{workdir}/{method}",
      seed=seed,
      dataset="digits",
      validation_fraction=0.0,
      augment=False,
      model="resnet8",
      model_kwargs={"width": 8},
      method=method,
      learning_rate=lr,
      hparams=dict(hparams),
      groups=None if method.startswith("rv_") else "conv",
      schedule=dict(kind="constant"),
      epochs=max(1, steps * BATCH // 1437),
      batch_size=BATCH,
      eval_batch_size=128,
      log_every=10,
      checkpoint_every=10_000,
  )


def runs(quick: bool = False) -> list:
  """The nine train-loop runs (``quick``: about 40 steps each)."""
  if quick:
    return [config(m, steps=40, workdir="runs/quick-train-short") for m in METHODS]
  return [config(m) for m in METHODS]
