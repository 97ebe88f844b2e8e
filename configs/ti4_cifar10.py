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
r"""Trains Mixer-Ti/4 from scratch on CIFAR-10 at its native 32x32.

For users without pre-trained weights. The recipe scales the paper's
pre-training setup (Table 4: Adam, decoupled weight decay, RandAugment, mixup,
stochastic depth) down to 32x32 images and a 4.6M-parameter Mixer with 64
tokens of 4x4 pixels: ~300 epochs of batch 512, pad-and-crop + flip,
RandAugment(2, 10), mixup 0.2, label smoothing 0.1, stochastic depth 0.1.
Our result: not yet measured by us (it needs CIFAR-10 and an accelerator).

  python -m mixer_jax.train --config=configs/ti4_cifar10.py
"""

from mixer_jax import recipes


def get_config():
  config = recipes.get_config()
  config.model.variant = 'Ti/4'
  config.model.stochastic_depth = 0.1
  config.dataset = 'cifar10'
  config.image_size = 32
  config.train_pp = 'pad_crop'
  config.eval_pp = 'resize'
  config.randaugment_layers = 2
  config.randaugment_magnitude = 10
  config.mixup_alpha = 0.2
  config.label_smoothing = 0.1
  config.cache = True
  config.batch_size = 512
  config.total_steps = 28_800  # ~300 epochs of 49k images.
  config.optimizer = 'adamw'
  config.lr = 1e-3
  config.weight_decay = 0.05
  config.warmup_steps = 960  # ~10 epochs.
  config.decay_type = 'cosine'
  config.eval_every = 960
  config.progress_every = 100
  config.checkpoint_every = 960
  return config
