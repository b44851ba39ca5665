"""A BatchNorm 1-D ResNet for sequence classification (MNIST-1D).

The MNIST-1D benchmark (Greydanus & Kobak, *Scaling down deep learning with
MNIST-1D*, ICML 2024, arXiv:2011.14439) classifies length-40 signals; its
reference CNN is three stride-2 convolutions of kernel 5. This model is the
CIFAR ResNet of He et al., *Deep Residual Learning for Image Recognition*,
CVPR 2016, §4.2 in one dimension: a kernel-5 stem conv to ``width`` channels,
three stages of ``blocks`` BasicBlocks (kernel 3) with ``width``, ``2·width``,
``4·width`` channels (stride 2 at the start of stages 2 and 3), global average
pool, Linear. Every conv is followed by BatchNorm and has no bias, so each conv
filter is scale-invariant: the setting of Roburin et al., *Spherical Perspective
on Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382,
§2, and of Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay
Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212, §3.

Signals are stored as ``(B, L, 1, C)`` NHWC arrays and the kernels as
``(k, 1, in, out)``: a 1-D convolution written as a 2-D one of width 1. This
keeps the kernels 4-d, so every tool of the experiments that treats 4-d
kernels as per-filter groups (the conv group rule of the training loop, the
"†" optimizers, the angular-update logging) applies unchanged.

Example:

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> model = ResNet1D(num_classes=10, width=4, rngs=nnx.Rngs(0))
>>> model(jnp.ones((2, 40, 1, 1))).shape
(2, 10)
>>> model.stem.conv.kernel.shape
(5, 1, 1, 4)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.models import norms

__all__ = ["ResNet1D"]


class _Conv1D(norms._Weighted):  # pylint: disable=protected-access
  """1-D convolution along H of an ``(B, L, 1, C)`` array; kernel ``(k, 1, in, out)``."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int,
               strides: int = 1, *, norm: str, gains: bool, epsilon: float = 1e-5,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__((kernel_size, 1, in_features, out_features), out_features,
                     norm=norm, gains=gains, use_bias=None, epsilon=epsilon,
                     kernel_init=jax.nn.initializers.he_normal(), dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)
    self.strides = (strides, 1)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), self._kernel(), self.strides, "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return self._finish(y)


class _ConvNorm1D(nnx.Module):
  """``_Conv1D`` followed by the activation normalization of ``norm``."""

  def __init__(self, in_features, out_features, kernel_size, strides=1, *, norm,
               gains, num_groups=32, epsilon=1e-5, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs):
    self.conv = _Conv1D(in_features, out_features, kernel_size, strides, norm=norm,
                        gains=gains, epsilon=epsilon, dtype=dtype,
                        param_dtype=param_dtype, rngs=rngs)
    self.norm = norms.activation_norm(norm, out_features, num_groups=num_groups,
                                      epsilon=epsilon, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x):
    y = self.conv(x)
    return y if self.norm is None else self.norm(y)


class _Block1D(nnx.Module):
  """``relu(norm(conv3(relu(norm(conv3(x))))) + shortcut(x))``; the shortcut is a
  kernel-1 conv + norm where the shape changes."""

  def __init__(self, in_features, out_features, strides, **layer):
    self.conv1 = _ConvNorm1D(in_features, out_features, 3, strides, **layer)
    self.conv2 = _ConvNorm1D(out_features, out_features, 3, 1, **layer)
    if strides != 1 or in_features != out_features:
      self.shortcut = _ConvNorm1D(in_features, out_features, 1, strides, **layer)
    else:
      self.shortcut = None

  def __call__(self, x):
    y = self.conv2(jax.nn.relu(self.conv1(x)))
    return jax.nn.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet1D(nnx.Module):
  """The 1-D ResNet of the module docstring.

  Args:
    num_classes: logits.
    width: channels of the stem and the first stage (stages: ×1, ×2, ×4).
    blocks: BasicBlocks per stage (``blocks=1``: 8 conv layers with the stem
      and the last conv of each block, ResNet-8-like).
    norm, gains: see :mod:`experiments.models.norms`.
    in_channels: signal channels (1 for MNIST-1D).
    dtype: compute dtype; ``**layer``: ``num_groups``, ``epsilon``, ``param_dtype``.
  """

  def __init__(self, *, num_classes: int, width: int = 16, blocks: int = 1,
               norm: str = "batch", gains: bool = False, in_channels: int = 1,
               dtype=jnp.float32, rngs: nnx.Rngs, **layer):
    common = dict(norm=norm, gains=gains, dtype=dtype, rngs=rngs, **layer)
    self.stem = _ConvNorm1D(in_channels, width, 5, 1, **common)
    stack, features = [], width
    for stage in range(3):
      for index in range(blocks):
        out_features = width * 2**stage
        strides = 2 if stage > 0 and index == 0 else 1
        stack.append(_Block1D(features, out_features, strides, **common))
        features = out_features
    self.blocks = nnx.List(stack)
    self.head = norms.Linear(features, num_classes, dtype=dtype,
                             param_dtype=layer.get("param_dtype", jnp.float32),
                             rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.stem(x))
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(x, axis=(1, 2)))
