"""The one driver that turns a per-leaf rule into an optax transformation.

Every spherax optimizer is written once, as a *rule* on one leaf: given the
leaf's :class:`spherax.groups.GroupLayout` (``None`` for an ungrouped leaf),
the point ``x``, the gradient ``g`` and the leaf's entries of each state field,
it returns the update ``u`` (``x' = x + u``) and the new state entries, from
:mod:`spherax.geometry` calls that read like the paper. :func:`leafwise` does
everything else, the same way for every optimizer:

* groups: resolved at ``init`` (validation, errors naming the parameter path)
  and again, free (shapes are static), at trace time in ``update``;
* the step count ``count`` (int32, from 0; the only counter in the state) and
  the learning rate ``learning_rate(count)`` when it is a schedule;
* the decay ``mask`` (``None``, a pytree of bools or a function of params, as
  in optax), handed to the rule as one Python bool per leaf;
* flattening ``params``, ``updates`` and the state fields, unzipping the rule's
  outputs back into pytrees, casting ``u`` to the gradient's dtype and each
  state entry back to its dtype at ``init`` (stable dtypes across steps);
* ``optax.MaskedNode`` subtrees (``optax.masked``) and extra arguments
  (``GradientTransformationExtraArgs``), which it skips;
* under a trace (``jax.jit``, ``vmap``, ``grad``), tracing each distinct leaf
  once: the rule is applied through a ``jax.jit`` keyed on the leaf's shape,
  dtype, layout and mask bit, so ``N`` leaves of ``k`` distinct kinds are traced
  and lowered ``k`` times, not ``N`` (XLA inlines the calls: the compiled step
  is the same program). Called eagerly, the rule runs op by op, as written.

The rule returns a state entry of ``None`` for a field it does not keep on that
leaf (stored as ``optax.MaskedNode()``, an empty subtree: no bytes, nothing to
shard); such entries are passed to ``update`` as ``None`` again.

Example: plain SGD as a rule.

>>> import jax.numpy as jnp, optax
>>> from typing import NamedTuple, Any
>>> class SgdState(NamedTuple):
...   count: Any
>>> def rule(step, x, g):
...   return (-step.learning_rate * g,)
>>> tx = leafwise("sgd", SgdState, lambda layout, x: (), rule, learning_rate=0.1)
>>> params = {'w': jnp.ones((2, 2))}
>>> u, state = tx.update({'w': jnp.ones((2, 2))}, tx.init(params), params)
>>> u['w'].tolist(), int(state.count)
([[-0.1, -0.1], [-0.1, -0.1]], 1)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spherax import groups as groups_lib
from spherax._checks import require_params

__all__ = ["LeafStep", "leafwise"]


class LeafStep(NamedTuple):
  """What a rule knows about the step, besides the leaf's arrays.

  Attributes:
    layout: the leaf's group layout, ``None`` for an ungrouped leaf (its
      ``path`` is ``""``: leaves of one shape share one traced rule; errors
      naming a parameter are raised at ``init``).
    learning_rate: ``η`` of this step (a schedule evaluated at the old count),
      or ``None`` when the transformation has no learning rate.
    count: the new step count ``t`` (int32, 1 at the first update), for bias
      corrections.
    decayed: whether the decay ``mask`` selects this leaf (a Python bool).
  """

  layout: groups_lib.GroupLayout | None
  learning_rate: Any
  count: jax.Array
  decayed: bool


def _stored(entry: Any) -> Any:
  return optax.MaskedNode() if entry is None else entry


def _given(entry: Any) -> Any:
  return None if isinstance(entry, optax.MaskedNode) else entry


def _cast_like(new: Any, old: Any) -> Any:
  if new is None:
    return optax.MaskedNode()
  return new.astype(old.dtype) if hasattr(old, "dtype") else new


def leafwise(
    who: str,
    state_type: type,
    init_leaf: Callable[..., tuple],
    update_leaf: Callable[..., tuple],
    *,
    learning_rate: optax.ScalarOrSchedule | None = None,
    groups: Any = None,
    min_group_size: int = 1,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """A transformation applying ``update_leaf`` to every leaf of the params.

  Args:
    who: the name of the factory the user called (for error messages).
    state_type: a NamedTuple whose first field is ``count``; every other field
      holds a pytree like params (one entry per leaf, ``MaskedNode`` where the
      rule keeps nothing).
    init_leaf: ``init_leaf(layout, x) -> entries``, one entry (array or
      ``None``) per non-count field of ``state_type``; ``x`` may be a
      ``jax.ShapeDtypeStruct`` only if the entries are built with
      ``jnp.zeros``-like calls on its shape and dtype.
    update_leaf: ``update_leaf(step, x, g, *entries) -> (u, *new_entries)``,
      ``step`` a :class:`LeafStep`.
    learning_rate: a float or a schedule of the step count (``None``: none).
    groups: the group specification (see :mod:`spherax.groups`).
    min_group_size: the smallest group an explicit spec may give.
    mask: which leaves get decay, as optax's ``mask=`` arguments.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params``.
  """
  num_fields = len(state_type._fields) - 1
  if state_type._fields[0] != "count":
    raise ValueError(f"{who}: the state's first field must be 'count', got {state_type._fields}")

  def layouts_of(params):
    return groups_lib.resolve(groups, params, min_group_size=min_group_size, who=who)

  def init_fn(params):
    leaves, treedef = jax.tree.flatten(params)
    entries = [tuple(init_leaf(layout, x)) for layout, x in zip(layouts_of(params), leaves)]
    fields = [
        jax.tree.unflatten(treedef, [_stored(e[i]) for e in entries]) for i in range(num_fields)
    ]
    return state_type(jnp.zeros([], jnp.int32), *fields)

  def apply_rule(x, g, old, count, scheduled_lr, *, layout, decayed):
    """``update_leaf`` on one leaf, its outputs cast back; ``scheduled_lr`` is the
    schedule's value (``None``: the constant ``learning_rate``, closed over)."""
    lr = learning_rate if scheduled_lr is None else scheduled_lr
    u, *new = update_leaf(LeafStep(layout, lr, count, decayed), x, g, *old)
    return u.astype(g.dtype), [_cast_like(n, o) for n, o in zip(new, old)]

  apply_traced = jax.jit(apply_rule, static_argnames=("layout", "decayed"))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(who, params)
    leaves, treedef = jax.tree.flatten(params)
    grads = treedef.flatten_up_to(updates)
    fields = [
        [_given(e) for e in treedef.flatten_up_to(field)] for field in state[1:]
    ]
    scheduled_lr = learning_rate(state.count) if callable(learning_rate) else None
    count = optax.safe_increment(state.count)
    decayed = groups_lib.mask_leaves(mask, params, who=who)
    traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((updates, state, params)))
    apply = apply_traced if traced else apply_rule
    out_u, out_fields = [], [[] for _ in range(num_fields)]
    for i, (layout, x, g) in enumerate(zip(layouts_of(params), leaves, grads)):
      u, new = apply(x, g, [field[i] for field in fields], count, scheduled_lr,
                     layout=None if layout is None else layout.unnamed(), decayed=decayed[i])
      out_u.append(u)
      for column, entry in zip(out_fields, new):
        column.append(entry)
    new_state = state_type(count, *(jax.tree.unflatten(treedef, c) for c in out_fields))
    return jax.tree.unflatten(treedef, out_u), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
