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


@pytest.mark.parametrize("shape", [(576, 64), (4096, 32), (64, 48)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernel_sums_every_pair_per_column(shape, dtype):
  rng = np.random.default_rng(0)
  arrays = [jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3)]
  got = _column_dots.column_dots(arrays, PAIRS, jnp.float32, interpret=True)
  wide = [np.asarray(a, np.float64) for a in arrays]
  want = np.stack([(wide[i] * wide[j]).sum(0) for i, j in PAIRS])
  assert got.shape == (len(PAIRS), shape[1]) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(shape[0]))


@pytest.mark.parametrize("shape", [(2304, 512), (4096, 4096), (16384, 64), (576, 64), (64, 48)])
def test_tiling_divides_the_operand_and_bounds_the_partial_sums(shape):
  rows, cols = shape
  block_c, block_k, splits = _column_dots.tiling(shape, len(PAIRS))
  for block in (block_c, block_k, splits):
    assert block & (block - 1) == 0  # powers of two
  assert cols % block_c == 0 and rows % (block_k * splits) == 0
  assert (cols // block_c) * splits <= 512 or splits == 1
  assert splits * len(PAIRS) * 128 <= rows or splits == 1  # partial sums < 1% of an operand


@pytest.mark.parametrize("shape", [(147, 64), (576, 1000), (9, 16), (64,), (4, 4, 4)])
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


@pytest.mark.parametrize("name", ["adamg", "sgdg", "adagradg", "nero", "sgdp"])
def test_optimizers_take_the_same_step_through_the_gpu_branch(monkeypatch, name):
  """The rules that ask for one-pass statistics step alike on either branch (the
  kernel's partial sums add in another order: equal to rounding)."""
  import spherax  # pylint: disable=import-outside-toplevel
  make = {"adamg": lambda: spherax.adamg(0.05), "sgdg": lambda: spherax.sgdg(0.05),
          "adagradg": lambda: spherax.adagradg(0.05, 0.9, 1.0),
          "nero": lambda: spherax.nero(0.05),
          "sgdp": lambda: spherax.sgdp(0.05, weight_decay=0.1)}[name]
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
def test_derivatives_through_the_one_pass_statistics_are_the_plain_ones(monkeypatch, gpu_branch):
  """Differentiating through a step (meta-learning) works on either branch: the kernel
  is not differentiated, its tangents are the plain reductions' (d<a,b> = <da,b> + <a,db>)."""
  import spherax  # pylint: disable=import-outside-toplevel
  x = jnp.linspace(-1.0, 1.0, 3 * 3 * 8 * 32).reshape(3, 3, 8, 32)
  loss = _loss_after_a_step(lambda: spherax.adamg(0.1))
  with monkeypatch.context() as plain:
    plain.setattr(geometry, "_one_pass_dots", geometry._plain_dots)
    want = jax.grad(loss)(x), jax.jvp(loss, (x,), (jnp.ones_like(x),))[1]
  calls = _gpu_branch(monkeypatch) if gpu_branch else []
  got = jax.grad(loss)(x), jax.jvp(loss, (x,), (jnp.ones_like(x),))[1]
  assert bool(calls) == gpu_branch
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
