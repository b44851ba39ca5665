"""Trace + compile time of one ``track_dynamics`` step against the leaf count.

Not a test (no test may depend on wall time): a measurement script for issue 13
point 2 (the tracker's compile time grew roughly quadratically in the number of
leaves). Run from the repository root::

  python tests/diagnostics/tracker_compile_time.py 100 250

It builds ``n`` conv kernels ``(3, 3, 4, 8)`` (grouped per output filter),
wraps ``optax.sgd(0.1, momentum=0.9)`` in ``track_dynamics`` (``every=1`` and
``every=10``) and prints the seconds ``jax.jit(update).lower(...).compile()``
takes for each, wall clock and this process's CPU time (less sensitive to
other load on the machine than the wall clock).

Measured on 2 shared cores at load 22–32 (CPU seconds; wall in parentheses),
before and after dropping the tracker's ``exact_zero`` (one sum over every
leaf's summary that every update depended on):

==========  =================  ==============
leaves      before             after
==========  =================  ==============
100, k=1    34.0 (245)         3.1 (10.8)
100, k=10   4.4 (20.4)         3.4 (23.1)
250, k=1    353.2 (2044)       6.5 (22.6)
250, k=10   17.4 (62.6)        8.0 (29.6)
==========  =================  ==============
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import optax

from spherax import diagnostics


def compile_seconds(num_leaves: int, every: int) -> tuple[float, float]:
  """``(wall, cpu)`` seconds of tracing, lowering and compiling one update."""
  params = {f"conv{i}": jnp.ones((3, 3, 4, 8)) for i in range(num_leaves)}
  tx = diagnostics.track_dynamics(optax.sgd(0.1, momentum=0.9), every=every)
  state = tx.init(params)
  wall, cpu = time.perf_counter(), time.process_time()
  jax.jit(tx.update).lower(params, state, params).compile()
  return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str]) -> None:
  for n in [int(a) for a in argv] or [100, 250]:
    for every in (1, 10):
      wall, cpu = compile_seconds(n, every)
      print(f"leaves={n} every={every}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
