"""Tests for mixer_jax.model.resolution: fine-tuning at K times the resolution."""


import jax
import numpy as np
import pytest

from mixer_jax.model import models
from mixer_jax.model import published
from mixer_jax.model import resolution
from tests.conftest import TESTDATA

FIXTURE = TESTDATA / 'vit_jax_mixer_tiny.npz'
TINY = dict(num_classes=10, patch_size=4, num_blocks=2, hidden_dim=64,
            tokens_mlp_dim=32, channels_mlp_dim=128)


def test_part_token_indices_groups_each_part_row_major():
  # A 4x4 grid of tokens 0..15 in two 2x2-token parts per side.
  np.testing.assert_array_equal(
      resolution.part_token_indices(2, 2),
      [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]])


@pytest.mark.slow
@pytest.mark.parametrize('factor', [2, 3])
def test_widened_model_on_tiles_is_the_mean_of_the_tiles(factor):
  """The paper's init makes every K x K part evolve as the original model.

  LayerNorm and channel MLPs act per token, the widened token MLP per part,
  and the head is affine after the mean over tokens: on an image of K x K
  tiles the logits are exactly the mean of the original logits on the tiles.
  """
  base = models.MlpMixer(**TINY)
  params = published.load(FIXTURE)  # Random weights, non-zero head.
  wide = resolution.widen_model(base, factor=factor)
  side = 32 * factor
  assert resolution.pretraining_image_size(
      side, factor=factor, patch_size=4) == 32
  init = models.init_params(wide, image_size=side)
  wide_params = published.load_pretrained(
      init_params=init, pretrained=FIXTURE, keep_head=True,
      resolution_factor=factor)
  assert wide_params['MixerBlock_0']['token_mixing']['Dense_0'][
      'kernel'].shape == (64 * factor**2, 32 * factor**2)

  rng = np.random.RandomState(factor)
  tiles = rng.uniform(-1, 1, (factor, factor, 2, 32, 32, 3)).astype(np.float32)
  image = tiles.transpose(2, 0, 3, 1, 4, 5).reshape(2, side, side, 3)
  tile_logits = base.apply({'params': params}, tiles.reshape(-1, 32, 32, 3))
  expected = np.asarray(tile_logits).reshape(factor * factor, 2, 10).mean(0)
  got = wide.apply({'params': wide_params}, image)
  np.testing.assert_allclose(got, expected, atol=1e-4)
  # Not a coincidence of near-constant logits.
  assert np.abs(expected).max() > 0.1
  assert np.abs(np.asarray(tile_logits).reshape(-1, 2, 10)
                - expected).max() > 1e-2


def test_factor_one_is_the_identity():
  params = published.load(FIXTURE)
  assert resolution.widen_token_mixing(params, factor=1) is params


@pytest.mark.parametrize('factor', [0, -2, 1.5, '2', True])
def test_factor_must_be_an_integer_of_at_least_one(factor):
  with pytest.raises(ValueError, match='integer >= 1'):
    resolution.widen_token_mixing(published.load(FIXTURE), factor=factor)


def test_factor_that_does_not_match_the_image_size_names_the_shapes():
  # Checkpoint at 32 px, model at 64 px, but factor 3 claimed.
  model = resolution.widen_model(models.MlpMixer(**TINY), factor=3)
  init = models.init_params(model, image_size=64)
  with pytest.raises(published.CheckpointError,
                     match=r'token_mixing/Dense_0/kernel.*\(256, 288\).*'
                     r'\(576, 288\).*another image size'):
    published.load_pretrained(init_params=init, pretrained=FIXTURE,
                               resolution_factor=3)


@pytest.mark.parametrize('image_size,factor', [(96, 2), (100, 2), (64, 3)])
def test_image_size_must_be_a_multiple_of_a_pretraining_size(image_size,
                                                             factor):
  # 96 = 2 x 48, but 48 does not divide by the patch 32; 100/2 = 50 neither.
  with pytest.raises(ValueError, match=f'image_size {image_size} is not'):
    resolution.pretraining_image_size(image_size, factor=factor, patch_size=32)


def test_widening_is_only_for_square_grids():
  params = jax.tree.map(np.asarray, published.load(FIXTURE))
  block = params['MixerBlock_0']['token_mixing']
  block['Dense_0']['kernel'] = block['Dense_0']['kernel'][:60]
  with pytest.raises(ValueError, match='60 tokens.*square'):
    resolution.widen_token_mixing(params, factor=2)
