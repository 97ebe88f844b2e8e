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
"""Serving elsewhere: a trained model exported for other tools."""

# What `python -m mixer_jax.export --format` writes (export.py says how each
# is read); here so that the command checks the flag before jax loads.
FORMATS = ('stablehlo', 'savedmodel', 'onnx', 'timm')
