"""The train loop on two processes × 4 CPU devices (``jax.distributed``, gloo).

Two worker processes (this file run as a script) join a coordinator on
127.0.0.1, train the quick model (digits, ResNet-8 of width 2, SGD-M) for one
short epoch straight through, then again interrupted after 3 steps and resumed
from the collective checkpoint. Meanwhile this process trains the same run on
its own 8 devices. Checked: both processes end with the same parameters, the
resumed run equals the uninterrupted one bit for bit, both equal the
single-process run (up to float32 summation order: each device holds other
rows of the same global batch), and the metrics are written once (process 0).
The workers are killed by PID whatever happens.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from experiments import configs
from experiments import train as train_lib

_OVERRIDES = {
    "epochs": "1",
    "batch_size": "256",        # 1293 training digits: 5 steps
    "eval_batch_size": "128",
    "model_kwargs.width": "2",
    "log_every": "2",
    "checkpoint_every": "100",
}
_STOP = 3


def _config(workdir):
  (cfg,) = configs.select("quick", quick=True, run="sgdm/seed0")
  cfg = configs.apply_overrides(cfg, {**_OVERRIDES, "workdir": str(workdir)})
  return cfg


def _train(cfg, **kw):
  """Trains ``cfg`` on a fresh model; returns (summary, the final params)."""
  dataset = train_lib._build_dataset(cfg)
  model = train_lib._build_model(cfg, dataset)
  summary = train_lib.train(cfg, model=model, dataset=dataset, **kw)
  from flax import nnx

  return summary, {"/".join(map(str, k)): np.asarray(v[...]) for k, v in
                   nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _worker(port: int, process_id: int, out: str) -> None:
  train_lib.initialize_distributed(f"127.0.0.1:{port}", 2, process_id)
  import jax

  assert jax.process_count() == 2 and jax.device_count() == 8
  _, straight = _train(_config(os.path.join(out, "straight")))
  interrupted, _ = _train(_config(os.path.join(out, "resumed")), stop_after_steps=_STOP)
  assert interrupted == {"kind": "interrupted", "step": _STOP}
  summary, resumed = _train(_config(os.path.join(out, "resumed")))
  np.savez(os.path.join(out, f"straight_{process_id}.npz"), **straight)
  np.savez(os.path.join(out, f"resumed_{process_id}.npz"), **resumed)
  with open(os.path.join(out, f"summary_{process_id}.json"), "w") as f:
    json.dump(summary, f)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_checkpoint_resume_and_match_one_process(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  port = _free_port()
  logs = [open(tmp_path / f"worker_{i}.log", "w") for i in range(2)]
  procs = []
  try:
    for i in range(2):
      procs.append(subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), str(port), str(i), str(tmp_path)],
          env=env, cwd=root, stdout=logs[i], stderr=subprocess.STDOUT))
    # the reference, while the workers run: one process, 8 devices
    single_summary, single = _train(_config(tmp_path / "single"))
    codes = [p.wait(timeout=600) for p in procs]  # a hang guard, not a timing check
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in logs:
      f.close()
  for i, code in enumerate(codes):
    assert code == 0, (tmp_path / f"worker_{i}.log").read_text()[-3000:]

  runs = {name: [dict(np.load(tmp_path / f"{name}_{i}.npz")) for i in range(2)]
          for name in ("straight", "resumed")}
  assert set(single) == set(runs["straight"][0]) and len(single) > 5
  for key, want in single.items():
    a0, a1 = runs["straight"][0][key], runs["straight"][1][key]
    r0, r1 = runs["resumed"][0][key], runs["resumed"][1][key]
    np.testing.assert_array_equal(a0, a1, err_msg=key)  # the two processes agree
    np.testing.assert_array_equal(r0, r1, err_msg=key)
    np.testing.assert_array_equal(r0, a0, err_msg=key)  # resume is exact
    np.testing.assert_allclose(a0, want, rtol=2e-4, atol=2e-6, err_msg=key)
  assert not np.array_equal(single["head/kernel"],
                            train_lib._build_model(_config(tmp_path), _digits()).head.kernel[...])

  # process 0 alone wrote the metrics: every logged step once, as on one process
  def records(run):
    with open(tmp_path / run / "metrics.jsonl") as f:
      return [json.loads(line) for line in f]

  single_records, resumed_records = records("single"), records("resumed")
  steps = [r["step"] for r in resumed_records if r["kind"] == "train"]
  assert steps == [r["step"] for r in single_records if r["kind"] == "train"] == [1, 3, 5]
  for a, b in zip(single_records, resumed_records):
    assert a["kind"] == b["kind"]
    if a["kind"] == "train":
      np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
      for layer, angle in a["angular_update"].items():
        np.testing.assert_allclose(b["angular_update"][layer], angle, rtol=1e-3)
  summaries = [json.loads((tmp_path / f"summary_{i}.json").read_text()) for i in range(2)]
  assert summaries[0]["test_accuracy"] == summaries[1]["test_accuracy"]
  np.testing.assert_allclose(summaries[0]["test_accuracy"], single_summary["test_accuracy"],
                             atol=1 / 360 + 1e-9)  # at most one test digit apart
  assert "final_train_loss" in summaries[0] and "final_train_loss" not in summaries[1]


def _digits():
  from experiments import data

  return data.load_dataset("digits", validation_fraction=0.1)


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
