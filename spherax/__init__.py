"""spherax: the geometry of normalized networks as composable optax transforms."""

from spherax import geometry
from spherax import groups
from spherax.groups import GroupSpec

__version__ = "0.1.0"

# Public names are added below, one import line each (keep this file import-only).
from spherax.optimizers.rotational import rotational, rv_adamw, rv_sgdm, rv_lion, rv_adam_l2
from spherax.transforms.orthogonalize import orthogonalize
from spherax.transforms.center import center
from spherax.transforms.retract import retract
from spherax.transforms.group_moment import scale_by_group_adam
from spherax.transforms.transport import transport_moments
from spherax.optimizers.adamsrt import adams, adamsrt, sgdmrt
from spherax import diagnostics
from spherax.optimizers.riemannian import adamg, sgdg, adagradg
from spherax.optimizers.adamp import adamp, sgdp
from spherax.optimizers.nero import nero
from spherax.transforms.lr_drop_rescale import rescale_norms_on_lr_drop
from spherax import theory
from spherax import simulate
