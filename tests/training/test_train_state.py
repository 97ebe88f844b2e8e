"""Tests for mixer_jax.training.train_state: a damaged checkpoint never blocks a run."""

import glob
import os
import shutil

import jax
import numpy as np
import pytest

from mixer_jax import errors
from mixer_jax import trainer
from mixer_jax.model import published
from mixer_jax.training import train_state
from tests.conftest import small_digits_config


def truncate_largest_data_file(step_dir):
  files = glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'),
                    recursive=True)
  largest = max(files, key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 2)


def remove(step_dir, name):
  path = os.path.join(step_dir, name)
  (shutil.rmtree if os.path.isdir(path) else os.remove)(path)


DAMAGE = {
    'truncated data': truncate_largest_data_file,
    'no _METADATA': lambda d: remove(d, os.path.join('state', '_METADATA')),
    'no state': lambda d: remove(d, 'state'),
}


@pytest.fixture(name='reference', scope='module')
def fixture_reference(tmp_path_factory):
  """An 8-step run with checkpoints at 4 and 8, kept pristine."""
  workdir = str(tmp_path_factory.mktemp('reference') / 'run')
  config = small_digits_config(eval_every=100)
  trainer.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.mark.slow
@pytest.mark.parametrize('damage', DAMAGE)
def test_a_damaged_newest_checkpoint_is_moved_aside_and_an_older_one_used(
    reference, tmp_path, damage, caplog):
  config, pristine = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(pristine, workdir)
  DAMAGE[damage](os.path.join(workdir, 'checkpoints', '8'))
  os.remove(os.path.join(workdir, 'final_metrics.json'))
  final = trainer.train_and_evaluate(config, workdir)
  assert final['step'] == 8
  assert 'The checkpoint of step 8 is damaged' in caplog.text
  assert os.listdir(os.path.join(workdir, 'checkpoints_damaged')) == ['8']
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']
  # Steps 5-8 trained again from the checkpoint of step 4: the same weights.
  a = published.load(os.path.join(pristine, 'params.npz'))
  b = published.load(os.path.join(workdir, 'params.npz'))
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_when_no_checkpoint_restores_nothing_is_moved(reference, tmp_path):
  config, pristine = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(pristine, workdir)
  for step in ('4', '8'):
    DAMAGE['no state'](os.path.join(workdir, 'checkpoints', step))
  with pytest.raises(errors.UserError, match='No checkpoint in .* restores '
                     'with this config.*Step 8: .*; Step 4: '):
    trainer.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_damaged'))


def test_a_run_that_cannot_be_identified_is_never_called_damaged(
    reference, tmp_path):
  """config.json gone and the width changed: every checkpoint fails to
  restore; the error says why it may be, suggests no move, and nothing of
  the finished run changes."""
  config, pristine = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(pristine, workdir)
  os.remove(os.path.join(workdir, 'config.json'))
  files = lambda: {p: os.path.getmtime(p) for p in glob.glob(
      os.path.join(workdir, '**'), recursive=True) if os.path.isfile(p)}
  before = files()
  config = small_digits_config(eval_every=100)
  config.model.hidden_dim = 32
  with pytest.raises(errors.UserError) as e:
    trainer.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert 'config.json is missing' in message and 'another --workdir' in message
  assert 'damaged' not in message and 'out of the way' not in message
  assert before == files()


@pytest.mark.parametrize('content', ['{"model": {"vari', '[1, 2]'])
def test_an_unreadable_config_json_is_named(tmp_path, content):
  (tmp_path / 'config.json').write_text(content)
  with pytest.raises(errors.UserError,
                     match=r'config.json does not read as a run config'):
    train_state.read_config(str(tmp_path))
