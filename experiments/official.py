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
"""vit_jax's MlpMixer with a variant's widths: put a checkout of
github.com/google-research/vision_transformer on PYTHONPATH."""

from mixer_jax.model import models


def mixer(variant: str, *, num_classes: int):
  """vit_jax/models_mixer.MlpMixer (float32 only) shaped like our `variant`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vit_jax import models_mixer  # pylint: disable=g-import-not-at-top
  ours = models.create_model(variant, num_classes=num_classes)
  return models_mixer.MlpMixer(
      patches=ml_collections.ConfigDict({'size': (ours.patch_size,) * 2}),
      num_classes=num_classes, num_blocks=ours.num_blocks,
      hidden_dim=ours.hidden_dim, tokens_mlp_dim=ours.tokens_mlp_dim,
      channels_mlp_dim=ours.channels_mlp_dim)
