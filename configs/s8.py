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
r"""Fine-tunes the published Mixer-S/8 (ImageNet-1k, GSAM) at 224 px.

The only published S/8 weights are `gsam/Mixer-S_8` (ImageNet-1k with GSAM).
The recipe is the paper's fine-tuning (momentum SGD lr 0.03, batch 512, clip 1,
warmup 500 + cosine, 10k steps on CIFAR, 224 px). No CIFAR-10 result was ever
published for this checkpoint; nearest official anchor: i1k B/16, 96.72 %.
Not yet measured by mixer_jax (experiments/README.md lists what was run).

  python -m mixer_jax.train --config=configs/s8.py
  python -m mixer_jax.train --config=configs/s8.py:oxford_iiit_pet
"""

from configs import common


def get_config(dataset='cifar10'):
  config = common.with_dataset(common.get_config(), dataset)
  config.model.variant = 'S/8'
  config.pretrained = 'gsam/Mixer-S_8'
  return config
