"""The quick offline reproduction: ``python -m experiments.quick``.

Nine optimizers of the reproduced tables — Adam, AdamW†, AdamG†, AdamS,
Adam w/o (ab), AdamSRT (seed 001), SGD-M, RV-AdamW and RV-SGDM (seed 004) —
train the same ResNet-8 on the offline digits set with the settings of
:mod:`experiments.configs.quick`. Prints a markdown table (test accuracy of the
best-validation checkpoint, final training loss, wall time, and the angular
update per step of the conv filters averaged over the second half of training
next to its predicted equilibrium, REFERENCE §5, and their mean ratio) and writes
``<workdir>/results.md``, ``<workdir>/curves.png`` (all runs overlaid) and
``<workdir>/layers_<method>.png`` (per-layer angular updates and norms).

``--lr-sweep`` instead tries each method's learning rate × {1/3, 1, 3} and
prints the validation accuracies (how the quick config's rates were chosen).

Example (two methods, one epoch):

>>> import tempfile
>>> rows = main(['--methods', 'sgdm,adam', '--epochs', '1',
...              '--workdir', tempfile.mkdtemp()])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from experiments import optimizers, plots, train
from experiments.configs import quick as quick_config

__all__ = ["main", "results_table", "run_all"]


def run_all(methods, *, epochs: int, workdir: str, learning_rates: dict | None = None) -> list:
  """Trains every method from scratch; returns their summary records."""
  summaries = []
  for method in methods:
    lr = (learning_rates or {}).get(method)
    cfg = quick_config.config(method, workdir=workdir, epochs=epochs, learning_rate=lr)
    shutil.rmtree(cfg.workdir, ignore_errors=True)
    summary = train.train(cfg)
    summary["learning_rate"] = cfg.learning_rate
    summary["metrics"] = os.path.join(cfg.workdir, "metrics.jsonl")
    summaries.append(summary)
    print(f"{method}: test {100 * summary['test_accuracy']:.2f}% in "
          f"{summary['wall_time_s']:.0f} s", flush=True)
  return summaries


def _fmt(x, spec):
  return "—" if x is None else format(x, spec)


def results_table(summaries: list) -> str:
  """The markdown results table of :func:`run_all`'s summaries."""
  lines = [
      "| method | lr | test acc. (%) | best val. acc. (%) | final train loss | wall time (s) "
      "| angular update (rad/step) | predicted (rad/step) | measured / predicted |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for s in summaries:
    lines.append(
        f"| {optimizers.METHODS[s['method']].label} | {s['learning_rate']:g} "
        f"| {100 * s['test_accuracy']:.2f} "
        f"| {_fmt(s['best_validation_accuracy'] and 100 * s['best_validation_accuracy'], '.2f')} "
        f"| {_fmt(s['final_train_loss'], '.4f')} | {s['wall_time_s']:.1f} "
        f"| {_fmt(s['mean_angular_update'], '.2e')} "
        f"| {_fmt(s['mean_predicted_angular_update'], '.2e')} "
        f"| {_fmt(s['mean_angular_update_ratio'], '.2f')} |"
    )
  return "\n".join(lines)


def _sweep(methods, epochs, workdir):
  for method in methods:
    base_lr = quick_config.SETTINGS[method][0]
    scores = {}
    for factor in (1 / 3, 1, 3):
      lr = base_lr * factor
      cfg = quick_config.config(
          method, workdir=os.path.join(workdir, f"sweep-{lr:g}"), epochs=epochs, learning_rate=lr
      )
      shutil.rmtree(cfg.workdir, ignore_errors=True)
      scores[lr] = train.train(cfg)["best_validation_accuracy"]
    print(method, {f"{k:g}": round(100 * v, 2) for k, v in scores.items()}, flush=True)


def main(argv: list[str] | None = None) -> list:
  parser = argparse.ArgumentParser(description="spherax quick reproduction on digits")
  parser.add_argument("--methods", default=",".join(quick_config.METHODS))
  parser.add_argument("--epochs", type=int, default=quick_config.EPOCHS)
  parser.add_argument("--workdir", default="runs/quick")
  parser.add_argument("--lr-sweep", action="store_true")
  args = parser.parse_args(argv)
  methods = [m for m in args.methods.split(",") if m]
  if args.lr_sweep:
    _sweep(methods, args.epochs, args.workdir)
    return []
  start = time.time()
  summaries = run_all(methods, epochs=args.epochs, workdir=args.workdir)
  table = results_table(summaries)
  total = time.time() - start
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "results.md"), "w") as f:
    f.write(table + f"\n\nTotal wall time: {total:.0f} s\n")
  plots.compare({optimizers.METHODS[s["method"]].label: s["metrics"] for s in summaries},
                os.path.join(args.workdir, "curves.png"))
  for s in summaries:
    plots.layers(s["metrics"], os.path.join(args.workdir, f"layers_{s['method']}.png"),
                 title=optimizers.METHODS[s["method"]].label)
  print(table)
  print(f"\nTotal wall time: {total:.0f} s; plots and results.md in {args.workdir}/")
  return summaries


if __name__ == "__main__":
  main()
