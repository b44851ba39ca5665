"""Several per-column dot products in one pass on a GPU: a Pallas (Triton) kernel.

A leaf of shape ``(..., C)`` grouped per output (its groups are the columns of
its ``(K, C)`` view) needs per-group statistics ``<a, b> = Σ_k a_kc b_kc`` of a
few of the rule's arrays (AdamG: ``||x||², <g, x>, ||g||², <m, g>, ||m||²``).
XLA's GPU compiler fuses at most two such column reductions into one kernel, so
``P`` statistics re-read their operands ``⌈P/2⌉`` times. This kernel reads every
distinct operand once and sums every pair: program ``(c, s)`` of a
``(C/bc, S)`` grid loads ``bk × bc`` tiles of rows ``[s K/S, (s+1) K/S)`` and
columns ``[c bc, (c+1) bc)`` of each operand and accumulates the ``P``
products over its rows; the ``S`` partial sums per column (``S·P·C`` values,
under 1% of one operand: :func:`tiling`) are added by XLA. Summation order
differs from XLA's reduction, so results agree to rounding, not bit for bit.

:func:`spherax.geometry.dots` with ``one_pass=True`` chooses it on CUDA
devices (``jax.lax.platform_dependent``) where :func:`tiling` finds tiles and the
process has one GPU, and the plain reductions elsewhere (the kernel has no SPMD
partitioning rule yet: XLA would gather a sharded operand whole onto every
device); ``interpret=True`` runs the kernel on any backend (how the tests check it
against NumPy).

Example (interpreted, on the CPU):

>>> import jax.numpy as jnp
>>> x, g = jnp.ones((64, 32)), jnp.full((64, 32), 2.0)
>>> sums = column_dots([x, g], [(0, 0), (1, 0)], jnp.float32, interpret=True)
>>> sums.shape, sums[:, 0].tolist()
((2, 32), [64.0, 128.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

__all__ = ["tiling", "column_dots"]

_MAX_BLOCK_C = 32  # columns per program: 128-byte rows of float32
_MIN_ROW_BYTES = 32  # a DRAM sector: narrower tiles would fetch bytes they do not use
_MIN_BLOCK_C = 8
_MAX_BLOCK_K = 32  # rows per tile of the loop
_MIN_BLOCK_K = 8
_MAX_PROGRAMS = 512  # enough to fill a GPU's multiprocessors several times over


def _pow2_divisor(n: int, cap: int) -> int:
  """The largest power of two that divides ``n`` and is at most ``cap``."""
  block = 1
  while block * 2 <= cap and n % (block * 2) == 0:
    block *= 2
  return block


def tiling(shape: Sequence[int], num_pairs: int,
           itemsize: int = 4) -> tuple[int, int, int] | None:
  """``(block_c, block_k, splits)`` for a ``(K, C)`` operand shape, ``num_pairs``
  pairs and operands of ``itemsize`` bytes (the narrowest), or ``None`` where the
  kernel does not apply: tiles are powers of two that divide ``K`` and ``C``
  (``K`` a multiple of 8, ``C`` of 8 and of one 32-byte sector's elements), and
  the rows are split into up to ``512 / (C/block_c)`` programs per column block
  while the ``splits · num_pairs · C`` partial sums stay within 1/128 of one
  operand."""
  if len(shape) != 2 or num_pairs < 1:
    return None
  rows, cols = shape
  block_c, block_k = _pow2_divisor(cols, _MAX_BLOCK_C), _pow2_divisor(rows, _MAX_BLOCK_K)
  if (block_c < max(_MIN_BLOCK_C, _MIN_ROW_BYTES // itemsize)
      or block_k < _MIN_BLOCK_K):
    return None
  max_splits = max(1, min(_MAX_PROGRAMS * block_c // cols, rows // (128 * num_pairs)))
  return block_c, block_k, _pow2_divisor(rows // block_k, max_splits)


def column_dots(
    arrays: Sequence[jax.Array],
    pairs: Sequence[tuple[int, int]],
    dtype,
    *,
    interpret: bool = False,
) -> jax.Array:
  """``out[p, c] = Σ_k a_i[k, c] · a_j[k, c]`` for ``(i, j) = pairs[p]`` (``Σ_k a_i[k, c]``
  where ``j`` is ``None``), in ``dtype``.

  Args:
    arrays: real ``(K, C)`` operands of one shape (any float dtype; each tile is
      cast to ``dtype`` before its products).
    pairs: indices into ``arrays`` (the second may be ``None``).
    dtype: the accumulation and result dtype (float32 or float64).
    interpret: run the kernel in Pallas' interpreter (any backend).

  Returns:
    A ``(len(pairs), C)`` array.
  """
  rows, cols = arrays[0].shape
  num_pairs = len(pairs)
  blocks = tiling((rows, cols), num_pairs, min(a.dtype.itemsize for a in arrays))
  if blocks is None:
    raise ValueError(f"column_dots: no tiling for shape {(rows, cols)}")
  block_c, block_k, splits = blocks
  steps = rows // (block_k * splits)

  def kernel(*refs):
    operands, out = refs[:-1], refs[-1]

    def accumulate(t, sums):
      tiles_ = [r[pl.ds(t * block_k, block_k), :].astype(dtype) for r in operands]
      return tuple(s + jnp.sum(tiles_[i] if j is None else tiles_[i] * tiles_[j], axis=0)
                   for s, (i, j) in zip(sums, pairs))

    zero = jnp.zeros((block_c,), dtype)
    sums = jax.lax.fori_loop(0, steps, accumulate, (zero,) * num_pairs)
    for p in range(num_pairs):
      out[0, p, :] = sums[p]

  operand = pl.BlockSpec((rows // splits, block_c), lambda c, s: (s, c))
  partial = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((splits, num_pairs, cols), dtype),
      grid=(cols // block_c, splits),
      in_specs=[operand] * len(arrays),
      out_specs=pl.BlockSpec((1, num_pairs, block_c), lambda c, s: (s, 0, c)),
      interpret=interpret,
  )(*arrays)
  return partial.sum(0)
