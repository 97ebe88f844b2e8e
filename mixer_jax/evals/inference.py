# Copyright 2026 The mixer_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""A loaded model in use: read images of any kind, preprocess them as its
run did, predict the top classes (predict and the notebooks)."""

import os
from typing import Iterable

import jax
from ml_collections import config_dict
import numpy as np
from PIL import Image

from mixer_jax import errors
from mixer_jax.data import preprocess as preprocess_lib
from mixer_jax.evals import loading

# What PIL reads here: grey, RGBA and palette images become RGB.
IMAGE_TYPES = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif')


def image_files(paths: Iterable[str]) -> list[str]:
  """The image files among `paths`, folders searched recursively."""
  found = []
  for path in paths:
    if os.path.isdir(path):
      inside = [os.path.join(root, f)
                for root, _, files in sorted(os.walk(path))
                for f in sorted(files) if f.lower().endswith(IMAGE_TYPES)]
      if not inside:
        raise errors.MissingError(
            f'{path}: a folder with no image in it (looked for '
            f'{", ".join(IMAGE_TYPES)}, in its subfolders too).')
      found += inside
    elif os.path.exists(path):
      found.append(path)
    else:
      raise errors.MissingError(f'{path}: no such file or folder.')
  return found


def to_rgb(image: Image.Image) -> np.ndarray:
  """uint8 RGB [H, W, 3] of any PIL image. Grey images of more than 8 bits
  (16-bit PNGs: 'I;16', 'I'; float 'F') are scaled into 0-255, where
  convert('RGB') would clip them."""
  if image.mode.startswith('I;16') or image.mode in ('I', 'F'):
    values = np.asarray(image, np.float64)
    if image.mode == 'F' and values.max(initial=0) <= 1:
      values = values * 255  # Floats in [0, 1].
    elif image.mode != 'F' and (image.mode.startswith('I;16') or
                                values.max(initial=0) > 255):
      values = values / 257  # 16 bits: 65535 -> 255.
    grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  return np.asarray(image.convert('RGB'))


def read_image(path: str) -> np.ndarray:
  """uint8 RGB [H, W, 3]; grey, 16-bit, RGBA and palette images are
  converted."""
  try:
    with Image.open(path) as image:
      return to_rgb(image)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise errors.UserError(f'{path}: not an image that can be read '
                           f'({errors.describe(e)[:200]}).') from None


def preprocess(loaded: loading.Loaded, image: np.ndarray) -> np.ndarray:
  """The run's eval preprocessing (a pretrained model's: a square resize, as
  the official code), to float32 [S, S, 3] in [-1, 1]."""
  config = loaded.config or config_dict.ConfigDict(
      {'image_size': loaded.image_size, 'eval_pp': 'resize'})
  return np.asarray(preprocess_lib.make_eval_fn(config)(image))


def probabilities(loaded: loading.Loaded, images: np.ndarray, *,
                  batch_size: int = 32) -> np.ndarray:
  """Softmax probabilities [N, classes] of preprocessed images."""
  forward = jax.jit(lambda p, x: jax.nn.softmax(
      loaded.model.apply({'params': p}, x), axis=-1))
  out = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    padded = np.concatenate([batch, np.zeros((batch_size - len(batch),
                                              *batch.shape[1:]), batch.dtype)])
    out.append(np.asarray(forward(loaded.params, padded))[:len(batch)])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def most_likely(probs: np.ndarray, names, k: int) -> list[list[dict]]:
  """Per image: [{'class', 'name', 'prob'}] of its k most likely classes."""
  results = []
  for row in probs:
    best = np.argsort(-row, kind='stable')[:k]
    results.append([{'class': int(c), 'name': names[c] if c < len(names) else
                     str(c), 'prob': float(row[c])} for c in best])
  return results


def predict(loaded: loading.Loaded, files, *, top_k: int = 5,
            batch_size: int = 32) -> list[dict]:
  """[{'file', 'top': [{'class', 'name', 'prob'}]}] for each image file."""
  images = np.stack([preprocess(loaded, read_image(f))
                     for f in files]) if files else np.zeros((0,))
  probs = probabilities(loaded, images, batch_size=batch_size)
  return [{'file': f, 'top': top} for f, top in zip(
      files, most_likely(probs, loaded.class_names, top_k))]
