"""Runs a whole protocol (methods × settings × seeds) or one run of it, prints
its commands, and aggregates the JSONL results into a markdown table next to the
paper's numbers.

Usage::

  python -m experiments.runner seed001_table2 --print-commands    # one line per run
  python -m experiments.runner seed001_table2 --run adam/c10_rn20/seed3   # one run
  python -m experiments.runner quick --run sgdm/seed0 --config.epochs=2 \\
      --config.hparams.weight_decay=1e-3                           # overrides
  python -m experiments.runner seed001_table2 --quick             # every run, quick
  python -m experiments.runner seed001_table2 --aggregate         # markdown table

Runs are addressed by their stable name (:func:`experiments.configs.run_id`:
``name``/``method``/``column``/``seed``), which does not shift when a protocol
changes; ``--index i`` (a list position) is kept for job arrays and checked.
``--config.a.b=value`` overrides any key of the selected runs' configs
(:func:`experiments.configs.apply_overrides`; the value is parsed as the type of
the value it replaces).

Multi-host (``jax.distributed``): on a TPU pod slice or a SLURM/Open MPI cluster
JAX finds its peers itself, so every host runs the same command with
``--distributed``; elsewhere give the coordinator (process 0's
``host:port``), the process count and each process's id::

  python -m experiments.runner fsdp --run resnet50/fsdp8/rv_adamw/seed0 --distributed  # every host
  python -m experiments.runner quick --run sgdm/seed0 --coordinator 10.0.0.1:1234 \\
      --num-processes 2 --process-id 0   # on host 0 (and --process-id 1 on host 1)

Every process reads its own shard of each batch; process 0 alone writes the
metrics and snapshots; checkpoints are written and restored by all processes
together (the workdir must be on storage every host sees).

Aggregation reads the ``summary`` record of each run's ``metrics.jsonl`` (runs
that have not finished are counted as missing) and reports the mean ± sample
standard deviation over seeds of the test accuracy in % (best-validation
checkpoint; one seed: the value alone), with the paper's value in parentheses
where the protocol has one and the runs are the paper's set-up (not the quick
variants on digits).

Example:

>>> print(markdown({('sgdm', 'c10'): [92.0, 93.0], ('adam', 'c10'): [91.0]},
...                ['sgdm', 'adam'], ['c10'], paper={('sgdm', 'c10'): 92.39}))
| method | c10 |
|---|---|
| SGD-M | 92.50 ± 0.71 (92.39) [n=2] |
| Adam | 91.00 [n=1] |
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np

from experiments import configs, optimizers

__all__ = ["aggregate", "collect", "commands", "main", "markdown"]


def commands(protocol: str, quick: bool = False) -> list[str]:
  """One shell command per run of ``protocol`` (for a cluster's job array), each
  addressed by its stable name and followed by a comment giving its method,
  learning rate and seed."""
  flag = " --quick" if quick else ""
  return [
      f"python -m experiments.runner {shlex.quote(protocol)} "
      f"--run {shlex.quote(configs.run_id(cfg))}{flag}"
      f"  # method={cfg.method} lr={cfg.learning_rate:g} seed={cfg.seed}"
      for cfg in configs.runs(protocol, quick)
  ]


def _summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  done = [r for r in records if r["kind"] == "summary"]
  return done[-1] if done else None


def collect(runs: list, root: str = ".") -> dict:
  """``{(method, column or name): [test accuracy %, …]}`` over finished runs."""
  results: dict = {}
  for cfg in runs:
    key = (cfg.method, cfg.column or cfg.name)
    results.setdefault(key, [])
    summary = _summary(os.path.join(root, cfg.workdir))
    if summary is not None:
      results[key].append(100.0 * summary["test_accuracy"])
  return results


def _label(method: str) -> str:
  return optimizers.METHODS[method].label if method in optimizers.METHODS else method


def markdown(results: dict, methods, columns, paper: dict | None = None) -> str:
  """A markdown table: rows ``methods``, columns ``columns``, cells mean ± std."""
  paper = paper or {}
  lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for m in methods:
    cells = []
    for c in columns:
      values = results.get((m, c), [])
      if not values:
        cell = "—"
      else:
        cell = f"{np.mean(values):.2f}"
        if len(values) > 1:
          cell += f" ± {np.std(values, ddof=1):.2f}"
      if (m, c) in paper:
        cell += f" ({paper[(m, c)]:.2f})"
      if values:
        cell += f" [n={len(values)}]"
      cells.append(cell)
    lines.append(f"| {_label(m)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def aggregate(protocol: str, quick: bool = False, root: str = ".") -> str:
  """The markdown results table of ``protocol`` (paper values in parentheses,
  except for the quick variants, which train other models on other data)."""
  module = configs.module(protocol)
  runs = configs.runs(protocol, quick)
  results = collect(runs, root)
  keys = list(dict.fromkeys(results))
  methods = getattr(module, "METHODS", None) or list(dict.fromkeys(m for m, _ in keys))
  columns = getattr(module, "COLUMNS", None) or list(dict.fromkeys(c for _, c in keys))
  methods = [m for m in methods if any((m, c) in results for c in columns)]
  paper = None if quick else getattr(module, "PAPER", None)
  return markdown(results, methods, list(columns), paper)


def _split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Separates ``--config.a.b=value`` / ``--config.a.b value`` from the other args."""
  rest, overrides = [], {}
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      key, eq, value = arg[len("--config."):].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise SystemExit(f"{arg}: missing value")
        i, value = i + 1, argv[i + 1]
      overrides[key] = value
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      epilog="--config.KEY=VALUE overrides a key of the selected runs' configs.")
  parser.add_argument("protocol", choices=configs.PROTOCOLS)
  parser.add_argument("--quick", action="store_true", help="the protocol's quick variant")
  parser.add_argument("--run", help="run only the run with this name (see --print-commands)")
  parser.add_argument("--index", type=int, help="run only the run at this list position")
  parser.add_argument("--print-commands", action="store_true")
  parser.add_argument("--aggregate", action="store_true")
  parser.add_argument("--root", default=".", help="directory the workdirs are relative to")
  parser.add_argument("--stop-after-steps", type=int, default=None,
                      help="checkpoint and exit once this many steps are done "
                           "(rerun the same command to continue)")
  dist = parser.add_argument_group("multi-host (jax.distributed)")
  dist.add_argument("--distributed", action="store_true",
                    help="jax.distributed.initialize() from the environment "
                         "(TPU pods, SLURM, Open MPI)")
  dist.add_argument("--coordinator", help="host:port of process 0")
  dist.add_argument("--num-processes", type=int)
  dist.add_argument("--process-id", type=int)
  return parser


def main(argv: list[str] | None = None) -> None:
  argv, overrides = _split_overrides(sys.argv[1:] if argv is None else list(argv))
  parser = _parser()
  args = parser.parse_args(argv)
  if args.print_commands:
    print("\n".join(commands(args.protocol, args.quick)))
    return
  if args.aggregate:
    print(aggregate(args.protocol, args.quick, args.root))
    return
  try:
    selected = configs.select(args.protocol, args.quick, run=args.run, index=args.index)
    selected = [configs.apply_overrides(c, overrides) for c in selected]
  except (ValueError, KeyError, TypeError) as err:
    parser.error(str(err).strip('"'))
  from experiments import train  # jax and the models load only to train

  train.initialize_distributed(
      coordinator=args.coordinator,
      num_processes=args.num_processes,
      process_id=args.process_id,
      from_environment=args.distributed,
  )
  for cfg in selected:
    cfg.unlock()
    cfg.workdir = os.path.join(args.root, cfg.workdir)
    summary = train.train(cfg, stop_after_steps=args.stop_after_steps)
    if train.is_main_process():
      print(json.dumps(summary), file=sys.stderr)
  if args.run is None and args.index is None and train.is_main_process():
    print(aggregate(args.protocol, args.quick, args.root))


if __name__ == "__main__":
  main()
