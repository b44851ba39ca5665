"""Weight-norm rescale at learning-rate drops (Wan et al., SMD Corollary 3.1).

For SGD(M) with weight decay, a scale-invariant group's equilibrium norm scales
as ``||w||² ∝ sqrt(η)``. When the learning rate is divided by ``k``, reaching the
new equilibrium takes at least ``log(k)(1−α)/(4λη)`` steps; dividing every
scale-invariant group's norm by ``k^{1/4}`` reaches it at once.

This transform goes last in a chain. At step ``t`` (0-based, the step whose
update uses ``lr(t)``) it looks at the next step's rate: if
``lr(t+1) = lr(t)/k`` with ``k > 1``, every grouped leaf is moved to
``(x + u) / k^{1/4}`` (``u`` the incoming update), so every step at the new rate
starts from rescaled weights; otherwise updates pass through unchanged.
Optimizer moments are not rescaled.

Example:

>>> import jax.numpy as jnp, optax, spherax
>>> sched = optax.piecewise_constant_schedule(0.1, {1: 1 / 16})
>>> opt = optax.chain(optax.sgd(sched), spherax.rescale_norms_on_lr_drop(sched))
>>> x = {'w': jnp.array([[2., 0.], [0., 2.]])}
>>> state = opt.init(x)
>>> u, state = opt.update({'w': jnp.zeros((2, 2))}, state, x)   # lr 0.1 → 0.1/16
>>> optax.apply_updates(x, u)['w'].tolist()
[[1.0, 0.0], [0.0, 1.0]]

References:

* Wan et al., SMD: Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax._checks import require_params
from spherax import groups as groups_lib

__all__ = ["rescale_norms_on_lr_drop", "RescaleOnDropState"]


class RescaleOnDropState(NamedTuple):
  count: jax.Array


def rescale_norms_on_lr_drop(
    learning_rate: Callable[[jax.Array], jax.Array],
    *,
    groups: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Divides grouped norms by ``k^{1/4}`` when the schedule drops by ``k``.

  Args:
    learning_rate: the optimizer's learning-rate schedule (a callable of the
      step count, as given to the optimizer).
    groups: which leaves are scale-invariant (``None``: every ``ndim >= 2``
      leaf); only whether a leaf is grouped matters, since the factor is the
      same for every group.
  """
  if not callable(learning_rate):
    raise ValueError(
        "rescale_norms_on_lr_drop: learning_rate must be a schedule (a constant "
        f"rate never drops), got {learning_rate!r}"
    )

  def init_fn(params):
    groups_lib.resolve(groups, params, who="rescale_norms_on_lr_drop")
    return RescaleOnDropState(jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params("rescale_norms_on_lr_drop", params)
    layouts = groups_lib.resolve(groups, params, who="rescale_norms_on_lr_drop")
    float_dtype = jnp.result_type(float)  # float64 under jax_enable_x64
    now = jnp.asarray(learning_rate(state.count), float_dtype)
    nxt = jnp.asarray(learning_rate(state.count + 1), float_dtype)
    drop = (nxt > 0) & (nxt < now)
    factor = jnp.where(drop, (jnp.where(drop, nxt, 1.0) / jnp.where(drop, now, 1.0)) ** 0.25, 1.0)

    def leaf(layout, x, u):
      if layout is None:
        return u
      dtype = jnp.result_type(jnp.float32, x.dtype, u.dtype)
      new = (x.astype(dtype) + u.astype(dtype)) * factor.astype(dtype)
      return (new - x.astype(dtype)).astype(u.dtype)

    out = groups_lib.tree_map_groups(leaf, layouts, params, updates)
    return out, RescaleOnDropState(optax.safe_int32_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
