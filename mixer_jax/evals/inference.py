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
"""A trained model in use: load it with its class names, read images, predict.

Shared by the predict, evaluate and few-shot commands and the notebooks. A
run's workdir gives its config, final weights and class names; a published
or local `.npz` gives its model by its parameter shapes, with ImageNet names
for a 1,000- or 21,843-class head.
"""

import dataclasses
import gzip
import importlib.resources
import os
import re
from typing import Iterable, Optional

import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
from PIL import Image

from mixer_jax.model import published
from mixer_jax import errors
from mixer_jax.model import model_config
from mixer_jax.model import models
from mixer_jax.data import preprocess as preprocess_lib
from mixer_jax.training import train_state

# What PIL reads here: grey, RGBA and palette images become RGB.
IMAGE_TYPES = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif')


@dataclasses.dataclass
class Loaded:
  """A model ready to use: run `model.apply({'params': params}, images)`."""
  model: models.MlpMixer
  params: dict
  image_size: int
  class_names: tuple[str, ...]
  config: Optional[config_dict.ConfigDict] = None  # A run's; None otherwise.


def imagenet_names(num_classes: int) -> tuple[str, ...]:
  """ImageNet-1k (1,000) or ImageNet-21k (21,843) names in head order."""
  name = {1000: 'imagenet1k', 21843: 'imagenet21k'}.get(num_classes)
  if name is None:
    return ()
  data = importlib.resources.files('mixer_jax.data') / f'{name}.tsv.gz'
  with data.open('rb') as f:
    lines = gzip.decompress(f.read()).decode().splitlines()
  return tuple(line.split('\t', 1)[1] for line in lines)


def model_from_params(params, **options) -> tuple[models.MlpMixer, int]:
  """(model, image size) that `params` (published layout) were made for."""
  try:
    p, _, channels, hidden = params['stem']['kernel'].shape
    blocks = sum(bool(re.fullmatch(r'MixerBlock_\d+', k)) for k in params)
    block = params['MixerBlock_0']
    tokens, tokens_mlp = block['token_mixing']['Dense_0']['kernel'].shape
    channels_mlp = block['channel_mixing']['Dense_0']['kernel'].shape[1]
    head = params['head']['kernel'].shape[1] if 'head' in params else None
  except (KeyError, TypeError, ValueError) as e:
    raise published.CheckpointError(
        f'The parameters fit no Mixer (missing or misshapen {e}).') from None
  grid = int(round(tokens**0.5))
  if grid * grid != tokens:
    raise published.CheckpointError(
        f'The parameters fit no Mixer: {tokens} tokens is no square grid.')
  model = models.MlpMixer(
      patch_size=p, num_classes=head, num_blocks=blocks, hidden_dim=hidden,
      tokens_mlp_dim=tokens_mlp, channels_mlp_dim=channels_mlp,
      in_channels=channels, **options)
  return model, grid * p


def from_pretrained(pretrained: str, *, cache_dir=None) -> Loaded:
  """A published name, a path or a URL; the model from the shapes."""
  params = published.load(published.fetch(pretrained, cache_dir=cache_dir))
  try:
    model, image_size = model_from_params(params)
  except published.CheckpointError as e:
    raise published.CheckpointError(f'{pretrained}: {e}') from None
  try:
    model.apply({'params': params}, jnp.zeros((1, image_size, image_size,
                                               model.in_channels)))
  except Exception as e:  # pylint: disable=broad-except
    raise published.CheckpointError(
        f'{pretrained} fits no Mixer: {errors.describe(e)[:300]}') from None
  return Loaded(model, params, image_size,
                imagenet_names(model.num_classes or 0))


def from_run(workdir: str) -> Loaded:
  """A trained run's final weights (params.npz), model and class names."""
  config_path = os.path.join(workdir, 'config.json')
  params_path = os.path.join(workdir, 'params.npz')
  for path in (config_path, params_path):
    if not os.path.exists(path):
      raise errors.MissingError(
          f'{workdir} is no finished run: {path} is missing.')
  config = config_dict.ConfigDict(train_state.read_config(workdir))
  params = published.load(params_path)
  names = train_state.read_class_names(workdir)
  num_classes = params['head']['kernel'].shape[1]
  model = model_config.model_from_config(config, num_classes=num_classes)
  return Loaded(model, params, config.image_size,
                names or imagenet_names(num_classes), config)


def from_run_or_pretrained(*, workdir: Optional[str] = None,
                           pretrained: Optional[str] = None) -> Loaded:
  """from_run(workdir) or from_pretrained(pretrained): exactly one given."""
  if bool(workdir) == bool(pretrained):
    raise errors.UserError('Give one of --workdir and --pretrained.')
  return from_run(workdir) if workdir else from_pretrained(pretrained)


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


def preprocess(loaded: Loaded, image: np.ndarray) -> np.ndarray:
  """The run's eval preprocessing (a pretrained model's: a square resize, as
  the official code), to float32 [S, S, 3] in [-1, 1]."""
  config = loaded.config or config_dict.ConfigDict(
      {'image_size': loaded.image_size, 'eval_pp': 'resize'})
  return np.asarray(preprocess_lib.make_eval_fn(config)(image))


def probabilities(loaded: Loaded, images: np.ndarray, *,
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


def top_k(probs: np.ndarray, names, k: int) -> list[list[dict]]:
  """Per image: [{'class', 'name', 'prob'}] of its k most likely classes."""
  results = []
  for row in probs:
    best = np.argsort(-row, kind='stable')[:k]
    results.append([{'class': int(c), 'name': names[c] if c < len(names) else
                     str(c), 'prob': float(row[c])} for c in best])
  return results
