"""CIFAR VGG-13 / VGG-16 (Simonyan & Zisserman 2015; the CIFAR variant of
Roburin et al., *A spherical analysis of Adam with Batch Normalization*, ICLR 2021
submission (OpenReview), §5).

Stacks of 3×3 ``conv (no bias) → norm → ReLU`` with 2×2 max-pools, then one
Linear 512 → classes. Pools use SAME padding and the features are averaged over
the remaining positions, which for 32×32 inputs (1×1 after five pools) is the
usual flatten, and keeps tiny test inputs valid.

Example:

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> VGG("vgg13", num_classes=3, rngs=nnx.Rngs(0))(jnp.ones((1, 4, 4, 3))).shape
(1, 3)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.models import norms

# Channels of each conv; "M" is a 2×2 max-pool.
CONFIGS = {
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M",
              512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
}


class VGG(nnx.Module):
  """VGG ``name`` in ``CONFIGS`` (``norm``/``gains``: :mod:`experiments.models.norms`)."""

  def __init__(self, name: str, *, num_classes: int, norm: str = "batch",
               gains: bool = False, in_channels: int = 3, dtype=jnp.float32,
               rngs: nnx.Rngs, **layer):
    self.plan = tuple(v == "M" for v in CONFIGS[name])
    convs = []
    features = in_channels
    for v in CONFIGS[name]:
      if v != "M":
        convs.append(norms.ConvNorm(features, v, 3, 1, norm=norm, gains=gains,
                                    dtype=dtype, rngs=rngs, **layer))
        features = v
    self.convs = nnx.List(convs)
    self.head = norms.Linear(features, num_classes, dtype=dtype,
                             param_dtype=layer.get("param_dtype", jnp.float32),
                             rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    convs = iter(self.convs)
    for is_pool in self.plan:
      if is_pool:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
      else:
        x = jax.nn.relu(next(convs)(x))
    return self.head(jnp.mean(x, axis=(1, 2)))
