"""HBM traffic of one optimizer step as the TPU and GPU compilers build it, without a device.

Run ``python -m experiments.compiled_cost --target h100`` (targets: ``h100``,
``a100``, ``b200``, ``v4``, ``v5e``, ``v6e``; options ``--cases``, ``--only``,
``--json PATH``, ``--dump DIR``, ``--before PATH``: an earlier ``--json``
file, to print the passes as before → now; ``--load PATH ...``: print the
tables of earlier ``--json`` files, merged, without compiling). For every optimizer of
:data:`experiments.benchmark.OPTIMIZERS` (``optax.adamw`` and ``optax.sgd`` with
momentum are the references) it compiles one donated step
``(params, state, grads) -> (params, state)`` for the target, on abstract
float32 arguments (``jax.ShapeDtypeStruct`` with a ``NamedSharding`` on one
device of an abstract topology), for single leaves (a conv kernel
``(3, 3, 256, 512)``, a dense kernel ``(4096, 4096)``, a ``DenseGeneral`` kernel
``(1024, 16, 64)``, each grouped by spherax's default rule) and for the
ResNet-50 parameter tree of :func:`experiments.benchmark.resnet50_shapes`. Per
optimizer and case it prints:

* ``passes``: HBM bytes of the step divided by the param bytes, counted from the
  optimized HLO by :func:`hlo_cost` (adamw reads ``g, m, v, x`` and writes
  ``m, v, x``: 7.00; momentum SGD 5.00; the tool refuses to print a table
  where the references do not come out at exactly these counts);
* ``/adamw`` and ``/floor``: the passes over adamw's and over the optimizer's
  analytic floor (:data:`experiments.benchmark.MIN_PASSES`);
* ``kernels`` and ``fusions``: the top-level instructions that run on arrays
  (fusions, custom calls, copies, unfused ops; not the scalar-only ones such as
  the step count's bias corrections, nor parameters, constants, tuples,
  bitcasts and async copies), and how many of them are fusions;
* ``temp/P`` and ``state/P``: the compiled temporary buffer
  (``memory_analysis().temp_size_in_bytes``) and the optimizer state, over the
  param bytes;
* on TPU, ``cycles/adamw``: the TPU backend's per-kernel ``estimated_cycles``
  (in each kernel's backend config) summed over the step, divided by adamw's;
  and the same passes, fusions and ratio with memory-space assignment off
  (``xla_msa_enable=false``): MSA keeps small values in the on-chip VMEM, so
  its counts can fall below a multi-pass floor, while the no-MSA counts show
  XLA's fusion structure alone, which is what the floors describe.

XLA's ``cost_analysis()["bytes accessed"]`` is not HBM traffic on TPU (it counts
every operand of every fused op: 28 passes for adamw on the ResNet-50 tree),
and on the GPU target ``cost_analysis()`` is None; hence the HLO count.

Setup (the compilers come as wheels; no accelerator needed):

* TPU: ``pip install 'jax[tpu]==0.10.2'`` (libtpu 0.0.42.1) on Python 3.11, or
  ``pip install 'jax[tpu]==0.12.0.1'`` (libtpu 0.0.50.1) on Python 3.12. The
  tool sets ``TPU_ACCELERATOR_TYPE``, ``TPU_WORKER_HOSTNAMES=localhost`` and
  ``ALLOW_MULTIPLE_LIBTPU_LOAD=1`` for the abstract topology.
* GPU: ``pip install 'jax[cuda12-local]==0.12.0.1' 'nvidia-cuda-nvcc-cu12>=12.6.85'``
  on Python 3.12: the CUDA plugin and ptxas with libdevice (which the plugin
  also finds in a CUDA toolkit under ``/usr/local/cuda``); no CUDA runtime
  libraries. The target description
  (an XLA ``GpuTargetConfig`` text proto) is read from the plugin library,
  which embeds one per supported GPU; the tool sets
  ``JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1`` (there is no driver to check).
* Both in one Python 3.12 environment: ``pip install
  'jax[tpu,cuda12-local]==0.12.0.1' 'nvidia-cuda-nvcc-cu12>=12.6.85'``.

The counts are the compiler's: another libtpu or plugin version can fuse and
place buffers differently (the header line names the versions).

Uses only the public API of spherax.
"""

import argparse
import contextlib
import dataclasses
import glob
import importlib.metadata
import json
import math
import mmap
import os
import re
import sys

import jax
import jax.numpy as jnp
import optax

from experiments import benchmark


@dataclasses.dataclass(frozen=True)
class Target:
  platform: str  # "tpu" or "cuda"
  name: str  # TPU topology name, or the GPU's device_description_str
  accelerator_type: str = ""  # TPU_ACCELERATOR_TYPE for the topology


TARGETS = {
    "h100": Target("cuda", "NVIDIA H100 80GB HBM3"),
    "a100": Target("cuda", "NVIDIA A100-SXM4-80GB"),
    "b200": Target("cuda", "NVIDIA B200"),
    "v4": Target("tpu", "v4:2x2x1", "v4-8"),
    "v5e": Target("tpu", "v5e:2x2", "v5litepod-4"),
    "v6e": Target("tpu", "v6e:2x2", "v6e-4"),
}

CASES = {
    "conv": {"kernel": (3, 3, 256, 512)},
    "dense": {"kernel": (4096, 4096)},
    "dense_general": {"kernel": (1024, 16, 64)},
    "resnet50": benchmark.resnet50_shapes(),
}

# The references and the exact passes that the counting must give for them.
REFERENCE_PASSES = {"adamw": 7, "sgd": 5}
_TOLERANCE = 5e-3  # scalars (the step count) add a few bytes

NO_MSA = {"xla_msa_enable": False}

# Optimizers that record every k steps inside a ``lax.cond``: name -> (the bare
# optimizer, k). Per step on average they move ``skip + (passes − skip)/k``
# passes (``passes``: a recording step, the costliest branch; ``skip``: the others).
RECORD_EVERY = {"rv_adamw+track_dynamics(every=10)": ("rv_adamw", 10)}

# Logging every k steps with the static ``record=`` of ``track_dynamics``: two
# programs, the recording one on one step in k and the non-recording one on the
# others. name -> (the non-recording program, the recording one, the bare
# optimizer, k), each program an optimizer of ``experiments.benchmark``. Per step
# on average they move ``off + (on − off)/k`` passes.
RECORD_STATIC = {
    "rv_adamw+track_dynamics(record=)": (
        "rv_adamw+track_dynamics(record=False)", "rv_adamw+track_dynamics", "rv_adamw", 10),
}

# ---------------------------------------------------------------------------
# Counting HBM bytes in optimized HLO text.

# Ops that move no data themselves: their operands and results are counted at
# the instructions that read and write them.
_FREE = frozenset({
    "parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all",
    "opt-barrier", "optimization-barrier", "partition-id", "replica-id", "copy-done",
    "slice-done", "async-done", "async-update", "add-dependency", "domain",
})
# Async DMAs: the shape of their destination in their result tuple
# (``copy-start``: (destination, source, context); ``slice-start``:
# ((source,), destination, context)).
_DMAS = {"copy-start": 0, "slice-start": 1}
# Ops whose cost is that of the computations they run.
_CALLERS = {"call": "to_apply", "async-start": "calls"}

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+)\s*\(.*\)\s*->.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=%]+)\s*=\s*(?P<rest>.+)$")
_ARRAY = re.compile(r"(?P<dtype>[a-z][a-z0-9]*)\[(?P<dims>[^\]]*)\](?:\{(?P<layout>[^}]*)\})?")
_OPERAND = re.compile(r"%([^\s,()%]+)")
_CYCLES = re.compile(r'"estimated_cycles":"?(\d+)')


@dataclasses.dataclass(frozen=True)
class Instruction:
  name: str
  shape: str  # the result shape as printed, e.g. "f32[8,128]{1,0:T(8,128)}" or a tuple
  opcode: str
  operands: tuple[str, ...]
  attributes: str  # everything after the operand list


@dataclasses.dataclass
class HloCost:
  """HBM traffic and kernel counts of one compiled program.

  ``conditionals`` counts the ``conditional`` instructions met; each contributes
  its costliest branch to every field but ``hbm_bytes_skip``, the HBM bytes
  with each conditional's cheapest branch instead.
  """

  hbm_bytes: int = 0
  hbm_bytes_skip: int = 0
  kernels: int = 0
  fusions: int = 0
  estimated_cycles: int = 0
  conditionals: int = 0

  def __iadd__(self, other: "HloCost") -> "HloCost":
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
    return self


def _element_bytes(dtype: str) -> float:
  if dtype == "pred":
    return 1
  bits = re.search(r"\d+", dtype)
  return int(bits.group()) / 8 if bits else 0  # token[], opaque[]: no data


def array_bytes(shape: str, *, hbm_only: bool = True) -> int:
  """Bytes of the arrays in an HLO shape string (a tuple's elements summed).

  With ``hbm_only``, arrays whose layout names a memory space other than 0
  (``S(1)``: TPU VMEM, ``S(2)``, ``S(6)``: semaphores and SMEM, ...) are left
  out. Sizes are logical (no tiling padding).

  >>> array_bytes("(f32[4,8]{1,0:T(8,128)}, bf16[16]{0:T(256)S(1)}, s32[])")
  132
  >>> array_bytes("bf16[16]{0:T(256)S(1)}", hbm_only=False)
  32
  """
  total = 0.0
  for m in _ARRAY.finditer(shape):
    space = re.search(r"S\((\d+)\)", m.group("layout") or "")
    if hbm_only and space and space.group(1) != "0":
      continue
    dims = [int(d.lstrip("<=")) for d in m.group("dims").split(",") if d.strip()]
    total += math.prod(dims) * _element_bytes(m.group("dtype"))
  return int(total)


def _in_hbm(shape: str) -> bool:
  """Whether an array shape string lies in memory space 0 (HBM)."""
  return array_bytes(shape) > 0 or array_bytes(shape, hbm_only=False) == 0


def _tuple_elements(shape: str) -> list[str]:
  """The top-level elements of a tuple shape string."""
  inner, elements, depth, start = shape[1:-1], [], 0, 0
  for i, ch in enumerate(inner):
    depth += ch in "([{"
    depth -= ch in ")]}"
    if ch == "," and depth == 0:
      elements.append(inner[start:i].strip())
      start = i + 1
  return elements + [inner[start:].strip()]


def _balanced(text: str, start: int) -> int:
  """Index just past the bracket group opening at ``text[start]``."""
  depth = 0
  for i in range(start, len(text)):
    if text[i] in "([{":
      depth += 1
    elif text[i] in ")]}":
      depth -= 1
      if depth == 0:
        return i + 1
  raise ValueError(f"unbalanced HLO text: {text[start:start + 80]!r}")


def _parse_instruction(line: str) -> Instruction | None:
  m = _INSTRUCTION.match(line)
  if not m:
    return None
  rest = m.group("rest")
  if rest.startswith("("):
    end = _balanced(rest, 0)
  else:
    end = rest.index(" ")
  shape, rest = rest[:end], rest[end:].lstrip()
  op = re.match(r"([a-z][a-z0-9\-_]*)\(", rest)
  if not op:
    return None
  close = _balanced(rest, op.end() - 1)
  operands = tuple(dict.fromkeys(_OPERAND.findall(rest[op.end():close - 1])))
  return Instruction(m.group("name"), shape, op.group(1), operands, rest[close:])


def parse_hlo(text: str) -> tuple[dict[str, list[Instruction]], str]:
  """The computations of an HLO module's text, by name, and the entry's name."""
  computations, entry, current = {}, None, None
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header and not line.startswith(" "):
      current = header.group("name")
      computations[current] = []
      if line.startswith("ENTRY"):
        entry = current
    elif line.startswith("}"):
      current = None
    elif current is not None:
      instruction = _parse_instruction(line)
      if instruction is not None:
        computations[current].append(instruction)
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  return computations, entry


def _called(attributes: str, key: str) -> list[str]:
  m = re.search(key + r"=\{([^}]*)\}", attributes)
  if m:
    return _OPERAND.findall(m.group(1))
  m = re.search(key + r"=%?([^\s,%]+)", attributes)
  return [m.group(1)] if m else []


def _computation_cost(computations, name) -> HloCost:
  shapes = {ins.name: ins.shape for ins in computations[name]}
  cost = HloCost()
  for ins in computations[name]:
    if ins.opcode in _FREE:
      continue
    if ins.opcode in _CALLERS:
      for callee in _called(ins.attributes, _CALLERS[ins.opcode]):
        cost += _computation_cost(computations, callee)
      continue
    if ins.opcode == "conditional":
      branches = (_called(ins.attributes, "branch_computations")
                  or _called(ins.attributes, "true_computation")
                  + _called(ins.attributes, "false_computation"))
      costs = [_computation_cost(computations, b) for b in branches]
      cheapest = min(c.hbm_bytes_skip for c in costs)
      cost += dataclasses.replace(max(costs, key=lambda c: c.hbm_bytes), hbm_bytes_skip=cheapest)
      cost.conditionals += 1
      continue
    if ins.opcode == "while":
      raise ValueError(f"HLO loop {ins.name}: its trip count is unknown to the byte count")
    if ins.opcode in _DMAS:
      # An async copy of an array or of a slice of it: the bytes it moves, once
      # per HBM side (read from HBM, written to HBM).
      destination = _tuple_elements(ins.shape)[_DMAS[ins.opcode]]
      moved = array_bytes(destination, hbm_only=False)
      moved *= _in_hbm(shapes[ins.operands[0]]) + _in_hbm(destination)
      cost.hbm_bytes += moved
      cost.hbm_bytes_skip += moved
      continue
    touched = [ins.shape] + [shapes[o] for o in ins.operands]
    moved = sum(array_bytes(s) for s in touched)
    cost.hbm_bytes += moved
    cost.hbm_bytes_skip += moved
    if any(m.group("dims") for s in touched for m in _ARRAY.finditer(s)):
      cost.kernels += 1
      cost.fusions += ins.opcode == "fusion"
    cycles = _CYCLES.search(ins.attributes)
    cost.estimated_cycles += int(cycles.group(1)) if cycles else 0
  return cost


def hlo_cost(text: str) -> HloCost:
  """HBM bytes, kernels, fusions and estimated cycles of optimized HLO text.

  Walks the entry computation's instructions (and those of the computations
  that ``call``, ``async-start`` and ``conditional`` run, the costliest branch
  of a conditional, and the cheapest one in ``hbm_bytes_skip``): each instruction that runs reads its operands and writes
  its result, and the bytes of those in HBM are added up (an operand read
  twice counts once). Memory spaces other than 0 (TPU VMEM, SMEM, semaphores)
  are not HBM; an async copy counts its HBM side(s) once.

  >>> text = '''
  ... ENTRY %main (x: f32[256], g: f32[256]) -> f32[256] {
  ...   %x = f32[256]{0} parameter(0)
  ...   %g = f32[256]{0} parameter(1)
  ...   %n = f32[]{:S(1)} fusion(%x, %g), kind=kInput, calls=%reduce
  ...   ROOT %y = f32[256]{0} fusion(%x, %g, %n), kind=kLoop, calls=%update
  ... }'''
  >>> hlo_cost(text)
  HloCost(hbm_bytes=5120, hbm_bytes_skip=5120, kernels=2, fusions=2, estimated_cycles=0, conditionals=0)
  """
  computations, entry = parse_hlo(text)
  return _computation_cost(computations, entry)


# ---------------------------------------------------------------------------
# Compiling for a target without a device.


def _configure(target: Target) -> None:
  """Environment that the compilers read when their backend starts."""
  if target.platform == "tpu":
    os.environ["TPU_ACCELERATOR_TYPE"] = target.accelerator_type
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  else:
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")


def gpu_target_config(device: str) -> str:
  """The ``GpuTargetConfig`` text proto of ``device`` embedded in the CUDA plugin."""
  try:
    import jax_plugins.xla_cuda12 as plugin  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError(
        "the GPU targets need the jax CUDA plugin: pip install "
        "'jax[cuda12-local]==0.12.0.1' 'nvidia-cuda-nvcc-cu12>=12.6.85' (Python 3.12)") from e
  libraries = glob.glob(os.path.join(os.path.dirname(plugin.__file__), "xla_cuda_plugin*.so"))
  key = f'\ndevice_description_str: "{device}"\n'.encode()
  for path in libraries:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
      i = mm.find(key)
      if i >= 0:
        return mm[mm.rfind(b"\0", 0, i) + 1:mm.find(b"\0", i)].decode()
  raise RuntimeError(f"no GpuTargetConfig for {device!r} in {libraries}")


def topology_devices(target: Target) -> list:
  """The abstract devices of ``target`` (the first one is compiled for)."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  _configure(target)
  if target.platform == "tpu":
    try:
      topology = topologies.get_topology_desc(topology_name=target.name, platform="tpu")
    except Exception as e:  # pylint: disable=broad-except
      raise RuntimeError(
          f"cannot build the TPU topology {target.name} ({e}); the TPU targets need "
          "pip install 'jax[tpu]==0.10.2' (Python 3.11) or 'jax[tpu]==0.12.0.1' "
          "(Python 3.12)") from e
  else:
    topology = topologies.get_topology_desc(
        platform="cuda", target_config=gpu_target_config(target.name), topology="1x1x1")
  return list(topology.devices)


@dataclasses.dataclass
class StepCost:
  """One optimizer's compiled step on one case (``passes_skip``: the passes
  with each ``lax.cond``'s cheapest branch, :class:`HloCost`)."""

  passes: float
  kernels: int
  fusions: int
  estimated_cycles: int
  temp_bytes: int
  state_bytes: int
  conditionals: int
  passes_skip: float


def lower_step(opt, shapes, device) -> tuple[jax.stages.Lowered, int, int]:
  """Lowers ``opt``'s donated step on float32 ``shapes`` for ``device`` (traced
  once, compiled per set of compiler options by :func:`cost_of_lowered`); returns
  the lowering, the param bytes and the state bytes."""
  sharding = jax.sharding.NamedSharding(
      jax.sharding.Mesh([device], ("d",)), jax.sharding.PartitionSpec())
  abstract = lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding)
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32, sharding=sharding),
                        shapes, is_leaf=lambda s: isinstance(s, tuple))
  state = jax.tree.map(abstract, jax.eval_shape(opt.init, params))

  def step(p, s, g):
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s

  # Pallas' GPU lowering reads the target device from the abstract mesh.
  context = (jax.sharding.use_abstract_mesh(sharding.mesh.abstract_mesh)
             if device.platform == "gpu" else contextlib.nullcontext())
  with context:
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params)
  return lowered, benchmark.nbytes(params), benchmark.nbytes(state)


def cost_of_lowered(lowered, param_bytes, state_bytes, compiler_options=None,
                  dump=None) -> StepCost:
  """Compiles a :func:`lower_step` lowering with ``compiler_options`` and
  counts its :class:`StepCost` (writing the optimized HLO to ``dump``)."""
  compiled = lowered.compile(compiler_options or None)
  text = compiled.as_text()
  if dump:
    with open(dump, "w") as f:
      f.write(text)
  cost = hlo_cost(text)
  memory = compiled.memory_analysis()
  return StepCost(
      passes=cost.hbm_bytes / param_bytes, kernels=cost.kernels, fusions=cost.fusions,
      estimated_cycles=cost.estimated_cycles,
      temp_bytes=int(getattr(memory, "temp_size_in_bytes", 0) or 0),
      state_bytes=state_bytes, conditionals=cost.conditionals,
      passes_skip=cost.hbm_bytes_skip / param_bytes)


def step_cost(opt, shapes, device, compiler_options=None, dump=None) -> tuple[StepCost, int]:
  """Compiles ``opt``'s donated step on float32 ``shapes`` for ``device``;
  returns its :class:`StepCost` and the param bytes."""
  lowered, param_bytes, state_bytes = lower_step(opt, shapes, device)
  return cost_of_lowered(lowered, param_bytes, state_bytes, compiler_options, dump), param_bytes


def optimizers() -> dict:
  """The compiled optimizers: the references first, then the benchmark's others."""
  names = ["adamw", "sgd"] + [n for n in benchmark.OPTIMIZERS if n not in ("adamw", "sgd")]
  return {name: benchmark.OPTIMIZERS[name][0] for name in names}


def check_references(case: str, mode: str, costs: dict[str, StepCost]) -> None:
  """Raises unless adamw and sgd come out at exactly their known passes."""
  wrong = {name: costs[name].passes for name, want in REFERENCE_PASSES.items()
           if abs(costs[name].passes - want) > _TOLERANCE}
  if wrong:
    raise RuntimeError(
        f"HBM byte count failed its check on {case} ({mode}): "
        + ", ".join(f"{n} = {p:.3f} passes, expected {REFERENCE_PASSES[n]}"
                    for n, p in wrong.items())
        + "; the HLO parser does not match this compiler's output")


def measure(target_name: str, cases: list[str], names: list[str], dump_dir=None,
            on_case=None) -> dict:
  """``{case: {mode: {optimizer: StepCost fields}}}`` for ``target_name``; modes
  are ``"default"`` and, on TPU, ``"no_msa"``. ``on_case(results)`` is called
  after each case."""
  target = TARGETS[target_name]
  device = topology_devices(target)[0]
  modes = {"default": None}
  if target.platform == "tpu":
    modes["no_msa"] = NO_MSA
  factories = optimizers()
  results = {}
  for case in cases:
    costs = {mode: {} for mode in modes}
    for name in names:
      # One trace and lowering per optimizer and case, compiled once per mode.
      lowered, param_bytes, state_bytes = lower_step(factories[name](), CASES[case], device)
      for mode, options in modes.items():
        dump = None
        if dump_dir:
          safe = re.sub(r"[^\w.]+", "_", name).strip("_")
          dump = os.path.join(dump_dir, f"{target_name}.{case}.{mode}.{safe}.hlo")
        costs[mode][name] = cost_of_lowered(lowered, param_bytes, state_bytes, options, dump)
        print(f"  {case} {mode} {name}: {costs[mode][name].passes:.2f} passes",
              file=sys.stderr, flush=True)
        if name == "sgd":
          check_references(case, mode, costs[mode])
    results[case] = {mode: {n: {**dataclasses.asdict(c), "param_bytes": param_bytes}
                            for n, c in mode_costs.items()}
                     for mode, mode_costs in costs.items()}
    if on_case:
      on_case(results)
  return results


def _fmt(x: float) -> str:
  return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def print_tables(target_name: str, results: dict) -> None:
  tpu = TARGETS[target_name].platform == "tpu"
  floors = benchmark.MIN_PASSES
  for case, modes in results.items():
    base = modes["default"]
    param_bytes = next(iter(base.values()))["param_bytes"]
    print(f"\n### {target_name}: {case} ({param_bytes / 2**20:.1f} MiB of float32 params)\n")
    header = ["optimizer", "passes", "/adamw", "floor", "/floor", "fusions", "kernels",
              "temp/P", "state/P"]
    if tpu:
      header += ["cycles/adamw", "no-MSA passes", "no-MSA /floor", "no-MSA fusions"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, c in base.items():
      floor = floors[name][0]
      row = [name + (" (cond)" if c["conditionals"] else ""), _fmt(c["passes"]),
             f"{c['passes'] / base['adamw']['passes']:.2f}", str(floor),
             f"{c['passes'] / floor:.2f}", str(c["fusions"]), str(c["kernels"]),
             f"{c['temp_bytes'] / param_bytes:.2%}", f"{c['state_bytes'] / param_bytes:.3f}"]
      if tpu:
        n = modes["no_msa"][name]
        cycles = base["adamw"]["estimated_cycles"]
        row += [f"{c['estimated_cycles'] / cycles:.2f}" if cycles else "",
                _fmt(n["passes"]), f"{n['passes'] / floor:.2f}", str(n["fusions"])]
      print("| " + " | ".join(row) + " |")
  print(f"\n### {target_name}: HBM passes per step" + (" (no-MSA in brackets)" if tpu else "")
        + "\n")
  print("| optimizer | floor | " + " | ".join(results) + " |")
  print("|---|---|" + "---|" * len(results))
  for name in next(iter(results.values()))["default"]:
    cells = []
    for modes in results.values():
      cell = _fmt(modes["default"][name]["passes"])
      if tpu:
        cell += f" ({_fmt(modes['no_msa'][name]['passes'])})"
      cells.append(cell)
    print(f"| {name} | {floors[name][0]} | " + " | ".join(cells) + " |")
  if any(c["conditionals"] for modes in results.values() for c in modes["default"].values()):
    print("\n(cond): the step has a `lax.cond`; both branches are in the HLO, and the tables "
          "count the costliest one.")
  print_averages(results)
  print("\nFloors (full-size arrays read + written per step):")
  for name in next(iter(results.values()))["default"]:
    print(f"- {name}: {floors[name][0]} — {floors[name][1]}")


def averages(results: dict) -> list[tuple[str, str, str, float, float, float, float]]:
  """Per :data:`RECORD_EVERY` and :data:`RECORD_STATIC` entry, case and mode
  with its programs and bare optimizer measured: ``(name, case, mode, recording
  passes, other steps' passes, the per-step average, average / bare passes)``.
  A :data:`RECORD_STATIC` row is named ``"<name>, k = <k>"``; its recording
  step is the ``on`` program's passes and its other steps the ``off`` one's.

  >>> row = lambda p, s: {"passes": p, "passes_skip": s}
  >>> run = {"conv": {"default": {"rv_adamw": row(10.0, 10.0),
  ...                             "rv_adamw+track_dynamics(every=10)": row(16.0, 10.0)}}}
  >>> averages(run)
  [('rv_adamw+track_dynamics(every=10)', 'conv', 'default', 16.0, 10.0, 10.6, 1.06)]
  """
  out = []

  def row(name, case, mode, on, off, every, bare):
    mean = off + (on - off) / every
    out.append((name, case, mode, on, off, mean, mean / bare))

  for case, modes in results.items():
    for mode, costs in modes.items():
      for name, (bare, every) in RECORD_EVERY.items():
        if name in costs and bare in costs:
          c = costs[name]
          skip = c.get("passes_skip", c["passes"])  # absent from older --json files
          row(name, case, mode, c["passes"], skip, every, costs[bare]["passes"])
      for name, (off, on, bare, every) in RECORD_STATIC.items():
        if off in costs and on in costs and bare in costs:
          row(f"{name}, k = {every}", case, mode, costs[on]["passes"], costs[off]["passes"],
              every, costs[bare]["passes"])
  return out


def print_averages(results: dict) -> None:
  rows = averages(results)
  if not rows:
    return
  print("\n### Recording every k steps: HBM passes per step on average\n")
  print("| optimizer | case | mode | recording step | other steps | average | /bare |")
  print("|---|---|---|---|---|---|---|")
  for name, case, mode, passes, skip, mean, ratio in rows:
    print(f"| {name} | {case} | {mode} | {_fmt(passes)} | {_fmt(skip)} | {_fmt(mean)} | "
          f"{ratio:.3f} |")
  print("\n(every=k): one program, a `lax.cond` whose branches are the recording step and "
        "the others; (record=): two programs, `record=True` on one step in k and "
        "`record=False` on the others.")


def compiler_version(target: Target) -> str:
  """The version of the wheel that brings ``target``'s compiler."""
  package = "libtpu" if target.platform == "tpu" else "jax-cuda12-plugin"
  try:
    return f"{package} {importlib.metadata.version(package)}"
  except importlib.metadata.PackageNotFoundError:
    return f"{package} not installed"


def print_comparison(results: dict, before: dict) -> None:
  """Per mode, the passes of each optimizer and case as ``before → now``, for the
  optimizers and cases that both runs have."""
  for mode in next(iter(results.values())):
    cases = [c for c in results if c in before and mode in before[c]]
    if not cases:
      continue
    print(f"\n### HBM passes, before → now ({mode})\n")
    print("| optimizer | floor | " + " | ".join(cases) + " |")
    print("|---|---|" + "---|" * len(cases))
    for name in results[cases[0]][mode]:
      if all(name in before[c][mode] for c in cases):
        cells = [f"{_fmt(before[c][mode][name]['passes'])} → "
                 f"{_fmt(results[c][mode][name]['passes'])}" for c in cases]
        print(f"| {name} | {benchmark.MIN_PASSES[name][0]} | " + " | ".join(cells) + " |")


def load_runs(paths: list[str], target_name: str) -> tuple[dict, str]:
  """Merges the results of ``--json`` files of one target and compiler version
  (runs split by ``--cases`` or ``--only``), in :func:`optimizers`' order."""
  runs = []
  for path in paths:
    with open(path) as f:
      runs.append(json.load(f))
  for path, run in zip(paths, runs):
    if run["target"] != target_name or run["versions"] != runs[0]["versions"]:
      raise SystemExit(f"{path} is a run for {run['target']} with {run['versions']}, not "
                       f"{target_name} with {runs[0]['versions']}")
  merged = {}
  for case in CASES:
    for run in runs:
      for mode, costs in run["results"].get(case, {}).items():
        merged.setdefault(case, {}).setdefault(mode, {}).update(costs)
  order = list(optimizers())
  for modes in merged.values():
    for mode, costs in modes.items():
      modes[mode] = {n: costs[n] for n in order if n in costs}
  return merged, runs[0]["versions"]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--target", required=True, choices=sorted(TARGETS))
  parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
  parser.add_argument("--only", nargs="*", default=None,
                      help="optimizer names (the references adamw and sgd always run)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  parser.add_argument("--dump", default=None, help="write each optimized HLO into this folder")
  parser.add_argument("--before", default=None,
                      help="a --json file of an earlier run: also print before → now passes")
  parser.add_argument("--load", nargs="+", default=None,
                      help="print the tables of these --json files (merged) instead of compiling")
  args = parser.parse_args(argv)
  names = list(optimizers())
  if args.only:
    unknown = set(args.only) - set(names)
    if unknown:
      parser.error(f"unknown optimizers {sorted(unknown)}; choose from {names}")
    names = [n for n in names if n in REFERENCE_PASSES or n in args.only]

  if args.load:
    results, versions = load_runs(args.load, args.target)
  else:
    if args.dump:
      os.makedirs(args.dump, exist_ok=True)
    # The step is traced on the host; the target's compiler comes with its topology, so
    # no backend needs to start (a TPU or CUDA runtime would look for a device).
    jax.config.update("jax_platforms", "cpu")
    versions = f"jax {jax.__version__}, {compiler_version(TARGETS[args.target])}"
    print(f"compiling for {args.target} ({TARGETS[args.target].name}) with {versions}",
          file=sys.stderr, flush=True)

    def save(results):  # after each case, so that a long run keeps what it measured
      if args.json:
        with open(args.json, "w") as f:
          json.dump({"target": args.target, "versions": versions, "results": results}, f)

    results = measure(args.target, args.cases, names, args.dump, on_case=save)
  print(f"Compiled for {args.target} ({TARGETS[args.target].name}) with {versions}.")
  print_tables(args.target, results)
  if args.before:
    with open(args.before) as f:
      before = json.load(f)
    if before["target"] != args.target:
      raise SystemExit(f"--before is a run for {before['target']}, not {args.target}")
    print(f"\nBefore: {before['versions']}.")
    print_comparison(results, before["results"])


if __name__ == "__main__":
  main()
