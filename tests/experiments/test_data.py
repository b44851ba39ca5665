"""Data pipelines of experiments.data: splits, normalization, augmentation, sharding."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.data import load_dataset

# Published per-channel statistics (in [0, 1] units) the pipelines must use.
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
N = 24


def _all(batches):
  batches = list(batches)
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_digits_splits_and_normalization():
  ds = load_dataset("digits", seed=0)
  other = load_dataset("digits", seed=1)
  assert (ds.num_classes, ds.image_shape) == (10, (8, 8, 1))
  assert ds.num_train + ds.num_validation + ds.num_test == 1797
  assert ds.num_validation == round(0.05 * (ds.num_train + ds.num_validation))
  # The test split does not depend on the seed; the validation split does.
  test0, test1 = _all(ds.eval_batches("test", 100)), _all(other.eval_batches("test", 100))
  np.testing.assert_array_equal(test0["image"], test1["image"])
  assert not np.array_equal(ds.validation_indices, other.validation_indices)
  assert not set(ds.train_indices) & set(ds.validation_indices)
  assert test0["mask"].sum() == ds.num_test
  assert not test0["image"][~test0["mask"]].any()
  # Non-test pixels (train + validation) are standardized (batch size divides num_train).
  train = _all(ds.train_batches(2, epoch=0, augment=False))
  val = _all(ds.eval_batches("validation", 7))
  assert len(train["label"]) == ds.num_train
  pool = np.concatenate([train["image"], val["image"][val["mask"]]])
  assert abs(pool.mean()) < 1e-5 and abs(pool.std() - 1) < 1e-5
  # Recover raw sklearn pixels: x_raw * 255/16 == x_norm * std + mean (x255 units).
  from sklearn.datasets import load_digits
  raw = load_digits()
  pixels = (train["image"] * ds.std[0] + ds.mean[0]) * 16.0
  keys = {r.tobytes() for r in np.round(raw.images).astype(np.int8)}
  assert all(p.tobytes() in keys for p in np.round(pixels[..., 0]).astype(np.int8))


def test_train_batches_determinism_and_sharding():
  ds = load_dataset("digits", seed=3)
  a = _all(ds.train_batches(16, epoch=2))
  b = _all(ds.train_batches(16, epoch=2))
  c = _all(ds.train_batches(16, epoch=3))
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["label"], c["label"])
  shards = [_all(ds.train_batches(8, epoch=2, shard_index=i, shard_count=2))
            for i in range(2)]
  assert len(shards[0]["label"]) == len(shards[1]["label"]) == ds.num_train // 16 * 8
  # Shards are disjoint pieces of one epoch: every image appears once in total.
  rows = [im.tobytes() for s in shards for im in s["image"]]
  assert len(set(rows)) == len(rows)
  val = [_all(ds.eval_batches("validation", 8, shard_index=i, shard_count=3))
         for i in range(3)]
  assert len({len(v["mask"]) for v in val}) == 1
  assert sum(v["mask"].sum() for v in val) == ds.num_validation


def _raw(name, split):
  source = tfds.data_source(name, split=split, download=False)
  return (np.stack([source[i]["image"] for i in range(len(source))]),
          np.asarray([source[i]["label"] for i in range(len(source))]))


def _is_crop_flip(out, raw, pad=4):
  padded = np.pad(raw, ((pad, pad), (pad, pad), (0, 0)))
  h, w = raw.shape[:2]
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      crop = padded[dy:dy + h, dx:dx + w]
      if np.array_equal(out, crop) or np.array_equal(out, crop[:, ::-1]):
        return True
  return False


@pytest.mark.parametrize("name", sorted(STATS))
def test_tfds_pipelines_with_mock_data(name, tmp_path):
  with tfds.testing.mock_data(num_examples=N):
    ds = load_dataset(name, data_dir=str(tmp_path), validation_fraction=0.25, seed=1)
    raw_train, labels_train = _raw(name, "train")
    raw_test, labels_test = _raw(name, "test")
    mean, std = (np.asarray(s, np.float32) for s in STATS[name])
    assert (ds.num_train, ds.num_validation, ds.num_test) == (18, 6, N)
    assert not set(ds.train_indices) & set(ds.validation_indices)
    # Test batches: every example in order, normalized with the published stats.
    test = _all(ds.eval_batches("test", 10))
    assert test["image"].dtype == np.float32 and test["label"].dtype == np.int32
    assert test["image"].shape == (30, 32, 32, 3) and test["mask"].sum() == N
    np.testing.assert_allclose(test["image"][:N], (raw_test / 255.0 - mean) / std,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(test["label"][:N], labels_test)
    val = _all(ds.eval_batches("validation", 8))
    np.testing.assert_array_equal(val["label"][:6], labels_train[ds.validation_indices])
    # Training batches: deterministic per seed, augmented only for CIFAR.
    first = _all(ds.train_batches(6, epoch=0))
    again = _all(ds.train_batches(6, epoch=0))
    plain = _all(ds.train_batches(6, epoch=0, augment=False))
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["label"], plain["label"])
    reseeded = load_dataset(name, data_dir=str(tmp_path), validation_fraction=0.25,
                            seed=2)
    assert not np.array_equal(first["image"], _all(reseeded.train_batches(6, epoch=0))["image"])
    train_rows = {im.tobytes(): i for i, im in enumerate(raw_train)}
    back = np.round((plain["image"] * std + mean) * 255.0).astype(np.uint8)
    indices = [train_rows[im.tobytes()] for im in back]
    assert set(indices) <= set(ds.train_indices)
    augmented = np.round((first["image"] * std + mean) * 255.0).astype(np.uint8)
    if name.startswith("cifar"):
      assert not np.array_equal(augmented, back)
      assert all(_is_crop_flip(a, raw_train[i]) for a, i in zip(augmented, indices))
    else:
      np.testing.assert_array_equal(augmented, back)


def test_imagenet_with_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    ds = load_dataset("imagenet2012", data_dir=str(tmp_path), image_size=16)
    assert ds.num_classes == 1000 and ds.image_shape == (16, 16, 3)
    batch = next(ds.train_batches(4, epoch=0))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["image"], next(ds.train_batches(4, epoch=0))["image"])
    test = _all(ds.eval_batches("test", 4))
    assert test["image"].shape == (8, 16, 16, 3) and test["mask"].sum() == 6
    assert np.isfinite(test["image"]).all()


def test_missing_data_fails_fast(tmp_path, monkeypatch):
  # "fast" = without trying to download or prepare anything (no wall-time bound)
  def no_download(*args, **kwargs):
    raise AssertionError("the loader must not download or prepare data")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    load_dataset("cifar10", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="downloads/manual"):
    load_dataset("imagenet2012", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown dataset"):
    load_dataset("mnist")
