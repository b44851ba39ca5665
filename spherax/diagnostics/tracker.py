"""Recording the spherical dynamics of every step inside the optimizer state.

:func:`track_dynamics` wraps an optax transform and, at each ``update``,
measures per group (the spherical decomposition of a step of Roburin, de
Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on Learning with
Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, Sec. 2, and the
angular and RMS updates of Kosson, Messmer, Jaggi, *Rotational Equilibrium: How
Weight Decay Balances Learning Across Neural Networks*, ICML 2024,
arXiv:2305.17212, Sec. 2; the same quantities as
:mod:`spherax.diagnostics.measures`):

* ``angular_update``: ``∠(x, x + Δ)`` in radians, ``Δ`` the wrapped
  transform's update (the step that ``optax.apply_updates`` will take);
* ``norm``: the weight norm ``||x||`` before the step;
* ``rms_update``: ``||Δ||`` (its root mean square over steps is ``η_g``);
* ``grad_cosine``: ``<g, x>/(||g|| ||x||)`` with ``g`` the incoming updates
  (the gradient when the wrapper is first in a chain);

and stores, for each grouped leaf, their mean, min and max over the leaf's
groups. Ungrouped and empty leaves are not tracked (``None`` in the state).

Cost: per recorded leaf, the five dot products ``<x,x>, <x,Δ>, <Δ,Δ>, <g,g>,
<g,x>`` (float32 reductions over ``x``, ``Δ`` and ``g``, which the compiler
fuses with the step's own passes where it can; see :func:`track_dynamics` for
which steps record). Everything else is per-group arithmetic on them:
``∠ = atan2(sqrt(<x,x><Δ,Δ> − <x,Δ>²), <x,x> + <x,Δ>)``, which equals
:func:`~spherax.diagnostics.measures.angular_update` up to float32 rounding
(absolute error ≲ 1e-3 · ||Δ||/||x|| when the step is almost radial; that
function projects explicitly and is exact there).

Example:

>>> import jax, jax.numpy as jnp, optax
>>> from spherax import diagnostics
>>> params = {'w': jnp.array([[1., 0.], [0., 1.]]), 'b': jnp.zeros(2)}
>>> tx = diagnostics.track_dynamics(optax.sgd(0.5))
>>> state = tx.init(params)
>>> grads = {'w': jnp.array([[0., -1.], [-2., 0.]]), 'b': jnp.ones(2)}
>>> updates, state = jax.jit(tx.update)(grads, state, params)
>>> logs = diagnostics.summaries(state)
>>> round(logs['w/angular_update/max'], 4), round(logs['w/norm/mean'], 4)
(0.7854, 1.0)
>>> sorted(k for k in logs if k.startswith('w/rms_update'))
['w/rms_update/max', 'w/rms_update/mean', 'w/rms_update/min']

``record=False`` (static under ``jit``) skips a step's recording; the last
summaries stay:

>>> step = jax.jit(tx.update, static_argnames='record')
>>> updates, state = step(grads, state, params, record=False)
>>> diagnostics.summaries(state) == logs
True
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spherax._checks import require_params
from spherax import geometry, groups as groups_lib

__all__ = ["METRICS", "STATS", "TrackDynamicsState", "track_dynamics", "summaries"]

METRICS = ("angular_update", "norm", "rms_update", "grad_cosine")
"""Row names of a tracked leaf's ``(4, 3)`` summary array."""

STATS = ("mean", "min", "max")
"""Column names of a tracked leaf's ``(4, 3)`` summary array (over groups)."""


class TrackDynamicsState(NamedTuple):
  """State of :func:`track_dynamics`.

  Attributes:
    count: the number of steps taken.
    inner_state: the wrapped transform's state.
    dynamics: a pytree with the params' structure; each grouped leaf holds a
      float32 array of shape ``(len(METRICS), len(STATS))`` summarising the
      last recorded step (zeros before the first), ungrouped and empty
      leaves ``None``.
  """

  count: jax.Array
  inner_state: Any
  dynamics: Any


def _leaf_dots(layout, x, delta, g) -> jax.Array:
  """``<x,x>, <x,Δ>, <Δ,Δ>, <g,g>, <g,x>`` per group of one leaf, as ``(5, groups)``."""
  return jnp.stack([
      geometry.sqnorm(x, layout),
      geometry.dot(x, delta, layout),
      geometry.sqnorm(delta, layout),
      geometry.sqnorm(g, layout),
      geometry.dot(g, x, layout),
  ]).reshape(5, -1)


def _per_group_metrics(dots: jax.Array) -> jax.Array:
  """The :data:`METRICS` per group, ``(4, groups)``, from :func:`_leaf_dots`."""
  xx, xd, dd, gg, gx = dots
  across = jnp.sqrt(jnp.maximum(xx * dd - xd * xd, 0))  # ||x|| · ||Δ⊥||
  return jnp.stack([
      jnp.where(xx > 0, jnp.arctan2(across, xx + xd), 0),
      jnp.sqrt(xx),
      jnp.sqrt(dd),
      geometry.safe_div(gx, jnp.sqrt(gg * xx)),
  ])


@functools.partial(jax.jit, static_argnames="layout")
def _leaf_summary(x, delta, g, *, layout) -> jax.Array:
  """A leaf's ``(4, 3)`` float32 summary (mean, min, max over its groups) of its
  :func:`_per_group_metrics`; jitted on the layout (``layout.unnamed()``), so that
  leaves of one shape share one trace."""
  metrics = _per_group_metrics(_leaf_dots(layout, x, delta, g))
  summary = jnp.stack([metrics.mean(1), metrics.min(1), metrics.max(1)], axis=1)
  return summary.astype(jnp.float32)


def track_dynamics(
    inner: optax.GradientTransformation, groups: Any = None, *, every: int = 1
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` and records per-leaf summaries of each step's dynamics.

  The updates pass through unchanged: ``track_dynamics(tx)`` optimises exactly
  like ``tx``. Each ``update`` must receive ``params``. The state is a
  :class:`TrackDynamicsState` (reachable as ``optax.tree.get(state,
  'dynamics')``); read it with :func:`summaries`. Works with any inner
  transform (chains, ``optax.inject_hyperparams``), inside ``optax.chain``,
  ``optax.masked`` and ``optax.partition`` (masked-out leaves are skipped), with
  bf16 params, and under ``jit`` (the state has fixed shapes and dtypes).

  Which steps record:

  * ``update(..., record=True)`` or ``record=False`` (a Python bool, static
    under ``jit``: ``jax.jit(step, static_argnames="record")``) records this
    step or does not, whatever ``every`` says. A non-recording step is then the
    bare ``inner`` step plus the count's increment (its program holds nothing
    of the tracker), and a recording step reads ``x``, ``Δ`` and ``g`` once
    more for the five reductions, in the same program as the step. This is the
    cheapest way to log every ``k`` steps: ``record=(step % k == 0)``, two
    compiled programs, per step on average ``bare + (recording − bare)/k``.
  * Without ``record``, steps ``0, every, 2·every, ...`` record, under one
    ``lax.cond`` in one program: the recording branch recomputes ``Δ`` from
    the step's inputs (``grads``, the inner state, ``params``), so that ``Δ``
    is not a cond operand (which would force it to be written out every step)
    and the other steps do on the accelerators what the bare step does. The
    recording branch costs a second ``inner`` step (its reads, not its
    writes) plus the reductions, and its code is a second copy of ``inner``'s
    for the compiler; XLA:CPU also copies ``params`` and the inner state
    before the cond on every step (the cond reads them while the step
    overwrites them in place). ``every=1`` records every step without a cond.

  ``python -m experiments.compiled_cost`` prints the HBM traffic of both
  (``python -m experiments.benchmark`` times them against the bare step). Each
  leaf's summary depends only on that leaf, so tracing and compiling grow
  linearly with the number of leaves (``python -m experiments.compile_time``).

  Args:
    inner: the transform whose steps are measured.
    groups: the group specification (see :mod:`spherax.groups`); ``None`` is
      the default rule. Only grouped, non-empty leaves are tracked (an empty
      leaf, e.g. ``(5, 0)``, passes through untracked).
    every: without ``record``, record the summaries every ``every`` steps (a
      positive int).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes the
    optional keyword ``record`` (consumed here, not passed to ``inner``).
  """
  if not isinstance(every, int) or isinstance(every, bool) or every < 1:
    raise ValueError(f"track_dynamics: every must be a positive int, got {every!r}")
  inner = optax.with_extra_args_support(inner)

  def tracked(layout, x) -> bool:
    return layout is not None and x.size > 0  # an empty leaf has nothing to summarise

  def init_fn(params):
    layouts = groups_lib.resolve(groups, params, who="track_dynamics")
    zeros = lambda layout, x: (
        jnp.zeros((len(METRICS), len(STATS)), jnp.float32) if tracked(layout, x) else None
    )
    return TrackDynamicsState(
        count=jnp.zeros([], jnp.int32),
        inner_state=inner.init(params),
        dynamics=groups_lib.tree_map_groups(zeros, layouts, params),
    )

  def update_fn(updates, state, params=None, *, record=None, **extra_args):
    require_params("track_dynamics", params)
    if record is not None and not isinstance(record, (bool, np.bool_)):
      raise TypeError(
          "track_dynamics: record must be None or a Python bool, static under jit "
          f"(jax.jit(step, static_argnames='record')), got {type(record).__name__}"
      )
    layouts = groups_lib.resolve(groups, params, who="track_dynamics")

    def measure(grads, inner_state, params, delta=None):
      if delta is None:
        delta, _ = inner.update(grads, inner_state, params, **extra_args)

      def summary(layout, x, d, g):
        return _leaf_summary(x, d, g, layout=layout.unnamed()) if tracked(layout, x) else None

      return groups_lib.tree_map_groups(summary, layouts, params, delta, grads)

    new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    if record is None and every == 1:
      record = True
    if record is None:
      # The recording branch recomputes Δ from the step's inputs, so Δ is not a
      # lax.cond operand (which would force it to be written out every step).
      dynamics = jax.lax.cond(
          state.count % every == 0,
          lambda ops: measure(*ops),
          lambda _: state.dynamics,
          (updates, state.inner_state, params),
      )
    elif record:
      dynamics = measure(updates, None, params, new_updates)
    else:
      dynamics = state.dynamics
    count = optax.safe_increment(state.count)
    return new_updates, TrackDynamicsState(count, inner_state, dynamics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def summaries(state: Any) -> dict[str, float]:
  """Host-side: a flat ``{"<path>/<metric>/<stat>": float}`` dict for logging.

  Finds every :class:`TrackDynamicsState` inside ``state`` (an optimizer state
  of any nesting) and names each value by the parameter path
  (``/``-joined keys, as in :mod:`spherax.groups`), the metric
  (:data:`METRICS`) and the statistic over the leaf's groups (:data:`STATS`),
  e.g. ``"conv/kernel/angular_update/mean"``. Fetches all values in one
  device-to-host transfer.
  """
  trackers = [
      s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, TrackDynamicsState))
      if isinstance(s, TrackDynamicsState)
  ]
  names, arrays = [], []
  for tracker in trackers:
    names += groups_lib.leaf_paths(tracker.dynamics)
    arrays += jax.tree.leaves(tracker.dynamics)
  out = {}
  for path, values in zip(names, jax.device_get(arrays)):
    values = np.asarray(values)
    for i, metric in enumerate(METRICS):
      for j, stat in enumerate(STATS):
        out[f"{path}/{metric}/{stat}"] = float(values[i, j])
  return out
