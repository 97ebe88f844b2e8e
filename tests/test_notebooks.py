"""The notebooks run top to bottom as a user runs them (`jupyter nbconvert
--execute`): offline on the CPU, and online against local stand-ins for the
published checkpoint (an HTTP server) and for CIFAR-10 (a synthetic archive
prepared by tfds's own builder). Both run with MIXER_JAX_NOTEBOOK_SMOKE=1 (2
training steps): what the stand-ins learn in full is the train and fine-tune
tests' business, not the notebooks'."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from mixer_jax import recipes
from mixer_jax.data import input_pipeline
from mixer_jax.model import models
from mixer_jax.model import published
from tests.conftest import FAST_COMPILE
from tests.conftest import ROOT
from tests.conftest import synthetic_cifar10_manual_dir

OFFLINE = {'inference': ['offline (stand-ins)', 'step 2/2',
                         '16 px, 10 classes', 'photo_7.png'],
           'fine_tune': ['Ti/2 float32 16 px, workdirs/pretraining_standin',
                         'step 2/2', 'of 8 test images right',
                         'parameters saved to fine_tuned.npz']}


def run_notebook(name, tmp_path, **env):
  """Executes notebooks/<name>.ipynb in tmp_path: (printed text, images)."""
  notebook = tmp_path / f'{name}.ipynb'
  shutil.copy(ROOT / 'notebooks' / f'{name}.ipynb', notebook)
  env = os.environ | {'XLA_FLAGS': FAST_COMPILE} | env  # One CPU device.
  result = subprocess.run(
      [sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'notebook',
       '--execute', f'--output-dir={tmp_path / "out"}', str(notebook)],
      cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'out' / f'{name}.ipynb') as f:
    outputs = [o for c in json.load(f)['cells'] for o in c.get('outputs', [])]
  printed = ''.join(''.join(o.get('text', '')) + ''.join(
      o.get('data', {}).get('text/plain', '')) for o in outputs)
  images = sum('image/png' in o.get('data', {}) for o in outputs)
  return printed, images


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize('name', OFFLINE)
def test_the_notebook_runs_offline_end_to_end(name, tmp_path):
  printed, images = run_notebook(name, tmp_path, MIXER_JAX_NOTEBOOK_SMOKE='1')
  for expected in OFFLINE[name]:
    assert expected in printed
  # inference: predictions, Figure 5; fine_tune: curves, predictions.
  assert images == 2
  if name == 'fine_tune':  # Every test digit scored.
    assert 'test: 360 examples' in printed, printed[-2000:]


@pytest.mark.slow
@pytest.mark.notebook
def test_inference_runs_online_against_a_local_server(tmp_path, http_server):
  url, served, requests = http_server
  # A small model in the published layout, 1,000 classes, 224 px.
  model = models.MlpMixer(patch_size=16, num_classes=1000, num_blocks=2,
                          hidden_dim=32, tokens_mlp_dim=16,
                          channels_mlp_dim=64)
  (served / 'imagenet1k').mkdir()
  published.save(str(served / 'imagenet1k' / 'Mixer-B_16.npz'),
                  models.init_params(model, image_size=224))
  printed, images = run_notebook(
      'inference', tmp_path, MIXER_JAX_NOTEBOOK_OFFLINE='0',
      MIXER_JAX_CACHE=str(tmp_path / 'cache'),
      MIXER_JAX_NOTEBOOK_CHECKPOINT=f'{url}/imagenet1k/Mixer-B_16.npz')
  assert requests == ['/imagenet1k/Mixer-B_16.npz']
  assert '; online' in printed and '2 blocks, 224 px, 1000 classes' in printed
  assert 'photo_1.png' in printed and images == 2


@pytest.mark.slow
@pytest.mark.notebook
def test_fine_tune_runs_online_against_local_stand_ins(tmp_path, monkeypatch,
                                                       http_server):
  url, served, requests = http_server
  # gsam/Mixer-B_32's layout (random weights) and a synthetic CIFAR-10,
  # prepared where tfds looks (TFDS_DATA_DIR).
  (served / 'gsam').mkdir()
  shapes = jax.eval_shape(lambda: models.init_params(
      models.create_model('B/32', num_classes=1000), image_size=224))
  rng = np.random.default_rng(0)
  published.save(str(served / 'gsam' / 'Mixer-B_32.npz'), jax.tree.map(
      lambda x: 0.02 * rng.standard_normal(x.shape, np.float32), shapes))
  manual_dir, _ = synthetic_cifar10_manual_dir(tmp_path, monkeypatch, test=8)
  config = recipes.with_dataset(recipes.get_config(), 'cifar10')
  config.tfds_data_dir = str(tmp_path / 'tfds')
  config.tfds_manual_dir = str(manual_dir)
  assert input_pipeline.get_info(config).num_classes == 10
  printed, images = run_notebook(
      'fine_tune', tmp_path, MIXER_JAX_NOTEBOOK_OFFLINE='0',
      MIXER_JAX_NOTEBOOK_SMOKE='1', TFDS_DATA_DIR=config.tfds_data_dir,
      XLA_FLAGS='',  # B/32 at 224 px: running, not compiling, takes longest.
      MIXER_JAX_CACHE=str(tmp_path / 'cache'),
      MIXER_JAX_NOTEBOOK_CHECKPOINT=f'{url}/gsam/Mixer-B_32.npz')
  assert requests == ['/gsam/Mixer-B_32.npz']
  for expected in ['; online', 'B/32 float32 224 px', 'cifar10 2 steps',
                   'step 2/2', 'of 8 test images right',
                   'parameters saved to fine_tuned.npz']:
    assert expected in printed
  assert images == 2


def install_cell(name='inference'):
  with open(ROOT / 'notebooks' / f'{name}.ipynb') as f:
    return ''.join(json.load(f)['cells'][1]['source'])


@pytest.mark.parametrize('repo, beside_checkout, have, expected', [
    ('', False, {'tensorflow', 'jax'}, SystemExit),
    ('git+https://example.com/m', False, {'tensorflow', 'jax'},
     'mixer_jax @ git+https://example.com/m'),
    ('git+https://example.com/m', False, {'jax'},  # Colab's TPU runtime.
     'mixer_jax[tf] @ git+https://example.com/m'),
    ('', True, {'tensorflow', 'jax'}, 'mixer_jax @ file://{checkout}'),
    ('', True, set(), 'mixer_jax[tf] @ file://{checkout}'),  # A bare CPU.
    ('', True, {'tpu'}, 'mixer_jax[tf,tpu] @ file://{checkout}'),
    ('', True, {'tensorflow', 'gpu'}, 'mixer_jax[gpu] @ file://{checkout}'),
    ('', True, {'tensorflow', 'jax', 'gpu'}, 'mixer_jax @ file://{checkout}'),
])
def test_the_install_cell(repo, beside_checkout, have, expected, tmp_path,
                          monkeypatch):
  """Where mixer_jax is missing: what the first cell asks pip for. JAX's
  accelerator build only where no JAX is installed; everything installed is
  kept at its version (a constraint for each)."""
  (tmp_path / 'notebooks').mkdir()
  if beside_checkout:
    (tmp_path / 'pyproject.toml').write_text('')
  (tmp_path / 'vendor').write_text('0x1ae0\n' if 'tpu' in have else '0x8086')
  monkeypatch.chdir(tmp_path / 'notebooks')
  monkeypatch.setenv('MIXER_JAX_REPO', repo)
  monkeypatch.setattr('importlib.util.find_spec',
                      lambda name: name in have or None)
  monkeypatch.setattr('glob.glob', lambda _: [str(tmp_path / 'vendor')])
  monkeypatch.setattr('os.path.exists', lambda path: (
      path == '/dev/nvidiactl' and 'gpu' in have or
      path == '../pyproject.toml' and beside_checkout))
  calls = []
  monkeypatch.setattr('subprocess.check_call', calls.append)
  keep = tmp_path / 'notebooks' / 'installed_before_mixer_jax.txt'
  for name in ('inference', 'fine_tune'):
    calls.clear()
    if expected is SystemExit:
      with pytest.raises(SystemExit, match='set MIXER_JAX_REPO'):
        exec(install_cell(name), {})  # pylint: disable=exec-used
      assert not calls
      continue
    exec(install_cell(name), {})  # pylint: disable=exec-used
    assert calls == [[sys.executable, '-m', 'pip', 'install', '-q', '-c',
                      str(keep), expected.format(checkout=tmp_path)]]
    kept = keep.read_text().splitlines()
    assert f'pytest=={importlib.metadata.version("pytest")}' in kept


@pytest.mark.parametrize('name', OFFLINE)
def test_the_notebook_is_kept_without_outputs(name):
  with open(ROOT / 'notebooks' / f'{name}.ipynb') as f:
    cells = json.load(f)['cells']
  assert all(not c.get('outputs') and c.get('execution_count') is None
             for c in cells if c['cell_type'] == 'code')


@pytest.mark.skipif(not os.environ.get('MIXER_JAX_INSTALLED_BEFORE'),
                    reason='only where .ci/colab_stack ran the install cell '
                    '(MIXER_JAX_INSTALLED_BEFORE: pip freeze before it)')
def test_the_install_cell_kept_every_preinstalled_package():
  """On Colab's stack: the install cell (and the test tools after it) left
  every package that was there before at its version: jax, flax, numpy,
  Colab's TensorFlow..."""
  with open(os.environ['MIXER_JAX_INSTALLED_BEFORE']) as f:
    before = dict(line.strip().split('==') for line in f if '==' in line)
  now = {d.metadata['Name']: d.version
         for d in importlib.metadata.distributions()}
  normal = lambda name: name.lower().replace('_', '-').replace('.', '-')
  now = {normal(name): version for name, version in now.items()}
  changed = {name: (version, now.get(normal(name)))
             for name, version in before.items()
             if now.get(normal(name)) != version}
  assert not changed
  assert 'jax' in before and 'mixer-jax' in now
