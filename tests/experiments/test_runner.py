"""Runner (commands, aggregation to markdown) and plots."""

import json
import os

import matplotlib.image
import numpy as np

from experiments import configs, plots, runner
from experiments.configs import seed004_tables


def test_commands_cover_every_run():
  cmds = runner.commands("seed004_tables")
  assert len(cmds) == len(seed004_tables.runs())
  assert cmds[5] == "python -m experiments.runner seed004_tables --index 5"


def _write_summary(root, cfg, accuracy):
  d = os.path.join(root, cfg.workdir)
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"kind": "train", "step": 1, "loss": 1.0}) + "\n")
    f.write(json.dumps({"kind": "summary", "step": 2, "test_accuracy": accuracy}) + "\n")


def test_aggregate_means_stds_and_paper_values(tmp_path):
  accs = {0: 0.921, 1: 0.925, 2: 0.930}
  for seed, acc in accs.items():
    _write_summary(tmp_path, seed004_tables.config("adamw", "b128", seed), acc)
  _write_summary(tmp_path, seed004_tables.config("sgdm", "b2048", 0), 0.9)
  # an unfinished run (no summary) is not counted
  unfinished = seed004_tables.config("sgdm", "b2048", 1)
  os.makedirs(tmp_path / unfinished.workdir)
  (tmp_path / unfinished.workdir / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
  table = runner.aggregate("seed004_tables", root=str(tmp_path))
  lines = table.splitlines()
  assert lines[0] == "| method | b128 | b2048 | b2048_tuned |"
  values = 100 * np.array(list(accs.values()))
  adamw = next(line for line in lines if line.startswith("| AdamW |"))
  cells = [c.strip() for c in adamw.strip("|").split("|")]
  assert cells[1] == f"{values.mean():.2f} ± {np.std(values, ddof=1):.2f} (92.20) [n=3]"
  assert cells[2] == "— (91.50)"
  sgdm = next(line for line in lines if line.startswith("| SGD-M |"))
  assert "90.00 ± 0.00 (92.00) [n=1]" in sgdm


def test_every_protocol_aggregates_without_results(tmp_path):
  for protocol in configs.PROTOCOLS:
    table = runner.aggregate(protocol, root=str(tmp_path))
    assert table.startswith("| method |") and "[n=" not in table


def test_plots_write_images(tmp_path):
  path = tmp_path / "metrics.jsonl"
  records = []
  for s in range(1, 21):
    records.append({"kind": "train", "step": s, "loss": 2.0 / s, "accuracy": 0.1 * (s % 10),
                    "lr": 0.1, "angular_update": {"a/kernel": 0.01 / s, "b/kernel": 0.02 / s},
                    "weight_norm": {"a/kernel": 1 + s / 10, "b/kernel": 2.0},
                    "predicted_angular_update": 0.005})
    if s % 10 == 0:
      records.append({"kind": "eval", "split": "validation", "step": s, "accuracy": 0.5})
  path.write_text("\n".join(json.dumps(r) for r in records))
  for out in (plots.compare({"run": str(path)}, str(tmp_path / "c.png")),
              plots.layers(str(path), str(tmp_path / "l.png"), title="run")):
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0


def test_trajectory_cosine_closed_form(tmp_path):
  # run a: filters e1 and e2; run b at step 3: e1 and (e1 + e2)/sqrt(2) scaled by 5
  a, b = tmp_path / "a" / "snapshots", tmp_path / "b" / "snapshots"
  a.mkdir(parents=True)
  b.mkdir(parents=True)
  ka = np.zeros((1, 1, 2, 2))
  ka[0, 0, 0, 0] = ka[0, 0, 1, 1] = 1.0
  kb = ka.copy()
  kb[0, 0, :, 1] = 5.0
  np.savez(a / "step_0000003.npz", **{"conv/kernel": ka})
  np.savez(b / "step_0000003.npz", **{"conv/kernel": kb})
  np.savez(a / "step_0000006.npz", **{"conv/kernel": ka})  # not in b: skipped
  steps, cos = plots.trajectory_cosine(str(tmp_path / "a"), str(tmp_path / "b"))
  np.testing.assert_array_equal(steps, [3])
  np.testing.assert_allclose(cos, [(1 + 2**-0.5) / 2])
  out = plots.trajectories(str(tmp_path / "a"), {"b": str(tmp_path / "b")},
                           str(tmp_path / "t.png"))
  assert os.path.getsize(out) > 1000


def test_main_runs_one_indexed_run_and_aggregates_it(tmp_path, capsys):
  runner.main(["quick", "--quick", "--index", "6", "--root", str(tmp_path)])  # SGD-M, 2 epochs
  cfg = configs.runs("quick", quick=True)[6]
  with open(tmp_path / cfg.workdir / "metrics.jsonl") as f:
    summary = json.loads(f.read().splitlines()[-1])
  assert summary["kind"] == "summary" and summary["method"] == "sgdm"
  capsys.readouterr()
  runner.main(["quick", "--quick", "--aggregate", "--root", str(tmp_path)])
  table = capsys.readouterr().out
  row = next(line for line in table.splitlines() if line.startswith("| SGD-M |"))
  assert f"{100 * summary['test_accuracy']:.2f} ± 0.00 [n=1]" in row
