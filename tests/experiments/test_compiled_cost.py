"""experiments.compiled_cost: its HLO byte count on hand-written HLO (runs everywhere), and
the HBM passes of a few optimizers compiled for TPU v5e (needs the libtpu wheel, not a TPU)."""

import importlib.util
import json

import pytest

from experiments import benchmark
from experiments import compiled_cost

A = 64 * 128 * 4  # bytes of one f32[64,128]
R = 128 * 4  # bytes of one f32[128]

# A TPU-style step after memory-space assignment: S(1) is VMEM, S(2) and S(6)
# are semaphores and scalar memory. Operand shapes are not printed (as jax prints it).
TPU_STEP = """\
HloModule step, is_scheduled=true

%fused_reduce (p0: f32[64,128], p1: f32[64,128]) -> (f32[128], f32[64,128]) {
  %p0 = f32[64,128]{1,0:T(8,128)} parameter(0)
  %p1 = f32[64,128]{1,0:T(8,128)} parameter(1)
  %m = f32[64,128]{1,0:T(8,128)} multiply(%p0, %p1)
  %z = f32[]{:T(128)} constant(0)
  %r = f32[128]{0:T(128)} reduce(%m, %z), dimensions={0}, to_apply=%add
  ROOT %t = (f32[128]{0:T(128)}, f32[64,128]{1,0:T(8,128)}) tuple(%r, %m)
}

ENTRY %main.1 (x: f32[64,128], g: f32[64,128], m: f32[64,128], c: s32[]) -> (f32[64,128], f32[64,128], s32[]) {
  %x = f32[64,128]{1,0:T(8,128)} parameter(0), sharding={replicated}
  %g = f32[64,128]{1,0:T(8,128)} parameter(1), sharding={replicated}
  %m = f32[64,128]{1,0:T(8,128)} parameter(2), sharding={replicated}
  %c = s32[]{:T(128)} parameter(3)
  %one = s32[]{:T(128)S(6)} constant(1)
  %c1 = s32[]{:T(128)S(6)} add(%c, %one), backend_config={"flag_configs":[]}
  %copy-start = (f32[64,128]{1,0:T(8,128)S(1)}, f32[64,128]{1,0:T(8,128)}, u32[]{:S(2)}) copy-start(%g)
  %red = (f32[128]{0:T(128)S(1)}, f32[64,128]{1,0:T(8,128)S(1)}) fusion(%x, %g, /*index=2*/%x), kind=kInput, calls=%fused_reduce, backend_config={"window_config":{"estimated_cycles":"100","iteration_bounds":["8"]}}
  %copy-done = f32[64,128]{1,0:T(8,128)S(1)} copy-done(%copy-start)
  %n = f32[128]{0:T(128)S(1)} get-tuple-element(%red), index=0
  %b = f32[128]{0:T(128)S(1)} bitcast(%n)
  %s = f32[128]{0:T(128)} sqrt(%b), backend_config={"window_config":{"estimated_cycles":"7"}}
  %evict = (f32[128]{0:T(128)}, f32[128]{0:T(128)S(1)}, u32[]{:S(2)}) copy-start(%b)
  %slice-start = ((f32[64,128]{1,0:T(8,128)}), f32[8,128]{1,0:T(8,128)S(1)}, s32[]{:S(2)}) slice-start(%m), slice={[0:8], [0:128]}
  %slice-done = f32[8,128]{1,0:T(8,128)S(1)} slice-done(%slice-start)
  %upd = (f32[64,128]{1,0:T(8,128)}, f32[64,128]{1,0:T(8,128)}) fusion(%x, %copy-done, %m, %s), kind=kLoop, calls=%fused_update, backend_config={"window_config":{"estimated_cycles":"250"}}
  %x1 = f32[64,128]{1,0:T(8,128)} get-tuple-element(%upd), index=0
  %m1 = f32[64,128]{1,0:T(8,128)} get-tuple-element(%upd), index=1
  %c2 = s32[]{:T(128)} copy(%c1)
  ROOT %out = (f32[64,128]{1,0:T(8,128)}, f32[64,128]{1,0:T(8,128)}, s32[]{:T(128)}) tuple(%x1, %m1, %c2)
}
"""

# A GPU-style step: a command buffer (`call`), a conditional, operand shapes printed inline.
GPU_STEP = """\
HloModule step

%command_buffer (p0: f32[64,128], p1: f32[64,128]) -> f32[64,128] {
  %p0 = f32[64,128]{1,0} parameter(0)
  %p1 = f32[64,128]{1,0} parameter(1)
  %k1 = f32[64,128]{1,0} fusion(f32[64,128]{1,0} %p0, f32[64,128]{1,0} %p1), kind=kLoop, calls=%f1
  ROOT %k2 = f32[64,128]{1,0} fusion(f32[64,128]{1,0} %k1), kind=kLoop, calls=%f2
}

%measure (t: (f32[64,128])) -> f32[128] {
  %t = (f32[64,128]{1,0}) parameter(0)
  %n = f32[64,128]{1,0} get-tuple-element((f32[64,128]{1,0}) %t), index=0
  ROOT %r = f32[128]{0} fusion(f32[64,128]{1,0} %n), kind=kInput, calls=%f3
}

%keep (t: (f32[128])) -> f32[128] {
  %t.1 = (f32[128]{0}) parameter(0)
  ROOT %v.1 = f32[128]{0} get-tuple-element((f32[128]{0}) %t.1), index=0
}

ENTRY %main (x: f32[64,128], g: f32[64,128], n: f32[128], first: s32[]) -> (f32[64,128], f32[128]) {
  %x = f32[64,128]{1,0} parameter(0)
  %g = f32[64,128]{1,0} parameter(1)
  %n = f32[128]{0} parameter(2)
  %first = s32[] parameter(3)
  %bias = f32[] fusion(s32[] %first), kind=kLoop, calls=%f4
  %y = f32[64,128]{1,0} call(f32[64,128]{1,0} %x, f32[64,128]{1,0} %g), to_apply=%command_buffer
  %tx = (f32[64,128]{1,0}) tuple(f32[64,128]{1,0} %x)
  %tn = (f32[128]{0}) tuple(f32[128]{0} %n)
  %n1 = f32[128]{0} conditional(s32[] %first, (f32[128]{0}) %tn, (f32[64,128]{1,0}) %tx), branch_computations={%keep, %measure}
  ROOT %out = (f32[64,128]{1,0}, f32[128]{0}) tuple(f32[64,128]{1,0} %y, f32[128]{0} %n1)
}
"""


def test_array_bytes_counts_hbm_arrays_only():
  assert compiled_cost.array_bytes("f32[64,128]{1,0:T(8,128)}") == A
  assert compiled_cost.array_bytes("f32[64,128]{1,0:T(8,128)S(1)}") == 0  # VMEM
  assert compiled_cost.array_bytes("f32[64,128]{1,0:T(8,128)S(1)}", hbm_only=False) == A
  assert compiled_cost.array_bytes("f32[64,128]{1,0:T(8,128)S(0)}") == A  # default space
  assert compiled_cost.array_bytes("(bf16[3,5]{1,0}, pred[7], s4[4], s32[], f64[2])") == \
      3 * 5 * 2 + 7 + 2 + 4 + 16
  assert compiled_cost.array_bytes("(f32[], token[])") == 4


def test_tpu_step_counts_hbm_reads_and_writes_of_top_level_kernels():
  cost = compiled_cost.hlo_cost(TPU_STEP)
  # copy-start reads g from HBM (its VMEM side and context are free); %red reads x
  # (named twice) and g, writes VMEM only; %s reads VMEM, writes f32[128] to HBM;
  # %evict writes f32[128] from VMEM to HBM; the async slice reads 8 of m's 64 rows;
  # %upd reads x, m, s (the prefetched g is in VMEM) and writes x', m'; the scalar
  # ops read c (4 bytes) and %c2 writes 4 bytes.
  expected = A + 2 * A + R + R + A // 8 + (2 * A + R + 2 * A) + 4 + 4
  assert cost.hbm_bytes == expected
  assert cost.fusions == 2
  assert cost.kernels == 3  # %red, %s, %upd: the scalar add and copy are not kernels
  assert cost.estimated_cycles == 100 + 7 + 250
  assert cost.conditionals == 0


def test_gpu_step_descends_into_calls_and_counts_the_costliest_branch():
  cost = compiled_cost.hlo_cost(GPU_STEP)
  # command buffer: k1 reads x, g, writes k1; k2 reads k1, writes y. The
  # conditional's costliest branch reads x and writes f32[128] (the other only
  # forwards its tuple); names are looked up in their own computation (%n). The
  # scalar fusion %bias moves 8 bytes and is not counted as a kernel.
  assert cost.hbm_bytes == 3 * A + 2 * A + A + R + 8
  assert (cost.kernels, cost.fusions, cost.conditionals) == (3, 3, 1)
  # With the cheapest branch (%keep forwards its operand and moves nothing).
  assert cost.hbm_bytes_skip == 3 * A + 2 * A + 8
  assert compiled_cost.hlo_cost(TPU_STEP).hbm_bytes_skip == compiled_cost.hlo_cost(TPU_STEP).hbm_bytes


def test_loops_and_missing_entry_are_refused():
  loop = TPU_STEP.replace("%c2 = s32[]{:T(128)} copy(%c1)",
                          "%c2 = s32[]{:T(128)} while(%c1), condition=%cc, body=%bb")
  with pytest.raises(ValueError, match="loop"):
    compiled_cost.hlo_cost(loop)
  with pytest.raises(ValueError, match="ENTRY"):
    compiled_cost.hlo_cost(TPU_STEP.replace("ENTRY ", ""))


def test_reference_check_fails_loudly():
  def cost(passes):
    return compiled_cost.StepCost(passes, 1, 1, 0, 0, 0, 0, passes)
  compiled_cost.check_references("conv", "default", {"adamw": cost(7.001), "sgd": cost(5.0)})
  with pytest.raises(RuntimeError, match="adamw = 8.000 passes, expected 7"):
    compiled_cost.check_references("conv", "default", {"adamw": cost(8.0), "sgd": cost(5.0)})


def test_recording_every_k_steps_is_averaged_over_the_k_steps(capsys):
  def row(passes, skip):
    return {"passes": passes, "passes_skip": skip, "kernels": 2, "fusions": 1,
            "estimated_cycles": 0, "temp_bytes": 0, "state_bytes": 0, "conditionals": 1,
            "param_bytes": 1000}
  every = "rv_adamw+track_dynamics(every=10)"
  bare, k = compiled_cost.RECORD_EVERY[every]
  assert (bare, k) == ("rv_adamw", 10)
  assert set(compiled_cost.RECORD_EVERY) <= set(benchmark.OPTIMIZERS)
  modes = {"default": {"adamw": row(7.0, 7.0), "sgd": row(5.0, 5.0), bare: row(12.0, 12.0),
                       every: row(30.0, 12.0)}}
  [(name, case, mode, passes, skip, mean, ratio)] = compiled_cost.averages({"dense": modes})
  assert (name, case, mode, passes, skip) == (every, "dense", "default", 30.0, 12.0)
  assert mean == pytest.approx(12.0 + 18.0 / 10) and ratio == pytest.approx(13.8 / 12.0)
  compiled_cost.print_tables("h100", {"dense": modes})
  assert f"| {every} | dense | default | 30.0 | 12.0 | 13.8 | 1.150 |" in capsys.readouterr().out


def test_the_static_record_schedule_is_averaged_from_its_two_programs(capsys):
  def row(passes):
    return {"passes": passes, "passes_skip": passes, "kernels": 2, "fusions": 1,
            "estimated_cycles": 0, "temp_bytes": 0, "state_bytes": 0, "conditionals": 0,
            "param_bytes": 1000}
  [(name, (off, on, bare, k))] = compiled_cost.RECORD_STATIC.items()
  assert (off, on, bare, k) == ("rv_adamw+track_dynamics(record=False)",
                                "rv_adamw+track_dynamics", "rv_adamw", 10)
  assert {off, on, bare} <= set(benchmark.OPTIMIZERS)
  # record=False on 9 steps of 10 (14.5 passes each), record=True on one (31.5):
  # (9 · 14.5 + 31.5) / 10 = 16.2 passes per step, over the bare 14.0.
  modes = {"default": {"adamw": row(7.0), "sgd": row(5.0), bare: row(14.0), on: row(31.5),
                       off: row(14.5)}}
  [(label, case, mode, passes, skip, mean, ratio)] = compiled_cost.averages({"conv": modes})
  assert (label, case, mode, passes, skip) == (f"{name}, k = 10", "conv", "default", 31.5, 14.5)
  assert mean == pytest.approx(16.2) and ratio == pytest.approx(16.2 / 14.0)
  # the rows need all three programs
  assert compiled_cost.averages({"conv": {"default": {bare: row(14.0), on: row(31.5)}}}) == []
  compiled_cost.print_tables("h100", {"conv": modes})
  assert f"| {name}, k = 10 | conv | default | 31.5 | 14.5 | 16.2 | 1.157 |" in (
      capsys.readouterr().out)


def test_every_compiled_optimizer_has_a_floor_and_the_references_come_first():
  names = list(compiled_cost.optimizers())
  assert names[:2] == ["adamw", "sgd"]
  assert set(names) == set(benchmark.OPTIMIZERS) == set(benchmark.MIN_PASSES)
  for name, want in compiled_cost.REFERENCE_PASSES.items():
    assert benchmark.MIN_PASSES[name][0] == want


def test_tables_give_ratios_to_adamw_and_to_the_floor(capsys):
  def row(passes, cycles):
    return {"passes": passes, "kernels": 2, "fusions": 1, "estimated_cycles": cycles,
            "temp_bytes": 10, "state_bytes": 2000, "conditionals": 0, "param_bytes": 1000}
  modes = {"default": {"adamw": row(7.0, 100), "sgd": row(5.0, 50), "adamp": row(12.0, 300)},
           "no_msa": {"adamw": row(7.0, 100), "sgd": row(5.0, 50), "adamp": row(13.0, 320)}}
  compiled_cost.print_tables("v5e", {"conv": modes})
  out = capsys.readouterr().out
  floor = benchmark.MIN_PASSES["adamp"][0]
  assert (f"| adamp | 12.0 | {12 / 7:.2f} | {floor} | {12 / floor:.2f} | 1 | 2 | 1.00% | "
          f"2.000 | 3.00 | 13.0 | {13 / floor:.2f} | 1 |") in out
  assert f"| adamp | {floor} | 12.0 (13.0) |" in out


def test_comparison_pairs_each_case_before_and_now(capsys):
  now = {"conv": {"default": {"adamw": {"passes": 7.0}, "adamp": {"passes": 10.5}}},
         "dense": {"default": {"adamw": {"passes": 7.0}, "adamp": {"passes": 11.0}}}}
  before = {"conv": {"default": {"adamw": {"passes": 7.0}, "adamp": {"passes": 16.0}}}}
  compiled_cost.print_comparison(now, before)
  out = capsys.readouterr().out
  floor = benchmark.MIN_PASSES["adamp"][0]
  assert "| optimizer | floor | conv |" in out  # dense has no before
  assert f"| adamp | {floor} | 16.0 → 10.5 |" in out


def test_unknown_names_are_rejected():
  with pytest.raises(SystemExit):
    compiled_cost.main(["--target", "v5e", "--only", "adamx"])
  with pytest.raises(SystemExit):
    compiled_cost.main(["--target", "tpu9"])


# ---------------------------------------------------------------------------
# Compiled for TPU v5e: deterministic HBM passes (XLA's fusion structure, MSA off).

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="the TPU compiler is not installed: pip install 'jax[tpu]==0.10.2' (libtpu, "
           "Python 3.11; no TPU needed)")

# Every optimizer on small leaves (groups of 576 and 512 elements, so per-group
# statistics add < 0.1 pass), at most 1.1 × its analytic floor (issue 13's bound), MSA
# off (XLA's fusion structure, which the floors describe).
SMALL_LEAVES = {"conv": {"kernel": (3, 3, 64, 128)}, "dense": {"kernel": (512, 256)}}
COMPILED = ["adamw", "sgd", "adams", "adamsrt", "sgdmrt", "adamg", "sgdg", "adagradg", "nero",
            "adamp", "sgdp", "rv_adamw", "rv_sgdm", "rv_lion", "rv_adam_l2"]


@pytest.fixture(scope="module")
def v5e_device():
  return compiled_cost.topology_devices(compiled_cost.TARGETS["v5e"])[0]


@needs_libtpu
@pytest.mark.parametrize("name", COMPILED)
def test_v5e_hbm_passes_stay_within_the_bound(name, v5e_device):
  factory = benchmark.OPTIMIZERS[name][0]
  floor = benchmark.MIN_PASSES[name][0]
  for case, shapes in SMALL_LEAVES.items():
    cost, _ = compiled_cost.step_cost(factory(), shapes, v5e_device, compiled_cost.NO_MSA)
    if name in compiled_cost.REFERENCE_PASSES:
      assert cost.passes == pytest.approx(floor, abs=5e-3), case
    else:
      assert cost.passes <= 1.1 * floor, (case, cost.passes)


needs_cuda_plugin = pytest.mark.skipif(
    importlib.util.find_spec("jax_plugins") is None
    or importlib.util.find_spec("jax_plugins.xla_cuda12") is None,
    reason="the GPU compiler is not installed: pip install 'jax[cuda12-local]==0.12.0.1' "
           "'nvidia-cuda-nvcc-cu12>=12.6.85' (Python 3.12; no GPU needed)")


@needs_cuda_plugin
def test_h100_references_come_out_at_their_passes():
  device = compiled_cost.topology_devices(compiled_cost.TARGETS["h100"])[0]
  for name, want in compiled_cost.REFERENCE_PASSES.items():
    cost, _ = compiled_cost.step_cost(benchmark.OPTIMIZERS[name][0](), SMALL_LEAVES["conv"],
                                      device)
    assert cost.passes == pytest.approx(want, abs=5e-3), name


# The optimizers whose statistics are one-pass sums and dot products of their inputs
# and of combinations of them (geometry.dots(one_pass=True): one Pallas kernel on the
# GPU) reach their floors on H100, where XLA alone re-reads the operands for every two
# column reductions; also on a classifier's 1000 columns (8-column tiles).
ONE_PASS = ["adamg", "sgdg", "adagradg", "nero", "sgdp", "adams", "adamsrt", "sgdmrt"]


@needs_cuda_plugin
@pytest.mark.parametrize("name", ONE_PASS)
def test_h100_one_pass_statistics_reach_the_floor(name):
  device = compiled_cost.topology_devices(compiled_cost.TARGETS["h100"])[0]
  floor = benchmark.MIN_PASSES[name][0]
  for case, shapes in {**SMALL_LEAVES, "classifier": {"kernel": (512, 1000)}}.items():
    cost, _ = compiled_cost.step_cost(benchmark.OPTIMIZERS[name][0](), shapes, device)
    assert cost.passes <= 1.1 * floor, (case, cost.passes)


# The rotational wrapper's statistics are of the inner direction's output Δg, which the
# kernel reads once XLA has written it: one kernel per rotational leaf, and at most one
# pass over the floor (its in-pass write of Δg) on the dense leaves. On conv leaves XLA
# recomputes Δg in the update kernel from the inner moments (+1 more; README).
ROTATIONAL = ["rv_adamw", "rv_sgdm", "rv_lion"]


@needs_cuda_plugin
@pytest.mark.parametrize("name", ROTATIONAL)
def test_h100_rotational_statistics_take_one_kernel(name, tmp_path):
  device = compiled_cost.topology_devices(compiled_cost.TARGETS["h100"])[0]
  floor = benchmark.MIN_PASSES[name][0]
  shapes = {"a": (512, 256), "b": (256, 128)}
  cost, _ = compiled_cost.step_cost(benchmark.OPTIMIZERS[name][0](), shapes, device,
                                    dump=tmp_path / "step.hlo")
  assert (tmp_path / "step.hlo").read_text().count('custom_call_target="__gpu$xla.gpu.triton"') == 2
  assert cost.passes <= floor + 1.1, cost.passes


def test_split_runs_merge_in_the_optimizer_order(tmp_path, capsys):
  def run(path, case, names, versions="jax 0, libtpu 0"):
    row = {"passes": 7.0, "kernels": 1, "fusions": 1, "estimated_cycles": 1, "temp_bytes": 0,
           "state_bytes": 0, "conditionals": 0, "param_bytes": 1}
    (tmp_path / path).write_text(json.dumps(
        {"target": "h100", "versions": versions,
         "results": {case: {"default": {n: row for n in names}}}}))
    return str(tmp_path / path)

  a = run("a.json", "resnet50", ["adamw", "sgd", "nero"])
  b = run("b.json", "resnet50", ["adamw", "sgd", "adams"])
  c = run("c.json", "conv", ["adamw", "sgd"])
  merged, versions = compiled_cost.load_runs([a, b, c], "h100")
  assert list(merged) == ["conv", "resnet50"]
  assert list(merged["resnet50"]["default"]) == ["adamw", "sgd", "adams", "nero"]
  assert versions == "jax 0, libtpu 0"
  with pytest.raises(SystemExit):
    compiled_cost.load_runs([a, run("d.json", "conv", ["adamw"], "jax 1")], "h100")
  compiled_cost.main(["--target", "h100", "--load", a, b])
  assert "| nero | 5 | 7.00 |" in capsys.readouterr().out
