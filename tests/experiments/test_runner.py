"""Runner (commands, aggregation to markdown) and plots."""

import json
import os

import matplotlib.image
import numpy as np
import pytest

from experiments import configs, plots, runner
from experiments.configs import seed004_tables


def test_commands_name_every_run_by_a_stable_name_with_method_lr_seed():
  runs = seed004_tables.runs()
  cmds = runner.commands("seed004_tables")
  assert len(cmds) == len(runs)
  cfg = seed004_tables.config("rv_sgdm", "b2048", 2)
  assert (f"python -m experiments.runner seed004_tables --run rv_sgdm/b2048/seed2"
          f"  # method=rv_sgdm lr=4.8 seed=2") in cmds
  for cmd, cfg in zip(cmds, runs):  # each command's name selects its own run
    name = cmd.split("--run ")[1].split()[0]
    (selected,) = configs.select("seed004_tables", run=name)
    assert selected.to_dict() == cfg.to_dict()
    assert f"method={cfg.method} lr={cfg.learning_rate:g} seed={cfg.seed}" in cmd
  # names do not depend on list positions: a protocol with a run removed keeps them
  assert configs.run_id(runs[7]) == configs.run_id(seed004_tables.config(
      runs[7].method, runs[7].column, runs[7].seed))


def test_bad_run_selection_gives_a_clear_error(capsys):
  for argv, message in (
      (["quick", "--quick", "--index", "99"], "has 9 runs (indices 0..8); got index 99"),
      (["quick", "--run", "nope/seed0"], "has no run 'nope/seed0'; its runs: "),
      (["quick", "--run", "sgdm/seed0", "--config.learnig_rate=1"], "no config key"),
  ):
    with pytest.raises(SystemExit):
      runner.main(argv)
    assert message in capsys.readouterr().err


def test_config_overrides_parse_as_the_replaced_type():
  cfg = configs.runs("quick")[0]
  epochs = cfg.epochs
  out = configs.apply_overrides(cfg, {
      "epochs": "3", "learning_rate": "1", "augment": "true", "model_kwargs.width": "4",
      "schedule.boundaries": "(2,)", "hparams": "{'b1': 0.5}", "data_dir": "/data"})
  assert (out.epochs, out.learning_rate, out.augment) == (3, 1.0, True)
  assert isinstance(out.learning_rate, float)
  assert out.model_kwargs.width == 4 and tuple(out.schedule.boundaries) == (2,)
  assert out.hparams.to_dict() == {"b1": 0.5} and out.data_dir == "/data"
  assert cfg.epochs == epochs != 3  # the original is unchanged
  with pytest.raises(AttributeError):
    out.learnig_rate = 0.1  # still locked
  with pytest.raises(ValueError, match="boolean"):
    configs.apply_overrides(cfg, {"augment": "maybe"})
  rest, overrides = runner._split_overrides(
      ["quick", "--config.epochs=2", "--config.schedule.kind", "cosine", "--quick"])
  assert rest == ["quick", "--quick"]
  assert overrides == {"epochs": "2", "schedule.kind": "cosine"}


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
  assert "| 90.00 (92.00) [n=1] |" in sgdm  # one seed: no ± (and no std of one value)
  # the quick variants train other models on digits: no paper values beside them
  quick_cfg = seed004_tables.config("sgdm", "b2048", 0, quick=True)
  _write_summary(tmp_path, quick_cfg, 0.5)
  quick = runner.aggregate("seed004_tables", quick=True, root=str(tmp_path))
  assert "| SGD-M | — | 50.00 [n=1] |" in quick and "(9" not in quick


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


def test_main_runs_one_named_run_with_overrides_and_aggregates_it(tmp_path, capsys):
  runner.main(["quick", "--quick", "--run", "sgdm/seed0", "--root", str(tmp_path),
               "--config.epochs=1", "--config.model_kwargs.width", "4"])
  (cfg,) = configs.select("quick", quick=True, run="sgdm/seed0")
  with open(tmp_path / cfg.workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  summary = records[-1]
  assert summary["kind"] == "summary" and summary["method"] == "sgdm"
  # the override took effect: one epoch of the quick variant's 2
  from experiments import data
  train_size = data.load_dataset("digits", validation_fraction=cfg.validation_fraction).num_train
  assert summary["step"] == train_size // cfg.batch_size
  capsys.readouterr()
  runner.main(["quick", "--quick", "--aggregate", "--root", str(tmp_path)])
  table = capsys.readouterr().out
  row = next(line for line in table.splitlines() if line.startswith("| SGD-M |"))
  assert f"| {100 * summary['test_accuracy']:.2f} [n=1] |" in row
