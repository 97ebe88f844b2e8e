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
r"""Fine-tunes the ImageNet-21k Mixer-L/16 at 224 px, or at 448 px (Table 2).

Reproduces the official vit_jax README's CIFAR-10 results (4x V100, batch 512,
10k steps, momentum SGD lr 0.03, clip 1, warmup 500 + cosine, 224 px):
  imagenet21k/Mixer-L_16: 98.34 %   (10.0 h)
  imagenet1k/Mixer-L_16:  96.59 %   (3.0 h; add --config.pretrained=imagenet1k/Mixer-L_16)
At 448 px the paper widens each token-mixing MLP block-diagonally (Sec. 3,
"Fine-tuning"); its Table 2 (ImageNet, L/16 i21k @448: 84.15 %) was made so.
Not yet re-measured by mixer_jax (experiments/README.md lists what was run).

  python -m mixer_jax.train --config=configs/l16.py --config.accum_steps=8
  python -m mixer_jax.train --config=configs/l16.py:imagenet2012 \
      --config.image_size=448 --config.resolution_factor=2 \
      --config.eval_pp=resize_crop --config.accum_steps=32
"""

from configs import common


def get_config(dataset='cifar10'):
  config = common.with_dataset(common.get_config(), dataset)
  config.model.variant = 'L/16'
  config.pretrained = 'imagenet21k/Mixer-L_16'
  return config
