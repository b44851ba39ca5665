"""Image classification datasets for the experiments, NumPy batches.

:func:`load_dataset` returns a :class:`Dataset` for ``"digits"`` (scikit-learn,
offline), ``"mnist1d"`` (generated offline by the ``mnist1d`` package; kwargs
``num_samples``, ``generator_seed``, see :mod:`experiments.data.mnist1d`),
``"cifar10"``, ``"cifar100"``, ``"svhn_cropped"`` and ``"imagenet2012"``
(TFDS array_record data prepared beforehand; see
:mod:`experiments.data.tfds_pipeline`).

Protocol (the released code of Roburin et al., *A spherical analysis of Adam with
Batch Normalization*, ICLR 2021 submission (OpenReview)): a held-out validation split
of
``validation_fraction`` of the training set (default 5%), drawn with ``seed`` and
disjoint from the examples :meth:`Dataset.train_batches` yields; per-dataset
per-channel mean/std normalization; CIFAR training augmentation = pad-4 random
crop + horizontal flip, none for SVHN and digits.

Batches are dicts ``{"image": float32 (B, H, W, C), "label": int32 (B,)}``.

* ``train_batches(batch_size, epoch=e, shard_index=i, shard_count=k)``: the
  training examples are shuffled by ``(seed, e)``, the same permutation on
  every host; shard ``i`` takes every ``k``-th example of it starting at ``i``
  and yields ``len(train) // (batch_size · k)`` batches of ``batch_size`` (the
  per-shard batch size; the global batch is ``batch_size · k``). The remainder
  is dropped; every shard yields the same number of batches. Augmentation
  randomness is seeded by ``(seed, e, i)``.
* ``eval_batches(split, batch_size, shard_index=i, shard_count=k)``: split
  ``"validation"`` or ``"test"`` in order; shard ``i`` gets examples
  ``i, i+k, …``. Every batch has ``batch_size`` rows and an extra
  ``"mask"`` entry (bool, ``(B,)``): the last batch is padded with zero rows
  whose mask is False, so one compiled eval step serves every batch and
  averages must be weighted by the mask. All shards yield the same number of
  batches.

Example:

>>> ds = load_dataset("digits", seed=0)
>>> ds.num_classes, ds.image_shape
(10, (8, 8, 1))
>>> batch = next(ds.train_batches(32, epoch=0))
>>> batch["image"].shape, batch["image"].dtype, batch["label"].dtype
((32, 8, 8, 1), dtype('float32'), dtype('int32'))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["Dataset", "load_dataset", "DATASET_NAMES", "split_validation"]

DATASET_NAMES = ("digits", "mnist1d", "cifar10", "cifar100", "svhn_cropped", "imagenet2012")

# read(indices) -> (raw images: array or list of HWC uint8, labels)
Reader = Callable[[np.ndarray], tuple[Any, np.ndarray]]


def split_validation(num_examples: int, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint sorted ``(train, validation)`` index sets of ``range(num_examples)``;
  the validation set is ``round(fraction · num_examples)`` indices drawn with
  ``seed``.

  >>> train, val = split_validation(10, 0.2, seed=0)
  >>> len(train), len(val), sorted(set(train) | set(val)) == list(range(10))
  (8, 2, True)
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
  perm = np.random.default_rng(seed).permutation(num_examples)
  count = int(round(fraction * num_examples))
  return np.sort(perm[count:]), np.sort(perm[:count])


class Dataset:
  """Splits, normalization and batching of one image classification dataset.

  Args:
    name: dataset name.
    num_classes: number of labels.
    image_shape: ``(H, W, C)`` of the batches.
    train_reader, test_reader: ``read(indices) -> (raw images, labels)`` on the
      full training split and on the test split.
    num_train_total, num_test: sizes of those splits.
    validation_fraction, seed: the held-out validation split (see
      :func:`split_validation`) and the shuffling / augmentation seed.
    mean, std: per-channel normalization in [0, 1] units.
    train_transform: ``(raw images, rng) -> uint8 NHWC`` training augmentation.
    eval_transform: ``raw images -> uint8 NHWC`` (e.g. ImageNet center crop);
      also applied to training batches when ``augment=False``.
  """

  def __init__(self, name: str, *, num_classes: int, image_shape: Sequence[int],
               train_reader: Reader, test_reader: Reader, num_train_total: int,
               num_test: int, validation_fraction: float, seed: int, mean, std,
               train_transform: Callable | None = None,
               eval_transform: Callable | None = None):
    self.name = name
    self.num_classes = int(num_classes)
    self.image_shape = tuple(int(s) for s in image_shape)
    self.seed = int(seed)
    self.mean = tuple(float(m) for m in mean)
    self.std = tuple(float(s) for s in std)
    self._train_reader = train_reader
    self._test_reader = test_reader
    self._train_transform = train_transform
    self._eval_transform = eval_transform or (lambda images: np.asarray(images))
    self.train_indices, self.validation_indices = split_validation(
        num_train_total, validation_fraction, seed)
    self.num_test = int(num_test)

  @property
  def num_train(self) -> int:
    return len(self.train_indices)

  @property
  def num_validation(self) -> int:
    return len(self.validation_indices)

  def _batch(self, images, labels) -> dict[str, np.ndarray]:
    from experiments.data.augment import normalize
    return {"image": normalize(images, self.mean, self.std),
            "label": np.asarray(labels, np.int32)}

  def train_batches(self, batch_size: int, *, epoch: int, augment: bool = True,
                    shard_index: int = 0, shard_count: int = 1
                    ) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled, augmented training batches of one epoch (see module docstring)."""
    _check_shard(shard_index, shard_count)
    perm = np.random.default_rng([self.seed, epoch]).permutation(self.train_indices)
    mine = perm[shard_index::shard_count]
    rng = np.random.default_rng([self.seed, epoch, shard_index])
    for b in range(self.num_train // (batch_size * shard_count)):
      images, labels = self._train_reader(mine[b * batch_size:(b + 1) * batch_size])
      if augment and self._train_transform is not None:
        images = self._train_transform(images, rng)
      else:
        images = self._eval_transform(images)
      yield self._batch(images, labels)

  def eval_batches(self, split: str, batch_size: int, *, shard_index: int = 0,
                   shard_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Ordered, un-augmented, mask-padded batches of ``"validation"`` or ``"test"``."""
    _check_shard(shard_index, shard_count)
    if split == "validation":
      indices, reader = self.validation_indices, self._train_reader
    elif split == "test":
      indices, reader = np.arange(self.num_test), self._test_reader
    else:
      raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
    mine = indices[shard_index::shard_count]
    per_shard = -(-len(indices) // shard_count)
    for start in range(0, per_shard, batch_size):
      chunk = mine[start:start + batch_size]
      count = len(chunk)
      if count:
        raw, labels = reader(chunk)
        batch = self._batch(self._eval_transform(raw), labels)
      else:
        batch = {"image": np.zeros((0, *self.image_shape), np.float32),
                 "label": np.zeros((0,), np.int32)}
      pad = batch_size - count
      batch = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
               for k, v in batch.items()}
      batch["mask"] = np.arange(batch_size) < count
      yield batch

  def __repr__(self) -> str:
    return (f"Dataset({self.name!r}, classes={self.num_classes}, "
            f"image_shape={self.image_shape}, train={self.num_train}, "
            f"validation={self.num_validation}, test={self.num_test})")


def _check_shard(shard_index: int, shard_count: int) -> None:
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, "
                     f"{shard_count}")


def load_dataset(name: str, *, data_dir: str | None = None,
                 validation_fraction: float = 0.05, seed: int = 0,
                 **kwargs) -> Dataset:
  """The :class:`Dataset` ``name`` (``kwargs``: ``image_size`` for imagenet2012,
  ``num_samples`` and ``generator_seed`` for mnist1d).

  Raises:
    ValueError: unknown name.
    FileNotFoundError: TFDS data not prepared in ``data_dir`` (the message says
      how to prepare it).
  """
  if name == "digits":
    from experiments.data.digits import load_digits
    return load_digits(validation_fraction=validation_fraction, seed=seed, **kwargs)
  if name == "mnist1d":
    from experiments.data.mnist1d import load_mnist1d
    return load_mnist1d(validation_fraction=validation_fraction, seed=seed, **kwargs)
  if name in DATASET_NAMES:
    from experiments.data.tfds_pipeline import load_tfds
    return load_tfds(name, data_dir=data_dir,
                     validation_fraction=validation_fraction, seed=seed, **kwargs)
  raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
