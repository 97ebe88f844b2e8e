"""Tests for mixer_jax.export: the StableHLO export reproduces the official
module's logits and a trained run's, at any batch size, read back by plain
jax."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf

from mixer_jax import errors
from mixer_jax import export
from mixer_jax import inference
from mixer_jax import sources
from tests.conftest import ROOT

TESTDATA = pathlib.Path(__file__).parent / 'testdata'


def read_back(output) -> jax.export.Exported:
  with open(os.path.join(output, 'model.bin'), 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


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


@pytest.mark.parametrize('format_name', export.FORMATS)
def test_the_official_fixture_exported_gives_the_official_logits(
    tmp_path, format_name):
  """vit_jax's own Mixer computed these logits (testdata/FIXTURES.md); the
  export runs in its own runtime, at two batch sizes."""
  loaded = inference.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))
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
  loaded = inference.from_run(workdir)
  images = np.stack([inference.preprocess(loaded, image) for image in
                     sources.digits_arrays()['test'][0][:5]])
  expected = loaded.model.apply({'params': loaded.params}, images)
  np.testing.assert_allclose(run_stablehlo(output, images), expected,
                             atol=1e-4)


def test_errors(tmp_path):
  loaded = inference.from_pretrained(str(TESTDATA / 'vit_jax_mixer_tiny.npz'))
  (tmp_path / 'file').write_text('')
  with pytest.raises(errors.UserError, match='is a file: give a directory'):
    export.export(loaded, format_name='stablehlo',
                  output=str(tmp_path / 'file'))
  with pytest.raises(errors.UserError, match='one of stablehlo, savedmodel, onnx'):
    export.export(loaded, format_name='tflite', output=str(tmp_path / 'x'))


@pytest.mark.parametrize('format_name', ['savedmodel', 'onnx'])
def test_a_trained_run_in_the_other_runtimes(digits_run, tmp_path,
                                             format_name):
  loaded = inference.from_run(digits_run[0])
  export.export(loaded, format_name=format_name, output=str(tmp_path))
  images = np.stack([inference.preprocess(loaded, image) for image in
                     sources.digits_arrays()['test'][0][:5]])
  expected = loaded.model.apply({'params': loaded.params}, images)
  np.testing.assert_allclose(RUNTIMES[format_name](tmp_path, images),
                             expected, atol=1e-4)
