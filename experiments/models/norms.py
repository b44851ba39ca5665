"""Normalization variants and the weight layers they act on.

Scale invariance of a group followed by a normalization: Roburin, de Mont-Marin,
Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with Normalization
Layers*, Neurocomputing 2022, arXiv:2006.13382, §2; the
variants compared by Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay
Balances Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212, §5.

Every model in :mod:`experiments.models` builds its conv and dense layers from
:class:`Conv` / :class:`Linear` and its activation normalizations from
:func:`activation_norm`, so one ``norm=`` string switches the whole network:

* ``"batch"``: ``conv (no bias) → BatchNorm`` (per-channel batch statistics,
  running averages with PyTorch's momentum 0.1, i.e. Flax ``momentum=0.9``).
  Each output filter is scale-invariant (in train mode).
* ``"layer"``: ``conv (no bias) → GroupNorm(1 group)`` (LayerNorm over H, W, C):
  the whole kernel is scale-invariant, single filters are not.
* ``"group"``: ``conv (no bias) → GroupNorm(G)`` with ``G = num_groups``
  (default 32) lowered to the largest divisor of the channel count: each block
  of ``C / G`` consecutive filters is scale-invariant.
* ``"weight"``: weight normalization (Salimans & Kingma 2016),
  ``w_o = g_o · v_o / ||v_o||`` per output unit ``o`` (the norm runs over all
  axes but the last), plus a bias; ``v_o`` is scale-invariant, ``g`` is the
  weight-norm gain (always present).
* ``"weight_standardization"``: ``w_o = (v_o − mean(v_o)) / sqrt(var(v_o) + ε)``
  per output unit (Qiao et al. 2019), plus a bias; ``v_o`` is scale-invariant.
* ``"none"``: plain ``conv + bias``.

``gains=True`` (Kosson et al. 2024, App. M) multiplies the output of every
hidden conv / dense layer by a learnable per-output gain ``g`` (init 1, shape
``(out,)``), which lets a rotational optimizer that fixes ``||v_o||`` still learn
the layer's scale. Gains and biases are 1-d, so the default spherax group rule
leaves them ungrouped, and the kernels (output axis last) are grouped per output
unit, i.e. per filter.

Example:

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> conv = Conv(3, 4, 3, norm="weight_standardization", rngs=nnx.Rngs(0))
>>> conv(jnp.ones((2, 5, 5, 3))).shape
(2, 5, 5, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

NORMS = ("batch", "weight", "layer", "group", "weight_standardization", "none")
# Variants that normalize the activations after the layer (so the layer has no bias).
_ACTIVATION_NORMS = ("batch", "layer", "group")
# Variants that reparametrize the kernel itself.
_WEIGHT_NORMS = ("weight", "weight_standardization")


def check_norm(norm: str) -> str:
  """Returns ``norm`` if it names a supported variant, else raises ValueError."""
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
  return norm


def group_count(channels: int, num_groups: int = 32) -> int:
  """Largest divisor of ``channels`` that is at most ``num_groups``.

  >>> group_count(64), group_count(16), group_count(48, 32)
  (32, 16, 24)
  """
  if num_groups < 1:
    raise ValueError(f"num_groups must be >= 1, got {num_groups}")
  return max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)


def reparametrize(kernel: jax.Array, norm: str, epsilon: float) -> jax.Array:
  """The effective kernel of a weight-normalized layer (output axis last).

  ``"weight"``: ``v_o / ||v_o||`` (``ε`` unused; a zero filter stays zero);
  ``"weight_standardization"``: ``(v_o − mean v_o) / sqrt(var v_o + ε)``; other
  variants: unchanged. Statistics
  run over every axis but the last and are computed in float32 or wider.

  >>> import numpy as np
  >>> k = jnp.array([[3.0, 1.0], [4.0, 1.0]])
  >>> print(np.round(np.asarray(reparametrize(k, "weight", 0.0)), 4))
  [[0.6    0.7071]
   [0.8    0.7071]]
  """
  if norm not in _WEIGHT_NORMS:
    return kernel
  axes = tuple(range(kernel.ndim - 1))
  wide = kernel.astype(jnp.promote_types(kernel.dtype, jnp.float32))
  if norm == "weight":
    sq = jnp.sum(jnp.square(wide), axis=axes, keepdims=True)
    out = wide * jax.lax.rsqrt(jnp.maximum(sq, jnp.finfo(wide.dtype).tiny))
  else:
    centered = wide - jnp.mean(wide, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(centered), axis=axes, keepdims=True)
    out = centered * jax.lax.rsqrt(var + jnp.maximum(epsilon, jnp.finfo(wide.dtype).tiny))
  return out.astype(kernel.dtype)


class _Weighted(nnx.Module):
  """Shared parameters of :class:`Conv` and :class:`Linear`: kernel, bias, gain."""

  def __init__(self, kernel_shape, out_features, *, norm, gains, use_bias, epsilon,
               kernel_init, dtype, param_dtype, rngs):
    self.norm = check_norm(norm)
    self.epsilon = epsilon
    self.dtype = dtype
    self.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, param_dtype))
    if use_bias is None:
      use_bias = norm not in _ACTIVATION_NORMS
    self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
    # Weight normalization always carries its gain g; other variants only on request.
    with_gain = gains or norm == "weight"
    self.gain = nnx.Param(jnp.ones((out_features,), param_dtype)) if with_gain else None

  def _kernel(self):
    return reparametrize(self.kernel[...], self.norm, self.epsilon).astype(self.dtype)

  def _finish(self, y):
    if self.gain is not None:
      y = y * self.gain[...].astype(self.dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class Conv(_Weighted):
  """2-d convolution (NHWC, kernel ``(kh, kw, in, out)``) with a ``norm`` variant.

  The bias is on by default only when no activation normalization follows
  (``norm`` in ``"weight"``, ``"weight_standardization"``, ``"none"``).
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int,
               strides: int = 1, *, norm: str = "none", gains: bool = False,
               use_bias: bool | None = None, padding: str | Sequence = "SAME",
               epsilon: float = 1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
               kernel_init=jax.nn.initializers.he_normal(), rngs: nnx.Rngs):
    super().__init__((kernel_size, kernel_size, in_features, out_features),
                     out_features, norm=norm, gains=gains, use_bias=use_bias,
                     epsilon=epsilon, kernel_init=kernel_init, dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)
    self.strides = (strides, strides)
    self.padding = padding

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), self._kernel(), self.strides, self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return self._finish(y)


class Linear(_Weighted):
  """Dense layer ``x @ w`` (kernel ``(in, out)``) with a ``norm`` variant and bias."""

  def __init__(self, in_features: int, out_features: int, *, norm: str = "none",
               gains: bool = False, use_bias: bool | None = True,
               epsilon: float = 1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
               kernel_init=jax.nn.initializers.lecun_normal(), rngs: nnx.Rngs):
    super().__init__((in_features, out_features), out_features, norm=norm,
                     gains=gains, use_bias=use_bias, epsilon=epsilon,
                     kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype,
                     rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self._finish(x.astype(self.dtype) @ self._kernel())


def activation_norm(norm: str, features: int, *, num_groups: int = 32,
                    epsilon: float = 1e-5, dtype=jnp.float32,
                    param_dtype=jnp.float32, rngs: nnx.Rngs):
  """The normalization applied after a layer's output, or None for ``norm``
  variants that act on the weights (or ``"none"``)."""
  check_norm(norm)
  if norm == "batch":
    return nnx.BatchNorm(features, momentum=0.9, epsilon=epsilon, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
  if norm in ("layer", "group"):
    groups = 1 if norm == "layer" else group_count(features, num_groups)
    return nnx.GroupNorm(features, num_groups=groups, epsilon=epsilon, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
  return None


class ConvNorm(nnx.Module):
  """``Conv`` followed by the activation normalization of ``norm`` (if any).

  ``norm_kwargs`` go to both: ``num_groups``, ``epsilon``, ``dtype``,
  ``param_dtype``.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int,
               strides: int = 1, *, norm: str, gains: bool = False,
               num_groups: int = 32, epsilon: float = 1e-5, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.conv = Conv(in_features, out_features, kernel_size, strides, norm=norm,
                     gains=gains, epsilon=epsilon, dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)
    self.norm = activation_norm(norm, out_features, num_groups=num_groups,
                                epsilon=epsilon, dtype=dtype,
                                param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(x)
    return y if self.norm is None else self.norm(y)


def layer_kwargs(kwargs: dict) -> dict:
  """Splits the per-layer options (``num_groups``, ``epsilon``, ``param_dtype``)
  out of a model's ``**kwargs`` (mutates ``kwargs``)."""
  out = {}
  for key in ("num_groups", "epsilon", "param_dtype"):
    if key in kwargs:
      out[key] = kwargs.pop(key)
  return out


def reject_unknown(name: str, kwargs: dict) -> None:
  """Raises a ValueError naming the options a model did not consume."""
  if kwargs:
    raise ValueError(f"{name}: unexpected options {sorted(kwargs)}")

