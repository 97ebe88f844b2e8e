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
"""The model a config describes: shared by train, plan and the commands
that load a trained run."""

import jax.numpy as jnp

from mixer_jax.model import models
from mixer_jax.model import resolution

_MODEL_OVERRIDES = ('num_blocks', 'hidden_dim', 'tokens_mlp_dim',
                    'channels_mlp_dim')


def model_from_config(config, *, num_classes: int) -> models.MlpMixer:
  """config.model's Mixer with `num_classes`, widened for
  `resolution_factor`."""
  model = models.create_model(
      config.model.variant, num_classes=num_classes,
      dtype=jnp.dtype(config.model.dtype),
      approximate_gelu=config.model.approximate_gelu,
      dropout_rate=config.model.dropout_rate,
      stochastic_depth=config.model.stochastic_depth,
      **{k: config.model[k] for k in _MODEL_OVERRIDES
         if config.model[k] is not None})
  resolution.pretraining_image_size(config.image_size,
                                    factor=config.resolution_factor,
                                    patch_size=model.patch_size)
  return resolution.widen_model(model, factor=config.resolution_factor)
