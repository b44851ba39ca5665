"""The quick reproduction end to end, reduced: 2 optimizers, 2 epochs, real digits
data and the quick config's ResNet-8."""

import json
import os

import numpy as np

from experiments import plots, quick
from experiments.configs import quick as quick_config


def test_quick_runs_end_to_end(tmp_path):
  summaries = quick.main(["--methods", "sgdm,adamsrt", "--epochs", "2",
                          "--workdir", str(tmp_path)])
  assert [s["method"] for s in summaries] == ["sgdm", "adamsrt"]
  for s in summaries:
    assert s["test_accuracy"] > 0.3  # 40 steps on 10 classes: far above chance (0.1)
    assert s["final_train_loss"] < np.log(10)  # below the loss of a uniform guess
    assert s["mean_angular_update"] > 0
  # the predicted equilibrium (SGD-M only) is the mean of the logged closed form
  records = plots.read(summaries[0]["metrics"])
  steps = max(r["step"] for r in records if r["kind"] == "train")
  late = [r for r in records if r["kind"] == "train" and r["step"] > steps // 2]
  lr, hp = quick_config.SETTINGS["sgdm"]
  expected = np.mean([np.sqrt(2 * r["lr"] * hp["weight_decay"] / (1 + hp["momentum"]))
                      for r in late])
  np.testing.assert_allclose(summaries[0]["mean_predicted_angular_update"], expected, rtol=1e-6)
  ratio = np.mean([np.mean(list(r["angular_update"].values()))
                   / np.sqrt(2 * r["lr"] * hp["weight_decay"] / (1 + hp["momentum"]))
                   for r in late])
  np.testing.assert_allclose(summaries[0]["mean_angular_update_ratio"], ratio, rtol=1e-6)
  assert summaries[1]["mean_predicted_angular_update"] is None
  table = (tmp_path / "results.md").read_text().splitlines()
  assert table[2].startswith(f"| SGD-M | {lr:g} | {100 * summaries[0]['test_accuracy']:.2f} |")
  assert table[3].startswith("| AdamSRT |")
  for name in ("curves.png", "layers_sgdm.png", "layers_adamsrt.png"):
    assert os.path.getsize(tmp_path / name) > 10_000
  # the summary is also the last JSONL record of each run
  with open(summaries[1]["metrics"]) as f:
    last = json.loads(f.read().splitlines()[-1])
  assert last["kind"] == "summary" and last["test_accuracy"] == summaries[1]["test_accuracy"]
