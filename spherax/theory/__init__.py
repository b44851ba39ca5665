"""Theory: predictions for normalized networks (REFERENCE §2, §4, §5).

* :mod:`spherax.theory.spherical` — effective learning rate and direction of a
  step on the sphere, the SGD → AdaGradG mapping (seed 000);
* :mod:`spherax.theory.smd` — Spherical Motion Dynamics of SGD/SGDM + weight decay
  (seed 002);
* :mod:`spherax.theory.equilibrium` — rotational equilibrium of SGDM, AdamW, Lion
  and Adam+L2 (seed 004).

>>> from spherax import theory
>>> round(float(theory.equilibrium.norm_adamw(1e-3, 0.1, 128)), 6)
0.8
"""

from spherax.theory import equilibrium
from spherax.theory import smd
from spherax.theory import spherical

__all__ = ["equilibrium", "smd", "spherical"]
