"""Theory: predictions for normalized networks (the papers below).

* :mod:`spherax.theory.spherical` — effective learning rate and direction of a
  step on the sphere, the SGD → AdaGradG mapping (Roburin et al. 2022);
* :mod:`spherax.theory.smd` — Spherical Motion Dynamics of SGD/SGDM + weight decay
  (Wan et al., SMD);
* :mod:`spherax.theory.equilibrium` — rotational equilibrium of SGDM, AdamW, Lion
  and Adam+L2 (Kosson et al. 2024).

>>> from spherax import theory
>>> round(float(theory.equilibrium.norm_adamw(1e-3, 0.1, 128)), 6)
0.8

References:

* Roburin et al. 2022: Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382.
* Wan et al., SMD: Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission.
* Kosson et al. 2024: Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212.
"""

from spherax.theory import equilibrium
from spherax.theory import smd
from spherax.theory import spherical

__all__ = ["equilibrium", "smd", "spherical"]
