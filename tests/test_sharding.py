"""Every spherax optimizer under SPMD sharding (issue: acceptance 3).

The root ``conftest.py`` gives 8 host CPU devices. The params pytree holds a
leaf of each kind, sharded over a 1-d mesh ``'x'`` of the 8 devices:

* ``conv_out`` ``(3, 3, 8, 8)`` and ``dense_out`` ``(4, 8)``: sharded along the
  output axis (the axis that indexes the groups; reductions stay local);
* ``conv_in`` ``(1, 1, 8, 16)`` and ``dense_in`` ``(16, 4)``: sharded along a
  reduced axis (every group spans the devices; reductions need a collective);
* ``bias`` ``(8,)``: sharded (it is not grouped).

For every optimizer, three jitted steps on the sharded tree equal three steps
on one device (relative error ≤ 1e-6 per leaf), and:

* the new params keep exactly the sharding of the params they came from;
* every state leaf with a param's shape (moments, buffers) is sharded like that
  param;
* every per-group statistic (``layout.stat_shape``) is either replicated or, for
  a leaf sharded along its output axis, sharded along that same axis — the
  sensible choices: a statistic reduced over a sharded axis is the result of an
  all-reduce and lives on every device, one over local axes may stay local;
* the state's shardings are the same after the second and the third step (no
  resharding, no recompilation in a training loop).

The optimizer registry is the one of ``test_optax_contract.py``.
"""

import importlib.util
import pathlib

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

_spec = importlib.util.spec_from_file_location(
    "spherax_test_registry", pathlib.Path(__file__).with_name("test_optax_contract.py")
)
contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contract)

SHAPES = {
    "conv_out": (3, 3, 8, 8),
    "conv_in": (1, 1, 8, 16),
    "dense_out": (4, 8),
    "dense_in": (16, 4),
    "bias": (8,),
}
SPECS = {
    "conv_out": P(None, None, None, "x"),
    "conv_in": P(None, None, "x", None),
    "dense_out": P(None, "x"),
    "dense_in": P("x", None),
    "bias": P("x"),
}
# The sharding a per-group statistic may have besides replication.
STAT_SPECS = {
    (1, 1, 1, 8): P(None, None, None, "x"),
    (1, 1, 1, 16): None,
    (1, 8): P(None, "x"),
    (1, 4): None,
}
NUM_STEPS = 3

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (the root conftest sets XLA_FLAGS)"
)


def _mesh() -> Mesh:
  return Mesh(np.array(jax.devices()[:8]), ("x",))


def _run(opt, params, grads):
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
      *opt.update(g, s, p)))
  state = jax.jit(opt.init)(params)
  out = []
  for g in grads:
    params, state = step(params, state, g)
    out.append((params, state))
  return out


@pytest.mark.parametrize("name", contract.NAMES)
def test_sharded_equals_single_device(name):
  opt = contract.make(name)
  mesh = _mesh()
  shardings = {k: NamedSharding(mesh, SPECS[k]) for k in SHAPES}
  params = contract.tree(SHAPES, 0)
  grads = [contract.tree(SHAPES, 10 + t) for t in range(NUM_STEPS)]

  one = jax.devices()[0]
  single = _run(opt, jax.device_put(params, one), [jax.device_put(g, one) for g in grads])
  put = lambda t: {k: jax.device_put(v, shardings[k]) for k, v in t.items()}
  sharded = _run(opt, put(params), [put(g) for g in grads])

  for t, ((p1, _), (ps, _)) in enumerate(zip(single, sharded)):
    contract.assert_trees_close(ps, p1, 1e-6, f"{name} step {t}")
    for k, leaf in ps.items():
      assert leaf.sharding.is_equivalent_to(shardings[k], leaf.ndim), (
          f"{name} step {t}: params '{k}' resharded to {leaf.sharding}"
      )

  by_shape = {SHAPES[k]: shardings[k] for k in SHAPES}
  state2, state3 = sharded[-2][1], sharded[-1][1]
  for a, b in zip(jax.tree.leaves(state2), jax.tree.leaves(state3), strict=True):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (
        f"{name}: a state leaf {a.shape} changed sharding {a.sharding} -> {b.sharding}"
    )
    if b.shape in by_shape:
      assert b.sharding.is_equivalent_to(by_shape[b.shape], b.ndim), (
          f"{name}: state leaf {b.shape} sharded {b.sharding}, not like its param"
      )
    elif b.shape in STAT_SPECS:
      allowed = STAT_SPECS[b.shape]
      ok = b.sharding.is_fully_replicated or (
          allowed is not None and b.sharding.is_equivalent_to(NamedSharding(mesh, allowed), b.ndim)
      )
      assert ok, f"{name}: per-group statistic {b.shape} sharded {b.sharding}"
  contract.assert_finite(state3)
