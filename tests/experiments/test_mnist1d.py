"""The MNIST-1D loader (experiments.data.mnist1d) on a small generated set.

MNIST-1D: Greydanus & Kobak, *Scaling down deep learning with MNIST-1D*, ICML
2024, arXiv:2011.14439. The loader is checked against an independent call of the
package's generator ``mnist1d.data.make_dataset``.
"""

import numpy as np
import pytest

from experiments.data import load_dataset

mnist1d_data = pytest.importorskip("mnist1d.data", reason="needs the mnist1d package")

N = 200


def _all(batches):
  batches = list(batches)
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _reference(generator_seed):
  args = mnist1d_data.get_dataset_args()
  args.num_samples, args.seed = N, generator_seed
  return mnist1d_data.make_dataset(args)


def test_splits_values_and_seeds():
  state = np.random.get_state()
  ds = load_dataset("mnist1d", validation_fraction=0.1, seed=0, num_samples=N,
                    generator_seed=7)
  # the generator seeds NumPy's global RNG; the loader must not leak that
  np.testing.assert_array_equal(np.random.get_state()[1], state[1])
  assert (ds.num_classes, ds.image_shape) == (10, (40, 1, 1))
  assert (ds.num_train + ds.num_validation, ds.num_test) == (160, 40)
  assert ds.num_validation == 16
  assert not set(ds.train_indices) & set(ds.validation_indices)

  ref = _reference(7)
  x, y = np.asarray(ref["x"]), np.asarray(ref["y"])
  mean, std = x.mean(), x.std()
  test = _all(ds.eval_batches("test", 16))
  assert test["mask"].sum() == 40
  np.testing.assert_allclose(test["image"][test["mask"]][..., 0, 0],
                             (ref["x_test"] - mean) / std, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(test["label"][test["mask"]], ref["y_test"])
  val = _all(ds.eval_batches("validation", 16))
  np.testing.assert_allclose(val["image"][..., 0, 0], (x[ds.validation_indices] - mean) / std,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(val["label"], y[ds.validation_indices])
  train = _all(ds.train_batches(16, epoch=0))
  assert len(train["label"]) == 144 and train["image"].dtype == np.float32
  assert sorted(map(bytes, train["image"].round(3))) == sorted(
      map(bytes, ((x[ds.train_indices] - mean) / std).astype(np.float32)[:, :, None, None]
          .round(3)))

  # the run seed moves the validation split, never the data; the generator seed the data
  other = load_dataset("mnist1d", validation_fraction=0.1, seed=1, num_samples=N,
                       generator_seed=7)
  assert not np.array_equal(other.validation_indices, ds.validation_indices)
  np.testing.assert_array_equal(_all(other.eval_batches("test", 16))["image"], test["image"])
  regenerated = load_dataset("mnist1d", seed=0, num_samples=N, generator_seed=8)
  assert not np.allclose(_all(regenerated.eval_batches("test", 16))["image"], test["image"])
