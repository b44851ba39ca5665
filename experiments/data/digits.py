"""scikit-learn's 8×8 handwritten digits as a :class:`~experiments.data.Dataset`.

1797 grey images with pixel values 0..16 (rescaled to 0..255 so they share the
``x / 255`` convention of the other datasets), 10 classes, offline. The test
split is fixed (20%, drawn once with seed 0, whatever ``seed`` is); the
validation split is carved from the rest with ``seed``. Normalization uses the
mean and std of all non-test pixels (so it does not depend on ``seed``). No augmentation (flips change digits).

Example:

>>> ds = load_digits()
>>> ds.num_train + ds.num_validation + ds.num_test
1797
"""

from __future__ import annotations

import numpy as np

from experiments.data import Dataset, split_validation

TEST_FRACTION = 0.2


def load_digits(*, validation_fraction: float = 0.05, seed: int = 0) -> Dataset:
  """The digits dataset with a fixed test split and a ``seed``-drawn validation split."""
  from sklearn.datasets import load_digits as sklearn_digits

  raw = sklearn_digits()
  images = (raw.images * (255.0 / 16.0)).astype(np.float32)[..., None]
  labels = raw.target.astype(np.int32)
  rest, test = split_validation(len(labels), TEST_FRACTION, seed=0)
  train_images, train_labels = images[rest], labels[rest]
  test_images, test_labels = images[test], labels[test]
  pixels = train_images / 255.0
  return Dataset(
      "digits", num_classes=10, image_shape=(8, 8, 1),
      train_reader=lambda idx: (train_images[idx], train_labels[idx]),
      test_reader=lambda idx: (test_images[idx], test_labels[idx]),
      num_train_total=len(rest), num_test=len(test),
      validation_fraction=validation_fraction, seed=seed,
      mean=(float(pixels.mean()),), std=(float(pixels.std()),))
