"""spherax: the geometry of normalized networks as composable optax transforms.

Optimizers (``spherax.<name>``) and building blocks are optax
``GradientTransformationExtraArgs``; ``spherax.groups`` says which parameters form
scale-invariant groups, ``spherax.geometry`` holds the per-group math, and
``spherax.theory``, ``spherax.diagnostics`` and ``spherax.simulate`` predict,
measure and simulate the dynamics.
"""

from spherax import diagnostics
from spherax import geometry
from spherax import groups
from spherax import simulate
from spherax import theory
from spherax.groups import GroupSpec
from spherax.optimizers.adamp import adamp, sgdp
from spherax.optimizers.adamsrt import adams, adamsrt, sgdmrt
from spherax.optimizers.nero import nero
from spherax.optimizers.riemannian import adagradg, adamg, sgdg
from spherax.optimizers.rotational import rotational, rv_adam_l2, rv_adamw, rv_lion, rv_sgdm
from spherax.transforms import leafwise as _leafwise  # noqa: F401  (spherax.transforms.leafwise: the driver)
from spherax.transforms.center import center
from spherax.transforms.group_moment import scale_by_group_adam
from spherax.transforms.lr_drop_rescale import rescale_norms_on_lr_drop
from spherax.transforms.orthogonalize import orthogonalize
from spherax.transforms.retract import project_params, retract
from spherax.transforms.rotational import rotational_wrapper
from spherax.transforms.transport import transport_moments

from importlib import metadata as _metadata

__version__ = _metadata.version("spherax")

__all__ = [
    # modules
    "diagnostics", "geometry", "groups", "simulate", "theory",
    "GroupSpec",
    # optimizers
    "adams", "adamsrt", "sgdmrt", "adamg", "sgdg", "adagradg", "adamp", "sgdp", "nero",
    "rotational", "rv_adamw", "rv_sgdm", "rv_lion", "rv_adam_l2",
    # building blocks
    "center", "orthogonalize", "retract", "scale_by_group_adam", "transport_moments",
    "rotational_wrapper", "rescale_norms_on_lr_drop", "project_params",
]
