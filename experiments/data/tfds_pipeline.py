"""TFDS datasets through random-access array_record sources (no TensorFlow at run time).

``tfds.data_source(name, split=..., data_dir=..., download=False)`` gives
random access to examples prepared beforehand; batches are read by index and
preprocessed with NumPy (:mod:`experiments.data.augment`):

==============  ======================  ==========================  ==================
dataset         splits (train / test)   training augmentation       normalization
==============  ======================  ==========================  ==================
cifar10         train / test            pad-4 crop + flip           CIFAR-10 mean/std
cifar100        train / test            pad-4 crop + flip           CIFAR-100 mean/std
svhn_cropped    train / test            none (Roburin et al. 2021)    SVHN mean/std
imagenet2012    train / validation      random-resized crop + flip  ImageNet mean/std
==============  ======================  ==========================  ==================

ImageNet images are resized per example (``image_size``, default 224; evaluation
resizes the shorter side to ``image_size · 256/224`` and crops the centre).
Nothing is ever downloaded: data that is not prepared raises
``FileNotFoundError`` at once, saying how to prepare it
(``tfds build cifar10 --file_format=array_record``; ImageNet needs the
archives in ``<data_dir>/downloads/manual``).

Why not Grain: the pipeline needs only what a random-access source plus NumPy
already give (a seeded permutation per epoch, strided host shards, per-example
augmentation), and the whole order is a pure function of ``(seed, epoch)``,
which makes exact resume trivial. Grain's worker processes would pay off for
ImageNet-scale decoding; adding it there is a contained change to this module.
"""

from __future__ import annotations

import functools

import numpy as np

from experiments.data import Dataset, augment

# num_classes, image shape (None: resized), test split, mean, std (in [0, 1] units).
_SPECS = {
    "cifar10": (10, (32, 32, 3), "test",
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (100, (32, 32, 3), "test",
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": (10, (32, 32, 3), "test",
                     (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet2012": (1000, None, "validation",
                     (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _how_to_prepare(name: str, data_dir: str | None) -> str:
  where = f" --data_dir={data_dir}" if data_dir else ""
  if name == "imagenet2012":
    return (f"place ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
            f"<data_dir>/downloads/manual, then run `tfds build imagenet2012 "
            f"--file_format=array_record{where}`")
  return f"run `tfds build {name} --file_format=array_record{where}`"


def open_source(name: str, split: str, data_dir: str | None):
  """The random-access TFDS source of one split, never downloading.

  Raises:
    FileNotFoundError: the split is not prepared as array_record in ``data_dir``.
  """
  import tensorflow_datasets as tfds

  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as err:  # TFDS raises several types for "not there".
    raise FileNotFoundError(
        f"{name} ({split}) is not prepared as array_record in "
        f"{data_dir or 'the default TFDS data_dir'}: {_how_to_prepare(name, data_dir)}. "
        f"(TFDS said: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    ) from err


def _reader(source, indices: np.ndarray):
  """Reads examples ``indices`` of a TFDS source: (list of HWC uint8 images, labels)."""
  records = [source[int(i)] for i in indices]
  images = [np.asarray(r["image"]) for r in records]
  labels = np.asarray([r["label"] for r in records], np.int32)
  return images, labels


def _stack(images) -> np.ndarray:
  return np.stack(images) if isinstance(images, list) else np.asarray(images)


def _cifar_train(images, rng):
  return augment.pad_crop_flip(_stack(images), rng, pad=4)


def _imagenet_train(images, rng, size):
  return np.stack([augment.random_resized_crop(im, rng, size) for im in images])


def _imagenet_eval(images, size):
  return np.stack([augment.center_crop(im, size) for im in images])


def load_tfds(name: str, *, data_dir: str | None = None,
              validation_fraction: float = 0.05, seed: int = 0,
              image_size: int = 224) -> Dataset:
  """The :class:`~experiments.data.Dataset` of a prepared TFDS dataset ``name``."""
  if name not in _SPECS:
    raise ValueError(f"unknown TFDS dataset {name!r}; expected one of {tuple(_SPECS)}")
  num_classes, shape, test_split, mean, std = _SPECS[name]
  train = open_source(name, "train", data_dir)
  test = open_source(name, test_split, data_dir)
  if name == "imagenet2012":
    shape = (image_size, image_size, 3)
    train_transform = functools.partial(_imagenet_train, size=image_size)
    eval_transform = functools.partial(_imagenet_eval, size=image_size)
  else:
    train_transform = _cifar_train if name.startswith("cifar") else None
    eval_transform = _stack
  return Dataset(
      name, num_classes=num_classes, image_shape=shape,
      train_reader=functools.partial(_reader, train),
      test_reader=functools.partial(_reader, test),
      num_train_total=len(train), num_test=len(test),
      validation_fraction=validation_fraction, seed=seed, mean=mean, std=std,
      train_transform=train_transform, eval_transform=eval_transform)
