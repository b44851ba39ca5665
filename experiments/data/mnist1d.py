"""MNIST-1D as a :class:`~experiments.data.Dataset`, generated offline.

MNIST-1D (Greydanus & Kobak, *Scaling down deep learning with MNIST-1D*, ICML
2024, arXiv:2011.14439; the ``mnist1d`` package, Apache-2.0) draws length-40
signals of ten 1-D digit templates under random padding, translation, shear,
scaling and correlated plus i.i.d. noise. Only the generator
``mnist1d.data.make_dataset`` is called (never the package's download path),
with the package's default arguments (5000 samples, 80% train / 20% test,
``final_seq_length=40``) except ``num_samples`` and the generator seed
``generator_seed`` (default 42, the package's own: the published dataset).
Requires ``pip install mnist1d``.

Splits: the generator's test split (20%) is the test set; the validation split
is ``validation_fraction`` of its training split, drawn with ``seed`` (so the
run seed changes the validation split and the batch order, never the data).
Signals are normalized by the mean and std of the non-test samples and stored
as ``(L, 1, 1)`` images (a 1-D signal as an ``L × 1`` single-channel image, see
:mod:`experiments.models.resnet_1d`). No augmentation.

Example:

>>> ds = load_mnist1d(num_samples=200)  # doctest: +SKIP
>>> ds.image_shape, ds.num_train + ds.num_validation, ds.num_test  # doctest: +SKIP
((40, 1, 1), 160, 40)
"""

from __future__ import annotations

import functools

import numpy as np

from experiments.data import Dataset

__all__ = ["generate", "load_mnist1d"]


@functools.lru_cache(maxsize=4)
def generate(num_samples: int = 5000, generator_seed: int = 42):
  """``(x_train, y_train, x_test, y_test)`` from ``mnist1d.data.make_dataset``
  (float32 ``(N, 40)`` signals, int32 labels); cached per arguments.

  The generator seeds NumPy's global state (``np.random.seed``); it is saved
  and restored around the call so that it does not leak into the caller.
  """
  try:
    from mnist1d.data import get_dataset_args, make_dataset
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the mnist1d dataset needs the `mnist1d` package: pip install mnist1d"
    ) from e
  args = get_dataset_args()
  args.num_samples = int(num_samples)
  args.seed = int(generator_seed)
  saved = np.random.get_state()
  try:
    data = make_dataset(args)
  finally:
    np.random.set_state(saved)
  return (np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int32),
          np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"], np.int32))


def load_mnist1d(*, validation_fraction: float = 0.1, seed: int = 0,
                 num_samples: int = 5000, generator_seed: int = 42) -> Dataset:
  """MNIST-1D with the generator's test split and a ``seed``-drawn validation split."""
  x_train, y_train, x_test, y_test = generate(num_samples, generator_seed)
  mean, std = float(x_train.mean()), float(x_train.std())
  # Dataset.normalize computes (images / 255 − mean) / std with mean, std in
  # [0, 1] units; storing x · 255 with mean/std of x gives (x − mean) / std.
  train_images = (x_train * 255.0)[:, :, None, None]
  test_images = (x_test * 255.0)[:, :, None, None]
  return Dataset(
      "mnist1d", num_classes=10, image_shape=(x_train.shape[1], 1, 1),
      train_reader=lambda idx: (train_images[idx], y_train[idx]),
      test_reader=lambda idx: (test_images[idx], y_test[idx]),
      num_train_total=len(y_train), num_test=len(y_test),
      validation_fraction=validation_fraction, seed=seed, mean=(mean,), std=(std,))
