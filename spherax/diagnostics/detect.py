"""Finding the scale-invariant groups of a model from its loss.

A group ``x`` is scale-invariant when ``L(ρx) = L(x)`` for every ``ρ > 0``;
then ``<∇L(x), x> = 0`` (Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry,
*Spherical Perspective on Learning with Normalization Layers*, Neurocomputing
2022, arXiv:2006.13382, Lemma 1; Kosson, Messmer, Jaggi, *Rotational
Equilibrium: How Weight Decay Balances Learning Across Neural Networks*, ICML
2024, arXiv:2305.17212, Eq. 1). :func:`detect_groups`
tests, for every parameter leaf, candidate groupings in order (by default per
output unit, then the whole tensor) with two probes:

* **scaling probe**: multiply every group by its own random factor
  ``ρ_j = ρ^{±s_j}``, ``s_j ∈ [1/2, 1]``, and compare the loss change with the
  change caused by random noise of the same norm. The grouping passes when,
  on every batch where the noise changes the loss, the scaling changes it by
  at most ``rtol`` times as much. Independent factors make per-unit invariance
  distinguishable from whole-tensor invariance; the noise reference makes the
  test independent of the loss scale and rejects leaves the loss ignores;
* **gradient probe**: the radial share of the gradient
  ``sqrt(Σ_j <g_j, u_j>²) / ||g||`` must stay below ``grad_tol`` on every
  batch (a weighted form of the cosine test of AdamP: Heo et al., *AdamP: Slowing
  Down the Slowdown for Momentum Optimizers on Scale-invariant Weights*, ICLR
  2021; robust to dead units).

Example (a pure-JAX model; ``w`` is followed by a per-column normalization):

>>> import jax, jax.numpy as jnp
>>> from spherax import diagnostics
>>> def loss_fn(params, batch):
...   h = batch['x'] @ params['w']
...   h = (h - h.mean(0)) / jnp.sqrt(h.var(0) + 1e-6)
...   return jnp.mean((jnp.tanh(h) @ params['head'] - batch['y']) ** 2)
>>> k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
>>> params = {'w': jax.random.normal(k1, (3, 4)), 'head': jax.random.normal(k2, (4, 2))}
>>> batches = [{'x': jax.random.normal(k3, (16, 3)), 'y': jax.random.normal(k4, (16, 2))}]
>>> diagnostics.detect_groups(loss_fn, params, batches)
{'head': None, 'w': GroupSpec(axes=(-1,), num_groups=None)}
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np

from spherax import groups as groups_lib
from spherax.groups import GroupLayout, GroupSpec

__all__ = ["detect_groups"]

_METHODS = ("both", "probe", "gradient")


def detect_groups(
    loss_fn: Callable[[Any, Any], Any],
    params: Any,
    batches: Iterable[Any],
    *,
    candidates: Sequence[GroupSpec] = (groups_lib.per_output(), groups_lib.whole()),
    method: str = "both",
    scale: float = 2.0,
    rtol: float = 1e-2,
    grad_tol: float = 1e-2,
    atol: float = 1e-5,
    min_ndim: int = 2,
    seed: int = 0,
) -> Any:
  """Decides, per leaf, which grouping (if any) makes the loss scale-invariant.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``. Normalization layers must
      use *batch* statistics (training mode): BatchNorm with running averages
      is not scale-invariant. For ``flax.nnx``, split the model and merge it in
      the loss::

        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        def loss_fn(params, batch):
          model = nnx.merge(graphdef, params, rest, copy=True)  # BN in train mode
          return cross_entropy(model(batch['x']), batch['y'])
        groups = detect_groups(loss_fn, params, batches)

      (``copy=True`` lets BatchNorm write its statistics under ``jit``);
      ``groups`` is then an ``nnx.State`` with the paths of ``params`` whose
      leaves are plain specs (the ``nnx.Param`` wrappers removed), usable as
      ``groups=`` both with the split ``params`` and inside ``nnx.Optimizer``
      (which passes the params' raw arrays).
    params: the params pytree (at the point to test, e.g. at init).
    batches: a few batches (an iterable; it is read once).
    candidates: the groupings to try, in order; the first that passes wins.
      Candidates that do not fit a leaf's shape are skipped.
    method: ``"both"`` (both probes must pass), ``"probe"`` (loss scaling
      only) or ``"gradient"`` (gradient orthogonality only; cheaper, but it
      cannot tell invariance from chance orthogonality in a few batches).
    scale: ``ρ > 1``, the largest scaling factor of the probe.
    rtol: largest ratio of scaling-induced to noise-induced loss change.
    grad_tol: largest radial share of the gradient.
    atol: loss changes below ``atol · max(1, |L|)`` count as no change; a leaf
      whose noise probe never exceeds it does not affect the loss and is
      reported ungrouped.
    min_ndim: leaves with fewer dimensions (biases, norm scales) are not
      tested and reported ungrouped.
    seed: seed of the probes' random factors and noise.

  Returns:
    A pytree with the structure of ``params`` whose leaves are the first
    passing :class:`~spherax.groups.GroupSpec` or ``None``; pass it as the
    ``groups=`` argument of any spherax transform.

  Raises:
    ValueError: for an unknown ``method``, ``scale <= 1``, or no batches.
  """
  if method not in _METHODS:
    raise ValueError(f"detect_groups: method must be one of {_METHODS}, got {method!r}")
  if not scale > 1:
    raise ValueError(f"detect_groups: scale must be > 1, got {scale!r}")
  batches = list(batches)
  if not batches:
    raise ValueError("detect_groups: needs at least one batch")

  leaves, treedef = jax.tree.flatten(params)
  paths = groups_lib.leaf_paths(params)
  host = [np.asarray(leaf) for leaf in leaves]
  loss = jax.jit(loss_fn)

  def loss_with(i, value):
    replaced = list(host)
    replaced[i] = value.astype(host[i].dtype)
    return [float(loss(jax.tree.unflatten(treedef, replaced), b)) for b in batches]

  base = [float(loss(jax.tree.unflatten(treedef, host), b)) for b in batches]
  grads = None
  if method != "probe":
    grad_fn = jax.jit(jax.grad(loss_fn))
    grads = [
        [np.asarray(g, np.float64) for g in jax.tree.leaves(grad_fn(params, b))]
        for b in batches
    ]

  rng = np.random.default_rng(seed)
  specs = []
  for i, (x, path) in enumerate(zip(host, paths)):
    chosen = None
    if x.ndim >= min_ndim and np.issubdtype(x.dtype, np.inexact):
      for spec in candidates:
        try:
          layout = spec.layout(x.shape, path)
        except ValueError:
          continue
        ok = True
        if method != "probe":
          ok = _orthogonal(layout, x, [g[i] for g in grads], grad_tol)
        if ok and method != "gradient":
          ok = _scaling_invariant(layout, x, i, loss_with, base, scale, rtol, atol, rng)
        if ok:
          chosen = spec
          break
    specs.append(chosen)
  return _unwrap_variables(jax.tree.unflatten(treedef, specs))


def _unwrap_variables(tree: Any) -> Any:
  """Replaces every ``flax.nnx.Variable`` node (``nnx.Param(spec)``) by its value.

  A spec tree then matches params with or without the wrappers: a spec leaf is a
  pytree prefix of ``Param(array)`` as well as of a raw array. Without flax
  loaded there is nothing to unwrap (spherax does not import flax).
  """
  nnx = sys.modules.get("flax.nnx")
  if nnx is None:
    return tree
  is_variable = lambda v: isinstance(v, nnx.Variable)
  return jax.tree.map(
      lambda v: v.get_value() if is_variable(v) else v, tree, is_leaf=is_variable
  )


def _group_dot(a: np.ndarray, b: np.ndarray, layout: GroupLayout) -> np.ndarray:
  prod = (a * b).reshape(layout.view_shape)
  return prod.sum(axis=layout.reduce_axes, keepdims=True)


def _orthogonal(layout, x, grads, grad_tol) -> bool:
  """Radial share ``sqrt(Σ_j <g_j, u_j>²)/||g|| <= grad_tol`` on every batch."""
  x = x.astype(np.float64)
  r = np.sqrt(_group_dot(x, x, layout))
  informative = False
  for g in grads:
    g_norm = np.sqrt(np.sum(g * g))
    if g_norm == 0:
      continue
    informative = True
    radial = np.where(r > 0, _group_dot(g, x, layout) / np.where(r > 0, r, 1), 0)
    if np.sqrt(np.sum(radial**2)) > grad_tol * g_norm:
      return False
  return informative


def _scaling_invariant(layout, x, i, loss_with, base, scale, rtol, atol, rng) -> bool:
  """Random per-group scaling changes the loss far less than same-size noise."""
  x = x.astype(np.float64)
  signs = rng.choice([-1.0, 1.0], size=layout.stat_shape)
  factors = scale ** (signs * rng.uniform(0.5, 1.0, size=layout.stat_shape))
  scaled = (x.reshape(layout.view_shape) * factors).reshape(x.shape)
  noise = rng.standard_normal(x.shape)
  noise *= np.linalg.norm(scaled - x) / max(np.linalg.norm(noise), 1e-30)
  informative = False
  for l0, l_scaled, l_noise in zip(base, loss_with(i, scaled), loss_with(i, x + noise)):
    floor = atol * max(1.0, abs(l0))
    d_noise = abs(l_noise - l0)
    if d_noise <= floor:
      continue
    informative = True
    if abs(l_scaled - l0) > max(rtol * d_noise, floor):
      return False
  return informative
