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
"""Fine-tuning at K times the pre-training resolution, the paper's way.

Paper Sec. 3 / Supp. C: the patch size stays, the image side grows by an
integer factor K, so the token grid grows from g x g to Kg x Kg. Each
token-mixing MLP is widened K^2 times and initialised block-diagonally with K^2
copies of the pre-trained weights (biases tiled), one block per spatial K x K
part of the grid. The model flattens the whole Kg x Kg grid row-major, so the
tokens of each part are gathered here in that part's own row-major order.
"""

import math

import numpy as np

from mixer_jax import errors


def part_token_indices(grid: int, factor: int) -> np.ndarray:
  """(K*K, g*g) token indices of the Kg x Kg grid, per part, row-major."""
  rows = np.arange(grid * factor).reshape(factor, grid)   # [part row, local row]
  cols = np.arange(grid * factor).reshape(factor, grid)
  side = grid * factor
  # index[i, j, r, c] = (i*g + r) * side + (j*g + c)
  index = rows[:, None, :, None] * side + cols[None, :, None, :]
  return index.reshape(factor * factor, grid * grid)


def widen_token_mlp(dense_0: dict, dense_1: dict, *, factor: int):
  """Block-diagonal K^2-times wider token MLP; returns (Dense_0, Dense_1).

  Dense_0 maps tokens (g*g) -> hidden (D); the widened one maps the K^2 g^2
  tokens to K^2 D hidden units, hidden block b seeing only the tokens of part b.
  """
  kernel_0, kernel_1 = np.asarray(dense_0['kernel']), np.asarray(dense_1['kernel'])
  tokens, hidden = kernel_0.shape
  grid = math.isqrt(tokens)
  if grid * grid != tokens:
    raise errors.UserError(
        f'Cannot widen a token-mixing MLP over {tokens} tokens: '
        'the pre-training patch grid must be square.')
  parts = part_token_indices(grid, factor)
  n_parts, wide_tokens = factor * factor, tokens * factor * factor
  wide_0 = np.zeros((wide_tokens, n_parts * hidden), kernel_0.dtype)
  wide_1 = np.zeros((n_parts * hidden, wide_tokens), kernel_1.dtype)
  for b, tokens_of_part in enumerate(parts):
    hidden_of_part = slice(b * hidden, (b + 1) * hidden)
    wide_0[tokens_of_part, hidden_of_part] = kernel_0
    wide_1[hidden_of_part, tokens_of_part] = kernel_1
  bias_1 = np.zeros((wide_tokens,), dense_1['bias'].dtype)
  bias_1[parts.reshape(-1)] = np.tile(np.asarray(dense_1['bias']), n_parts)
  return ({'kernel': wide_0, 'bias': np.tile(dense_0['bias'], n_parts)},
          {'kernel': wide_1, 'bias': bias_1})


def check_factor(factor) -> None:
  if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or (
      factor < 1):
    raise errors.UserError(
        f'resolution_factor must be an integer >= 1, got '
        f'{factor!r}.')


def pretraining_image_size(image_size: int, *, factor: int,
                           patch_size: int) -> int:
  """The image side the checkpoint was made for; errors if there is none."""
  check_factor(factor)
  if image_size % factor or (image_size // factor) % patch_size:
    raise errors.UserError(
        f'image_size {image_size} is not {factor} times a pre-training size '
        f'divisible by the patch size {patch_size}: with resolution_factor '
        f'{factor} use a multiple of {factor * patch_size}.')
  return image_size // factor


def widen_model(model, *, factor: int):
  """The model for images `factor` times larger: token MLPs K^2 times wider."""
  check_factor(factor)
  return model.clone(tokens_mlp_dim=model.tokens_mlp_dim * factor**2)


def widen_token_mixing(params: dict, *, factor: int) -> dict:
  """Returns `params` ready for images `factor` times larger per side."""
  check_factor(factor)
  if factor == 1:
    return params
  params = dict(params)
  for name, block in params.items():
    if name.startswith('MixerBlock_'):
      token_mixing = block['token_mixing']
      dense_0, dense_1 = widen_token_mlp(
          token_mixing['Dense_0'], token_mixing['Dense_1'], factor=factor)
      params[name] = dict(
          block, token_mixing={'Dense_0': dense_0, 'Dense_1': dense_1})
  return params
