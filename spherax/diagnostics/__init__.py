"""Diagnostics: measure the spherical dynamics of training.

The quantities of Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry,
*Spherical Perspective on Learning with Normalization Layers* (Neurocomputing
2022, arXiv:2006.13382, Sec. 2) and of Kosson, Messmer, Jaggi, *Rotational
Equilibrium: How Weight Decay Balances Learning Across Neural Networks* (ICML
2024, arXiv:2305.17212, Sec. 2):

* :mod:`~spherax.diagnostics.measures`: per-group angular update, weight norm,
  update size, radial component ``λ_u``, effective learning rate and
  gradient–weight cosine of one step;
* :mod:`~spherax.diagnostics.tracker`: :func:`track_dynamics`, a wrapper
  transform that records per-leaf summaries of them in its state, and
  :func:`summaries` to read them for logging;
* :mod:`~spherax.diagnostics.detect`: :func:`detect_groups`, which finds the
  scale-invariant groups of a model from its loss.
"""

from spherax.diagnostics.measures import (
    angular_update,
    effective_learning_rate,
    grad_cosine,
    radial_component,
    rms_update,
    weight_norm,
)
from spherax.diagnostics.tracker import (
    TrackDynamicsState,
    summaries,
    track_dynamics,
)
from spherax.diagnostics.detect import detect_groups

__all__ = [
    "angular_update",
    "detect_groups",
    "effective_learning_rate",
    "grad_cosine",
    "radial_component",
    "rms_update",
    "summaries",
    "track_dynamics",
    "TrackDynamicsState",
    "weight_norm",
]
