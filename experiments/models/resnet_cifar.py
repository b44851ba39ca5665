"""CIFAR ResNets: ResNet-{6n+2} (He et al. 2016 §4.2) and CIFAR ResNet-18.

The models of Roburin et al., *A spherical analysis of Adam with Batch
Normalization*, ICLR 2021 submission (OpenReview), §5, and of Kosson, Messmer,
Jaggi, *Rotational Equilibrium*, ICML 2024, arXiv:2305.17212, App. O.

ResNet-{6n+2} (ResNet-20: n = 3): a 3×3 stem conv to ``width`` channels, three
stages of ``n`` BasicBlocks with ``width``, ``2·width``, ``4·width`` channels
(stride 2 at the start of stages 2 and 3), global average pool, Linear. Shortcuts
that change shape are a 1×1 conv + norm (projection, as in the reference code).

CIFAR ResNet-18: 3×3 stem conv (64 channels, stride 1, no max-pool), four stages
of two BasicBlocks with 64/128/256/512 channels, global average pool, Linear.

Convs have no bias when an activation normalization follows (see
:mod:`experiments.models.norms` for the ``norm`` variants).

Example:

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> model = ResNetCifar(1, num_classes=10, width=4, rngs=nnx.Rngs(0))
>>> model(jnp.ones((2, 8, 8, 3))).shape
(2, 10)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.models import norms


class BasicBlock(nnx.Module):
  """``relu(norm(conv3(relu(norm(conv3(x))))) + shortcut(x))``, two 3×3 convs."""

  def __init__(self, in_features: int, out_features: int, strides: int, *,
               norm: str, gains: bool, rngs: nnx.Rngs, **layer):
    self.conv1 = norms.ConvNorm(in_features, out_features, 3, strides, norm=norm,
                                gains=gains, rngs=rngs, **layer)
    self.conv2 = norms.ConvNorm(out_features, out_features, 3, 1, norm=norm,
                                gains=gains, rngs=rngs, **layer)
    if strides != 1 or in_features != out_features:
      self.shortcut = norms.ConvNorm(in_features, out_features, 1, strides,
                                     norm=norm, gains=gains, rngs=rngs, **layer)
    else:
      self.shortcut = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv2(jax.nn.relu(self.conv1(x)))
    skip = x if self.shortcut is None else self.shortcut(x)
    return jax.nn.relu(y + skip)


class ResNetCifar(nnx.Module):
  """A CIFAR ResNet of BasicBlocks: stem, stages, global average pool, Linear.

  Args:
    depth_n: blocks per stage for ResNet-{6n+2} (ignored if ``stages`` given).
    num_classes: logits.
    width: channels of the stem and the first stage.
    stages: blocks per stage; default ``(n, n, n)`` with widths
      ``width · (1, 2, 4)``. ResNet-18 uses ``(2, 2, 2, 2)`` with ``width=64``.
    norm, gains: see :mod:`experiments.models.norms`.
    in_channels: image channels.
    dtype: compute dtype; ``**layer``: ``num_groups``, ``epsilon``,
      ``param_dtype``.
  """

  def __init__(self, depth_n: int, *, num_classes: int, width: int = 16,
               stages: tuple[int, ...] | None = None, norm: str = "batch",
               gains: bool = False, in_channels: int = 3, dtype=jnp.float32,
               rngs: nnx.Rngs, **layer):
    stages = (depth_n,) * 3 if stages is None else tuple(stages)
    self.stem = norms.ConvNorm(in_channels, width, 3, 1, norm=norm, gains=gains,
                               dtype=dtype, rngs=rngs, **layer)
    blocks = []
    features = width
    for stage, count in enumerate(stages):
      out_features = width * 2**stage
      for index in range(count):
        strides = 2 if stage > 0 and index == 0 else 1
        blocks.append(BasicBlock(features, out_features, strides, norm=norm,
                                 gains=gains, dtype=dtype, rngs=rngs, **layer))
        features = out_features
    self.blocks = nnx.List(blocks)
    self.head = norms.Linear(features, num_classes, dtype=dtype,
                             param_dtype=layer.get("param_dtype", jnp.float32),
                             rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.stem(x))
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(x, axis=(1, 2)))
