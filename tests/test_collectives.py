"""The collective budget: a grouped optimizer moves only per-group statistics (issue 12 point 2).

For every optimizer of the registry in ``test_optax_contract.py``, on the 8 host
CPU devices of the root ``conftest.py``, with ``AxisType.Explicit`` meshes (what
``jax.make_mesh`` gives) set by ``jax.set_mesh``, two pytrees of tiny Flax-layout
kernels (default groups: one per output unit, the last axis):

* ``"1d"``, a mesh ``('x',) = (8,)``: a conv kernel sharded along its output axis
  (its reductions stay local) and a dense kernel sharded along a reduced axis
  (each group spans the devices: its sums need an all-reduce);
* ``"fsdp"``, a mesh ``(data, model) = (2, 4)``: kernels sharded FSDP-style,
  the input axis over ``data`` and the output axis over ``model``.

The jitted step ``(params, state, grads) -> (params, state)`` is compiled once
per optimizer and tree. Every collective of the compiled HLO (all-reduce,
all-gather, reduce-scatter, all-to-all, collective-permute, their async starts)
must have operands and results of at most ``STATS_PER_GROUP`` × (number of
groups of the largest leaf) elements — a few per-group statistics, far below
any kernel (the smallest holds 512 elements; the budget is 128). Two steps on
the mesh equal two steps on one device (relative ≤ 1e-6 per leaf), keep the
params' shardings, and the state's types (shape, dtype, sharding) are those of
``init`` (the step compiled for ``init``'s state runs on its own output).

:func:`largest_collective` is also what the lead's before/after table uses
(``python -m pytest tests/test_collectives.py -s`` prints each optimizer's
largest collective).
"""

import importlib.util
import math
import pathlib
import re

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

_spec = importlib.util.spec_from_file_location(
    "spherax_test_registry", pathlib.Path(__file__).with_name("test_optax_contract.py")
)
contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contract)

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (the root conftest sets XLA_FLAGS)"
)

# tree -> (mesh shape, axis names, {leaf: (shape, spec)})
LAYOUTS = {
    "1d": ((8,), ("x",), {
        "conv_out": ((3, 3, 4, 16), P(None, None, None, "x")),
        "dense_in": ((64, 16), P("x", None)),
    }),
    "fsdp": ((2, 4), ("data", "model"), {
        "conv": ((3, 3, 8, 16), P(None, None, "data", "model")),
        "dense": ((32, 16), P("data", "model")),
    }),
}
NUM_GROUPS = 16  # every kernel above has 16 output units
STATS_PER_GROUP = 8
NUM_STEPS = 2
_COLLECTIVE = re.compile(
    r"\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(-start)?\(")
_SHAPE = re.compile(r"\b(?:pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")


def largest_collective(hlo: str) -> tuple[int, str]:
  """The largest operand or result (elements) of any collective in ``hlo``, and its line."""
  best = (0, "")
  for line in hlo.splitlines():
    if not _COLLECTIVE.search(line):
      continue
    sizes = [math.prod(int(d) for d in dims.split(",") if d) for dims in _SHAPE.findall(line)]
    if sizes and max(sizes) > best[0]:
      best = (max(sizes), line.strip())
  return best


def _step(opt):
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def _run(step, params, state, grads):
  for g in grads:
    params, state = step(params, state, g)
  return params, state


def _types(tree):
  return jax.tree.map(jax.typeof, tree)


@pytest.mark.parametrize("tree", sorted(LAYOUTS))
@pytest.mark.parametrize("name", contract.NAMES)
def test_collectives_move_only_statistics(name, tree):
  mesh_shape, axes, leaves = LAYOUTS[tree]
  shapes = {k: s for k, (s, _) in leaves.items()}
  params = contract.tree(shapes, 0)
  grads = [contract.tree(shapes, 10 + t) for t in range(NUM_STEPS)]
  opt = contract.make(name)
  step = jax.jit(_step(opt))

  one = jax.devices()[0]
  put_one = lambda t: jax.device_put(t, one)
  want, _ = _run(step, put_one(params), opt.init(put_one(params)), map(put_one, grads))

  mesh = jax.make_mesh(mesh_shape, axes, axis_types=(AxisType.Explicit,) * len(axes))
  shardings = {k: NamedSharding(mesh, spec) for k, (_, spec) in leaves.items()}
  put = lambda t: {k: jax.device_put(v, shardings[k]) for k, v in t.items()}
  with jax.set_mesh(mesh):
    params_s = put(params)
    state0 = opt.init(params_s)
    compiled = step.lower(params_s, state0, put(grads[0])).compile()
    size, line = largest_collective(compiled.as_text())
    print(f"\n{name} {tree}: largest collective {size} elements: {line[:160]}")
    assert size <= STATS_PER_GROUP * NUM_GROUPS, (
        f"{name} on {tree}: a collective moves {size} elements: {line}")
    got, state = _run(compiled, params_s, state0, map(put, grads))

  contract.assert_trees_close(got, want, 1e-6, f"{name} on {tree}")
  for k, leaf in got.items():
    assert leaf.sharding.is_equivalent_to(shardings[k], leaf.ndim), (
        f"{name}: params '{k}' resharded to {leaf.sharding}")
  assert _types(state) == _types(state0), f"{name}: the state's types changed in update"
