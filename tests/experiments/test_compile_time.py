"""experiments.compile_time: its tree, its table and its JSON (no timing is checked)."""

import json
import math

import jax
import pytest

from experiments import benchmark
from experiments import compile_time


def test_synthetic_tree_has_the_leaf_count_and_the_block_mix():
  tree = compile_time.synthetic_shapes(15)
  shapes = jax.tree.leaves(tree, is_leaf=lambda s: isinstance(s, tuple))
  assert len(shapes) == 15
  # Two whole blocks and the first three leaves of a third, in BLOCK's order.
  want = [s for _, s in compile_time.BLOCK] * 2 + [s for _, s in compile_time.BLOCK[:3]]
  assert sorted(shapes) == sorted(want)
  assert sum(len(s) == 4 for s in shapes) == 5  # conv kernels (3x3 and 1x1)
  assert sum(len(s) == 1 for s in shapes) == 8  # scales and biases
  assert all(math.prod(s) <= 3 * 3 * 8 * 16 for s in shapes)
  # The warm-up shares no shape with the measured tree (no cached trace to reuse).
  assert not set(compile_time.WARM_UP.values()) & set(shapes)
  with pytest.raises(ValueError):
    compile_time.synthetic_shapes(0)


def test_every_benchmark_optimizer_is_measured_after_the_reference():
  names = list(compile_time.factories())
  assert names[0] == compile_time.BASELINE
  assert names[1:] == list(benchmark.OPTIMIZERS)
  assert "rv_adamw+track_dynamics" in names


def test_table_and_json_structure(tmp_path, capsys):
  path = tmp_path / "out.json"
  compile_time.main(["--leaves", "6", "--only", "adams", "--in-process", "--json", str(path)])
  data = json.loads(path.read_text())
  assert data["backend"] == "cpu" and data["jax"] == jax.__version__
  rows = data["results"]["6"]
  assert list(rows) == [compile_time.BASELINE, "adams"]
  fields = {"trace_s", "lower_s", "compile_s", "total_s", "cpu_s", "load_before",
            "load_after", "ratio", "cpu_ratio", "ops", "ops_ratio", "fusions", "fusions_ratio"}
  ref = rows[compile_time.BASELINE]
  assert set(rows["adams"]) == fields and set(ref) == fields | {"runs"}
  for r in [rows["adams"], *ref["runs"]]:
    assert r["total_s"] == pytest.approx(r["trace_s"] + r["lower_s"] + r["compile_s"])
  # The reference is measured first and last; its row is the mean of the two.
  assert len(ref["runs"]) == 2
  assert ref["cpu_s"] == pytest.approx(sum(r["cpu_s"] for r in ref["runs"]) / 2)
  assert ref["ratio"] == ref["cpu_ratio"] == ref["ops_ratio"] == ref["fusions_ratio"] == 1
  # The op and fusion counts are deterministic: both reference runs build the same module.
  assert ref["runs"][0]["ops"] == ref["runs"][1]["ops"] > 6
  assert ref["runs"][0]["fusions"] == ref["runs"][1]["fusions"] >= 6  # >= one per leaf
  assert rows["adams"]["fusions"] > ref["fusions"]  # + a per-group reduction per grouped leaf
  assert rows["adams"]["ratio"] == pytest.approx(
      rows["adams"]["total_s"] / rows[compile_time.BASELINE]["total_s"])
  out = capsys.readouterr().out
  assert "### 6 leaves" in out
  assert out.count("\n| adams | ") == 1 and out.count(f"\n| {compile_time.BASELINE} | ") == 1


def test_a_timed_out_row_is_printed_as_such(capsys):
  rows = compile_time.add_ratios({
      compile_time.BASELINE: {"trace_s": 1, "lower_s": 1, "compile_s": 2, "total_s": 4,
                               "cpu_s": 3, "load_before": 1, "load_after": 2, "ops": 9,
                               "fusions": 5},
      "adamp": {"timeout_s": 60}})
  compile_time.print_table({"500": rows})
  assert "| adamp | | | | > 60 | | | | NO | | | | | |" in capsys.readouterr().out


def test_unknown_optimizer_names_are_rejected():
  with pytest.raises(SystemExit):
    compile_time.main(["--only", "adamx"])
