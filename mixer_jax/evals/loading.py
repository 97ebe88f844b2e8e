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
"""A trained model, loaded with its class names: a run's workdir (its config,
final or checkpointed weights and class names) or a published or local
`.npz` (its model from the parameter shapes, ImageNet names for a 1,000- or
21,843-class head). Predict, evaluate, few-shot, export, transfer and the
notebooks start here.
"""

import dataclasses
import gzip
import importlib.resources
import re
from typing import Optional

import jax
import jax.numpy as jnp
from ml_collections import config_dict

from mixer_jax import errors
from mixer_jax import storage
from mixer_jax.model import model_config
from mixer_jax.model import models
from mixer_jax.model import published
from mixer_jax.training import optim
from mixer_jax.training import train_state


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
  storage.check_bucket(workdir, what='Workdir')
  config_path = storage.join(workdir, 'config.json')
  params_path = storage.join(workdir, 'params.npz')
  for path in (config_path, params_path):
    if not storage.exists(path):
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


def checkpoint_params(workdir, loaded: Loaded, step: int):
  """The params of the run's orbax checkpoint of `step`."""
  config = loaded.config
  tx, _ = optim.create_optimizer(config)
  like = jax.eval_shape(lambda: train_state.TrainState.create(
      params=models.init_params(loaded.model, image_size=config.image_size,
                                abstract=True), tx=tx,
      rng=jax.random.PRNGKey(0)))
  checkpoints = train_state.Checkpoints(workdir, config=config, max_to_keep=1)
  try:
    return jax.device_get(checkpoints.restore_step(like, step).params)
  finally:
    checkpoints.close()
