"""Runs a whole protocol (methods × settings × seeds) or prints its commands, and
aggregates the JSONL results into a markdown table next to the paper's numbers.

Usage::

  python -m experiments.runner seed001_table2 --print-commands   # one line per run
  python -m experiments.runner seed001_table2 --index 17         # run number 17
  python -m experiments.runner seed001_table2 --quick            # every run, quick variant
  python -m experiments.runner seed001_table2 --aggregate        # markdown table

Aggregation reads the ``summary`` record of each run's ``metrics.jsonl`` (runs
that have not finished are counted as missing) and reports the mean ± sample
standard deviation over seeds of the test accuracy in % (best-validation
checkpoint), with the paper's value in parentheses where the protocol has one.

Example:

>>> print(markdown({('sgdm', 'c10'): [92.0, 93.0]}, ['sgdm'], ['c10'],
...                paper={('sgdm', 'c10'): 92.39}))
| method | c10 |
|---|---|
| SGD-M | 92.50 ± 0.71 (92.39) [n=2] |
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
  """One shell command per run of ``protocol`` (for a cluster's job array)."""
  flag = " --quick" if quick else ""
  return [
      f"python -m experiments.runner {shlex.quote(protocol)} --index {i}{flag}"
      for i in range(len(configs.runs(protocol, quick)))
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
        std = np.std(values, ddof=1) if len(values) > 1 else 0.0
        cell = f"{np.mean(values):.2f} ± {std:.2f}"
      if (m, c) in paper:
        cell += f" ({paper[(m, c)]:.2f})"
      if values:
        cell += f" [n={len(values)}]"
      cells.append(cell)
    lines.append(f"| {_label(m)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def aggregate(protocol: str, quick: bool = False, root: str = ".") -> str:
  """The markdown results table of ``protocol`` (paper values in parentheses)."""
  module = configs.module(protocol)
  runs = configs.runs(protocol, quick)
  results = collect(runs, root)
  keys = list(dict.fromkeys(results))
  methods = getattr(module, "METHODS", None) or list(dict.fromkeys(m for m, _ in keys))
  columns = getattr(module, "COLUMNS", None) or list(dict.fromkeys(c for _, c in keys))
  methods = [m for m in methods if any((m, c) in results for c in columns)]
  return markdown(results, methods, list(columns), getattr(module, "PAPER", None))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("protocol", choices=configs.PROTOCOLS)
  parser.add_argument("--quick", action="store_true", help="the protocol's quick variant")
  parser.add_argument("--index", type=int, help="run only this run of the protocol")
  parser.add_argument("--print-commands", action="store_true")
  parser.add_argument("--aggregate", action="store_true")
  parser.add_argument("--root", default=".", help="directory the workdirs are relative to")
  args = parser.parse_args(argv)
  if args.print_commands:
    print("\n".join(commands(args.protocol, args.quick)))
    return
  if args.aggregate:
    print(aggregate(args.protocol, args.quick, args.root))
    return
  from experiments import train  # jax and the models load only to train

  runs = configs.runs(args.protocol, args.quick)
  selected = runs if args.index is None else [runs[args.index]]
  for cfg in selected:
    cfg.unlock()
    cfg.workdir = os.path.join(args.root, cfg.workdir)
    summary = train.train(cfg)
    print(json.dumps(summary), file=sys.stderr)
  if args.index is None:
    print(aggregate(args.protocol, args.quick, args.root))


if __name__ == "__main__":
  main()
