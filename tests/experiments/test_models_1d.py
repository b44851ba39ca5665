"""The BN 1-D ResNet (experiments.models.resnet_1d): shapes, per-filter scale
invariance (the premise of Roburin et al., *Spherical Perspective on Learning with
Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, §2), one jit."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import models


def test_resnet1d_shapes_and_filter_scale_invariance():
  model = models.create_model("resnet1d", num_classes=10, width=4, blocks=1,
                              rngs=nnx.Rngs(0), in_channels=1)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  kernels = {jax.tree_util.keystr(p): x.shape for p, x in
             jax.tree_util.tree_leaves_with_path(params) if x.ndim == 4}
  # stem + 2 convs per block + 2 projection shortcuts, all (k, 1, in, out)
  assert len(kernels) == 1 + 3 * 2 + 2
  assert all(s[1] == 1 and s[0] in (1, 3, 5) for s in kernels.values())
  assert [s for p, s in kernels.items() if "stem" in p] == [(5, 1, 1, 4)]
  head = [x for x in jax.tree.leaves(params) if x.ndim == 2]
  assert [h.shape for h in head] == [(16, 10)]

  @jax.jit
  def forward(params, x):
    return nnx.merge(graphdef, params, rest, copy=True)(x)

  x = jax.random.normal(jax.random.key(1), (6, 40, 1, 1))
  out = forward(params, x)
  assert out.shape == (6, 10)
  # train mode: scaling any conv filter (output channel) leaves the logits unchanged
  scale = lambda k: k * jnp.linspace(0.5, 3.0, k.shape[-1])
  scaled = jax.tree.map(lambda k: scale(k) if k.ndim == 4 else k, params)
  np.testing.assert_allclose(forward(scaled, x), out, rtol=2e-4, atol=2e-4)
  # but the head is not scale-invariant
  scaled_head = jax.tree.map(lambda k: 2 * k if k.ndim == 2 else k, params)
  assert not np.allclose(forward(scaled_head, x), out, atol=1e-3)
