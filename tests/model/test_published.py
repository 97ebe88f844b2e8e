"""Tests for mixer_jax.model.published: the .npz layout, timm, load_pretrained."""

import zipfile

from etils import epath
import jax
import numpy as np
import pytest

from mixer_jax.model import models
from mixer_jax.model import published
from tests.conftest import TESTDATA

FIXTURE = TESTDATA / 'vit_jax_mixer_tiny.npz'
TINY = dict(patch_size=4, num_blocks=2, hidden_dim=64, tokens_mlp_dim=32,
            channels_mlp_dim=128)


def tiny_model(num_classes=10, **overrides):
  return models.MlpMixer(num_classes=num_classes, **{**TINY, **overrides})


def flat(tree):
  return {'/'.join(k.key for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_trees_equal(a, b):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_load_reads_the_published_layout():
  params = published.load(FIXTURE)
  raw = np.load(FIXTURE)
  assert set(flat(params)) == set(raw.files)
  np.testing.assert_array_equal(
      params['MixerBlock_1']['token_mixing']['Dense_0']['kernel'],
      raw['MixerBlock_1/token_mixing/Dense_0/kernel'])


@pytest.mark.slow
def test_save_load_round_trip_with_more_than_ten_blocks(tmp_path):
  # MixerBlock_10 sorts before MixerBlock_2: the tree must not depend on it.
  model = tiny_model(num_blocks=12)
  params = models.init_params(model, image_size=32,
                              rng=jax.random.PRNGKey(1))
  path = tmp_path / 'ckpt.npz'
  published.save(path, params)
  assert 'MixerBlock_10/token_mixing/Dense_0/kernel' in np.load(path).files
  restored = published.load(path)
  assert_trees_equal(params, restored)
  images = np.random.RandomState(0).randn(2, 32, 32, 3).astype(np.float32)
  np.testing.assert_array_equal(model.apply({'params': params}, images),
                                model.apply({'params': restored}, images))


def test_save_never_overwrites_by_accident(tmp_path):
  path = tmp_path / 'ckpt.npz'
  params = published.load(FIXTURE)
  published.save(path, params)
  before = path.read_bytes()
  with pytest.raises(FileExistsError, match='overwrite=True'):
    published.save(path, {'head': {'bias': np.zeros(3)}})
  assert path.read_bytes() == before
  published.save(path, {'head': {'bias': np.zeros(3)}}, overwrite=True)
  assert list(published.load(path)) == ['head']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.npz']


def test_timm_round_trip():
  state_dict = dict(np.load(TESTDATA / 'timm_mixer_tiny.npz'))
  back = published.to_timm(published.convert_timm(state_dict))
  assert back.keys() == state_dict.keys()
  for k in state_dict:
    np.testing.assert_array_equal(back[k], state_dict[k], err_msg=k)


def test_timm_and_official_layouts_give_the_same_tree_shapes():
  ours = published.convert_timm(dict(np.load(TESTDATA / 'timm_mixer_tiny.npz')))
  official = published.load(FIXTURE)
  assert jax.tree.map(np.shape, ours) == jax.tree.map(np.shape, official)


def test_unknown_timm_parameter_is_a_clear_error():
  with pytest.raises(published.CheckpointError, match='blocks.0.gamma'):
    published.convert_timm({'blocks.0.gamma.weight': np.zeros(3)})


################################################################################
# load_pretrained.


def test_load_pretrained_replaces_the_head_with_the_fresh_one():
  model = tiny_model(num_classes=7)
  init = models.init_params(model, image_size=32)
  params = published.load_pretrained(init_params=init, pretrained=str(FIXTURE))
  assert params['head']['kernel'].shape == (64, 7)
  assert not np.any(params['head']['kernel'])
  assert_trees_equal({k: v for k, v in params.items() if k != 'head'},
                     {k: v for k, v in published.load(FIXTURE).items()
                      if k != 'head'})


def test_load_pretrained_keeps_the_head_when_asked_and_it_fits():
  model = tiny_model()
  init = models.init_params(model, image_size=32)
  fixture = published.load(FIXTURE)
  kept = published.load_pretrained(init_params=init, pretrained=FIXTURE,
                                    keep_head=True)
  assert_trees_equal(kept, fixture)
  fresh = published.load_pretrained(init_params=init, pretrained=FIXTURE)
  assert not np.any(fresh['head']['kernel'])
  bigger = models.init_params(tiny_model(num_classes=11), image_size=32)
  with pytest.raises(published.CheckpointError,
                     match=r"'head/kernel'.*\(64, 11\).*\(64, 10\)"):
    published.load_pretrained(init_params=bigger, pretrained=FIXTURE,
                               keep_head=True)


def test_load_pretrained_into_a_model_without_head():
  init = models.init_params(tiny_model(num_classes=None), image_size=32)
  params = published.load_pretrained(init_params=init, pretrained=FIXTURE)
  assert 'head' not in params


def test_load_pretrained_then_logits_follow_the_readme():
  """README: create_model -> load_pretrained -> logits."""
  model = models.create_model('Ti/4', num_classes=10, **{
      k: v for k, v in TINY.items() if k != 'patch_size'})
  init = models.init_params(model, image_size=32)
  params = published.load_pretrained(init_params=init, pretrained=FIXTURE,
                                      keep_head=True)
  images, logits = (np.load(TESTDATA / 'vit_jax_mixer_tiny_io.npz')[k]
                    for k in ('input', 'logits'))
  np.testing.assert_allclose(model.apply({'params': params}, images), logits,
                             atol=1e-4)


@pytest.mark.parametrize('overrides,message', [
    # B/16-style weights into a B/32-style model: another patch size.
    (dict(patch_size=8), r"'stem/kernel': the model expects shape \(8, 8, 3, "
     r"64\), the checkpoint has \(4, 4, 3, 64\) \(patch 8 in the model, 4"),
    (dict(hidden_dim=32), r"'stem/kernel'.*\(4, 4, 3, 32\).*\(4, 4, 3, 64\)"),
    (dict(num_blocks=3), r"missing parameter 'MixerBlock_2/"),
    (dict(num_blocks=1), r"unexpected parameter 'MixerBlock_1/"),
])
@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_names_parameter_and_shapes(
    overrides, message):
  init = models.init_params(tiny_model(**overrides), image_size=32)
  with pytest.raises(published.CheckpointError, match=message):
    published.load_pretrained(init_params=init, pretrained=FIXTURE)


def test_a_checkpoint_for_another_image_size_says_how_to_fine_tune_there():
  init = models.init_params(tiny_model(), image_size=64)
  with pytest.raises(
      published.CheckpointError,
      match=r"token_mixing/Dense_0/kernel'.*\(256, 32\).*\(64, 32\).*"
      r'set resolution_factor=2'):
    published.load_pretrained(init_params=init, pretrained=FIXTURE)
  init = models.init_params(tiny_model(), image_size=48)
  with pytest.raises(published.CheckpointError, match='another image size'):
    published.load_pretrained(init_params=init, pretrained=FIXTURE)


def test_another_patch_size_is_the_first_hint_and_no_other_misleads():
  """Patch 2 at 32 px has 4x the tokens of patch 4: the patch explains it,
  resolution_factor would not."""
  init = models.init_params(tiny_model(patch_size=2), image_size=32)
  with pytest.raises(published.CheckpointError) as e:
    published.load_pretrained(init_params=init, pretrained=FIXTURE)
  first = str(e.value).splitlines()[1]
  assert "'stem/kernel'" in first and 'patch 2 in the model, 4' in first
  assert 'resolution_factor' not in str(e.value)
  assert 'follows from the other patch size' in str(e.value)


################################################################################
# Files that are not checkpoints.


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.npz'):
    published.load(tmp_path / 'nope.npz')


def test_truncated_file(tmp_path):
  path = tmp_path / 'truncated.npz'
  path.write_bytes(FIXTURE.read_bytes()[:50_000])
  with pytest.raises(published.CheckpointError, match='truncated.npz is not'):
    published.load(path)


@pytest.mark.parametrize('content', [b'', b'hello, not a zip', b'\x93NUMPY'])
def test_not_an_npz(tmp_path, content):
  path = tmp_path / 'weights.npz'
  path.write_bytes(content)
  with pytest.raises(published.CheckpointError, match='not a readable .npz'):
    published.load(path)


def test_an_npz_with_a_corrupt_array(tmp_path):
  path = tmp_path / 'corrupt.npz'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('stem/kernel.npy', b'\x93NUMPY garbage')
  with pytest.raises(published.CheckpointError, match='corrupt.npz'):
    published.load(path)


def test_missing_and_misshaped_arrays_are_all_listed(tmp_path):
  params = published.load(FIXTURE)
  del params['MixerBlock_0']['LayerNorm_0']
  params['pre_head_layer_norm']['scale'] = np.ones(5, np.float32)
  params['extra'] = {'kernel': np.ones(2, np.float32)}
  path = tmp_path / 'bad.npz'
  published.save(path, params)
  init = models.init_params(tiny_model(), image_size=32)
  with pytest.raises(published.CheckpointError) as error:
    published.load_pretrained(init_params=init, pretrained=path)
  message = str(error.value)
  assert 'bad.npz does not fit the model' in message
  assert "missing parameter 'MixerBlock_0/LayerNorm_0/bias'" in message
  assert "missing parameter 'MixerBlock_0/LayerNorm_0/scale'" in message
  assert "unexpected parameter 'extra/kernel'" in message
  assert "'pre_head_layer_norm/scale': the model expects shape (64,)" in message


################################################################################
# Published names and the download cache.


def test_published_table():
  assert len(published.PUBLISHED) == 11
  for name, (variant, classes, _) in published.PUBLISHED.items():
    models.parse_variant(variant)
    assert classes == (21843 if name.startswith('imagenet21k/') else 1000)
    assert published.published_url(name) == (
        f'https://storage.googleapis.com/mixer_models/{name}.npz')
    assert name.endswith(variant.replace('/', '_'))


def test_unknown_name_lists_the_published_ones():
  with pytest.raises(FileNotFoundError, match='neither a published name.*imagenet21k/Mixer-B_16.*gsam/Mixer-S_8'):
    published.fetch('imagenet21k/Mixer-S_16')


def test_published_name_uses_the_cache_without_network(tmp_path):
  cached = (tmp_path / 'storage.googleapis.com/mixer_models/gsam/'
            'Mixer-S_32.npz')
  cached.parent.mkdir(parents=True)
  cached.write_bytes(FIXTURE.read_bytes())
  for name in ('gsam/Mixer-S_32', 'gsam/Mixer-S_32.npz',
               published.published_url('gsam/Mixer-S_32')):
    assert published.fetch(name, cache_dir=tmp_path) == epath.Path(cached)


def test_cache_root_honours_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv('MIXER_JAX_CACHE', str(tmp_path))
  assert published.cache_root() == epath.Path(tmp_path)
  monkeypatch.delenv('MIXER_JAX_CACHE')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert published.cache_root() == epath.Path(tmp_path / 'xdg/mixer_jax')


@pytest.mark.parametrize('cache_in', ['a folder', 'a bucket'])
def test_url_is_downloaded_once_into_the_cache(http_server, tmp_path, cache_in,
                                               request):
  url, served, requests = http_server
  (served / 'w.npz').write_bytes(FIXTURE.read_bytes())
  cache = (tmp_path / 'cache' if cache_in == 'a folder' else
           f'gs://{request.getfixturevalue("fake_gcs")[0]}/cache')
  first = published.fetch(f'{url}/w.npz', cache_dir=cache)
  second = published.fetch(f'{url}/w.npz', cache_dir=cache)
  assert first == second and requests == ['/w.npz']
  assert str(first).startswith(str(cache))
  assert first.read_bytes() == FIXTURE.read_bytes()
  assert_trees_equal(published.load(first), published.load(FIXTURE))


def test_a_checkpoint_in_a_bucket_loads_as_on_disk(fake_gcs):
  url = f'gs://{fake_gcs[0]}/w.npz'
  epath.Path(url).write_bytes(FIXTURE.read_bytes())
  assert_trees_equal(published.load(published.fetch(url)),
                     published.load(FIXTURE))


def test_failed_download_says_where_to_put_the_file(http_server, tmp_path):
  url, _, _ = http_server
  cache = tmp_path / 'cache'
  with pytest.raises(FileNotFoundError,
                     match=r'put it at .*cache/127.0.0.1:\d+/missing.npz'):
    published.fetch(f'{url}/missing.npz', cache_dir=cache)
  assert not [p for p in cache.rglob('*') if p.is_file()]


def test_remote_paths_are_passed_to_the_file_api_untouched():
  path = published.fetch('gs://some-bucket/Mixer-B_16.npz')
  assert isinstance(path, epath.Path) and str(path).startswith('gs://')
