"""experiments.benchmark: its pytree, its tables and its arguments (no timing here)."""

import math
import re

import jax
import pytest

from experiments import benchmark


def test_resnet50_pytree_has_torchvisions_parameter_count():
  shapes = jax.tree.leaves(benchmark.resnet50_shapes(), is_leaf=lambda s: isinstance(s, tuple))
  assert sum(math.prod(s) for s in shapes) == 25_557_032  # torchvision resnet50
  assert len(shapes) == 161


def test_every_optimizer_has_a_pass_count_and_builds():
  assert set(benchmark.MIN_PASSES) == set(benchmark.OPTIMIZERS)
  for name, (factory, target) in benchmark.OPTIMIZERS.items():
    assert callable(factory().update), name
    assert target is None or 1 <= target <= 1.5, name


def test_combine_takes_medians_and_the_ratio_range():
  runs = [{"adamw": {"ratio": 1.0, "ms": m}, "x": {"ratio": r, "ms": 2 * m}}
          for r, m in ((1.4, 20.0), (1.1, 24.0), (1.2, 18.0))]
  out = benchmark.combine(runs)
  assert out["x"] == {"ratio": 1.2, "ms": 40.0, "ratio_min": 1.1, "ratio_max": 1.4}
  assert out["adamw"]["ms"] == 20.0


def test_unknown_optimizer_names_are_rejected():
  with pytest.raises(SystemExit):
    benchmark.main(["--only", "adamx"])


def _derived_passes(name):
  """The passes that a floor's derivation string adds up to: the numbers in its
  leading "(r + w) + (r + w)" (or "(r + w)"), or the floor of the optimizer it
  names ("as <name> ...")."""
  derivation = benchmark.MIN_PASSES[name][1]
  if derivation.startswith("as "):
    other = derivation[3:].split(":")[0].split(" (")[0].split(" on ")[0].split(" with ")[0]
    return benchmark.MIN_PASSES[other][0]
  terms = re.match(r"^(\(\d+ \+ \d+\)(?: \+ \(\d+ \+ \d+\))?):", derivation)
  assert terms, (name, derivation)
  return sum(int(n) for n in re.findall(r"\d+", terms.group(1)))


def test_every_floor_is_the_sum_its_derivation_gives():
  for name, (passes, _) in benchmark.MIN_PASSES.items():
    assert _derived_passes(name) == passes, name
  # The in-pass moment writes (issue 13): RV-AdamW 10 and RV-SGDM 7, AdamP 10.
  assert [benchmark.MIN_PASSES[n][0] for n in ("rv_adamw", "rv_sgdm", "adamp")] == [10, 7, 10]


def test_the_record_false_entry_steps_like_rv_adamw_and_records_nothing():
  import jax.numpy as jnp
  import numpy as np

  from spherax import diagnostics
  params = {"w": jnp.arange(1.0, 13.0).reshape(3, 4)}
  grads = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
  off = benchmark.OPTIMIZERS["rv_adamw+track_dynamics(record=False)"][0]()
  bare = benchmark.OPTIMIZERS["rv_adamw"][0]()
  updates, state = off.update(grads, off.init(params), params)
  want, _ = bare.update(grads, bare.init(params), params)
  np.testing.assert_array_equal(updates["w"], want["w"])
  assert isinstance(state, diagnostics.TrackDynamicsState) and int(state.count) == 1
  assert set(diagnostics.summaries(state).values()) == {0.0}  # nothing recorded
