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
"""Matmul FLOPs of a Mixer's forward pass, for throughput and MFU figures."""

from typing import NamedTuple

from mixer_jax.model import models


class Matmul(NamedTuple):
  """`count` matmuls of one forward pass per image: (rows, k) @ (k, n).

  Entries that share a `name` are one MLP's layers, each the other's shape
  reversed, (rows, k) @ (k, n) then (rows, n) @ (n, k).
  """
  name: str
  rows: int
  k: int
  n: int
  count: int

  @property
  def flops(self) -> int:
    return 2 * self.rows * self.k * self.n * self.count


def forward_matmuls(model: models.MlpMixer, *, image_size: int) -> tuple[Matmul, ...]:
  """Every matmul of one image's forward pass, by shape."""
  tokens = (image_size // model.patch_size)**2
  c, blocks = model.hidden_dim, model.num_blocks
  matmuls = [
      Matmul('stem', tokens, model.in_channels * model.patch_size**2, c, 1),
      Matmul('token_mixing', c, tokens, model.tokens_mlp_dim, blocks),
      Matmul('token_mixing', c, model.tokens_mlp_dim, tokens, blocks),
      Matmul('channel_mixing', tokens, c, model.channels_mlp_dim, blocks),
      Matmul('channel_mixing', tokens, model.channels_mlp_dim, c, blocks)]
  if model.num_classes:
    matmuls.append(Matmul('head', 1, c, model.num_classes, 1))
  return tuple(matmuls)


def flops_per_image(model: models.MlpMixer, *, image_size: int) -> int:
  """Matmul FLOPs of one forward pass (2 per multiply-add).

  With S patches of P x P x 3 pixels, C channels, N blocks, head K:
    stem 2 S (3 P^2) C  +  N (token 4 C S D_S + channel 4 S C D_C)  +  2 C K.
  LayerNorm, GELU, residual adds and the mean are O(S C) per block, under 1 %
  for the paper's variants, and left out as in the usual MFU accounting;
  a training step costs 3x the forward (backward = 2 forward).
  """
  return sum(m.flops for m in forward_matmuls(model, image_size=image_size))
