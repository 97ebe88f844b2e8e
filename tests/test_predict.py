"""Tests for mixer_jax.predict and mixer_jax.evals.inference: runs, published
checkpoints (the model from its shapes, ImageNet names), images, errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from mixer_jax import errors
from mixer_jax.evals import inference
from mixer_jax.evals import loading
from mixer_jax.model import models
from mixer_jax.model import published
from tests.conftest import ROOT
from tests.conftest import write_digit_images


def test_a_run_predicts_its_class_names_as_its_model_computes(digits_run,
                                                              tmp_path):
  workdir, _ = digits_run
  files, _ = write_digit_images(tmp_path / 'images')
  loaded = loading.from_run(workdir)
  assert loaded.class_names == tuple('0123456789')
  results = inference.predict(loaded, files, top_k=3)
  for file, result in zip(files, results):
    image = np.asarray(Image.open(file).convert('RGB'))
    logits = loaded.model.apply({'params': loaded.params},
                                inference.preprocess(loaded, image)[None])
    probs = np.asarray(jax.nn.softmax(logits))[0]
    assert result['file'] == file
    assert [t['class'] for t in result['top']] == list(np.argsort(-probs)[:3])
    assert result['top'][0]['name'] == str(result['top'][0]['class'])
    np.testing.assert_allclose(result['top'][0]['prob'], probs.max(),
                               rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('classes,first_name', [
    (1000, 'tench, Tinca tinca'), (21843, 'organism, being')])
def test_a_published_layout_checkpoint_gives_its_model_and_imagenet_names(
    tmp_path, classes, first_name):
  model = models.MlpMixer(patch_size=4, num_classes=classes, num_blocks=2,
                          hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32)
  params = models.init_params(model, image_size=16)
  params['head']['kernel'] = np.asarray(jax.random.normal(
      jax.random.PRNGKey(1), params['head']['kernel'].shape))
  path = str(tmp_path / 'standin.npz')
  published.save(path, params)
  loaded = loading.from_pretrained(path)
  assert loaded.image_size == 16
  assert (loaded.model.patch_size, loaded.model.num_blocks,
          loaded.model.hidden_dim, loaded.model.tokens_mlp_dim,
          loaded.model.channels_mlp_dim) == (4, 2, 16, 8, 32)
  assert len(loaded.class_names) == classes
  assert loaded.class_names[0] == first_name
  image = tmp_path / 'x.png'
  Image.fromarray(np.full((20, 30, 4), 200, np.uint8)).save(image)  # RGBA.
  [result] = inference.predict(loaded, [str(image)], top_k=5)
  assert len(result['top']) == 5
  top = result['top'][0]
  assert top['name'] == loaded.class_names[top['class']]


@pytest.mark.slow
def test_the_cli_prints_a_table_and_writes_json_lines(
    digits_run, tmp_path):
  workdir, _ = digits_run
  write_digit_images(tmp_path / 'images' / 'nested')
  output = tmp_path / 'out.jsonl'
  command = [sys.executable, '-m', 'mixer_jax.predict', f'--workdir={workdir}',
             '--top_k=2', f'--output={output}', str(tmp_path / 'images')]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert [os.path.basename(r['file']) for r in records] == [
      '0.png', '1.png', '2.png', '3.png']
  assert all(len(r['top']) == 2 for r in records)
  assert '1. ' in result.stdout and records[0]['file'] in result.stdout


def test_a_bad_image_is_named(digits_run, tmp_path):
  broken = tmp_path / 'broken.png'
  broken.write_text('not an image')
  with pytest.raises(errors.UserError) as raised:
    inference.predict(loading.from_run(digits_run[0]), [str(broken)], top_k=1)
  assert str(raised.value) == (
      f"{broken}: not an image that can be read (cannot identify image file "
      f"'{broken}').")


def test_a_checkpoint_that_fits_no_mixer_is_a_clear_error(tmp_path):
  path = str(tmp_path / 'other.npz')
  published.save(path, {'dense': {'kernel': np.zeros((3, 4), np.float32)}})
  with pytest.raises(errors.UserError, match=f'{path}: The parameters fit no '
                     'Mixer'):
    loading.from_pretrained(path)


@pytest.mark.slow
@pytest.mark.parametrize('flag', ['--top_k=0', '--batch_size=0'])
def test_bad_counts_are_one_line(flag):
  result = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.predict', '--workdir=run', flag,
       'photo.jpg'], cwd=ROOT, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert f'flag {flag}: ' in result.stderr and 'positive integer' in (
      result.stderr)
