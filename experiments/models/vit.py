"""Vision Transformer (DeiT-tiny: patch 16, dim 192, depth 12, 3 heads, MLP ratio 4).

``x → patch embedding (conv p×p/p) → [cls; patches] + position embedding →
depth × pre-norm blocks → LayerNorm → Linear on the cls token``, with blocks
``x + proj(attn(LN(x)))`` then ``x + fc2(gelu(fc1(LN(x))))``.

The token stream always uses LayerNorm (``norm`` ``"batch"`` and ``"layer"`` both
give the standard model); ``"weight"`` / ``"weight_standardization"`` / ``"none"``
choose the reparametrization of the linear layers' kernels (Kosson, Messmer, Jaggi,
*Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*,
ICML 2024, arXiv:2305.17212, trains
DeiT with rotational optimizers on WS-style weights plus ``gains=True``: every
hidden linear layer, including the patch embedding, gets a per-output gain).
Linear kernels are ``(in, out)``; the qkv projection is one ``(dim, 3·dim)``
kernel, so the default spherax groups are per output unit.

Example:

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> vit = VisionTransformer(dim=8, depth=1, heads=2, num_classes=3, image_size=8,
...                         patch_size=4, rngs=nnx.Rngs(0))
>>> vit(jnp.ones((2, 8, 8, 3))).shape
(2, 3)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.models import norms


def _weight_norm(norm: str) -> str:
  if norm in ("group",):
    raise ValueError("deit: norm='group' is not supported (the ViT uses LayerNorm)")
  return "none" if norm in ("batch", "layer") else norm


class Block(nnx.Module):
  """Pre-norm transformer block: multi-head self-attention, then the MLP."""

  def __init__(self, dim: int, heads: int, mlp_ratio: int, *, norm: str,
               gains: bool, epsilon: float, dtype, param_dtype, rngs: nnx.Rngs):
    lin = dict(norm=norm, gains=gains, epsilon=epsilon, dtype=dtype,
               param_dtype=param_dtype, rngs=rngs)
    ln = dict(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.heads = heads
    self.norm1 = nnx.LayerNorm(dim, **ln)
    self.qkv = norms.Linear(dim, 3 * dim, **lin)
    self.proj = norms.Linear(dim, dim, **lin)
    self.norm2 = nnx.LayerNorm(dim, **ln)
    self.fc1 = norms.Linear(dim, mlp_ratio * dim, **lin)
    self.fc2 = norms.Linear(mlp_ratio * dim, dim, **lin)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, d = x.shape
    qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    attn = jax.nn.dot_product_attention(q, k, v)
    x = x + self.proj(attn.reshape(b, t, d))
    return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))


class VisionTransformer(nnx.Module):
  """ViT classifier on NHWC images of ``image_size`` (default 224) with
  ``patch_size`` (default 16) patches; ``epsilon`` of the LayerNorms 1e-6."""

  def __init__(self, *, dim: int, depth: int, heads: int, num_classes: int,
               image_size: int = 224, patch_size: int = 16, mlp_ratio: int = 4,
               norm: str = "batch", gains: bool = False, in_channels: int = 3,
               epsilon: float = 1e-6, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    if image_size % patch_size:
      raise ValueError(f"image_size {image_size} is not a multiple of patch_size "
                       f"{patch_size}")
    weight_norm = _weight_norm(norm)
    self.patch_size = patch_size
    self.dtype = dtype
    self.patch = norms.Conv(in_channels, dim, patch_size, patch_size,
                            norm=weight_norm, gains=gains, use_bias=True,
                            padding="VALID", epsilon=epsilon, dtype=dtype,
                            param_dtype=param_dtype,
                            kernel_init=jax.nn.initializers.lecun_normal(),
                            rngs=rngs)
    tokens = (image_size // patch_size) ** 2 + 1
    init = jax.nn.initializers.truncated_normal(0.02)
    self.cls_token = nnx.Param(init(rngs.params(), (1, 1, dim), param_dtype))
    self.pos_embed = nnx.Param(init(rngs.params(), (1, tokens, dim), param_dtype))
    self.blocks = nnx.List([
        Block(dim, heads, mlp_ratio, norm=weight_norm, gains=gains, epsilon=epsilon,
              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, epsilon=epsilon, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
    self.head = norms.Linear(dim, num_classes, dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.patch(x)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (b, 1, d))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(self.dtype)
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x)[:, 0])
