"""Kosson et al. 2024, Figure 12: artificially imbalanced rotation (Appendix N).

Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances
Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212. Appendix N: "To
further quantify the impact of imbalanced rotation we experiment with
artificially scaling η_r for a fraction of the neurons in each layer. Figure 12
shows the result of varying the fraction (middle) and scale for half the neurons
(right), after tuning the learning rate for each configuration." Fig. 12 caption:
"A portion p of the neurons is rotating f times slower and/or faster than rest
using a modified RV for ResNet-18 training on CIFAR-10. Middle: Varying p for a
fixed f = 10. [...] Right: Varying f ∈ [1, 10] for p = 50%."

App. O, "Imbalanced Rotation": "We trained a ResNet-18 on a 90/10 train/val split
from the original train set with weight decay λ = 0.01 and varying learning rates
η ∈ {2.7·10⁻³, 8.3·10⁻³, 2.5·10⁻², 5·10⁻², 1·10⁻¹, 3·10⁻¹, 0.9·10⁻¹, 4.5}. For
each rotation speed scaling f and portion p we report the best performance of
this sweep. All other settings are equivalent to the settings reported in
Table 4."

The modified RV is RV-AdamW (λ = 0.01 is Table 4's AdamW value) with
``rotation_scale``: in every rotational layer the first ``round(p·C)`` of its
``C`` output units get the target angular update ``s η̂_r``, the others ``η̂_r``;
``s = 1/f`` ("slower") or ``s = f`` ("faster"), both configured since the
caption says "slower and/or faster". Table 4's CIFAR-10 AdamW setting (B = 128):
cosine per step, 5 warm-up epochs from 1e-6, 200 epochs, float32, crop + flip;
RV's ``ζ = 0.99`` (the paper's default); no decay on gains and biases (timm, as
the paper). One seed per point (the paper does not say how many).

Our choices, where the paper is silent or ambiguous:

* the values of ``p`` and ``f`` (read off the figure's axes, not given in the
  text): ``p ∈ FRACTIONS`` at ``f = 10``, ``f ∈ FACTORS`` at ``p = 0.5``;
* the lr list prints ``0.9·10⁻¹`` between ``3·10⁻¹`` and ``4.5``; the ×3
  progression of the list suggests 0.9 was meant: both 0.09 (as printed) and 0.9
  are swept (``PAPER_LRS`` is the printed list, ``EXTRA_LRS`` our addition);
* which neurons: the first ``round(p·C)`` output units of each layer (any fixed
  subset is equivalent at initialisation).

Full scale (9 lrs × 2 directions × 9 (p, f) points, 200 epochs each) is not run
here.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from experiments.configs import base

WEIGHT_DECAY = 0.01  # App. O, "Imbalanced Rotation": λ = 0.01
PAPER_LRS = (2.7e-3, 8.3e-3, 2.5e-2, 5e-2, 1e-1, 3e-1, 0.9e-1, 4.5)  # App. O, as printed
EXTRA_LRS = (0.9,)  # our addition: the ×3 progression suggests 0.9·10⁰ was meant
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)  # Fig. 12 middle, at f = 10 (our grid)
FACTORS = (1.0, 2.0, 3.0, 5.0, 10.0)  # Fig. 12 right, f ∈ [1, 10] at p = 50% (our grid)
DIRECTIONS = ("slower", "faster")  # Fig. 12 caption: "f times slower and/or faster"
_COSINE = dict(kind="cosine", warmup_epochs=5, init_value=1e-6, end_value=1e-5)  # Table 4


@dataclasses.dataclass(frozen=True)
class ImbalancedRotation:
  """``rotation_scale`` for RV: in each leaf with ``ndim >= 2`` (a layer's kernel,
  grouped per output unit, the last axis), the first ``round(fraction·C)`` of its
  ``C`` output units get ``scale``, the others 1.

  >>> import jax.numpy as jnp
  >>> ImbalancedRotation(0.5, 0.1)({'k': jnp.zeros((3, 4)), 'b': jnp.zeros(4)})['k'].tolist()
  [0.1, 0.1, 1.0, 1.0]
  """

  fraction: float
  scale: float

  def __call__(self, params):
    def leaf(x):
      if len(x.shape) < 2:
        return 1.0  # not rotational by default (gains, biases): ignored
      units = x.shape[-1]
      slow = int(round(self.fraction * units))
      return np.where(np.arange(units) < slow, self.scale, 1.0)
    return jax.tree.map(leaf, params)


def points() -> list[tuple[float, float]]:
  """The ``(p, f)`` points: Fig. 12 middle (p varied at f = 10), then right (f at p = 0.5)."""
  middle = [(p, 10.0) for p in FRACTIONS]
  right = [(0.5, f) for f in FACTORS if (0.5, f) not in middle]
  return middle + right


def _run(direction, fraction, factor, lr, quick):
  scale = 1.0 / factor if direction == "slower" else factor
  name = f"fig12/{direction}/p{fraction:g}/f{factor:g}/lr{lr:g}"
  cfg = base.run(
      name=name,
      protocol="seed004_fig12",
      workdir=f"runs/seed004_fig12/{name}/seed0",
      seed=0,
      dataset="cifar10",
      validation_fraction=0.1,  # App. O: 90/10 train/val split
      model="resnet18",  # App. O: ResNet-18
      norm="batch",
      method="rv_adamw",
      learning_rate=lr,
      hparams=dict(weight_decay=WEIGHT_DECAY, decay_mask="kernels",
                   rotation_scale=ImbalancedRotation(fraction, scale)),
      groups=None,
      schedule=dict(_COSINE),
      epochs=200,  # Table 4
      batch_size=128,  # Table 4, CIFAR-10
      log_every=20,
  )
  return base.quick_overrides(cfg) if quick else cfg


def runs(quick: bool = False) -> list:
  lrs = PAPER_LRS + EXTRA_LRS
  if quick:
    return [_run("slower", 0.5, 10.0, 5e-2, quick=True)]
  return [_run(d, p, f, lr, quick=False)
          for d in DIRECTIONS for p, f in points() for lr in lrs]
