"""Data parallel × FSDP: the sharding rule, and one step equal to data parallelism."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from experiments import configs
from experiments import train as train_lib
from experiments.configs import fsdp


@pytest.mark.parametrize("shape, size, want", [
    ((3, 3, 256, 512), 8, P(None, None, None, "fsdp")),   # conv: the output axis
    ((7, 7, 3, 64), 8, P()),                             # stem: 9408 < 2**14 elements
    ((2048, 1000), 8, P("fsdp", None)),                  # head: the larger axis
    ((192, 576), 8, P(None, "fsdp")),                    # DeiT qkv
    ((1, 197, 192), 8, P(None, None, "fsdp")),           # 197 is not divisible
    ((1, 1, 192), 8, P()),                               # cls token: too small
    ((512,), 8, P()),                                    # BN scale: too small
    ((3, 5, 7, 9 * 11 * 13), 8, P()),                    # no axis divisible
    ((64, 64, 8, 8), 4, P("fsdp", None, None, None)),    # ties: the first axis
    ((3, 3, 256, 512), 1, P()),                          # no fsdp axis
    ((), 8, P()),
])
def test_leaf_rule(shape, size, want):
  assert fsdp.leaf_spec(shape, size, min_size=2**14) == want


def test_mesh_and_config():
  mesh = fsdp.make_mesh(8, fsdp=4)
  assert mesh.axis_names == ("data", "fsdp") and dict(mesh.shape) == {"data": 2, "fsdp": 4}
  assert fsdp.make_mesh(8).axis_names == ("data",)
  assert fsdp.batch_sharding(mesh).spec == P(("data", "fsdp"))
  with pytest.raises(ValueError, match="dividing the 8 devices"):
    fsdp.make_mesh(8, fsdp=3)
  names = [configs.run_id(c) for c in configs.runs("fsdp")]
  assert names == ["resnet50/fsdp8/rv_adamw/seed0", "deit_tiny/fsdp8/rv_adamw/seed0"]
  for cfg in configs.runs("fsdp", quick=True):
    assert (cfg.dataset, cfg.fsdp, cfg.batch_size % 8) == ("digits", 2, 0)


class _Net(nnx.Module):
  """conv → BN → ReLU → conv → BN → mean pool → dense, leaves of 72–288 elements."""

  def __init__(self):
    rngs = nnx.Rngs(0)
    self.conv1 = nnx.Conv(2, 8, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(8, rngs=rngs)
    self.conv2 = nnx.Conv(8, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(4, rngs=rngs)
    self.head = nnx.Linear(4, 6, rngs=rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    return self.head(jax.nn.relu(self.bn2(self.conv2(h))).mean((1, 2)))


def test_fsdp_step_equals_data_parallel():
  rng = np.random.default_rng(0)
  batches = [{"image": rng.normal(size=(16, 5, 5, 2)).astype(np.float32),
              "label": rng.integers(0, 6, size=16).astype(np.int32)} for _ in range(2)]
  sched = optax.constant_schedule(0.1)
  results = {}
  for size in (1, 4):
    mesh = train_lib.make_mesh(8, fsdp=size)
    tx = optax.adamw(sched, weight_decay=0.1)
    graphdef, _, state, shardings = train_lib._init_state(_Net(), tx, mesh, min_size=64)
    step = train_lib.make_train_step(graphdef, tx, sched, mesh=mesh, shardings=shardings)
    for batch in batches:
      state, metrics = step(state, train_lib._global_batch(batch, mesh))
    results[size] = (state, float(metrics["loss"]))
  (dp, dp_loss), (sharded, fsdp_loss) = results[1], results[4]
  # the FSDP run really is sharded: kernels, their Adam moments, kept through the step
  assert sharded["params"]["conv1"]["kernel"].sharding.spec == P(None, None, None, "fsdp")
  assert sharded["params"]["conv2"]["kernel"].sharding.spec == P(None, None, "fsdp", None)
  mu = optax.tree.get(sharded["opt_state"], "mu")
  assert mu["conv1"]["kernel"].sharding.spec == P(None, None, None, "fsdp")
  assert sharded["params"]["head"]["kernel"].sharding.spec == P()  # 24 < 64 elements
  assert dp["params"]["conv1"]["kernel"].sharding.spec == P()
  np.testing.assert_allclose(fsdp_loss, dp_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(jax.device_get(sharded)), jax.tree.leaves(jax.device_get(dp))):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=1e-5, atol=1e-7)
  assert int(sharded["step"]) == 2 and not np.allclose(
      jax.device_get(sharded["params"]["conv1"]["kernel"]),
      np.asarray(_Net().conv1.kernel[...]))
