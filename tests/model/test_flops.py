"""Tests for mixer_jax.model.flops: the forward pass's matmuls, by shape."""

import pytest

from mixer_jax.model import flops
from mixer_jax.model import models


@pytest.mark.parametrize('variant,image_size,num_classes', [
    ('S/32', 224, 1000), ('B/16', 384, 1000), ('L/16', 224, None),
    ('Ti/4', 32, 10),
])
def test_forward_matmuls_add_up_to_the_flops_formula(variant, image_size,
                                                     num_classes):
  model = models.create_model(variant, num_classes=num_classes)
  s, c = (image_size // model.patch_size)**2, model.hidden_dim
  formula = (2 * s * 3 * model.patch_size**2 * c + model.num_blocks * (
      4 * c * s * model.tokens_mlp_dim + 4 * s * c * model.channels_mlp_dim) +
             2 * c * (num_classes or 0))
  assert flops.flops_per_image(model, image_size=image_size) == formula
  matmuls = flops.forward_matmuls(model, image_size=image_size)
  for name in ('token_mixing', 'channel_mixing'):  # Each MLP: k -> n -> k.
    first, second = (m for m in matmuls if m.name == name)
    assert (first.rows, first.k, first.n) == (second.rows, second.n, second.k)
  assert ('head' in {m.name for m in matmuls}) == bool(num_classes)
