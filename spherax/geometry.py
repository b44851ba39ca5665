"""Per-group geometry on the sphere: pure functions of arrays and a :class:`GroupLayout`.

Notation (Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical
Perspective on Learning with Normalization Layers*, Neurocomputing 2022,
arXiv:2006.13382, §2): for one group, ``x`` its values, ``d`` its size,
``r = ||x||``, ``u = x / r``, ``<a, b>`` the inner product over the group and
``q⊥ = q − <q, u> u`` the tangential part of ``q`` at ``u``.

Rules every function follows:

* **Statistics are real.** Reductions over a group return a *statistic* of
  shape ``layout.stat_shape`` (``keepdims``) in the real statistic dtype
  (:func:`stat_dtype`: float32, float64 when an input is float64), even for
  bfloat16 or complex leaves; :func:`expand` broadcasts one back against a leaf.
* **Complex leaves are points of** ``C^d = R^{2d}``: the inner product is the
  real one, ``<a, b> = Re Σ conj(a)·b``, so ``||x||² = Σ |x|²`` and the sphere,
  tangent spaces, retraction, exponential map and transports are those of
  ``R^{2d}``. Element-wise second moments anywhere in spherax use ``|g|²``
  (``re² + im²``), never ``g·g``.
* Element-wise results are in the promoted compute dtype (:func:`compute_dtype`:
  float32 or wider, complex for complex inputs); transforms cast to the leaf
  dtype at their end.
* Every division is guarded: a zero-norm group gives zeros (or leaves the input
  unchanged), never NaN or inf.
* **Range.** :func:`dot`, :func:`dots` and :func:`norm` are plain one-pass sums.
  With ``safe=True``, when a group's plain result is not finite, the leaf is
  recomputed (under one ``lax.cond``, so the second pass runs only then) with
  each group scaled by a power of two near its largest ``|entry|`` (exact
  scaling): a float32 group's norm is then right up to float32's maximum
  (``~3e38``), and a dot product whose products overflow but whose value does
  not comes out right. ``safe`` is off by default because XLA compiles every
  conditional separately: one per statistic per leaf made an optimizer step on
  60 conv leaves compile 5× slower (17 s → 89 s, adamsrt, CPU). The optimizers
  instead order their algebra so an overflowed statistic gives a zero step (as
  ``optax.adam`` does when its second moment overflows), never NaN.
  :func:`sqnorm` needs no fallback: a sum of non-negative terms overflows only
  when its value does. Groups whose squared norm is below the dtype's smallest
  normal number (``||x|| < ~1e-19`` in float32) are treated as zero groups.
  Non-finite inputs give non-finite statistics, as a plain sum would.

Example:

>>> import jax.numpy as jnp
>>> from spherax import geometry, groups
>>> x = jnp.array([[3., 0.], [4., 2.]])          # two groups: the columns
>>> layout = groups.per_output().layout(x.shape)
>>> geometry.norm(x, layout).tolist()
[[5.0, 2.0]]
>>> v = jnp.ones_like(x)
>>> geometry.dot(geometry.tangent(v, x, layout), x, layout).tolist()
[[0.0, 0.0]]
>>> z = jnp.array([[1j], [1.]])                   # complex: ||z||² = |1j|² + 1
>>> geometry.sqnorm(z, groups.per_output().layout(z.shape)).tolist()
[[2.0]]
>>> big = jnp.full((4, 1), 1e20)                 # ||big||² overflows float32
>>> float(geometry.norm(big, groups.per_output().layout(big.shape), safe=True)[0, 0])
2e+20
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from spherax import _column_dots
from spherax.groups import GroupLayout

__all__ = [
    "compute_dtype",
    "stat_dtype",
    "view",
    "expand",
    "group_sum",
    "zeros_stat",
    "re_conj_mul",
    "abs_sq",
    "dot",
    "dots",
    "sums_and_dots",
    "Combination",
    "sqnorm",
    "norm",
    "mean",
    "safe_div",
    "safe_div_sqrt",
    "radial",
    "tangent",
    "retract",
    "exp_map",
    "transport_reference",
    "transport_parallel",
    "center",
    "shifted_dot",
    "centered_dot",
    "sinc",
    "cosine",
    "sum_norm",
    "transport_along",
]


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
  """float32, or wider when an input is (float64 under ``jax_enable_x64``, complex)."""
  return jnp.result_type(jnp.float32, *(a.dtype for a in arrays))


def stat_dtype(*arrays: jax.Array) -> jnp.dtype:
  """The real dtype of per-group statistics: float32, float64 for float64/complex128."""
  return jnp.finfo(compute_dtype(*arrays)).dtype


def view(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``x`` reshaped to the layout's view (a no-op unless channels are split)."""
  return x.reshape(layout.view_shape) if layout.is_split else x


def expand(stat: jax.Array, layout: GroupLayout) -> jax.Array:
  """Broadcasts a per-group statistic so it combines element-wise with a leaf."""
  if not layout.is_split:
    return stat
  full = jnp.broadcast_to(stat, layout.view_shape)
  return full.reshape(layout.shape)


def _reduce(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``Σ_group`` of an array already in view shape."""
  return jnp.sum(x, axis=layout.reduce_axes, keepdims=True)


def group_sum(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``Σ_group x``, one value per group (``stat_shape``), in the compute dtype."""
  x = x.astype(compute_dtype(x))
  return _reduce(view(x, layout), layout)


def zeros_stat(x: jax.Array, layout: GroupLayout | None) -> jax.Array:
  """Zeros for a statistic of ``x``, in the statistic dtype (:func:`stat_dtype`).

  Per group (``layout.stat_shape``) when ``layout`` is given, else element-wise
  (``x.shape``). Either way the zeros are placed as the statistic computed from
  ``x`` is: element-wise like ``x``; per group like :func:`group_sum` of ``x``
  (under a mesh, replicated over the reduced axes that ``x`` shards and sharded
  like ``x`` along the kept ones), so an optimizer's state has at ``init`` the
  sharding that ``update`` gives it.

  >>> import jax.numpy as jnp
  >>> from spherax import groups
  >>> x = jnp.ones((3, 2), jnp.bfloat16)
  >>> layout = groups.GroupLayout(path='w', shape=(3, 2), view_shape=(3, 2), reduce_axes=(0,))
  >>> s = zeros_stat(x, layout)
  >>> s.shape, s.dtype, zeros_stat(x, None).shape
  ((1, 2), dtype('float32'), (3, 2))
  """
  dtype = stat_dtype(x)
  if layout is None:
    return jnp.zeros_like(x, dtype)
  return jnp.zeros_like(jax.eval_shape(lambda x: group_sum(x, layout), x), dtype)


def re_conj_mul(a: jax.Array, b: jax.Array) -> jax.Array:
  """``Re(conj(a)·b)`` element-wise (``a·b`` for real arrays): the real inner
  product of ``C = R²``, the term of every spherax dot product.

  >>> import jax.numpy as jnp
  >>> re_conj_mul(jnp.array([1 + 2j]), jnp.array([3 - 1j])).tolist()
  [1.0]
  """
  if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
    return jnp.real(a) * jnp.real(b) + jnp.imag(a) * jnp.imag(b)
  return a * b


def abs_sq(x: jax.Array) -> jax.Array:
  """``|x|²`` element-wise, real (``re² + im²`` for complex ``x``), in the compute dtype.

  The element-wise second moment of every spherax optimizer (``g·g`` would be
  wrong for complex ``g``).
  """
  x = x.astype(compute_dtype(x))
  return re_conj_mul(x, x)


def _pow2_scale(x: jax.Array, layout: GroupLayout) -> tuple[jax.Array, jax.Array]:
  """Per group ``(s, 1/s)`` with ``s = 2^-e`` and ``max|x·s|`` in ``[1/2, 1)``.

  Powers of two scale exactly. ``e`` is clipped to ``[-125, 125]`` so that both
  factors are normal numbers; zero and non-finite groups get ``s = 1``.
  """
  peak = jnp.max(jnp.abs(x), axis=layout.reduce_axes, keepdims=True, initial=0)
  _, e = jnp.frexp(jax.lax.stop_gradient(peak))
  e = jnp.clip(e, -125, 125)
  one = jnp.ones((), peak.dtype)
  return jnp.ldexp(one, -e), jnp.ldexp(one, e)


def _plain_dots(pairs, layout: GroupLayout, dtype) -> tuple[jax.Array, ...]:
  """One reduction per pair (``(a, None)``: ``Σ_group a``), in ``dtype``."""
  cast = lambda a: None if a is None else view(a.astype(dtype), layout)
  pairs = [(cast(a), cast(b)) for a, b in pairs]
  return tuple(_reduce(a if b is None else re_conj_mul(a, b), layout) for a, b in pairs)


def _several_gpus() -> bool:
  """Whether this process has more than one GPU (none, when it has no GPU backend:
  compiling for a GPU target without one, the program is for one device)."""
  try:
    return jax.device_count("gpu") > 1
  except RuntimeError:
    return False


def _sharded_type(a: jax.Array) -> bool:
  """Whether ``a``'s type names mesh axes (explicit sharding), which the kernel's
  refs cannot be sliced along."""
  spec = getattr(getattr(jax.typeof(a), "sharding", None), "spec", None)
  return spec is not None and any(axis is not None for axis in spec)


class Combination(NamedTuple):
  """An array of the step, ``value = Σ_k c_k a_k``, with its terms ``(c_k, a_k)``.

  The ``a_k`` are arrays in memory (a rule's inputs) and the ``c_k`` scalars
  (Python numbers or 0-d arrays). :func:`dots` and :func:`sums_and_dots` with
  ``one_pass`` take a combination wherever they take an array: the plain
  reductions are of ``value``; the CUDA kernel reduces the terms' pairwise dot
  products instead (``<Σ c_k a_k, Σ d_l b_l> = Σ c_k d_l <a_k, b_l>``; a pair of
  one combination with itself is a squared norm, clamped at 0, which rounding can
  cross where the terms cancel), so the step's arrays are read once and ``value``
  is not written out for the kernel.
  ``value`` must be the combination, as the caller computes it; only the
  derivative of ``value`` is used.

  >>> import jax.numpy as jnp
  >>> from spherax import groups
  >>> g, x = jnp.array([[1.], [2.]]), jnp.array([[2.], [0.]])
  >>> coupled = Combination(g + 0.5 * x, ((1, g), (0.5, x)))     # g + λx
  >>> dots([(coupled, coupled)], groups.per_output().layout(g.shape), one_pass=True)[0].tolist()
  [[8.0]]
  """

  value: jax.Array
  terms: tuple


def _terms(a):
  return a.terms if isinstance(a, Combination) else ((1, a),)


def _value(a):
  return a.value if isinstance(a, Combination) else a


def _plain_dots_of_values(pairs, layout: GroupLayout, dtype) -> tuple[jax.Array, ...]:
  """:func:`_plain_dots` of the operands' values (``(a, None)``: a sum)."""
  return _plain_dots([(_value(a), None if b is None else _value(b)) for a, b in pairs],
                     layout, dtype)


def _gram_key(i, j):
  """The kernel's pair for the dot product of arrays ``i`` and ``j`` (real: symmetric;
  ``j`` None: the sum of ``i``)."""
  return (i, j) if j is None or i <= j else (j, i)


def _one_pass_dots(pairs, layout: GroupLayout, dtype) -> tuple[jax.Array, ...]:
  """:func:`_plain_dots` of the operands' values, or on CUDA devices one kernel
  for the dot products of every array the operands are combined from
  (:mod:`spherax._column_dots`, :class:`Combination`) where the groups are the
  columns of a real leaf's ``(K, C)`` view, the kernel has a tiling for it, and
  the process has at most one GPU and the arrays' types no mesh axes (the kernel
  has no partitioning rule: on a sharded operand XLA would gather it whole onto
  every device). Derivatives are the plain reductions' of the values
  (``d<a, b> = <da, b> + <a, db>``): the kernel itself is not differentiated."""
  values = [None if a is None else _value(a) for pair in pairs for a in pair]
  arrays, index = [], {None: None}
  for c, a in (t for pair in pairs for a in pair if a is not None for t in _terms(a)):
    index.setdefault(id(a), len(arrays))
    if len(arrays) == index[id(a)]:
      arrays.append(a)
  coefs = [c for pair in pairs for a in pair if a is not None for c, _ in _terms(a)
           if not isinstance(c, (int, float))]
  gram = {}  # (i, j) of two arrays (j None: a sum) -> its position among the kernel's pairs
  for u, v in pairs:
    for _, a in _terms(u):
      for _, b in ((None, None),) if v is None else _terms(v):
        gram.setdefault(_gram_key(index[id(a)], index[None if b is None else id(b)]),
                        len(gram))
  shape = layout.shape
  columns = (shape[-1],) if shape else ()
  matrix = (math.prod(shape[:-1]), shape[-1]) if shape else ()
  if (layout.is_split or layout.stat_shape[-1:] != columns
      or math.prod(columns) != layout.num_groups
      or jnp.issubdtype(dtype, jnp.complexfloating) or any(a.shape != shape for a in arrays)
      or _column_dots.tiling(matrix, len(gram), min(a.dtype.itemsize for a in arrays)) is None
      or _several_gpus()
      or any(_sharded_type(a) for a in arrays)):
    return _plain_dots_of_values(pairs, layout, dtype)
  value_pairs = list(zip(range(0, len(values), 2), range(1, len(values), 2)))

  def on_gpu(values, arrays, traced):
    del values
    sums = _column_dots.column_dots([a.reshape(matrix) for a in arrays], list(gram), dtype)
    sums = [sums[k].reshape(layout.stat_shape) for k in range(len(gram))]
    traced = iter(traced)
    coef = lambda c: c if isinstance(c, (int, float)) else next(traced).astype(dtype)
    resolved = [[(coef(c), a) for c, a in _terms(u)] for pair in pairs for u in pair
                if u is not None]
    out, k = [], 0
    for u, v in pairs:
      u_terms = resolved[k]
      v_terms = ((1, None),) if v is None else resolved[k + 1]
      k += 1 if v is None else 2
      total = 0
      for c, a in u_terms:
        for d, b in v_terms:
          term = sums[gram[_gram_key(index[id(a)], index[None if b is None else id(b)])]]
          scale = c * d
          total = total + (term if isinstance(scale, (int, float)) and scale == 1
                           else scale * term)
      if u is v and len(u_terms) > 1:
        total = jnp.maximum(total, 0)
      out.append(total)
    return tuple(out)

  def elsewhere(values, arrays, traced):
    del arrays, traced
    return _plain_dots([(values[i], values[j]) for i, j in value_pairs], layout, dtype)

  @jax.custom_jvp
  def one_pass(values, arrays, traced):
    return tuple(jax.lax.platform_dependent(values, arrays, traced, cuda=on_gpu,
                                            default=elsewhere))

  @one_pass.defjvp
  def one_pass_jvp(primals, tangents):
    values, dvalues = primals[0], tangents[0]
    terms = [[(dvalues[i], None)] if values[j] is None
             else [(dvalues[i], values[j]), (values[i], dvalues[j])] for i, j in value_pairs]
    flat = _plain_dots([t for pair in terms for t in pair], layout, dtype)
    out, k = [], 0
    for pair in terms:
      out.append(sum(flat[k:k + len(pair)]))
      k += len(pair)
    return one_pass(*primals), tuple(out)

  return one_pass(values, arrays, coefs)


def dots(
    pairs: Sequence[tuple[jax.Array | Combination, jax.Array | Combination]],
    layout: GroupLayout,
    *,
    safe: bool = False,
    one_pass: bool = False,
) -> tuple[jax.Array, ...]:
  """``<a, b> = Re Σ_group conj(a)·b`` for each ``(a, b)`` of one leaf's layout.

  One plain pass per pair. With ``safe``, only when one of the results is not
  finite is the leaf recomputed with every group scaled by a power of two (one
  ``lax.cond`` for all the pairs, see the module docstring); groups whose plain
  value was finite keep it bit for bit.

  ``one_pass`` is for operands that are arrays in memory (a rule's inputs, not
  values XLA would compute inside the reduction): on a CUDA device, for groups
  that are the columns of the leaf's ``(K, C)`` view (per-output groups), every
  pair is then summed by one kernel that reads each distinct operand once
  (:mod:`spherax._column_dots`; XLA's GPU compiler fuses at most two column
  reductions into one kernel and re-reads the operands for the others), in a
  process with one GPU. The values agree with the plain sums to rounding; on
  other backends and layouts, and with several GPUs, they are the plain sums.
  An operand computed in the step from such arrays with scalar coefficients is
  passed as a :class:`Combination` (reduced from its terms by the kernel, from
  its value elsewhere).
  """
  dtype = compute_dtype(*(_value(a) for pair in pairs for a in pair))
  plain = (_one_pass_dots if one_pass else _plain_dots_of_values)(pairs, layout, dtype)
  if not safe:
    return plain
  pairs = [(view(_value(a).astype(dtype), layout), view(_value(b).astype(dtype), layout))
           for a, b in pairs]

  def rescaled():
    scales = {}  # one (s, 1/s) per distinct array: dot(x, x) scales x once
    def scale(a):
      if id(a) not in scales:
        scales[id(a)] = _pow2_scale(a, layout)
      return scales[id(a)]
    out = []
    for (a, b), value in zip(pairs, plain):
      (sa, ia), (sb, ib) = scale(a), scale(b)
      safe = _reduce(re_conj_mul(a * sa, b * sb), layout) * ia * ib
      out.append(jnp.where(jnp.isfinite(value), value, safe))
    return tuple(out)

  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in plain]))
  return jax.lax.cond(finite, lambda: plain, rescaled)


def sums_and_dots(
    sums: Sequence[jax.Array | Combination],
    pairs: Sequence[tuple[jax.Array | Combination, jax.Array | Combination]],
    layout: GroupLayout,
    *,
    one_pass: bool = False,
) -> tuple[jax.Array, ...]:
  """``Σ_group a`` for each ``a`` of ``sums``, then :func:`dots` of ``pairs``, in the
  compute dtype of all the operands (the sums complex for complex operands, the
  dot products real): with ``one_pass``, one kernel for all of them on a CUDA
  device, as :func:`dots` (an operand may be a :class:`Combination`).

  >>> import jax.numpy as jnp
  >>> from spherax import groups
  >>> x = jnp.array([[3., 0.], [4., 2.]])
  >>> [v.tolist() for v in sums_and_dots([x], [(x, x)], groups.per_output().layout(x.shape))]
  [[[7.0, 2.0]], [[25.0, 4.0]]]
  """
  pairs = [(a, None) for a in sums] + list(pairs)
  dtype = compute_dtype(*(_value(a) for pair in pairs for a in pair if a is not None))
  return (_one_pass_dots if one_pass else _plain_dots_of_values)(pairs, layout, dtype)


def dot(a: jax.Array, b: jax.Array, layout: GroupLayout, *, safe: bool = False) -> jax.Array:
  """``<a, b> = Re Σ_group conj(a)·b`` per group (real; ``safe``: see :func:`dots`)."""
  return dots([(a, b)], layout, safe=safe)[0]


def sqnorm(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``||x||² = Σ_group |x|²`` per group: one plain pass (it overflows only when its value does)."""
  x = view(x.astype(compute_dtype(x)), layout)
  return _reduce(re_conj_mul(x, x), layout)


def norm(x: jax.Array, layout: GroupLayout, *, safe: bool = False) -> jax.Array:
  """``||x||`` per group; with ``safe``, right up to the dtype's maximum (module docstring)."""
  x = view(x.astype(compute_dtype(x)), layout)
  plain = _reduce(re_conj_mul(x, x), layout)
  if not safe:
    return jnp.sqrt(plain)

  def rescaled():
    s, inv = _pow2_scale(x, layout)
    xs = x * s
    safe = jnp.sqrt(_reduce(re_conj_mul(xs, xs), layout)) * inv
    return jnp.where(jnp.isfinite(plain), jnp.sqrt(plain), safe)

  return jax.lax.cond(jnp.all(jnp.isfinite(plain)), lambda: jnp.sqrt(plain), rescaled)


def mean(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``Σ_group x / d`` per group."""
  return group_sum(x, layout) / layout.group_size


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den`` where ``den != 0``, else 0 (no NaN, and NaN-free gradients)."""
  nonzero = den != 0
  return jnp.where(nonzero, num / jnp.where(nonzero, den, 1), 0)


def safe_div_sqrt(num: jax.Array, sq: jax.Array) -> jax.Array:
  """``num / sqrt(sq)`` where ``sq != 0``, else 0: ``safe_div(num, sqrt(sq))``.

  For ``sq >= 0`` (a squared norm, a second moment) ``sqrt(sq) != 0`` exactly
  when ``sq != 0``, so the guard reads ``sq``: the square root then has one use,
  and XLA computes guard, root and quotient in one kernel (``safe_div`` of a
  root is two: an expensive operation with two uses is not duplicated into its
  consumers). A negative or NaN ``sq`` gives NaN, as ``safe_div(num, sqrt(sq))``.
  Op by op the two are equal bit for bit; under ``jit`` XLA may compute
  ``1/sqrt`` as one ``rsqrt`` (a float32 rounding difference, ~1e-7 relative).

  >>> import jax.numpy as jnp
  >>> safe_div_sqrt(jnp.array([3.0, 1.0]), jnp.array([4.0, 0.0])).tolist()
  [1.5, 0.0]
  """
  nonzero = sq != 0
  return jnp.where(nonzero, num / jnp.sqrt(jnp.where(nonzero, sq, 1)), 0)


def radial(v: jax.Array, x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``<v, u> u``: the component of ``v`` along ``x`` (0 where ``x = 0``)."""
  inv_r = safe_div_sqrt(jnp.ones((), stat_dtype(v, x)), sqnorm(x, layout))
  coef = dot(v, x, layout) * inv_r * inv_r
  return expand(coef, layout) * x.astype(compute_dtype(v, x))


def tangent(v: jax.Array, x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``v⊥ = v − <v, u> u``: the projection of ``v`` on the tangent space at ``x``.

  Idempotent, and ``<v⊥, x> = 0``. Where ``x = 0`` it returns ``v``.
  """
  return v.astype(compute_dtype(v, x)) - radial(v, x, layout)


def retract(x: jax.Array, target_norm: jax.Array | float, layout: GroupLayout) -> jax.Array:
  """``x · target / ||x||``: ``x`` moved radially onto the sphere of radius ``target``.

  ``target_norm`` is a scalar or a statistic. A zero group stays zero.
  """
  scale = safe_div_sqrt(jnp.asarray(target_norm, stat_dtype(x)), sqnorm(x, layout))
  return expand(scale, layout) * x.astype(compute_dtype(x))


def exp_map(
    y: jax.Array, delta: jax.Array, layout: GroupLayout, *, delta_norm: jax.Array | None = None
) -> jax.Array:
  """The exponential map of the sphere: ``y cos||Δ|| + Δ/||Δ|| sin||Δ||``.

  ``y`` is on the unit sphere and ``Δ`` tangent at ``y`` (Cho & Lee, *Riemannian
  approach to batch normalization*, NeurIPS 2017, the AdamG/SGDG update);
  ``Δ = 0`` gives ``y``. ``delta_norm``: ``||Δ||`` per group when the caller
  knows it in closed form (else it is reduced from ``Δ``).
  """
  dtype = compute_dtype(y, delta)
  size = norm(delta, layout) if delta_norm is None else delta_norm
  sinc = safe_div(jnp.sin(size), size) + (size == 0)
  return (
      expand(jnp.cos(size), layout) * y.astype(dtype)
      + expand(sinc, layout) * delta.astype(dtype)
  )


def transport_reference(
    m: jax.Array,
    x: jax.Array,
    x_new: jax.Array,
    layout: GroupLayout,
    *,
    rescale: bool = True,
    eps: float = 0.0,
) -> jax.Array:
  """The reference first-order transport of a moment from ``x`` to ``x_new``.

  With ``rescale`` (AdamSRT: Roburin et al., *A spherical analysis of Adam with
  Batch Normalization*, ICLR 2021 submission, §4, as in the authors' code):
  ``Γ(m) = (<x, x'> m − <m, x'> x) / (||x'||² + eps)
  = (r / r') [<u, u'> m − <m, u'> u]``; without it ``<u, u'> m − <m, u'> u``.
  It maps tangent vectors at ``u`` to tangent vectors at ``u'``, rotates the
  in-plane part, scales the out-of-plane part by ``cos θ`` and removes the
  radial part of ``m``. Zero-norm groups give zeros.
  """
  dtype = compute_dtype(m, x, x_new)
  m, x, x_new = (a.astype(dtype) for a in (m, x, x_new))
  x_dot_new, m_dot_new = dots([(x, x_new), (m, x_new)], layout)
  if rescale:
    den = sqnorm(x_new, layout) + eps
  else:
    den = norm(x, layout) * norm(x_new, layout)
  a = safe_div(x_dot_new, den)
  b = safe_div(m_dot_new, den)
  return expand(a, layout) * m - expand(b, layout) * x


def transport_parallel(
    m: jax.Array, x: jax.Array, x_new: jax.Array, layout: GroupLayout
) -> jax.Array:
  """Exact parallel transport of a tangent ``m`` along the great circle ``u → u'``.

  ``Γ(m) = m − <m, u'> / (1 + <u, u'>) · (u + u')``. It preserves norms and
  maps tangent vectors at ``u`` to tangent vectors at ``u'``; for antipodal
  points (``<u, u'> = −1``, undefined) and zero groups ``m`` is returned.
  """
  dtype = compute_dtype(m, x, x_new)
  m, x, x_new = (a.astype(dtype) for a in (m, x, x_new))
  one = jnp.ones((), stat_dtype(m, x, x_new))
  inv_r = safe_div_sqrt(one, sqnorm(x, layout))
  inv_r_new = safe_div_sqrt(one, sqnorm(x_new, layout))
  u = expand(inv_r, layout) * x
  u_new = expand(inv_r_new, layout) * x_new
  cos = dot(u, u_new, layout)
  coef = safe_div(dot(m, u_new, layout), 1 + cos)
  return m - expand(coef, layout) * (u + u_new)


def center(x: jax.Array, layout: GroupLayout) -> jax.Array:
  """``x − mean_group(x)``: removes each group's mean (Kosson, Messmer, Jaggi,
  *Rotational Equilibrium*, ICML 2024, arXiv:2305.17212, Algorithm 1's centring)."""
  dtype = compute_dtype(x)
  return x.astype(dtype) - expand(mean(x, layout), layout)


def shifted_dot(
    ab: jax.Array,
    sum_a: jax.Array,
    sum_b: jax.Array,
    shift_a: jax.Array | float,
    shift_b: jax.Array | float,
    size: int,
) -> jax.Array:
  """``<a − α, b − β>`` per group from pre-shift statistics, without a second pass.

  ``<a − α, b − β> = <a, b> − β Σa − α Σb + d α β`` for per-group constants
  ``α``, ``β`` and group size ``d``, given ``ab = <a, b>``, ``sum_a = Σa``,
  ``sum_b = Σb`` (real arrays). With ``α = Σa / d``, ``β = Σb / d`` it is the
  inner product of the centred arrays (:func:`center`), ``<a, b> − Σa Σb / d``;
  with ``α = β = 0`` it is ``<a, b>``.

  >>> import jax.numpy as jnp
  >>> from spherax import groups
  >>> a, b = jnp.array([[1.], [2.], [6.]]), jnp.array([[0.], [3.], [3.]])
  >>> layout = groups.per_output().layout(a.shape)
  >>> stats = dot(a, b, layout), group_sum(a, layout), group_sum(b, layout)
  >>> float(shifted_dot(*stats, stats[1] / 3, stats[2] / 3, 3)[0, 0])
  6.0
  >>> float(dot(center(a, layout), center(b, layout), layout)[0, 0])
  6.0
  """
  return ab - shift_b * sum_a - shift_a * sum_b + size * shift_a * shift_b


# Closed forms for post-step statistics (AdamG, SGDG, AdaGradG): what a step needs
# from its new point, computed from the pre-step dot products of one pass.
def sinc(t: jax.Array) -> jax.Array:
  """``sin t / t`` (unnormalised), 1 at ``t = 0``: bounded coefficients for rotations by ``t``.

  >>> import jax.numpy as jnp
  >>> [round(v, 6) for v in sinc(jnp.array([0.0, jnp.pi / 2])).tolist()]
  [1.0, 0.63662]
  """
  return safe_div(jnp.sin(t), t) + (t == 0)


def cosine(a_dot_b: jax.Array, a_norm: jax.Array, b_norm: jax.Array) -> jax.Array:
  """``cos∠(a, b) = <a, b> / (||a|| ||b||)`` per group, clipped to ``[-1, 1]``.

  From the statistics, divided one norm at a time (no overflow of ``||a|| ||b||``);
  0 where a norm is 0 or infinite.

  >>> import jax.numpy as jnp
  >>> cosine(jnp.array([3.0, 1.0]), jnp.array([2.0, 0.0]), jnp.array([3.0, 1.0])).tolist()
  [0.5, 0.0]
  """
  one = jnp.ones((), jnp.result_type(a_dot_b, a_norm, b_norm))
  return jnp.clip(a_dot_b * safe_div(one, a_norm) * safe_div(one, b_norm), -1, 1)


def sum_norm(a_norm: jax.Array, b_norm: jax.Array, cos: jax.Array) -> jax.Array:
  """``||a + b|| = sqrt(||a||² + 2 cos ||a|| ||b|| + ||b||²)`` per group, ``cos = cos∠(a, b)``.

  The law of cosines, evaluated scaled by ``max(||a||, ||b||)``: right wherever
  the result is finite, even when a squared norm is past the dtype's range; not
  finite when an input norm is not. E.g. AdaGradG's ``||x − k g||`` without a
  pass over ``x − k g`` (:func:`cosine` gives ``cos``).

  >>> import jax.numpy as jnp
  >>> n = sum_norm(jnp.array(3e30), jnp.array(4e30), jnp.array(0.0))  # its square overflows
  >>> round(float(n) / 1e30, 5)
  5.0
  """
  big = jnp.maximum(a_norm, b_norm)
  p, q = safe_div(a_norm, big), safe_div(b_norm, big)
  return big * jnp.sqrt(jnp.maximum(p * p + 2 * cos * p * q + q * q, 0))


def transport_along(
    m: jax.Array,
    y: jax.Array,
    delta: jax.Array,
    layout: GroupLayout,
    *,
    delta_norm: jax.Array | None = None,
    delta_dot_m: jax.Array | None = None,
) -> jax.Array:
  """Parallel transport of a tangent ``m`` at ``y`` along the great circle ``t ↦ exp_y(tΔ)``.

  Cho & Lee, *Riemannian approach to batch normalization*, NeurIPS 2017
  (Algorithms 1–2): ``Γ(m) = m − <ŵ, m>(sin θ y + (1 − cos θ) ŵ)`` with
  ``θ = ||Δ||``, ``ŵ = Δ/θ``, written with bounded coefficients as
  ``m − <Δ, m>(sinc θ · y + ½ sinc²(θ/2) · Δ)``: right for every ``θ``, also
  at and near ``θ = π`` where :func:`transport_parallel`, which knows only the
  endpoints, is undefined (elsewhere the two agree), and ``m`` itself for
  ``Δ = 0``. It is the tangent map at ``exp_y(Δ)`` (:func:`exp_map`) and
  preserves norms. ``delta_norm`` (``||Δ||``) and ``delta_dot_m`` (``<Δ, m>``):
  the statistics, when the caller knows them in closed form (else they are
  reduced from ``Δ`` and ``m``).

  >>> import jax.numpy as jnp
  >>> from spherax import groups
  >>> y, delta = jnp.array([[1.0], [0.0]]), jnp.array([[0.0], [jnp.pi / 2]])
  >>> layout = groups.per_output().layout(y.shape)
  >>> jnp.round(transport_along(delta, y, delta, layout), 5).ravel().tolist()  # ŵ turns to −y
  [-1.5708, 0.0]
  """
  dtype = compute_dtype(m, y, delta)
  m, y, delta = (a.astype(dtype) for a in (m, y, delta))
  theta = norm(delta, layout) if delta_norm is None else delta_norm
  dm = dot(delta, m, layout) if delta_dot_m is None else delta_dot_m
  half = sinc(theta / 2)
  return m - expand(dm * sinc(theta), layout) * y - expand(dm * half * half / 2, layout) * delta


def centered_dot(ab: jax.Array, sum_a: jax.Array, mean_b: jax.Array | float) -> jax.Array:
  """``<a − mean(a), b − mean(b)>`` per group from ``ab = <a, b>``, ``sum_a = Σa`` and
  ``mean_b = Σb / d``, without a second pass.

  ``<a − ā, b − b̄> = <a, b> − Σa b̄`` (the cross terms ``ā Σb`` and ``d ā b̄`` cancel;
  :func:`shifted_dot` with the means as shifts, in fewer operations). ``mean_b = 0``
  gives ``<a, b>``. Used by the Rotational Wrapper of Kosson, Messmer, Jaggi,
  *Rotational Equilibrium*, ICML 2024, arXiv:2305.17212 (Algorithm 1), whose
  centred statistics come from one reduction pass.

  >>> import jax.numpy as jnp
  >>> from spherax import groups
  >>> a, b = jnp.array([[1.], [2.], [6.]]), jnp.array([[0.], [3.], [3.]])
  >>> layout = groups.per_output().layout(a.shape)
  >>> float(centered_dot(dot(a, b, layout), group_sum(a, layout), mean(b, layout))[0, 0])
  6.0
  >>> float(dot(center(a, layout), center(b, layout), layout)[0, 0])
  6.0
  """
  return ab - sum_a * mean_b
