"""Tests for mixer_jax.export: each format reproduces the official module's
logits and a trained run's in its own runtime, at any batch size; the timm
export is timm's own state dict and config."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import jax
from jax import export as jax_export
from ml_collections import config_dict
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
import tensorflow as tf

from mixer_jax import errors
from mixer_jax.data import sources
from mixer_jax.evals import inference
from mixer_jax.evals import loading
from mixer_jax.model import models
from mixer_jax.model import published
from mixer_jax.serving import export
from tests.conftest import ROOT
from tests.conftest import optional_module

# jax2onnx follows jax closely: a stack with an older jax (Colab's) has none.
jax2onnx = optional_module('jax2onnx')
onnxruntime = optional_module('onnxruntime')
NEEDS_ONNX = pytest.mark.skipif(
    jax2onnx is None or onnxruntime is None,
    reason='jax2onnx or onnxruntime is not installed (jax2onnx needs a newer '
    'jax than this stack has)')


def formats(*names):
  """Parameters for the formats `names`, ONNX skipped where it cannot run."""
  return [pytest.param(name, marks=NEEDS_ONNX if name == 'onnx' else ())
          for name in names]

TESTDATA = pathlib.Path(__file__).parent / 'testdata'


def read_back(output) -> jax_export.Exported:
  with open(os.path.join(output, 'model.bin'), 'rb') as f:
    return jax_export.deserialize(bytearray(f.read()))


def run_stablehlo(output, images) -> np.ndarray:
  """The export run by plain jax."""
  return np.asarray(read_back(output).call(images))


def run_saved_model(output, images) -> np.ndarray:
  """The export run by TensorFlow."""
  serve = tf.saved_model.load(os.path.join(output, 'saved_model')).signatures[
      'serving_default']
  return serve(images=tf.constant(images))['logits'].numpy()


def run_onnx(output, images) -> np.ndarray:
  """The export run by onnxruntime."""
  session = onnxruntime.InferenceSession(
      os.path.join(output, 'model.onnx'), providers=['CPUExecutionProvider'])
  return session.run(['logits'], {'images': images})[0]


RUNTIMES = {'stablehlo': run_stablehlo, 'savedmodel': run_saved_model,
            'onnx': run_onnx}
FILES = {'stablehlo': 'model.bin', 'savedmodel': 'saved_model',
         'onnx': 'model.onnx'}


@pytest.mark.slow
@pytest.mark.parametrize('format_name', formats(*RUNTIMES))
def test_the_official_fixture_exported_gives_the_official_logits(
    tmp_path, format_name):
  """vit_jax's own Mixer computed these logits (testdata/FIXTURES.md); the
  export runs in its own runtime, at two batch sizes."""
  loaded = loading.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))
  export.export(loaded, format_name=format_name, output=str(tmp_path))
  io = np.load(TESTDATA / 'vit_jax_mixer_tiny_io.npz')
  for batch in (3, 1):  # One export, any batch size.
    logits = RUNTIMES[format_name](tmp_path, io['input'][:batch])
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, io['logits'][:batch], atol=1e-4)
  info = json.loads((tmp_path / 'metadata.json').read_text())
  assert info['format'] == format_name
  assert sorted(os.listdir(tmp_path)) == sorted(['metadata.json',
                                                 FILES[format_name]])


@pytest.mark.slow
def test_the_command_exports_a_trained_run(digits_run, tmp_path):
  workdir, _ = digits_run
  output = tmp_path / 'export'
  result = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.export', f'--workdir={workdir}',
       '--format=stablehlo', f'--output={output}'], cwd=ROOT,
      capture_output=True, text=True, check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  info = json.loads((output / 'metadata.json').read_text())
  assert info['input']['shape'] == ['batch', 8, 8, 3]
  assert info['output']['shape'] == ['batch', 10]
  assert info['class_names'] == [str(i) for i in range(10)]
  assert info['preprocessing'] == {'eval_pp': 'resize', 'image_size': 8}
  loaded = loading.from_run(workdir)
  images = np.stack([inference.preprocess(loaded, image) for image in
                     sources.digits_arrays()['test'][0][:5]])
  expected = loaded.model.apply({'params': loaded.params}, images)
  np.testing.assert_allclose(run_stablehlo(output, images), expected,
                             atol=1e-4)


def test_errors(tmp_path):
  loaded = loading.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))
  (tmp_path / 'file').write_text('')
  with pytest.raises(errors.UserError, match='is a file: give a directory'):
    export.export(loaded, format_name='stablehlo',
                  output=str(tmp_path / 'file'))
  with pytest.raises(errors.UserError,
                     match='one of stablehlo, savedmodel, onnx, timm'):
    export.export(loaded, format_name='tflite', output=str(tmp_path / 'x'))


@pytest.mark.parametrize('format_name', formats('savedmodel', 'onnx'))
def test_a_trained_run_in_the_other_runtimes(digits_run, tmp_path,
                                             format_name):
  loaded = loading.from_run(digits_run[0])
  export.export(loaded, format_name=format_name, output=str(tmp_path))
  images = np.stack([inference.preprocess(loaded, image) for image in
                     sources.digits_arrays()['test'][0][:5]])
  expected = loaded.model.apply({'params': loaded.params}, images)
  np.testing.assert_allclose(RUNTIMES[format_name](tmp_path, images),
                             expected, atol=1e-4)


################################################################################
# timm.
################################################################################


def timm_fixture() -> loading.Loaded:
  """The model timm 1.0.31 computed testdata/timm_mixer_tiny_io.npz with
  (exact GELU), read from its state dict."""
  params = published.convert_timm(dict(np.load(TESTDATA /
                                                'timm_mixer_tiny.npz')))
  model, size = loading.model_from_params(params)
  return loading.Loaded(model.clone(approximate_gelu=False), params, size,
                          tuple(str(i) for i in range(10)))


def test_the_timm_export_is_timms_own_state_dict_and_geometry(tmp_path):
  """timm itself wrote testdata/timm_mixer_tiny.npz (FIXTURES.md: patch 4,
  width 64, 2 blocks, mlp_ratio (0.5, 2.0), 32 px, 10 classes)."""
  written = export.export(timm_fixture(), format_name='timm',
                          output=str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['config.json', 'model.safetensors']
  assert written == [str(tmp_path / 'model.safetensors'),
                     str(tmp_path / 'config.json')]
  expected = dict(np.load(TESTDATA / 'timm_mixer_tiny.npz'))
  found = safetensors_numpy.load_file(str(tmp_path / 'model.safetensors'))
  assert found.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_array_equal(found[name], value, err_msg=name)
  config = json.loads((tmp_path / 'config.json').read_text())
  assert 'architecture' not in config  # timm registers no such geometry.
  assert config['model_args'] == {
      'patch_size': 4, 'num_blocks': 2, 'embed_dim': 64, 'img_size': 32,
      'in_chans': 3, 'mlp_ratio': [0.5, 2.0], 'num_classes': 10}
  assert config['pretrained_cfg']['input_size'] == [3, 32, 32]
  assert config['label_names'] == [str(i) for i in range(10)]
  assert config['mixer_jax'] == {'gelu': 'exact (erf)'}


@pytest.mark.parametrize('patch, blocks, width, architecture', [
    (32, 8, 512, 'mixer_s32_224'), (16, 12, 768, 'mixer_b16_224'),
    (16, 24, 1024, 'mixer_l16_224'), (14, 32, 1280, None),  # H/14.
    (16, 12, 512, None)])
def test_timm_architecture_names(patch, blocks, width, architecture):
  model = models.MlpMixer(patch_size=patch, num_classes=5, num_blocks=blocks,
                          hidden_dim=width, tokens_mlp_dim=width // 2,
                          channels_mlp_dim=4 * width)
  config = export.timm_config(
      loading.Loaded(model, None, 448, tuple('abcde')))
  assert config.get('architecture') == architecture
  args = config['model_args']
  # A registered name fixes patch, blocks and width; timm refuses them twice.
  assert ('patch_size' in args) == (architecture is None)
  assert args['img_size'] == 448 and args['num_classes'] == 5
  assert args['mlp_ratio'] == [0.5, 4.0]


@pytest.mark.parametrize('hidden, width', [(61, 7), (115, 7), (32, 64),
                                           (3072, 768), (1, 3)])
def test_timm_mlp_ratio_gives_back_the_width(hidden, width):
  """timm builds each MLP int(ratio * width) wide."""
  assert int(export._timm_ratio(hidden, width) * width) == hidden  # pylint: disable=protected-access


@pytest.mark.parametrize('eval_pp, crop_pct, crop_mode', [
    ('resize', 1.0, 'squash'), ('resmall_crop', 0.875, 'center'),
    ('resize_crop', 0.875, 'squash')])
def test_timm_preprocessing_follows_eval_pp(eval_pp, crop_pct, crop_mode):
  loaded = timm_fixture()
  loaded = loading.Loaded(loaded.model, loaded.params, loaded.image_size,
                            loaded.class_names,
                            config_dict.ConfigDict({'eval_pp': eval_pp}))
  cfg = export.timm_config(loaded)['pretrained_cfg']
  assert (cfg['crop_pct'], cfg['crop_mode']) == (crop_pct, crop_mode)
  assert cfg['mean'] == cfg['std'] == [0.5] * 3  # (x / 255 - .5) / .5


def s32_exact_gelu() -> tuple[loading.Loaded, np.ndarray]:
  """An S/32 (a geometry timm registers) at 64 px with 10 classes, random
  weights, exact GELU; and its logits on three images (NHWC)."""
  model = models.MlpMixer(patch_size=32, num_classes=10, num_blocks=8,
                          hidden_dim=512, tokens_mlp_dim=256,
                          channels_mlp_dim=2048, approximate_gelu=False)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3)))
  params = jax.tree.map(  # A head and norms that are not zeros and ones.
      lambda x: x + 0.02 * np.random.RandomState(1).standard_normal(x.shape),
      params['params'])
  images = np.random.RandomState(0).uniform(-1, 1, (3, 64, 64, 3))
  images = images.astype(np.float32)
  logits = model.apply({'params': params}, images)
  return (loading.Loaded(model, params, 64, tuple('abcdefghij')),
          images, np.asarray(logits))


def test_timm_runs_the_export(tmp_path):
  """Where timm imports (PyPI's torchvision needs CUDA torch, so not in
  the CPU-only suite), timm itself loads both layouts as export's docstring
  says and computes the JAX model's logits (NCHW in)."""
  timm = pytest.importorskip('timm')
  torch = pytest.importorskip('torch')
  from safetensors import torch as safetensors_torch  # pylint: disable=g-import-not-at-top
  # A geometry timm has no name for: MlpMixer(**model_args).
  export.export(timm_fixture(), format_name='timm',
                output=str(tmp_path / 'tiny'))
  config = json.loads((tmp_path / 'tiny' / 'config.json').read_text())
  model = timm.models.MlpMixer(**config['model_args'])
  model.load_state_dict(safetensors_torch.load_file(
      str(tmp_path / 'tiny' / 'model.safetensors')))
  io = np.load(TESTDATA / 'timm_mixer_tiny_io.npz')
  with torch.no_grad():
    logits = model.eval()(torch.from_numpy(io['input'])).numpy()
  np.testing.assert_allclose(logits, io['logits'], atol=1e-4)
  # A registered one: timm.create_model by name, weights from the file.
  loaded, images, expected = s32_exact_gelu()
  export.export(loaded, format_name='timm', output=str(tmp_path / 's32'))
  config = json.loads((tmp_path / 's32' / 'config.json').read_text())
  model = timm.create_model(
      config['architecture'], pretrained=True, **config['model_args'],
      pretrained_cfg_overlay=dict(
          config['pretrained_cfg'], file=str(tmp_path / 's32' /
                                             'model.safetensors')))
  with torch.no_grad():
    logits = model.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(logits.numpy(), expected, atol=1e-4)


def test_the_saved_model_converts_to_tflite_with_select_tf_ops(digits_run,
                                                               tmp_path):
  """As the README documents: TFLite runs it with TF's own ops (the
  StableHLO inside is one XlaCallModule op), same logits."""
  loaded = loading.from_run(digits_run[0])
  export.export(loaded, format_name='savedmodel', output=str(tmp_path))
  converter = tf.lite.TFLiteConverter.from_saved_model(
      str(tmp_path / 'saved_model'))
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                         tf.lite.OpsSet.SELECT_TF_OPS]
  interpreter = tf.lite.Interpreter(model_content=converter.convert())
  images = np.stack([inference.preprocess(loaded, image) for image in
                     sources.digits_arrays()['test'][0][:3]])
  (images_in,), (logits_out,) = (interpreter.get_input_details(),
                                 interpreter.get_output_details())
  interpreter.resize_tensor_input(images_in['index'], images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(images_in['index'], images)
  interpreter.invoke()
  expected = loaded.model.apply({'params': loaded.params}, images)
  np.testing.assert_allclose(interpreter.get_tensor(logits_out['index']),
                             expected, atol=1e-4)


################################################################################
# What is already in --output.
################################################################################


def test_an_export_never_replaces_one_without_overwrite(tmp_path):
  loaded = loading.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))
  export.export(loaded, format_name='stablehlo', output=str(tmp_path))
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  for format_name in ('stablehlo', 'timm'):
    with pytest.raises(errors.UserError, match=r'is not empty \(metadata.json, '
                       r'model.bin\): .* or --overwrite'):
      export.export(loaded, format_name=format_name, output=str(tmp_path))
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_overwrite_replaces_the_export_whole(tmp_path):
  """The folder then holds the new export alone: no model.bin beside a
  saved_model whose metadata.json would not describe it."""
  loaded = loading.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))
  export.export(loaded, format_name='stablehlo', output=str(tmp_path))
  (tmp_path / 'notes.txt').write_text('mine')
  written = export.export(loaded, format_name='savedmodel',
                          output=str(tmp_path), overwrite=True)
  assert written == [str(tmp_path / 'saved_model'),
                     str(tmp_path / 'metadata.json')]
  assert sorted(os.listdir(tmp_path)) == ['metadata.json', 'notes.txt',
                                          'saved_model']
  info = json.loads((tmp_path / 'metadata.json').read_text())
  assert info['format'] == 'savedmodel'
  assert info['files'] == ['saved_model', 'metadata.json']


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
  """A disk that fills while the model is written: no partial file."""
  loaded = loading.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))

  def full(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(export, 'to_stablehlo', full)
  with pytest.raises(OSError, match='No space left'):
    export.export(loaded, format_name='stablehlo', output=str(tmp_path))
  assert os.listdir(tmp_path) == []
  with pytest.raises(OSError, match='No space left'):  # Made here, removed.
    export.export(loaded, format_name='stablehlo',
                  output=str(tmp_path / 'new'))
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize('output, message', [
    ('full', 'is not empty (model.bin): give a new or empty directory, or '
     '--overwrite'),
    ('/proc/self/mixer_jax_export', 'cannot write into --output='
     '/proc/self/mixer_jax_export: ')])
def test_the_command_refuses_in_one_line(tmp_path, output, message):
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'model.bin').write_bytes(b'an earlier export')
  result = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.export',
       f'--pretrained={TESTDATA / "vit_jax_mixer_tiny.npz"}',
       f'--output={output}'], cwd=tmp_path, capture_output=True, text=True,
      check=False, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'mixer_jax.export: error: --output={output} ' if output == 'full'
      else 'mixer_jax.export: error: ')
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert (tmp_path / 'full' / 'model.bin').read_bytes() == b'an earlier export'


@NEEDS_ONNX
def test_the_onnx_export_says_nothing_of_jax2onnx(tmp_path, capsys, caplog):
  """jax2onnx logs the plugins it skips (with tracebacks) and prints debug
  lines: none of it reaches the user; errors would."""
  caplog.set_level(logging.DEBUG)
  loaded = loading.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))
  export.export(loaded, format_name='onnx', output=str(tmp_path))
  assert capsys.readouterr().out == ''
  assert not [r.getMessage() for r in caplog.records
              if '/jax2onnx/' in r.pathname or '/onnx_ir/' in r.pathname]
  logging.getLogger('jax2onnx').info('after the export')  # Filters removed.
  assert caplog.records[-1].getMessage() == 'after the export'
