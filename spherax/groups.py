"""Groups: how a parameter leaf splits into scale-invariant groups.

A *group* is one vector of parameters whose loss is invariant to positive scaling
(Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on
Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382,
Lemma 1): one output filter of a conv followed by BatchNorm, a whole layer
under LayerNorm, a set of filters under GroupNorm. A :class:`GroupSpec` says
which axes of a leaf *index* the groups; every other axis is reduced over (it
runs over the elements of one group).

**The default rule** (``groups=None``, :func:`default_rule`) groups every
floating-point leaf (real or complex) with ``ndim >= 2`` per output unit
(``GroupSpec(axes=(-1,))``: Flax puts the output axis last, Conv
``(kh, kw, in, out)``, Dense ``(in, out)``), *unless* its groups would have
fewer than 2 elements (a ``(1, C)`` kernel). Left ungrouped: leaves with
``ndim <= 1`` (biases, norm scales), integer and boolean leaves, empty leaves
(a zero-size axis) and ``(1, C)`` kernels. The rule reads shapes only, so it
**also groups leaves that are not scale-invariant**: the classifier head, a
``(1, T, D)`` position embedding, any kernel not followed by a normalization.
Constraining optimizers (``adamg``, ``rv_adamw``, ``nero``, ...) then hold
those layers' norms fixed. The safe ways:

* exclude them by path: ``groups=spherax.groups.by_path({'^head/': None,
  'pos_embed': None})``;
* or detect the scale-invariant leaves from the model:
  ``spherax.diagnostics.detect_groups`` (numerically checks ``L(ρx) = L(x)``).

Whatever the rule, empty leaves are never grouped (they pass every transform
unchanged), and a spec given explicitly for an integer or boolean leaf is an
error at ``init`` naming the leaf.

The ``groups=`` argument of every spherax transform accepts

* ``None``: the default rule;
* a pytree matching params whose leaves are :class:`GroupSpec` or ``None``
  (``None`` = not grouped);
* a :class:`PathRules` object from :func:`by_path` (rules on the ``/``-joined
  parameter path);
* a :class:`ParamsRule` from :func:`from_params` (a function ``params -> spec
  pytree``).

A bare function is refused with an error: ``optax.inject_hyperparams`` calls
every callable hyperparameter as a schedule of the step count (unless named in
``static_args``), so a bare function would be evaluated on the count and its
result used as the groups. :class:`PathRules`, :class:`ParamsRule` and spec
trees are not callable and pass through ``optax.inject_hyperparams`` untouched
(no ``static_args`` needed). Under ``inject_hyperparams`` without
``static_args``, whatever a bare ``groups=`` function returned for the count
(``None`` included, which would otherwise mean the default rule) is an error at
``init`` naming ``static_args`` and the wrappers; a ``(path, leaf)`` rule fails
earlier, inside optax, with Python's own "missing 1 required positional
argument" (spherax code has not run yet).

This module is pure metadata: it resolves a ``groups`` argument against the
shapes of a params pytree into one :class:`GroupLayout` (or ``None``) per leaf,
validates it with errors that name the parameter path, and maps per-leaf
functions over trees. It never touches array values.

Example:

>>> import jax.numpy as jnp
>>> import spherax
>>> params = {'conv': {'kernel': jnp.ones((3, 3, 4, 8))}, 'bias': jnp.ones(8),
...           'row': jnp.ones((1, 8)), 'ids': jnp.zeros((4, 8), jnp.int32)}
>>> layouts = spherax.groups.resolve(None, params)
>>> [None if l is None else (l.num_groups, l.group_size) for l in layouts]
[None, (8, 36), None, None]
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, Union

import jax
import numpy as np

__all__ = [
    "GroupSpec",
    "GroupLayout",
    "PathRules",
    "per_output",
    "whole",
    "channel_groups",
    "stacked",
    "default_rule",
    "by_path",
    "ParamsRule",
    "from_params",
    "resolve",
    "resolve_with_paths",
    "leaf_paths",
    "mask_leaves",
    "tree_map_groups",
]


@dataclasses.dataclass(frozen=True)
class GroupSpec:
  """Which axes of a parameter leaf index its groups.

  Attributes:
    axes: the kept axes (negative values count from the end). Every other axis
      is reduced over: one group is one slice with all kept indices fixed.
      ``(-1,)`` is one group per output unit in Flax layout, ``()`` one group
      for the whole tensor, ``(-2, -1)`` one group per (head, head_dim) output
      of a ``DenseGeneral`` kernel ``(in, heads, head_dim)``, ``(0, -1)`` per
      output unit of each layer of a stacked (scanned) kernel.
    num_groups: if set, the last kept axis (size ``C``) is split into
      ``num_groups`` contiguous blocks of ``C // num_groups`` units and each
      block forms one group together with the reduced axes (GroupNorm with
      ``num_groups`` groups).
  """

  axes: tuple[int, ...] = (-1,)
  num_groups: int | None = None

  def __post_init__(self):
    axes = tuple(self.axes)
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
      raise TypeError(f"GroupSpec.axes must be a tuple of ints, got {self.axes!r}")
    object.__setattr__(self, "axes", axes)
    if self.num_groups is not None:
      if not isinstance(self.num_groups, int) or self.num_groups < 1:
        raise ValueError(
            f"GroupSpec.num_groups must be a positive int, got {self.num_groups!r}"
        )
      if not axes:
        raise ValueError("GroupSpec.num_groups needs at least one kept axis to split")

  def layout(self, shape: Sequence[int], path: str = "<leaf>") -> "GroupLayout":
    """Binds this spec to a leaf shape, validating it (errors name ``path``)."""
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    kept = []
    for a in self.axes:
      if not -ndim <= a < ndim:
        raise ValueError(
            f"spherax groups: parameter '{path}' with shape {shape}: group axis {a} "
            f"is out of range for a {ndim}-d leaf"
        )
      kept.append(a % ndim)
    if len(set(kept)) != len(kept):
      raise ValueError(
          f"spherax groups: parameter '{path}' with shape {shape}: repeated group "
          f"axes {self.axes}"
      )
    kept = sorted(kept)
    if self.num_groups is None:
      view_shape = shape
      view_kept = tuple(kept)
    else:
      split = kept[-1]
      channels = shape[split]
      if channels % self.num_groups:
        raise ValueError(
            f"spherax groups: parameter '{path}' with shape {shape}: axis {split} of "
            f"size {channels} cannot be split into num_groups={self.num_groups}"
        )
      view_shape = (
          shape[:split]
          + (self.num_groups, channels // self.num_groups)
          + shape[split + 1 :]
      )
      view_kept = tuple(a if a <= split else a + 1 for a in kept)
    reduce_axes = tuple(a for a in range(len(view_shape)) if a not in view_kept)
    return GroupLayout(
        path=path,
        shape=shape,
        view_shape=view_shape,
        reduce_axes=reduce_axes,
    )


def per_output(num_axes: int = 1) -> GroupSpec:
  """One group per output unit; the output unit spans the last ``num_axes`` axes."""
  if num_axes < 1:
    raise ValueError(f"per_output needs num_axes >= 1, got {num_axes}")
  return GroupSpec(tuple(range(-num_axes, 0)))


def whole() -> GroupSpec:
  """The whole tensor is one group (a layer followed by LayerNorm)."""
  return GroupSpec(())


def channel_groups(num_groups: int) -> GroupSpec:
  """``num_groups`` contiguous sets of output units (a layer followed by GroupNorm)."""
  return GroupSpec((-1,), num_groups)


def stacked(spec: GroupSpec | None = None) -> GroupSpec:
  """``spec`` applied independently to every slice of a leading stacked axis."""
  spec = per_output() if spec is None else spec
  if any(a == 0 for a in spec.axes):
    raise ValueError(f"stacked(): {spec} already keeps axis 0")
  shifted = tuple(a + 1 if a >= 0 else a for a in spec.axes)
  return GroupSpec((0,) + shifted, spec.num_groups)


@dataclasses.dataclass(frozen=True)
class GroupLayout:
  """A :class:`GroupSpec` bound to one leaf shape (static, hashable metadata).

  Reductions happen on a *view* of the leaf (a free reshape that splits the
  channel axis when ``num_groups`` is set) over ``reduce_axes`` with
  ``keepdims=True``; their result has ``stat_shape`` and broadcasts against the
  view. Per-group state is stored in ``stat_shape``.
  """

  path: str
  shape: tuple[int, ...]
  view_shape: tuple[int, ...]
  reduce_axes: tuple[int, ...]

  @property
  def stat_shape(self) -> tuple[int, ...]:
    return tuple(
        1 if i in self.reduce_axes else s for i, s in enumerate(self.view_shape)
    )

  @property
  def group_size(self) -> int:
    """``d``: the number of elements of one group."""
    return math.prod(self.view_shape[i] for i in self.reduce_axes)

  @property
  def num_groups(self) -> int:
    return math.prod(self.stat_shape)

  @property
  def is_split(self) -> bool:
    return self.view_shape != self.shape

  def unnamed(self) -> GroupLayout:
    """This layout with ``path=""``: equal, and hashing equal, for every leaf of one
    shape and spec, so that a rule jitted with the layout as a static argument is
    traced once per shape rather than once per leaf."""
    return dataclasses.replace(self, path="")


def _dtype(leaf: Any) -> np.dtype:
  dtype = getattr(leaf, "dtype", None)
  return np.dtype(dtype) if dtype is not None else np.result_type(leaf)


def _is_float(leaf: Any) -> bool:
  """Real or complex floating point (bfloat16 included)."""
  return jax.numpy.issubdtype(_dtype(leaf), jax.numpy.inexact)


def default_rule(path: str, leaf: Any) -> GroupSpec | None:
  """The default rule: per output unit (last axis) for float leaves with ``ndim >= 2``.

  ``None`` (not grouped) for ``ndim <= 1``, integer or boolean leaves, empty
  leaves and leaves whose groups would have one element (``(1, C)``). See the
  module docstring for what this rule cannot know (heads, embeddings).
  """
  del path
  shape = tuple(leaf.shape)
  if len(shape) < 2 or not _is_float(leaf) or math.prod(shape[:-1]) < 2 or shape[-1] == 0:
    return None
  return per_output()


_Rule = Union[GroupSpec, None, Callable[[str, Any], Union[GroupSpec, None]]]


@dataclasses.dataclass(frozen=True)
class PathRules:
  """Group specs chosen by regular expressions on the ``/``-joined parameter path.

  Built by :func:`by_path`. The first pattern that ``re.search``-es a path wins;
  paths that match none get ``default``. Deliberately not callable, so
  ``optax.inject_hyperparams`` does not mistake it for a schedule.
  """

  rules: tuple[tuple[str, _Rule], ...]
  default: Callable[[str, Any], GroupSpec | None] = default_rule

  def spec_for(self, path: str, leaf: Any) -> GroupSpec | None:
    for pattern, rule in self.rules:
      if re.search(pattern, path):
        return rule(path, leaf) if callable(rule) else rule
    return self.default(path, leaf)


def by_path(
    rules: Sequence[tuple[str, _Rule]] | dict[str, _Rule] = (),
    default: Callable[[str, Any], GroupSpec | None] = default_rule,
) -> PathRules:
  """Builds group specs from rules on parameter paths.

  Args:
    rules: ``(pattern, spec)`` pairs (or a dict), tried in order; ``spec`` is a
      :class:`GroupSpec`, ``None`` (not grouped) or ``f(path, leaf) -> spec``.
      Paths join the pytree keys with ``/``; a trailing ``/value`` added by
      ``flax.nnx`` variables is dropped (``'head/kernel'``).
    default: the rule for paths no pattern matches.

  Example:

  >>> import jax.numpy as jnp
  >>> import spherax
  >>> params = {'conv': {'kernel': jnp.ones((3, 3, 4, 8))},
  ...           'head': {'kernel': jnp.ones((8, 10))}}
  >>> rules = spherax.groups.by_path({'^head/': None})
  >>> [l.path for l in spherax.groups.resolve(rules, params) if l is not None]
  ['conv/kernel']
  """
  items = tuple(rules.items()) if isinstance(rules, dict) else tuple(rules)
  for pattern, _ in items:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as err:
      raise ValueError(f"spherax groups: by_path: bad pattern {pattern!r}: {err}") from None
  return PathRules(items, default)


@dataclasses.dataclass(frozen=True)
class ParamsRule:
  """Group specs computed by a function of the params pytree (built by :func:`from_params`).

  Not callable, so ``optax.inject_hyperparams`` passes it through untouched.
  """

  fn: Callable[[Any], Any]

  def specs(self, params: Any) -> Any:
    return self.fn(params)


def from_params(fn: Callable[[Any], Any]) -> ParamsRule:
  """Wraps ``fn(params) -> spec pytree`` as a ``groups=`` argument.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import spherax
  >>> params = {'a': jnp.ones((4, 3)), 'b': jnp.ones((4, 3))}
  >>> rule = spherax.groups.from_params(
  ...     lambda p: {'a': spherax.groups.whole(), 'b': None})
  >>> [l is None for l in spherax.groups.resolve(rule, params)]
  [False, True]
  """
  if not callable(fn):
    raise TypeError(f"spherax groups: from_params needs a function of params, got {fn!r}")
  return ParamsRule(fn)


def leaf_paths(tree: Any) -> list[str]:
  """The ``/``-joined path of every leaf of ``tree`` (``/value`` suffix dropped)."""
  keyed = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [_path_name(path) for path, _ in keyed]


def _path_name(keypath) -> str:
  name = jax.tree_util.keystr(keypath, simple=True, separator="/")
  return name[: -len("/value")] if name.endswith("/value") else name


def mask_leaves(mask: Any, params: Any, *, who: str = "spherax") -> list[bool]:
  """A decay ``mask`` (``None``, a pytree of bools or a function of params) as one
  bool per leaf of ``params`` (``optax.MaskedNode`` subtrees skipped), like optax's
  ``mask=`` arguments: False leaves get no decay. Under ``optax.inject_hyperparams``
  a mask function must be named in ``static_args`` (else it is called with the
  step count, and its result is refused here).

  >>> import jax.numpy as jnp
  >>> mask_leaves(lambda p: {'b': False, 'w': True}, {'b': jnp.ones(2), 'w': jnp.ones((2, 2))})
  [False, True]
  """
  if "mask" in _inject_schedules():
    raise TypeError(
        f"{who}: mask= was called as a schedule: optax.inject_hyperparams calls "
        "every callable hyperparameter not named in static_args with the step "
        f"count, and passed on its result ({mask!r:.80}) as the mask; use "
        "optax.inject_hyperparams(..., static_args=('mask',))"
    )
  num = len(jax.tree.leaves(params))
  if mask is None:
    return [True] * num
  tree = mask(params) if callable(mask) else mask
  try:
    aligned = jax.tree.map(
        lambda m, sub: _Chunk([bool(m)] * len(jax.tree.leaves(sub))), tree, params,
        is_leaf=lambda x: isinstance(x, bool))
  except (ValueError, TypeError) as err:
    raise ValueError(f"spherax: the mask pytree does not match the params pytree: {err}") from None
  chunks = jax.tree.leaves(aligned, is_leaf=lambda x: isinstance(x, _Chunk))
  return [m for chunk in chunks for m in chunk.specs]


def _is_spec_leaf(x: Any) -> bool:
  return x is None or isinstance(x, GroupSpec)


@dataclasses.dataclass(frozen=True)
class _Chunk:
  """The specs of the leaves under one spec-tree position (a pytree leaf)."""

  specs: list


def _specs_from_tree(spec_tree: Any, params: Any, paths: list[str]) -> list:
  """Aligns a user spec pytree with the leaves of ``params``.

  Positions where ``params`` holds a subtree without leaves (``optax.MaskedNode``
  inside ``optax.masked``/``optax.partition``) are skipped, so a spec tree for
  the full params also works on a masked subset.
  """
  try:
    aligned = jax.tree.map(
        lambda spec, sub: _Chunk([spec] * len(jax.tree.leaves(sub))),
        spec_tree,
        params,
        is_leaf=_is_spec_leaf,
    )
  except (ValueError, TypeError) as err:
    raise ValueError(
        "spherax groups: the group-spec pytree does not match the params pytree "
        f"(leaves must be GroupSpec or None, one per parameter): {err}"
    ) from None
  chunks = jax.tree.leaves(aligned, is_leaf=lambda x: isinstance(x, _Chunk))
  specs = [spec for chunk in chunks for spec in chunk.specs]
  for spec, path in zip(specs, paths):
    if not _is_spec_leaf(spec):
      raise TypeError(
          f"spherax groups: parameter '{path}': expected a GroupSpec or None, "
          f"got {spec!r}"
      )
  return specs


def _inject_schedules() -> frozenset:
  """The arguments that the innermost ``optax.inject_hyperparams`` on the call
  stack calls as schedules (empty outside it).

  ``inject_hyperparams`` (``optax/schedules/_inject.py``, optax 0.2.5 to 0.2.8)
  sorts the factory's arguments in ``wrapped_transform``: its ``init_fn`` and
  ``update_fn`` close over ``sched_hps``, the arguments it calls with the step
  count (every callable not named in ``static_args``). They are on the stack
  while they build and run the spherax transform that resolves ``groups`` or
  ``mask``. If ``groups`` is among them, the value that reached the transform is
  the user's function applied to the count, whatever it returned (``None``
  would silently mean the default rule).
  """
  frame = sys._getframe(1)
  while frame is not None:
    if ("sched_hps" in frame.f_code.co_freevars
        and frame.f_globals.get("__name__", "").startswith("optax")):
      return frozenset(frame.f_locals["sched_hps"])
    frame = frame.f_back
  return frozenset()


def resolve_with_paths(
    groups: Any, params: Any, *, min_group_size: int = 1, who: str = "spherax"
) -> tuple[list[GroupLayout | None], list[str]]:
  """Like :func:`resolve`, also returning every leaf's path."""
  if "groups" in _inject_schedules():
    raise TypeError(
        f"{who}: groups= was called as a schedule: optax.inject_hyperparams calls "
        "every callable hyperparameter not named in static_args with the step "
        f"count, and passed on its result ({groups!r:.80}) as the groups. Pass a "
        "rule that is not callable (no static_args needed): "
        "spherax.groups.from_params(fn) for a function of the params, "
        "spherax.groups.by_path({'': rule}) for a (path, leaf) rule, or a pytree of "
        "GroupSpec/None"
    )
  keyed, _ = jax.tree_util.tree_flatten_with_path(params)
  paths = [_path_name(p) for p, _ in keyed]
  leaves = [leaf for _, leaf in keyed]
  if groups is None:
    specs = [default_rule(p, leaf) for p, leaf in zip(paths, leaves)]
  elif isinstance(groups, PathRules):
    specs = [groups.spec_for(p, leaf) for p, leaf in zip(paths, leaves)]
  elif isinstance(groups, GroupSpec):
    raise TypeError(
        "spherax groups: pass a pytree of GroupSpec (or by_path rules), not a single "
        "GroupSpec; e.g. by_path({'': spec}) applies one spec to every leaf"
    )
  elif isinstance(groups, ParamsRule):
    specs = _specs_from_tree(groups.specs(params), params, paths)
  elif callable(groups):
    raise TypeError(
        f"{who}: groups={groups!r} is a bare function; wrap a function of the "
        "params as spherax.groups.from_params(fn), a (path, leaf) rule as "
        "spherax.groups.by_path({'': rule}) (optax.inject_hyperparams calls a bare "
        "function as a schedule of the step count unless it is named in "
        "static_args; the wrappers are not callable and need no static_args)"
    )
  else:
    specs = _specs_from_tree(groups, params, paths)
  layouts = []
  for spec, path, leaf in zip(specs, paths, leaves):
    if spec is None:
      layouts.append(None)
      continue
    if not isinstance(spec, GroupSpec):
      raise TypeError(
          f"spherax groups: parameter '{path}': a rule returned {spec!r}, expected "
          "a GroupSpec or None"
      )
    layout = spec.layout(leaf.shape, path)
    if not _is_float(leaf):
      raise ValueError(
          f"{who}: parameter '{path}' has dtype {_dtype(leaf)} but was given the group "
          f"spec {spec}; only floating-point leaves can be grouped (use None)"
      )
    if math.prod(layout.shape) == 0:  # nothing to group: passes through unchanged
      layouts.append(None)
      continue
    if layout.group_size < min_group_size:
      raise ValueError(
          f"{who}: parameter '{path}' with shape {layout.shape} has groups of "
          f"{layout.group_size} element(s) under {spec}; this transform needs "
          f"groups of at least {min_group_size} elements (mark the leaf as not "
          "grouped with None, or choose other axes)"
      )
    layouts.append(layout)
  return layouts, paths


def resolve(
    groups: Any, params: Any, *, min_group_size: int = 1, who: str = "spherax"
) -> list[GroupLayout | None]:
  """Resolves a ``groups`` argument to one layout (or ``None``) per leaf of ``params``.

  Works on arrays and on ``jax.ShapeDtypeStruct`` leaves (only shapes are read).

  Args:
    groups: ``None``, a spec pytree, :class:`PathRules` or :class:`ParamsRule`
      (see the module docstring).
    params: the params pytree (possibly holding ``optax.MaskedNode`` subtrees).
    min_group_size: the smallest group a transform accepts (a transport needs 2).
    who: the transform's name, for error messages.

  Returns:
    A list aligned with ``jax.tree.leaves(params)``.

  Raises:
    ValueError, TypeError: with the parameter path, for axes out of range, a
      channel count that ``num_groups`` does not divide, groups smaller than
      ``min_group_size``, a spec on an integer or boolean leaf, a spec tree that
      does not match ``params``, or a bare function.
  """
  return resolve_with_paths(groups, params, min_group_size=min_group_size, who=who)[0]


def tree_map_groups(
    fn: Callable[..., Any],
    layouts: Sequence[GroupLayout | None],
    tree: Any,
    *rest: Any,
) -> Any:
  """Maps ``fn(layout, leaf, *rest_leaves)`` over the leaves of ``tree``.

  ``layouts`` is aligned with ``jax.tree.leaves(tree)``; every tree in ``rest``
  has ``tree``'s structure (its leaves may have other shapes, e.g. per-group
  statistics). Returns a tree with ``tree``'s structure. Subtrees without
  leaves (``optax.MaskedNode``) pass through.
  """
  leaves, treedef = jax.tree.flatten(tree)
  if len(leaves) != len(layouts):
    raise ValueError(
        f"spherax groups: {len(layouts)} group layouts for a tree of {len(leaves)} "
        "leaves; resolve the groups against the same params pytree"
    )
  rest_leaves = [treedef.flatten_up_to(r) for r in rest]
  out = [fn(layout, *args) for layout, *args in zip(layouts, leaves, *rest_leaves)]
  return jax.tree.unflatten(treedef, out)
