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
"""MLP-Mixer (Tolstikhin et al., 2021): the paper's model and its variants.

With default fields the computation and the parameter tree are exactly those of
the official `vit_jax/models_mixer.py`, so the published `.npz` checkpoints load
unchanged. Beyond it: a compute `dtype` (parameters stay float32), dropout in
the MLPs, stochastic depth, and exact (erf) GELU for timm-trained weights.
"""

import dataclasses
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixer_jax import errors

Dtype = Any


class MlpBlock(nn.Module):
  """Dense -> GELU -> Dense over the last axis, back to the input width."""
  mlp_dim: int
  approximate_gelu: bool = True
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    y = nn.Dense(self.mlp_dim, dtype=self.dtype)(x)
    y = nn.gelu(y, approximate=self.approximate_gelu)
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = nn.Dense(x.shape[-1], dtype=self.dtype)(y)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class MixerBlock(nn.Module):
  """Token mixing then channel mixing, each a pre-LayerNorm residual branch.

  `drop_path_rate` drops a whole residual branch per example (stochastic
  depth) and rescales the kept ones by 1/(1 - rate), so that evaluation needs
  no correction; the token and channel branches draw independently.
  """
  tokens_mlp_dim: int
  channels_mlp_dim: int
  approximate_gelu: bool = True
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    mlp = dict(approximate_gelu=self.approximate_gelu,
               dropout_rate=self.dropout_rate, dtype=self.dtype)
    # Drops whole examples: the mask is broadcast over tokens and channels.
    drop_path = nn.Dropout(self.drop_path_rate, broadcast_dims=(1, 2),
                           deterministic=not train)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = jnp.swapaxes(y, 1, 2)
    y = MlpBlock(self.tokens_mlp_dim, name='token_mixing', **mlp)(
        y, train=train)
    y = jnp.swapaxes(y, 1, 2)
    x = x + drop_path(y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = MlpBlock(self.channels_mlp_dim, name='channel_mixing', **mlp)(
        y, train=train)
    return x + drop_path(y)


class MlpMixer(nn.Module):
  """The MLP-Mixer classifier; NHWC images in, logits (float32) out.

  Attributes:
    patch_size: side of the square patches; the image sides must divide by it.
    num_classes: size of the head; 0 or None returns the pooled features.
    num_blocks: number of Mixer blocks.
    hidden_dim: channels per token (C in the paper).
    tokens_mlp_dim: hidden width of the token-mixing MLP (D_S).
    channels_mlp_dim: hidden width of the channel-mixing MLP (D_C).
    approximate_gelu: tanh GELU as the official weights; False for timm's erf.
    dtype: computation dtype; parameters are always float32.
    dropout_rate: dropout after each GELU and each MLP output.
    stochastic_depth: drop-path rate of the last block; block i of N uses
      `stochastic_depth * i / (N - 1)` as big_vision's Mixer (0 for block 0).
    in_channels: image channels the model expects.
  """
  patch_size: int
  num_classes: Optional[int]
  num_blocks: int
  hidden_dim: int
  tokens_mlp_dim: int
  channels_mlp_dim: int
  approximate_gelu: bool = True
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  in_channels: int = 3

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    self.check_input_shape(images.shape)
    # Non-overlapping patches, linearly projected: the official strided conv.
    x = nn.Conv(self.hidden_dim, (self.patch_size, self.patch_size),
                strides=(self.patch_size, self.patch_size), padding='VALID',
                dtype=self.dtype, name='stem')(images)
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)  # Tokens in row-major grid order.
    for i in range(self.num_blocks):
      depth_fraction = i / max(self.num_blocks - 1, 1)
      x = MixerBlock(
          self.tokens_mlp_dim, self.channels_mlp_dim,
          approximate_gelu=self.approximate_gelu,
          dropout_rate=self.dropout_rate,
          drop_path_rate=self.stochastic_depth * depth_fraction,
          dtype=self.dtype, name=f'MixerBlock_{i}')(x, train=train)
    x = nn.LayerNorm(dtype=self.dtype, name='pre_head_layer_norm')(x)
    x = jnp.mean(x.astype(jnp.float32), axis=1)
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                   dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)

  def check_input_shape(self, shape):
    """Raises ValueError naming the problem if images of `shape` cannot fit."""
    if len(shape) != 4:
      raise errors.UserError(
          f'MlpMixer expects NHWC images (4 dimensions), got '
          f'shape {tuple(shape)}.')
    _, height, width, channels = shape
    if channels != self.in_channels:
      raise errors.UserError(
          f'MlpMixer expects {self.in_channels} image channels '
          f'(NHWC), got {channels} in shape {tuple(shape)}.')
    if height % self.patch_size or width % self.patch_size:
      raise errors.UserError(
          f'Image size {height}x{width} is not divisible by the '
          f'patch size {self.patch_size}.')


# Paper Table 1 widths (the patch size is the part after the slash). "Ti" is
# ours: the paper's ratios (D_S = C/2, D_C = 4C) at a size meant for training
# from scratch on small images (e.g. Ti/4 on 32x32 CIFAR).
WIDTHS = {
    'Ti': dict(num_blocks=8, hidden_dim=256, tokens_mlp_dim=128,
               channels_mlp_dim=1024),
    'S': dict(num_blocks=8, hidden_dim=512, tokens_mlp_dim=256,
              channels_mlp_dim=2048),
    'B': dict(num_blocks=12, hidden_dim=768, tokens_mlp_dim=384,
              channels_mlp_dim=3072),
    'L': dict(num_blocks=24, hidden_dim=1024, tokens_mlp_dim=512,
              channels_mlp_dim=4096),
    'H': dict(num_blocks=32, hidden_dim=1280, tokens_mlp_dim=640,
              channels_mlp_dim=5120),
}
# The paper's Table 1 variants, the published S/8, and the from-scratch ones.
VARIANTS = ('S/32', 'S/16', 'S/8', 'B/32', 'B/16', 'L/32', 'L/16', 'H/14',
            'Ti/4', 'Ti/2')

_VARIANT_RE = re.compile(r'^(?:mixer[-_])?(ti|s|b|l|h)[/_]?(\d+)$', re.I)
_CANONICAL_WIDTH = {name.lower(): name for name in WIDTHS}


def parse_variant(variant: str) -> tuple[str, int]:
  """'B/16', 'Mixer-B_16' or 'mixer_b16' -> ('B', 16)."""
  match = _VARIANT_RE.match(variant.strip())
  if not match:
    raise errors.UserError(
        f'Unknown Mixer variant {variant!r}: expected <width>/<patch> with '
        f'width one of {", ".join(WIDTHS)} (e.g. "B/16" or "Mixer-B_16"); '
        f'the named variants are {", ".join(VARIANTS)}.')
  width, patch = match.groups()
  return _CANONICAL_WIDTH[width.lower()], int(patch)


def create_model(variant: str, *, num_classes: Optional[int],
                 **overrides) -> MlpMixer:
  """Builds an `MlpMixer` for `variant`; `overrides` are MlpMixer fields."""
  width, patch_size = parse_variant(variant)
  fields = {f.name for f in dataclasses.fields(MlpMixer)} - {'parent', 'name'}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise TypeError(f'Unknown MlpMixer field(s) {", ".join(unknown)}; '
                    f'valid ones are {", ".join(sorted(fields))}.')
  kwargs = dict(WIDTHS[width], patch_size=patch_size, num_classes=num_classes)
  kwargs.update(overrides)
  return MlpMixer(**kwargs)


def init_params(model: MlpMixer, *, image_size: int, rng=None,
                abstract: bool = False):
  """Initial parameters for `image_size` square images (shapes only if abstract).

  The token-mixing weights depend on the number of patches, hence on the
  image size. Initialisation runs on the host CPU, as vit_jax does, so that a
  large model's random init never takes accelerator memory twice.
  """
  if rng is None:
    rng = jax.random.PRNGKey(0)
  images = jax.ShapeDtypeStruct(
      (1, image_size, image_size, model.in_channels), jnp.float32)
  model.check_input_shape(images.shape)
  init = lambda rng: model.init(rng, jnp.zeros(images.shape), train=False)
  if abstract:
    return jax.eval_shape(init, rng)['params']
  cpu = jax.local_devices(backend='cpu')[0]
  return jax.jit(init)(jax.device_put(rng, cpu))['params']


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
