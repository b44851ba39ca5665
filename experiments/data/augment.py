"""NumPy image preprocessing: normalization, CIFAR crop+flip, ImageNet crops.

All functions take NHWC ``uint8`` (or float, in [0, 255]) images and a
``numpy.random.Generator``, so a batch is a pure function of the generator's seed
(the pipelines seed it with ``(seed, epoch, shard)``).

* :func:`normalize`: ``(x / 255 − mean) / std`` per channel, float32.
* :func:`pad_crop_flip`: zero-pad by ``pad`` pixels, take a random
  ``H × W`` crop, flip horizontally with probability 1/2 (the CIFAR protocol of
  Roburin et al., ICLR 2021 submission, §5; pad 4).
* :func:`random_resized_crop` / :func:`center_crop`: the usual ImageNet training
  (area scale in [0.08, 1], aspect ratio in [3/4, 4/3], then a flip) and
  evaluation (resize the shorter side to ``size · 256/224``, central crop)
  transforms for one variable-size image, with bilinear resizing (Pillow).

Example:

>>> import numpy as np
>>> images = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
>>> out = pad_crop_flip(images, np.random.default_rng(0), pad=1)
>>> out.shape, out.dtype
((2, 4, 4, 1), dtype('uint8'))
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
  """``(images / 255 − mean) / std`` per channel (``mean``, ``std`` in [0, 1] units).

  >>> normalize(np.full((1, 1, 1, 1), 255, np.uint8), [0.5], [0.25])
  array([[[[2.]]]], dtype=float32)
  """
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return ((np.asarray(images, np.float32) / 255.0 - mean) / std).astype(np.float32)


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4,
                  flip: bool = True) -> np.ndarray:
  """Random ``H × W`` crops of the zero-padded batch, each flipped left-right
  with probability 1/2 when ``flip``."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy = rng.integers(0, 2 * pad + 1, size=n)
  dx = rng.integers(0, 2 * pad + 1, size=n)
  flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
  rows = dy[:, None] + np.arange(h)[None, :]                      # (n, h)
  cols = dx[:, None] + np.arange(w)[None, :]                      # (n, w)
  cols = np.where(flips[:, None], cols[:, ::-1], cols)
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out.reshape(height, width, channels)


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """A random crop of area fraction in ``scale`` and aspect ratio in ``ratio``
  (log-uniform), resized to ``size × size`` and flipped with probability 1/2;
  falls back to the central square crop after 10 rejected draws."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw = int(round(math.sqrt(area * aspect)))
    ch = int(round(math.sqrt(area / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      top = int(rng.integers(0, h - ch + 1))
      left = int(rng.integers(0, w - cw + 1))
      break
  else:
    ch = cw = min(h, w)
    top, left = (h - ch) // 2, (w - cw) // 2
  out = _resize(image[top:top + ch, left:left + cw], size, size)
  return out[:, ::-1] if rng.random() < 0.5 else out


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to ``round(size · 256 / 224)`` and takes the
  central ``size × size`` crop."""
  h, w = image.shape[:2]
  short = int(round(size * 256 / 224))
  nh, nw = (short, max(short, round(w * short / h))) if h <= w else (
      max(short, round(h * short / w)), short)
  resized = _resize(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top:top + size, left:left + size]
