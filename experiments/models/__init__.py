"""Flax NNX models for the experiments, built by :func:`create_model`.

Names: ``"resnet{6n+2}"`` (CIFAR ResNet-20 family: ``"resnet8"``, ``"resnet20"``,
``"resnet32"``, ``"resnet56"``, …; ``width`` kwarg, default 16), ``"resnet18"``
(CIFAR ResNet-18), ``"resnet1d"`` (BN 1-D ResNet for MNIST-1D on ``(B, L, 1, C)``
signals; ``width`` and ``blocks`` kwargs), ``"vgg13"``, ``"vgg16"`` (CIFAR VGG),
``"resnet50"`` (always
the ImageNet bottleneck ResNet-50), ``"deit_tiny"`` (ViT; ``image_size`` and
``patch_size`` kwargs).

Every model takes NHWC float images and returns logits; ``model.train()`` /
``model.eval()`` switch BatchNorm between batch statistics and running averages.
``norm`` picks the normalization variant and ``gains`` adds learnable per-output
gains (:mod:`experiments.models.norms`). Extra kwargs for every model:
``num_groups`` (GroupNorm), ``epsilon`` (of every normalization),
``param_dtype``, ``in_channels``.

Example:

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> model = create_model("resnet8", num_classes=10, rngs=nnx.Rngs(0))
>>> model(jnp.zeros((2, 8, 8, 3))).shape
(2, 10)
"""

from __future__ import annotations

import re

import jax.numpy as jnp
from flax import nnx

from experiments.models import norms

__all__ = ["create_model", "MODEL_NAMES"]

MODEL_NAMES = ("resnet{6n+2}", "resnet18", "resnet1d", "vgg13", "vgg16", "resnet50", "deit_tiny")


def create_model(name: str, *, num_classes: int, norm: str = "batch",
                 gains: bool = False, rngs: nnx.Rngs, dtype=jnp.float32,
                 **kwargs) -> nnx.Module:
  """Builds the model ``name`` (see the module docstring for names and kwargs).

  Raises:
    ValueError: unknown name, unknown ``norm`` or an option the model does not take.
  """
  norms.check_norm(norm)
  common = dict(num_classes=num_classes, norm=norm, gains=gains, dtype=dtype,
                rngs=rngs)
  # Imported here so that each architecture module loads only when used.
  if name == "resnet18":
    from experiments.models.resnet_cifar import ResNetCifar
    return ResNetCifar(2, stages=(2, 2, 2, 2), width=kwargs.pop("width", 64),
                       **common, **kwargs)
  if name == "resnet1d":
    from experiments.models.resnet_1d import ResNet1D
    return ResNet1D(**common, **kwargs)
  if name == "resnet50":
    from experiments.models.resnet_imagenet import ResNetImageNet
    return ResNetImageNet((3, 4, 6, 3), **common, **kwargs)
  if name in ("vgg13", "vgg16"):
    from experiments.models.vgg import VGG
    return VGG(name, **common, **kwargs)
  if name == "deit_tiny":
    from experiments.models.vit import VisionTransformer
    return VisionTransformer(dim=192, depth=12, heads=3, **common, **kwargs)
  match = re.fullmatch(r"resnet(\d+)", name)
  if match and (int(match.group(1)) - 2) % 6 == 0 and int(match.group(1)) > 2:
    from experiments.models.resnet_cifar import ResNetCifar
    return ResNetCifar((int(match.group(1)) - 2) // 6, **common, **kwargs)
  raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
