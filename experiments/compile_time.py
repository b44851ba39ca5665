"""Trace and compile time of one optimizer step against the number of leaves.

Run ``python -m experiments.compile_time --leaves 500 2000`` (options:
``--only NAME ...``, ``--json PATH``, ``--timeout S``, ``--in-process``). For
``optax.adam`` (the reference) and every optimizer of
:data:`experiments.benchmark.OPTIMIZERS` (``track_dynamics`` around
``rv_adamw`` included) it builds a synthetic params tree of ``N`` leaves
(:func:`synthetic_shapes`: blocks of a 3×3 conv kernel, a norm scale and bias,
a 1×1 conv kernel and a dense kernel with its bias; small shapes, since
tracing and compiling time grows with the number of leaves, not with their
sizes) and measures, on abstract float32 arguments (``jax.ShapeDtypeStruct``),
the three stages of one donated jitted step ``(params, state, grads) ->
(params, state)``:

* ``trace``: ``jax.jit(step, donate_argnums=(0, 1)).trace(params, state, grads)``
  (Python tracing of the optimizer into a jaxpr);
* ``lower``: ``.lower()`` (jaxpr to StableHLO);
* ``compile``: ``.compile()`` (XLA for the default backend, CPU here).

Each measurement runs in a fresh process (jax's caches of traced functions,
lowerings and compiled kernels are per process; the persistent compilation
cache is switched off), after a warm-up compile of the same optimizer on a
two-leaf tree of other shapes (:data:`WARM_UP`) that takes the backend's start
and first-use costs out of the figure. The table gives, per leaf count and optimizer, the seconds of each
stage (wall clock), the process's CPU seconds for all three (all of its
threads; less sensitive than the wall clock to other load on the machine),
the number of operations in the lowered StableHLO module (``ops``,
deterministic: what the compiler is given; a function that several leaves call,
such as a rule traced once per leaf shape, counts once, and XLA inlines it at
every call), the
number of fusions in the compiled module (``fusions``, deterministic: the
kernels and buffers the backend generates, which its time tracks closely),
and the ratio of ``trace + lower + compile`` to ``optax.adam``'s in the same
run, in wall and in CPU seconds. ``optax.adam`` is measured first and again
last; its row is the mean of the two (both kept under ``runs`` in the JSON), so
that a load that changes during the run moves the reference too. Issue 13's bound is 2× ``optax.adam``. The
load average is printed per row: on a loaded machine compare the CPU ratios.

It replaces ``tests/diagnostics/tracker_compile_time.py``, which measured
``track_dynamics`` alone: before the tracker stopped making every update depend
on one sum of every leaf's summary, its trace + compile time grew
quadratically with the leaf count (``track_dynamics(optax.sgd)`` on 250 conv
kernels: 353 CPU seconds, 6.5 after).

Not a test (no test may depend on wall time); ``tests/experiments/
test_compile_time.py`` checks the tree and the table structure.

Uses only the public API of spherax.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import optax

from experiments import benchmark

BASELINE = "optax.adam"
BOUND = 2.0  # issue 13: within 2× optax.adam's trace + compile time

# One block of a small convolutional network: (name, shape) per leaf.
BLOCK = (
    ("conv/kernel", (3, 3, 8, 16)),
    ("norm/scale", (16,)),
    ("norm/bias", (16,)),
    ("proj/kernel", (1, 1, 16, 16)),
    ("dense/kernel", (16, 32)),
    ("dense/bias", (32,)),
)

# Shapes of the warm-up compile, none of them in BLOCK (no cached trace to reuse).
WARM_UP = {"kernel": (2, 3, 5), "bias": (5,)}


def factories() -> dict:
  """``optax.adam`` first, then the benchmark's optimizers (factories)."""
  return {BASELINE: lambda: optax.adam(1e-3),
          **{name: factory for name, (factory, _) in benchmark.OPTIMIZERS.items()}}


def synthetic_shapes(num_leaves: int) -> dict:
  """A nested dict of ``num_leaves`` shapes: :data:`BLOCK` repeated, the last
  block cut short.

  >>> tree = synthetic_shapes(8)
  >>> sorted(tree)
  ['block0', 'block1']
  >>> tree['block1']
  {'conv': {'kernel': (3, 3, 8, 16)}, 'norm': {'scale': (16,)}}
  """
  if num_leaves < 1:
    raise ValueError(f"num_leaves must be positive, got {num_leaves}")
  tree: dict = {}
  for i in range(num_leaves):
    path, shape = BLOCK[i % len(BLOCK)]
    module, leaf = path.split("/")
    tree.setdefault(f"block{i // len(BLOCK)}", {}).setdefault(module, {})[leaf] = shape
  return tree


def _abstract(shapes: dict) -> dict:
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def stage_seconds(opt, shapes: dict) -> dict[str, float]:
  """Wall seconds of tracing, lowering and compiling ``opt``'s donated step on
  float32 ``shapes``, the CPU seconds of the three (this process) and the
  :func:`stablehlo_ops` of the lowering."""
  params = _abstract(shapes)
  state = jax.eval_shape(opt.init, params)

  def step(p, s, g):
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s

  cpu = time.process_time()
  t0 = time.perf_counter()
  traced = jax.jit(step, donate_argnums=(0, 1)).trace(params, state, params)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  cpu = time.process_time() - cpu
  return {"trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": t3 - t2,
          "total_s": t3 - t0, "cpu_s": cpu, "ops": stablehlo_ops(lowered.as_text()),
          "fusions": fusions(compiled.as_text())}


def stablehlo_ops(text: str) -> int:
  """The operations of a lowered module's text (lines that assign a value):
  a deterministic measure of what the compiler is given.

  >>> stablehlo_ops("  %0 = stablehlo.add %a, %b : tensor<2xf32>\\n  return %0")
  1
  """
  return sum(" = " in line for line in text.splitlines())


def fusions(text: str) -> int:
  """The fusions (kernels) of a compiled module's optimized HLO text: what the
  backend generates code and buffers for, and the count its compile time grows
  with (deterministic; on XLA:CPU each per-group statistic with a division or a
  root and several uses, and each reduction, is one).

  >>> fusions("  %f = f32[2]{0} fusion(%a), kind=kLoop, calls=%c\\n  %g = f32[] add(%x, %y)")
  1
  """
  return text.count(" fusion(")


def measure_one(name: str, num_leaves: int) -> dict[str, float]:
  """:func:`stage_seconds` of optimizer ``name`` on :func:`synthetic_shapes`,
  after a warm-up on :data:`WARM_UP`; with the load average before and after."""
  jax.config.update("jax_enable_compilation_cache", False)
  factory = factories()[name]
  stage_seconds(factory(), WARM_UP)
  load = os.getloadavg()[0]
  out = stage_seconds(factory(), synthetic_shapes(num_leaves))
  return {**out, "load_before": load, "load_after": os.getloadavg()[0]}


def measure_fresh(name: str, num_leaves: int, timeout: float | None) -> dict:
  """:func:`measure_one` in a fresh Python process; ``{"timeout_s": t}`` if it
  ran past ``timeout`` seconds."""
  cmd = [sys.executable, "-m", "experiments.compile_time", "--child", name, str(num_leaves)]
  try:
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"timeout_s": timeout}
  except subprocess.CalledProcessError as e:
    raise RuntimeError(f"{name} at {num_leaves} leaves failed:\n{e.stderr[-4000:]}") from e
  return json.loads(done.stdout.strip().splitlines()[-1])


def mean_row(runs: list[dict[str, float]]) -> dict[str, float]:
  """Field by field mean of measurements (the load: first before, last after).

  >>> mean_row([{"total_s": 2.0, "load_before": 1.0, "load_after": 2.0},
  ...           {"total_s": 4.0, "load_before": 3.0, "load_after": 5.0}])
  {'total_s': 3.0, 'load_before': 1.0, 'load_after': 5.0}
  """
  out = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
  out["load_before"], out["load_after"] = runs[0]["load_before"], runs[-1]["load_after"]
  return out


def add_ratios(rows: dict[str, dict]) -> dict[str, dict]:
  """Adds ``ratio`` (wall), ``cpu_ratio``, ``ops_ratio`` and ``fusions_ratio``:
  ``total_s``, ``cpu_s``, ``ops`` and ``fusions`` over :data:`BASELINE`'s (a
  timed-out row gets none).

  >>> rows = {BASELINE: {"total_s": 2.0, "cpu_s": 1.0, "ops": 10, "fusions": 4},
  ...         "x": {"total_s": 3.0, "cpu_s": 2.5, "ops": 30, "fusions": 6}, "y": {"timeout_s": 9}}
  >>> add_ratios(rows)["x"]
  {'total_s': 3.0, 'cpu_s': 2.5, 'ops': 30, 'fusions': 6, 'ratio': 1.5, 'cpu_ratio': 2.5, 'ops_ratio': 3.0, 'fusions_ratio': 1.5}
  >>> add_ratios(rows)["y"]
  {'timeout_s': 9}
  """
  ref = rows[BASELINE]
  return {name: r if "timeout_s" in r else
          {**r, "ratio": r["total_s"] / ref["total_s"], "cpu_ratio": r["cpu_s"] / ref["cpu_s"],
           "ops_ratio": r["ops"] / ref["ops"], "fusions_ratio": r["fusions"] / ref["fusions"]}
          for name, r in rows.items()}


def print_table(results: dict[str, dict[str, dict]]) -> None:
  """One markdown table per leaf count."""
  for leaves, rows in results.items():
    print(f"\n### {leaves} leaves (CPU: {jax.default_backend()}); bound: "
          f"{BOUND:g}× {BASELINE}\n")
    print("| optimizer | trace s | lower s | compile s | total s | /adam | CPU s | CPU /adam "
          "| within | load | ops | ops /adam | fusions | fusions /adam |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
      if "timeout_s" in r:
        print(f"| {name} | | | | > {r['timeout_s']:g} | | | | NO | | | | | |")
        continue
      ok = "yes" if max(r["ratio"], r["cpu_ratio"]) <= BOUND else (
          "CPU only" if r["cpu_ratio"] <= BOUND else "NO")
      print(f"| {name} | {r['trace_s']:.1f} | {r['lower_s']:.1f} | {r['compile_s']:.1f} | "
            f"{r['total_s']:.1f} | {r['ratio']:.2f} | {r['cpu_s']:.1f} | "
            f"{r['cpu_ratio']:.2f} | {ok} | {r['load_before']:.1f}–{r['load_after']:.1f} | "
            f"{r['ops']:.0f} | {r['ops_ratio']:.2f} | {r['fusions']:.0f} | "
            f"{r['fusions_ratio']:.2f} |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--leaves", nargs="+", type=int, default=[500, 2000])
  parser.add_argument("--only", nargs="*", default=None,
                      help=f"optimizer names ({BASELINE} always runs)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  parser.add_argument("--timeout", type=float, default=None,
                      help="seconds after which one measurement is given up")
  parser.add_argument("--in-process", action="store_true",
                      help="measure in this process (caches may then favour later ones)")
  parser.add_argument("--child", nargs=2, metavar=("NAME", "LEAVES"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(measure_one(args.child[0], int(args.child[1]))))
    return

  names = list(factories())
  if args.only:
    unknown = set(args.only) - set(names)
    if unknown:
      parser.error(f"unknown optimizers {sorted(unknown)}; choose from {names}")
    names = [n for n in names if n == BASELINE or n in args.only]
  if any(n < 1 for n in args.leaves):
    parser.error("--leaves must be positive")

  results: dict[str, dict] = {}
  for leaves in args.leaves:
    rows, runs = {}, []
    for name in names + [BASELINE]:  # the reference first and last
      r = (measure_one(name, leaves) if args.in_process
           else measure_fresh(name, leaves, args.timeout))
      if name == BASELINE:
        if "timeout_s" in r:
          raise SystemExit(f"{BASELINE} ran past --timeout at {leaves} leaves")
        runs.append(r)
        r = {**mean_row(runs), "runs": runs}
      rows[name] = r
      print(f"  {leaves} leaves {name}: " + (
          f"> {r['timeout_s']:g} s" if "timeout_s" in r else
          f"trace {r['trace_s']:.1f} + lower {r['lower_s']:.1f} + compile "
          f"{r['compile_s']:.1f} s, CPU {r['cpu_s']:.1f} s"), file=sys.stderr, flush=True)
      results[str(leaves)] = add_ratios(rows)
      if args.json:  # after each measurement, so that a long run keeps what it measured
        with open(args.json, "w") as f:
          json.dump({"backend": jax.default_backend(), "jax": jax.__version__,
                     "results": results}, f, indent=1)
  print_table(results)


if __name__ == "__main__":
  main()
