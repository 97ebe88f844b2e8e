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
"""The trainer: `train_and_evaluate(config, workdir)`, as flax's examples.

setup.py makes what a run needs, tasks.py lists what runs every so many
steps, loop.py runs the steps and finishes the run.
"""

from mixer_jax.trainer.loop import train_and_evaluate
