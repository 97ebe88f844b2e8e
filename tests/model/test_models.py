"""Tests for mixer_jax.model.models: variants, parity with vit_jax and timm, options."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer_jax.model import models
from mixer_jax.model import published
from tests.conftest import TESTDATA

# The fixtures' geometry (testdata/FIXTURES.md).
TINY = dict(patch_size=4, num_blocks=2, hidden_dim=64, tokens_mlp_dim=32,
            channels_mlp_dim=128)


def tiny_model(**overrides):
  return models.MlpMixer(**{'num_classes': 10, **TINY, **overrides})


# Paper Table 1 with a 1000-class head (vit_jax's models_test agrees for B/16,
# B/32, L/16); S/8 from the published GSAM checkpoint's arrays.
@pytest.mark.parametrize('variant,image_size,expected', [
    ('S/32', 224, 19_104_624),
    ('S/16', 224, 18_528_264),
    ('S/8', 224, 20_646_504),
    ('B/32', 224, 60_293_428),
    ('B/16', 224, 59_880_472),
    ('L/32', 224, 206_939_264),
    ('L/16', 224, 208_196_168),
    ('H/14', 224, 432_350_952),
    ('Ti/4', 32, 4_615_400),
    ('Ti/2', 32, 5_000_936),
])
def test_param_count(variant, image_size, expected):
  model = models.create_model(variant, num_classes=1000)
  params = models.init_params(model, image_size=image_size, abstract=True)
  assert isinstance(jax.tree.leaves(params)[0], jax.ShapeDtypeStruct)
  assert models.count_params(params) == expected


def test_every_named_variant_has_a_param_count_test():
  tested = {p[0] for p in test_param_count.pytestmark[0].args[1]}
  assert tested == set(models.VARIANTS)


@pytest.mark.parametrize('name,expected', [
    ('B/16', ('B', 16)), ('Mixer-B_16', ('B', 16)), ('mixer_b16', ('B', 16)),
    ('Mixer-L_32', ('L', 32)), ('h/14', ('H', 14)), ('S_8', ('S', 8)),
    ('Ti/4', ('Ti', 4)), (' S/32 ', ('S', 32)),
])
def test_parse_variant(name, expected):
  assert models.parse_variant(name) == expected


@pytest.mark.parametrize('name', ['X/16', 'B16x', 'ViT-B_16', 'B/', ''])
def test_unknown_variant_is_a_clear_error(name):
  with pytest.raises(ValueError, match='Unknown Mixer variant'):
    models.create_model(name, num_classes=10)


def test_unknown_override_is_a_clear_error():
  with pytest.raises(TypeError, match='Unknown MlpMixer field.*num_layers'):
    models.create_model('B/16', num_classes=10, num_layers=3)


def test_overrides_reach_the_model():
  model = models.create_model('S/16', num_classes=5, num_blocks=3,
                              approximate_gelu=False, dtype=jnp.bfloat16)
  assert (model.num_blocks, model.hidden_dim, model.patch_size) == (3, 512, 16)
  assert not model.approximate_gelu and model.dtype == jnp.bfloat16


def load_io(name):
  io = np.load(TESTDATA / f'{name}_io.npz')
  return io['input'], io['logits']


def max_delta(params, images, logits, *, approximate_gelu):
  out = tiny_model(approximate_gelu=approximate_gelu).apply(
      {'params': params}, images)
  return np.abs(np.asarray(out) - logits).max()


def test_matches_official_vit_jax():
  """The official module's logits, through the published-layout loader."""
  params = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  images, logits = load_io('vit_jax_mixer_tiny')
  tanh = max_delta(params, images, logits, approximate_gelu=True)
  erf = max_delta(params, images, logits, approximate_gelu=False)
  assert tanh <= 1e-4 and 10 * tanh < erf, (tanh, erf)


def test_matches_timm():
  """timm's logits (exact GELU), through the timm state-dict converter."""
  params = published.convert_timm(
      dict(np.load(TESTDATA / 'timm_mixer_tiny.npz')))
  images_nchw, logits = load_io('timm_mixer_tiny')
  images = images_nchw.transpose(0, 2, 3, 1)
  erf = max_delta(params, images, logits, approximate_gelu=False)
  tanh = max_delta(params, images, logits, approximate_gelu=True)
  assert erf <= 1e-4 and 10 * erf < tanh, (erf, tanh)


def test_init_params_match_the_published_tree():
  params = models.init_params(tiny_model(), image_size=32)
  fixture = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  assert shapes(params) == shapes(fixture)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_head_is_zero_initialised():
  params = models.init_params(tiny_model(), image_size=32)
  images = np.random.RandomState(0).randn(2, 32, 32, 3).astype(np.float32)
  assert not np.any(params['head']['kernel'])
  logits = tiny_model().apply({'params': params}, images)
  np.testing.assert_array_equal(logits, np.broadcast_to(params['head']['bias'],
                                                        (2, 10)))


@pytest.mark.parametrize('num_classes', [0, None])
def test_no_head_returns_pooled_features(num_classes):
  model = tiny_model(num_classes=num_classes)
  params = models.init_params(model, image_size=32)
  assert 'head' not in params
  fixture = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  del fixture['head']
  images, logits = load_io('vit_jax_mixer_tiny')
  features = model.apply({'params': fixture}, images)
  assert features.shape == (3, 64)
  # The head is affine on the pooled features.
  full = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  recomputed = features @ full['head']['kernel'] + full['head']['bias']
  np.testing.assert_allclose(recomputed, logits, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  params = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  images, logits = load_io('vit_jax_mixer_tiny')
  model = tiny_model(dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(
      models.init_params(model, image_size=32)))
  out = model.apply({'params': params}, images)
  assert out.dtype == jnp.float32
  # bf16 has 8 mantissa bits: close, but not float32-exact.
  delta = np.abs(np.asarray(out) - logits)
  assert 1e-5 < delta.max() < 0.05 * np.abs(logits).max()


def test_train_mode_without_dropout_is_deterministic_and_equal_to_eval():
  params = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  images, _ = load_io('vit_jax_mixer_tiny')
  model = tiny_model()
  np.testing.assert_array_equal(
      model.apply({'params': params}, images, train=True),
      model.apply({'params': params}, images, train=False))


def test_dropout_needs_an_rng_and_changes_only_training():
  params = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  images, logits = load_io('vit_jax_mixer_tiny')
  model = tiny_model(dropout_rate=0.5)
  np.testing.assert_allclose(model.apply({'params': params}, images), logits,
                             atol=1e-4)
  rngs = {'dropout': jax.random.PRNGKey(0)}
  train = model.apply({'params': params}, images, train=True, rngs=rngs)
  assert np.abs(np.asarray(train) - logits).max() > 1e-3
  with pytest.raises(Exception, match='dropout'):
    model.apply({'params': params}, images, train=True)


def test_stochastic_depth_grows_linearly_and_drops_whole_branches():
  # Two blocks at stochastic_depth=1: block 0 keeps rate 0, the last block
  # rate 1, so in training the model is exactly its first block.
  params = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  images, logits = load_io('vit_jax_mixer_tiny')
  model = tiny_model(stochastic_depth=1.0)
  train = model.apply({'params': params}, images, train=True,
                      rngs={'dropout': jax.random.PRNGKey(0)})
  one_block = {k: v for k, v in params.items() if k != 'MixerBlock_1'}
  expected = tiny_model(num_blocks=1).apply({'params': one_block}, images)
  np.testing.assert_allclose(train, expected, atol=1e-5)
  # At eval nothing is dropped or rescaled.
  np.testing.assert_allclose(model.apply({'params': params}, images), logits,
                             atol=1e-4)


def test_stochastic_depth_rescales_kept_branches():
  # One block at rate 0.5 with the channel branch silenced: each example's
  # token branch is either dropped or doubled (inverted drop-path).
  model = models.MixerBlock(tokens_mlp_dim=8, channels_mlp_dim=8,
                            drop_path_rate=0.5)
  x = jnp.asarray(np.random.RandomState(0).randn(64, 4, 6), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  params['channel_mixing']['Dense_1'] = jax.tree.map(
      jnp.zeros_like, params['channel_mixing']['Dense_1'])
  branch = model.apply({'params': params}, x) - x
  out = model.apply({'params': params}, x, train=True,
                    rngs={'dropout': jax.random.PRNGKey(1)}) - x
  doubled = np.all(np.isclose(out, 2 * branch, atol=1e-5), axis=(1, 2))
  dropped = np.all(out == 0, axis=(1, 2))
  assert np.all(doubled ^ dropped)
  assert 16 < dropped.sum() < 48


@pytest.mark.parametrize('shape,message', [
    ((2, 30, 32, 3), 'not divisible by the patch size 4'),
    ((2, 32, 32, 1), 'expects 3 image channels'),
    ((32, 32, 3), 'NHWC images'),
])
def test_bad_images_are_a_clear_error(shape, message):
  params = published.load(TESTDATA / 'vit_jax_mixer_tiny.npz')
  with pytest.raises(ValueError, match=message):
    tiny_model().apply({'params': params}, np.zeros(shape, np.float32))


def test_init_at_an_image_size_the_patch_does_not_divide():
  with pytest.raises(ValueError, match='240x240 is not divisible by .* 32'):
    models.init_params(models.create_model('B/32', num_classes=10),
                       image_size=224 + 16)
