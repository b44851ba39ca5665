"""ImageNet ResNet-50 (He et al. 2016, bottleneck blocks, stride on the 3×3 conv "v1.5").

Stem ``7×7/2 conv → norm → ReLU → 3×3/2 max-pool``, four stages of
``(3, 4, 6, 3)`` bottlenecks ``1×1 → 3×3 → 1×1`` with widths 64/128/256/512 and
expansion 4, projection shortcuts (1×1 conv + norm) where the shape changes,
global average pool, Linear 2048 → classes (25.6M parameters for 1000 classes).

Example:

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> model = ResNetImageNet((1, 1), num_classes=5, width=4, rngs=nnx.Rngs(0))
>>> model(jnp.ones((1, 16, 16, 3))).shape
(1, 5)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.models import norms

EXPANSION = 4


class Bottleneck(nnx.Module):
  """``relu(n(c1×1(relu(n(c3×3/s(relu(n(c1×1(x)))))))) + shortcut(x))``."""

  def __init__(self, in_features: int, width: int, strides: int, *, norm: str,
               gains: bool, rngs: nnx.Rngs, **layer):
    out_features = width * EXPANSION
    kw = dict(norm=norm, gains=gains, rngs=rngs, **layer)
    self.conv1 = norms.ConvNorm(in_features, width, 1, 1, **kw)
    self.conv2 = norms.ConvNorm(width, width, 3, strides, **kw)
    self.conv3 = norms.ConvNorm(width, out_features, 1, 1, **kw)
    if strides != 1 or in_features != out_features:
      self.shortcut = norms.ConvNorm(in_features, out_features, 1, strides, **kw)
    else:
      self.shortcut = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.conv1(x))
    y = self.conv3(jax.nn.relu(self.conv2(y)))
    skip = x if self.shortcut is None else self.shortcut(x)
    return jax.nn.relu(y + skip)


class ResNetImageNet(nnx.Module):
  """Bottleneck ResNet with ``stages`` blocks per stage (ResNet-50: ``(3, 4, 6, 3)``).

  ``width``: stem channels and first-stage bottleneck width (default 64).
  """

  def __init__(self, stages: tuple[int, ...], *, num_classes: int, width: int = 64,
               norm: str = "batch", gains: bool = False, in_channels: int = 3,
               dtype=jnp.float32, rngs: nnx.Rngs, **layer):
    self.stem = norms.ConvNorm(in_channels, width, 7, 2, norm=norm, gains=gains,
                               dtype=dtype, rngs=rngs, **layer)
    blocks = []
    features = width
    for stage, count in enumerate(stages):
      for index in range(count):
        strides = 2 if stage > 0 and index == 0 else 1
        blocks.append(Bottleneck(features, width * 2**stage, strides, norm=norm,
                                 gains=gains, dtype=dtype, rngs=rngs, **layer))
        features = width * 2**stage * EXPANSION
    self.blocks = nnx.List(blocks)
    self.head = norms.Linear(features, num_classes, dtype=dtype,
                             param_dtype=layer.get("param_dtype", jnp.float32),
                             rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.stem(x))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(x, axis=(1, 2)))
