"""Step time, state size and memory traffic of every spherax optimizer vs ``optax.adamw``.

Run ``python -m experiments.benchmark`` (options: ``--rounds``, ``--steps``,
``--only NAME ...``, ``--repeat N``, ``--json PATH``). On a ResNet-50-shaped
pytree (torchvision ResNet-50 in Flax layout, ≈25.6M parameters including
BatchNorm scales and biases) it compiles one donated jitted step
``(params, state, grads) -> (params, state)`` per optimizer and prints a
markdown table with, per optimizer:

* ``step/adamw``: the median step time divided by adamw's median, both
  measured in the same run; repetitions are interleaved (round-robin over the
  optimizers, ``--steps`` calls each per round) so that a noisy machine slows
  every optimizer alike. On a shared machine the ratios still differ between
  processes (adamw's own step varied by ±15% here); ``--repeat N`` runs the
  whole measurement in ``N`` fresh processes and reports the median ratio and
  its range;
* ``state/adamw``: the state's bytes divided by adamw's;
* ``compile s``: lowering + compilation time of the step;
* ``min R+W``: the minimal number of full-size array reads + writes that one
  step needs (analytic, :data:`MIN_PASSES`, also the floors of
  ``experiments.compiled_cost``), next to adamw's 7 (read ``g, m, v, x``, write
  ``m, v, x``). It assumes that all of a step's group reductions share one
  pass; XLA:CPU runs each reduction as its own pass and has no multi-output
  loop fusion, so on CPU the achievable count is higher (the TPU and GPU
  compilers' counts: ``python -m experiments.compiled_cost``);
* ``XLA bytes/P``: the ``bytes accessed`` of XLA's ``cost_analysis()`` of the
  compiled step divided by the param bytes (XLA's own count of the traffic; it
  counts both branches of a ``lax.cond``);
* the target step ratio of the issue and whether it is met (together with the
  state target, ``state/adamw ≤ 1.01``).

``optax.sgd`` with momentum is a second reference (5 passes). It also times
``spherax.diagnostics.track_dynamics`` around ``rv_adamw`` (ratio to the bare
``rv_adamw``): recording every step, every 10 steps under one ``lax.cond``
(``every=10``), and the non-recording program of the static ``record=``
(``update(..., record=False)``; a loop that logs every ``k`` steps runs it on
the other ``k − 1``, the every-step program on the logged one). Uses only the
public API.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import spherax


def _with_record(tx: optax.GradientTransformation, record: bool):
  """``tx`` (a :func:`spherax.diagnostics.track_dynamics`) whose ``update``
  always passes the static ``record=record``."""
  return optax.GradientTransformationExtraArgs(
      tx.init, lambda updates, state, params=None, **extra: tx.update(
          updates, state, params, record=record, **extra))


# name -> (factory, target ratio to adamw's step time or None).
OPTIMIZERS = {
    "adamw": (lambda: optax.adamw(1e-3, weight_decay=1e-2), None),
    "sgd": (lambda: optax.sgd(0.1, momentum=0.9), None),
    "adams": (lambda: spherax.adams(1e-3, l2_regularization=5e-4), 1.3),
    "adamsrt": (lambda: spherax.adamsrt(1e-3, l2_regularization=5e-4), 1.3),
    "adamsrt_parallel": (
        lambda: spherax.adamsrt(1e-3, l2_regularization=5e-4, transport="parallel"), 1.3),
    "sgdmrt": (lambda: spherax.sgdmrt(0.1, momentum=0.9, l2_regularization=1e-4), 1.3),
    "adamg": (lambda: spherax.adamg(1e-2, l2_regularization=5e-4), 1.3),
    "sgdg": (lambda: spherax.sgdg(0.1, momentum=0.9), None),
    "adagradg": (
        lambda: spherax.adagradg(0.7, decay=0.99996, initial_accumulator_value=1.0), None),
    "nero": (lambda: spherax.nero(1e-2), 1.3),
    "adamp": (lambda: spherax.adamp(1e-3, weight_decay=1e-2), 1.5),
    "sgdp": (lambda: spherax.sgdp(0.1, momentum=0.9, weight_decay=1e-4), 1.5),
    "rv_adamw": (lambda: spherax.rv_adamw(1e-3, weight_decay=1e-2), 1.5),
    "rv_sgdm": (lambda: spherax.rv_sgdm(0.1, momentum=0.9, weight_decay=1e-4), 1.5),
    "rv_lion": (lambda: spherax.rv_lion(1e-4, weight_decay=1.0), 1.5),
    "rv_adam_l2": (lambda: spherax.rv_adam_l2(1e-3, l2_regularization=1e-3), 1.5),
    "rotational(adam)": (
        lambda: spherax.rotational(optax.scale_by_adam(), 1e-3, 0.01, weight_decay=1e-2), 1.5),
    "rv_adamw+track_dynamics": (
        lambda: spherax.diagnostics.track_dynamics(spherax.rv_adamw(1e-3, weight_decay=1e-2)),
        None),
    "rv_adamw+track_dynamics(every=10)": (
        lambda: spherax.diagnostics.track_dynamics(
            spherax.rv_adamw(1e-3, weight_decay=1e-2), every=10),
        None),
    "rv_adamw+track_dynamics(record=False)": (
        lambda: _with_record(spherax.diagnostics.track_dynamics(
            spherax.rv_adamw(1e-3, weight_decay=1e-2)), False),
        None),
}

# Minimal full-size array reads + writes per step, shared by this benchmark and
# experiments.compiled_cost (which divides the compiled HBM bytes by them). A
# full-size array is one params-sized tensor; per-group statistics (a per-group
# second moment, a norm) are negligible. Where a formula needs a group
# reduction, one reduction pass precedes the element-wise update pass: every
# dot product that a later formula needs (post-step ones such as <x, x'>,
# ||x'||² included) is expanded in pre-step dot products, so one reduction pass
# suffices. The reduction pass may write every full-size output that needs no
# reduction (an in-pass moment write: Adam's m', v', a momentum buffer); the
# update pass then reads the new moment instead of g and the old moment.
# Statistics that nothing in the step consumes (the tracker's) are reduced in
# the pass that produces their operands. Each entry: (passes, derivation as
# "(reads + writes) + (reads + writes): ..." of the reduction pass and the
# update pass, or "(reads + writes): ..." of one pass, or "as <name>"); the stored
# state is what the optimizer stores today (e.g. AdamSRT's transported m).
MIN_PASSES = {
    # One element-wise pass, no reduction.
    "adamw": (7, "(4 + 3): one element-wise pass reads g, m, v, x, writes m, v, x"),
    "sgd": (5, "(3 + 2): one element-wise pass reads g, buf, x, writes buf, x"),
    "adams": (7, "(2 + 0) + (3 + 2): reduce Σ(g+λx)² over g, x (v per group); update reads "
              "g, m, x, writes m, x (writing m' in the reduction pass instead: (3 + 1) + "
              "(2 + 1), also 7)"),
    "adamsrt": (8, "(3 + 1) + (2 + 2): reduce over g, m, x (Σ(g+λx)², ||x||², <x,m'>, "
                "||m'||²; <x,x'>, <m',x'>, ||x'||² in closed form) writing m'; update reads "
                "m', x, writes the transported m and x (m' unwritten: (3 + 0) + (3 + 2))"),
    "adamsrt_parallel": (8, "as adamsrt: <m',u'> and <u,u'> follow from the same reductions"),
    "sgdmrt": (8, "(3 + 2) + (2 + 1): reduce over g, buf, x (||x||², <x,b'>, ||b'||²) writing "
               "b' = μ buf + g + λx and x' = x − ηb' (no reduction needed); update reads b', "
               "x', writes the transported buf (writing neither: (3 + 0) + (3 + 2))"),
    "adamg": (8, "(3 + 0) + (3 + 2): reduce over g, m, x (<x,g>, ||x||², ||g||², <m,g>, "
              "<m,x>, ||m||² give ||h||² and ||m'||²; v per group); m' needs <x,g>, so the "
              "update reads g, m, x and writes the transported m and x (exp map in closed "
              "form); writing β1 m + (1−β1) g in the reduction pass: (3 + 1) + (2 + 2), also 8"),
    "sgdg": (8, "as adamg with the momentum buffer"),
    "adagradg": (5, "(2 + 0) + (2 + 1): reduce over g, x (||g||², <x,g>, ||x||²; accumulator "
                 "per group); update reads g, x, writes x"),
    "nero": (5, "(2 + 0) + (2 + 1): reduce over g, x (||g||², <x,g>, ||x||², Σg, Σx per row; v "
             "per row); update reads g, x, writes x (re-centred, re-normalised in closed form)"),
    "adamp": (10, "(4 + 2) + (3 + 1): reduce over g, m, v, x (<g,x>, ||g||², ||x||², <p,x> with "
              "p = m̂'/(√v̂'+ε) formed on the fly, per view) writing m', v'; update reads m', v', "
              "x, writes x (m', v' unwritten: (4 + 0) + (4 + 3) = 11)"),
    "sgdp": (8, "(3 + 1) + (2 + 2): reduce over g, buf, x (<g,x>, ||g||², ||x||², <b',x>) "
             "writing b' = μ buf + g; the stored buffer is the projected one: update reads b', x, "
             "writes buf, x"),
    "rv_adamw": (10, "(4 + 2) + (3 + 1): reduce over g, m, v, x (<u,x>, ||u||², Σu, Σx, ||x||² "
                 "with u = m̂'/(√v̂'+ε) formed on the fly give ||Δ||² and ||x'||²) writing m', "
                 "v'; update reads m', v', x, writes x (m', v' unwritten: 4 + 7 = 11)"),
    "rv_sgdm": (7, "(3 + 1) + (2 + 1): reduce over g, buf, x writing buf' = μ buf + g; update "
                "reads buf', x, writes x (buf' unwritten: 3 + 5 = 8)"),
    "rv_lion": (8, "(3 + 0) + (3 + 2): reduce over g, m, x (<s,x>, ||s||², Σs, Σx, ||x||² of "
                "s = sign(β1 m + (1−β1) g)); s needs the old m and g, which the stored "
                "m' = β2 m + (1−β2) g cannot replace, so writing m' early saves nothing"),
    "rv_adam_l2": (11, "(5 + 2) + (3 + 1): as rv_adamw plus one read of x before its "
                   "reduction pass: the L2 term g + λx_s uses the centred start x_s, whose Σx "
                   "and ||x||² the moments of g + λx_s need first"),
    "rotational(adam)": (10, "as rv_adamw"),
    "rv_adamw+track_dynamics": (10, "as rv_adamw: <g,g>, <g,x>, <x,x> in the reduction pass, "
                                "<x,Δ>, ||Δ||² in the update pass (Δ needs the reductions; "
                                "nothing in the step consumes them); the output is per group"),
    "rv_adamw+track_dynamics(every=10)": (10, "as rv_adamw+track_dynamics on a recording "
                                          "step, as rv_adamw on the others"),
    "rv_adamw+track_dynamics(record=False)": (10, "as rv_adamw: the non-recording program of "
                                              "the static record= (the inner step and the "
                                              "count's increment)"),
}


def resnet50_shapes(num_classes: int = 1000) -> dict:
  """Parameter shapes of torchvision's ResNet-50 in Flax layout (output axis last)."""
  shapes = {"conv1": {"kernel": (7, 7, 3, 64)}, "bn1": {"scale": (64,), "bias": (64,)}}
  in_ch = 64
  for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
    for b in range(blocks):
      block = {}
      for i, (k, cin, cout) in enumerate(
          ((1, in_ch, width), (3, width, width), (1, width, 4 * width)), start=1):
        block[f"conv{i}"] = {"kernel": (k, k, cin, cout)}
        block[f"bn{i}"] = {"scale": (cout,), "bias": (cout,)}
      if b == 0:
        block["downsample_conv"] = {"kernel": (1, 1, in_ch, 4 * width)}
        block["downsample_bn"] = {"scale": (4 * width,), "bias": (4 * width,)}
      shapes[f"layer{stage + 1}_{b}"] = block
      in_ch = 4 * width
  shapes["fc"] = {"kernel": (in_ch, num_classes), "bias": (num_classes,)}
  return shapes


def _random_tree(shapes: dict, seed: int, scale: float) -> dict:
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(scale * rng.standard_normal(s, dtype=np.float32)),
      shapes,
      is_leaf=lambda s: isinstance(s, tuple),
  )


def nbytes(tree) -> int:
  """Bytes of a pytree of arrays (or of ``jax.ShapeDtypeStruct``)."""
  return sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def _bytes_accessed(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("bytes accessed", float("nan"))) if cost else float("nan")


class _Bench:
  """One optimizer's compiled donated step and its live params and state."""

  def __init__(self, opt, params, grads):
    def step(p, s, g):
      updates, s = opt.update(g, s, p)
      return optax.apply_updates(p, updates), s

    self.params = jax.tree.map(jnp.copy, params)
    self.state = opt.init(self.params)
    self.state_bytes = nbytes(self.state)
    start = time.perf_counter()
    self.compiled = (
        jax.jit(step, donate_argnums=(0, 1)).lower(self.params, self.state, grads).compile()
    )
    self.compile_s = time.perf_counter() - start
    self.bytes_accessed = _bytes_accessed(self.compiled)
    self.grads = grads
    self.times = []
    self.run(1, record=False)  # warm-up

  def run(self, steps: int, record: bool = True) -> None:
    for _ in range(steps):
      start = time.perf_counter()
      self.params, self.state = self.compiled(self.params, self.state, self.grads)
      jax.block_until_ready((self.params, self.state))
      if record:
        self.times.append(time.perf_counter() - start)


def measure(names: list[str], rounds: int, steps: int) -> dict[str, dict[str, float]]:
  """Compiles and times ``names`` (``"adamw"`` first) in this process; per optimizer
  the median step ``ms``, its ``ratio`` to adamw's, ``state`` bytes over adamw's,
  ``compile_s`` and XLA's ``bytes_per_param``."""
  shapes = resnet50_shapes()
  params = _random_tree(shapes, 0, 0.05)
  grads = _random_tree(shapes, 1, 1e-3)
  param_bytes = nbytes(params)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
  print(f"ResNet-50 pytree: {num_params / 1e6:.2f}M params, {len(jax.tree.leaves(params))} "
        f"leaves, {param_bytes / 2**20:.1f} MiB; backend {jax.default_backend()}, "
        f"{jax.device_count()} device(s)", flush=True)
  benches = {}
  for name in names:
    benches[name] = _Bench(OPTIMIZERS[name][0](), params, grads)
    print(f"  compiled {name} in {benches[name].compile_s:.1f} s", flush=True)
  for _ in range(rounds):
    for name in names:
      benches[name].run(steps)
  base, base_time = benches["adamw"], statistics.median(benches["adamw"].times)
  return {
      name: {
          "ms": 1e3 * statistics.median(b.times),
          "ratio": statistics.median(b.times) / base_time,
          "state": b.state_bytes / base.state_bytes,
          "compile_s": b.compile_s,
          "bytes_per_param": b.bytes_accessed / param_bytes,
      }
      for name, b in benches.items()
  }


def combine(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
  """Per optimizer and field, the median over independent runs; the step ratio's
  smallest and largest value as ``ratio_min`` and ``ratio_max``.

  >>> runs = [{"a": {"ratio": r, "ms": 10 * r}} for r in (1.2, 1.5, 1.3)]
  >>> combine(runs)["a"]
  {'ratio': 1.3, 'ms': 13.0, 'ratio_min': 1.2, 'ratio_max': 1.5}
  """
  out = {}
  for name in runs[0]:
    fields = {k: statistics.median(run[name][k] for run in runs) for k in runs[0][name]}
    ratios = [run[name]["ratio"] for run in runs]
    out[name] = {**fields, "ratio_min": min(ratios), "ratio_max": max(ratios)}
  return out


def print_table(results: dict[str, dict[str, float]]) -> None:
  spread = "ratio_min" in next(iter(results.values()))
  print()
  print("| optimizer | step ms | step/adamw | " + ("range | " if spread else "")
        + "target | met | state/adamw | compile s | min R+W (adamw 7) | XLA bytes/P |")
  print("|---|---|---|" + ("---|" if spread else "") + "---|---|---|---|---|---|")
  for name, r in results.items():
    target = OPTIMIZERS[name][1]
    met = "" if target is None else (
        "yes" if r["ratio"] <= target and r["state"] <= 1.01 else "NO")
    passes = MIN_PASSES[name][0]
    span = f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f} | " if spread else ""
    print(f"| {name} | {r['ms']:.1f} | {r['ratio']:.2f} | {span}"
          f"{'' if target is None else f'≤ {target}'} | {met} | {r['state']:.4f} | "
          f"{r['compile_s']:.1f} | {passes} ({passes / 7:.2f}×) | "
          f"{r['bytes_per_param']:.1f} |")
  for tracked in ("rv_adamw+track_dynamics", "rv_adamw+track_dynamics(every=10)",
                  "rv_adamw+track_dynamics(record=False)"):
    if "rv_adamw" in results and tracked in results:
      overhead = results[tracked]["ms"] / results["rv_adamw"]["ms"]
      print(f"\n{tracked[len('rv_adamw+'):]} overhead around rv_adamw: {overhead:.2f}×")
  print("\nMinimal reads+writes (full-size arrays per step):")
  for name in results:
    print(f"- {name}: {MIN_PASSES[name][0]} — {MIN_PASSES[name][1]}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=3, help="calls per optimizer per round")
  parser.add_argument("--only", nargs="*", default=None, help="optimizer names (adamw always)")
  parser.add_argument("--repeat", type=int, default=1,
                      help="independent runs (fresh processes); the table gives medians")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  args = parser.parse_args(argv)

  names = list(OPTIMIZERS)
  if args.only:
    unknown = set(args.only) - set(names)
    if unknown:
      parser.error(f"unknown optimizers {sorted(unknown)}; choose from {names}")
    names = ["adamw"] + [n for n in names if n in args.only and n != "adamw"]

  if args.repeat == 1:
    results = measure(names, args.rounds, args.steps)
  else:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
      for i in range(args.repeat):
        path = os.path.join(tmp, f"run{i}.json")
        print(f"run {i + 1}/{args.repeat}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "experiments.benchmark", "--rounds", str(args.rounds),
             "--steps", str(args.steps), "--json", path, "--only", *names],
            check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
          runs.append(json.load(f))
    results = combine(runs)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f)
  print_table(results)


if __name__ == "__main__":
  main()
