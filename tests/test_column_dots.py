"""The one-pass dot products of geometry.dots(one_pass=True): the Pallas kernel in
its interpreter against NumPy, its tiling, and the dispatch (the plain sums off
the GPU; the kernel's branch, interpreted, equal to them to rounding)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import _column_dots, geometry, groups

PAIRS = [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]


@pytest.fixture(autouse=True)
def _fresh_traces():
  """Jitted per-leaf rules (the rotational wrapper's) keep their traces: none traced with
  the patched CUDA branch of :func:`_gpu_branch` may outlive its test, nor be reused by it."""
  jax.clear_caches()
  yield
  jax.clear_caches()


@pytest.mark.parametrize("shape", [(576, 64), (4096, 32), (64, 48), (64, 40)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernel_sums_every_pair_per_column(shape, dtype):
  if _column_dots.tiling(shape, len(PAIRS), jnp.dtype(dtype).itemsize) is None:
    pytest.skip("8-column tiles are for 4-byte operands (a 32-byte sector per row)")
  rng = np.random.default_rng(0)
  arrays = [jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3)]
  got = _column_dots.column_dots(arrays, PAIRS, jnp.float32, interpret=True)
  wide = [np.asarray(a, np.float64) for a in arrays]
  want = np.stack([(wide[i] * wide[j]).sum(0) for i, j in PAIRS])
  assert got.shape == (len(PAIRS), shape[1]) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(shape[0]))


@pytest.mark.parametrize("shape", [(2304, 512), (4096, 4096), (16384, 64), (576, 64), (64, 48),
                                   (2048, 1000)])
def test_tiling_divides_the_operand_and_bounds_the_partial_sums(shape):
  rows, cols = shape
  block_c, block_k, splits = _column_dots.tiling(shape, len(PAIRS))
  for block in (block_c, block_k, splits):
    assert block & (block - 1) == 0  # powers of two
  assert cols % block_c == 0 and rows % (block_k * splits) == 0
  assert (cols // block_c) * splits <= 512 or splits == 1
  assert splits * len(PAIRS) * 128 <= rows or splits == 1  # partial sums < 1% of an operand


def test_tiles_span_a_sector_per_row():
  """Eight float32 columns are one 32-byte sector; bfloat16 tiles need sixteen."""
  assert _column_dots.tiling((2048, 1000), 3)[0] == 8
  assert _column_dots.tiling((2048, 1000), 3, itemsize=2) is None
  assert _column_dots.tiling((2048, 1008), 3, itemsize=2)[0] == 16


@pytest.mark.parametrize("shape", [(147, 64), (576, 1004), (9, 16), (64,), (4, 4, 4)])
def test_no_tiling_where_the_tiles_would_not_divide(shape):
  assert _column_dots.tiling(shape, 3) is None
  with pytest.raises(ValueError, match="tiling"):
    if len(shape) == 2:
      _column_dots.column_dots([jnp.ones(shape)], [(0, 0)], jnp.float32, interpret=True)
    else:
      raise ValueError("no tiling for a non-matrix")


def _arrays(shape, dtype=jnp.float32):
  rng = np.random.default_rng(1)
  return [jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3)]


def _pairs(x, g, m):
  return [(x, x), (g, x), (g, g), (m, g), (m, m)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_off_the_gpu_one_pass_is_the_plain_sums(dtype):
  x, g, m = _arrays((3, 3, 8, 32), dtype)
  layout = groups.per_output().layout(x.shape)
  dots = lambda one_pass: lambda *a: geometry.dots(_pairs(*a), layout, one_pass=one_pass)
  for run in (lambda f: f(x, g, m), lambda f: jax.jit(f)(x, g, m)):  # eagerly, jitted
    for a, b in zip(run(dots(True)), run(dots(False))):
      np.testing.assert_array_equal(a, b)


def _gpu_branch(monkeypatch):
  """Runs the CUDA branch of every platform_dependent, with the kernel interpreted, as
  in a one-GPU process; returns the list of the kernel's calls (their operand shapes)."""
  kernel, calls = _column_dots.column_dots, []
  jax.clear_caches()  # traced before the patch: retrace

  def interpreted(arrays, *args, **kwargs):
    calls.append([a.shape for a in arrays])
    return kernel(arrays, *args, **kwargs, interpret=True)

  monkeypatch.setattr(jax.lax, "platform_dependent",
                      lambda *args, cuda, default: cuda(*args))
  monkeypatch.setattr(_column_dots, "column_dots", interpreted)
  monkeypatch.setattr(jax, "device_count", lambda backend=None: 1)
  return calls


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_gpu_branch_equals_the_plain_sums_to_rounding(monkeypatch, dtype):
  x, g, m = _arrays((3, 3, 8, 32), dtype)
  layout = groups.per_output().layout(x.shape)
  plain = geometry.dots(_pairs(x, g, m), layout)
  calls = _gpu_branch(monkeypatch)
  got = geometry.dots(_pairs(x, g, m), layout, one_pass=True)
  assert calls == [[(72, 32)] * 3]
  for a, b in zip(got, plain):
    assert a.shape == b.shape == layout.stat_shape and a.dtype == b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("spec, shape, dtype", [
    (groups.whole(), (64, 32), jnp.float32),           # one group: not columns
    (groups.channel_groups(4), (64, 32), jnp.float32),  # split channels
    (groups.stacked(), (2, 64, 32), jnp.float32),       # two kept axes
    (groups.per_output(), (7, 7, 3, 64), jnp.float32),  # K = 147: no tiling
    (groups.per_output(), (64, 32), jnp.complex64),    # complex: plain sums
])
def test_layouts_the_kernel_does_not_cover_take_the_plain_sums(monkeypatch, spec, shape, dtype):
  x = jnp.ones(shape, dtype)
  layout = spec.layout(shape)
  _gpu_branch(monkeypatch)  # a kernel call would fail here: no branch is built
  monkeypatch.setattr(_column_dots, "column_dots", None)
  got = geometry.dots([(x, x), (x, x)], layout, one_pass=True)
  np.testing.assert_array_equal(got[0], geometry.sqnorm(x, layout))


def test_sums_and_dots_in_one_pass(monkeypatch):
  x, g, _ = _arrays((3, 3, 8, 32))
  layout = groups.per_output().layout(x.shape)
  want = [geometry.group_sum(x, layout), geometry.group_sum(g, layout),
          *geometry.dots([(x, x), (g, x)], layout)]
  plain = geometry.sums_and_dots([x, g], [(x, x), (g, x)], layout, one_pass=True)
  for a, b in zip(plain, want):
    np.testing.assert_array_equal(a, b)
  calls = _gpu_branch(monkeypatch)
  for a, b in zip(geometry.sums_and_dots([x, g], [(x, x), (g, x)], layout, one_pass=True), want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  assert calls == [[(72, 32)] * 2]


def _combinations(x, g, m, l2):
  """AdamSRT's ``g + λx`` and ``m' = 0.9 m + 0.1 (g + λx)`` as combinations of x, g, m
  (the values in float32, as a rule computes them from bfloat16 arrays)."""
  wide = lambda a: a.astype(jnp.float32)
  coupled = geometry.Combination(wide(g) + l2 * wide(x), ((1, g), (l2, x)))
  moment = geometry.Combination(0.9 * wide(m) + 0.1 * coupled.value,
                                ((0.9, m), (0.1, g), (0.1 * l2, x)))
  return coupled, moment


def _combination_pairs(x, g, m, l2):
  coupled, moment = _combinations(x, g, m, l2)
  return [(coupled, coupled), (x, x), (x, moment), (moment, moment)]


def test_combinations_off_the_gpu_are_the_plain_sums_of_their_values():
  x, g, m = _arrays((3, 3, 8, 32))
  layout = groups.per_output().layout(x.shape)
  pairs = _combination_pairs(x, g, m, 0.3)
  values = [tuple(getattr(a, "value", a) for a in pair) for pair in pairs]
  for one_pass in (False, True):
    for a, b in zip(geometry.dots(pairs, layout, one_pass=one_pass), geometry.dots(values, layout)):
      np.testing.assert_array_equal(a, b)
  _, moment = _combinations(x, g, m, 0.3)
  np.testing.assert_array_equal(
      geometry.sums_and_dots([moment], [], layout, one_pass=True)[0],
      geometry.group_sum(moment.value, layout))


def _float64_dots(pairs):
  wide = lambda a: np.asarray(getattr(a, "value", a), np.float64).reshape(-1, 32)
  return [(wide(a) * wide(b)).sum(0) for a, b in pairs]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_gpu_branch_reduces_combinations_from_their_terms(monkeypatch, dtype):
  """One kernel over the three arrays (six of their dot products), combined per pair:
  ``<Σ c_k a_k, Σ d_l b_l> = Σ c_k d_l <a_k, b_l>``, to rounding of the float64 sums."""
  x, g, m = _arrays((3, 3, 8, 32), dtype)
  layout = groups.per_output().layout(x.shape)
  calls = _gpu_branch(monkeypatch)
  got = geometry.dots(_combination_pairs(x, g, m, 0.3), layout, one_pass=True)
  assert calls == [[(72, 32)] * 3]
  for a, b in zip(got, _float64_dots(_combination_pairs(x, g, m, 0.3))):
    assert a.shape == layout.stat_shape and a.dtype == jnp.float32
    np.testing.assert_allclose(a.ravel(), b, rtol=1e-4, atol=1e-4)
  # A traced coefficient (an injected hyperparameter) is an operand of the kernel's branch.
  traced = jax.jit(lambda l2: geometry.dots(_combination_pairs(x, g, m, l2), layout,
                                            one_pass=True))(0.3)
  for a, b in zip(traced, got):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  sums = geometry.sums_and_dots([_combinations(x, g, m, 0.3)[1]], [], layout, one_pass=True)
  want = np.asarray(_combinations(x, g, m, 0.3)[1].value, np.float64).reshape(-1, 32).sum(0)
  np.testing.assert_allclose(sums[0].ravel(), want, rtol=1e-4, atol=1e-4)


def test_a_squared_norm_of_cancelling_terms_is_never_negative(monkeypatch):
  """``||a − b||²`` expanded as ``||a||² − 2<a, b> + ||b||²`` for ``b`` within 1e-4 of
  ``a``: rounding of the expansion is larger than the value, which is clamped at 0."""
  rng = np.random.default_rng(2)
  a = jnp.asarray(rng.normal(size=(256, 32)), jnp.float32)
  b = a + jnp.asarray(1e-4 * rng.normal(size=(256, 32)), jnp.float32)
  layout = groups.per_output().layout(a.shape)
  difference = geometry.Combination(a - b, ((1, a), (-1, b)))
  _gpu_branch(monkeypatch)
  (got,) = geometry.dots([(difference, difference)], layout, one_pass=True)
  want = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
  assert np.all(np.asarray(got) >= 0)
  np.testing.assert_allclose(got.ravel(), want.sum(0), atol=1e-4 * 256)


@pytest.mark.parametrize("name", ["adamg", "sgdg", "adagradg", "nero", "sgdp", "adams",
                                  "adamsrt", "adamsrt_parallel", "sgdmrt", "rv_adamw",
                                  "rv_adam_l2"])
def test_optimizers_take_the_same_step_through_the_gpu_branch(monkeypatch, name):
  """The rules that ask for one-pass statistics step alike on either branch (the
  kernel's partial sums add in another order: equal to rounding)."""
  import spherax  # pylint: disable=import-outside-toplevel
  make = {"adamg": lambda: spherax.adamg(0.05), "sgdg": lambda: spherax.sgdg(0.05),
          "adagradg": lambda: spherax.adagradg(0.05, 0.9, 1.0),
          "nero": lambda: spherax.nero(0.05),
          "sgdp": lambda: spherax.sgdp(0.05, weight_decay=0.1),
          "adams": lambda: spherax.adams(0.05, l2_regularization=0.1),
          "adamsrt": lambda: spherax.adamsrt(0.05, l2_regularization=0.1),
          "adamsrt_parallel": lambda: spherax.adamsrt(0.05, l2_regularization=0.1,
                                                      transport="parallel"),
          "sgdmrt": lambda: spherax.sgdmrt(0.05, l2_regularization=0.1),
          "rv_adamw": lambda: spherax.rv_adamw(0.05, weight_decay=0.1),
          "rv_adam_l2": lambda: spherax.rv_adam_l2(0.05, l2_regularization=0.1)}[name]
  x, g, _ = _arrays((3, 3, 8, 32))
  params, grads = {"w": x, "b": x[0, 0, 0]}, {"w": g, "b": g[0, 0, 0]}

  def two_steps():
    opt = make()
    state, p = opt.init(params), params
    for _ in range(2):
      updates, state = opt.update(grads, state, p)
      p = jax.tree.map(jnp.add, p, updates)
    return p

  want = two_steps()
  calls = _gpu_branch(monkeypatch)
  got = two_steps()
  assert calls and all(shape == (72, 32) for call in calls for shape in call)  # the kernel's
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_several_gpus_take_the_plain_sums(monkeypatch):
  """The kernel has no partitioning rule (XLA would gather sharded operands whole), so a
  process with several GPUs uses the plain reductions."""
  x, g, m = _arrays((3, 3, 8, 32))
  layout = groups.per_output().layout(x.shape)
  calls = _gpu_branch(monkeypatch)
  monkeypatch.setattr(jax, "device_count", lambda backend=None: 8 if backend == "gpu" else 1)
  got = geometry.dots(_pairs(x, g, m), layout, one_pass=True)
  assert not calls
  for a, b in zip(got, geometry.dots(_pairs(x, g, m), layout)):
    np.testing.assert_array_equal(a, b)


def _loss_after_a_step(make):
  def loss(x):
    opt = make()
    params = {"w": x}
    grads = {"w": 2 * x + 0.3}
    updates, _ = opt.update(grads, opt.init(params), params)
    return jnp.sum(optax.apply_updates(params, updates)["w"] ** 3)
  return loss


@pytest.mark.parametrize("gpu_branch", [False, True])
@pytest.mark.parametrize("name", ["adamg", "adamsrt"])
def test_derivatives_through_the_one_pass_statistics_are_the_plain_ones(monkeypatch, gpu_branch,
                                                                        name):
  """Differentiating through a step (meta-learning) works on either branch: the kernel
  is not differentiated, its tangents are the plain reductions' of the operands' values
  (d<a,b> = <da,b> + <a,db>)."""
  import spherax  # pylint: disable=import-outside-toplevel
  x = jnp.linspace(-1.0, 1.0, 3 * 3 * 8 * 32).reshape(3, 3, 8, 32)
  loss = _loss_after_a_step({"adamg": lambda: spherax.adamg(0.1),
                             "adamsrt": lambda: spherax.adamsrt(0.1, l2_regularization=0.1)}[name])
  with monkeypatch.context() as plain:
    plain.setattr(geometry, "_one_pass_dots", geometry._plain_dots_of_values)
    want = jax.grad(loss)(x), jax.jvp(loss, (x,), (jnp.ones_like(x),))[1]
  calls = _gpu_branch(monkeypatch) if gpu_branch else []
  got = jax.grad(loss)(x), jax.jvp(loss, (x,), (jnp.ones_like(x),))[1]
  assert bool(calls) == gpu_branch
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
