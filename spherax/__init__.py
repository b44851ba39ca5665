"""spherax: the geometry of normalized networks as composable optax transforms."""

from spherax import geometry
from spherax import groups
from spherax.groups import GroupSpec

__version__ = "0.1.0"

# Public names are added below, one import line each (keep this file import-only).
