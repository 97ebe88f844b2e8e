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
r"""Mixer-H/14 from scratch on ImageNet-1k (no H/14 weights were ever published).

The paper trained H/14 on JFT-300M only, whose weights were not released. This
is the paper's ImageNet-1k pre-training recipe (configs/i1k_scratch.py, Table 4
"ImNet" rows) for H/14. Not yet measured by mixer_jax.

  python -m mixer_jax.train --config=configs/h14.py \
      --config.tfds_manual_dir=/path/to/imagenet
"""

from configs import i1k_scratch


def get_config():
  return i1k_scratch.get_config('H/14')
