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
r"""The offline default: a small Mixer on scikit-learn's handwritten digits.

1,797 real 8x8 grey images that ship inside the scikit-learn wheel (no
download; 1,437 train / 360 test, a fixed stratified split), upsampled nowhere:
a patch-2 Mixer sees 16 tokens. It runs the same input pipeline, train step,
evaluation, checkpoints and metrics as every other recipe, on any machine.
Our result: 98.9 % test accuracy (eval loss 0.038), 600 steps in 72 s of
training on a 2-core CPU VM on a slow day, the same on every run
(experiments/README.md).

  python -m mixer_jax.train --config=configs/digits.py
"""

from mixer_jax import recipes


def get_config():
  return recipes.digits()
