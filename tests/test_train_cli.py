"""The train CLI as a user meets it: one line per expected error, exit codes,
and a full disk (on a small tmpfs, where this machine lets us mount one)."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from mixer_jax import cli
from mixer_jax import errors
from mixer_jax import trainer
from tests.conftest import SMALL_DIGITS_FLAGS
from tests.conftest import foreign_lines
from tests.conftest import last_line
from tests.conftest import run_train
from tests.conftest import small_digits_config


@pytest.mark.parametrize('flags,message', [
    (['--config.lrr=0.1'], "unknown config field 'lrr' (mixer_jax/recipes.py "
     'declares every field). Did you mean "lr" instead of "lrr"?'),
    (['--config.lr=0', '--config.eval_every=0'],
     'Bad config values: lr=0.0 (must be > 0); eval_every=0 (must be > 0).'),
    (['--heartbeat_timeout=0'],
     'flag --heartbeat_timeout=0: 0 is not a positive integer'),
])
@pytest.mark.slow
def test_an_expected_error_is_one_line_without_a_traceback(tmp_path, flags,
                                                           message):
  workdir = str(tmp_path / 'run')
  result = run_train(workdir, *flags)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert last_line(result.stderr).startswith(
      f'mixer_jax.train: error: {message}')
  assert not os.path.exists(workdir)


def test_a_missing_checkpoint_is_named_before_the_workdir_is_made(tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(errors.UserError, match=(
      "Pretrained checkpoint 'missing.npz' is neither a published name nor "
      'an existing file.')):
    trainer.train_and_evaluate(small_digits_config(pretrained='missing.npz'),
                             workdir)
  assert not os.path.exists(workdir)


@pytest.fixture(name='small_disk')
def fixture_small_disk(tmp_path):
  """An 8 MB tmpfs; skipped where mounting one is not allowed."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs',
                     str(mount)], capture_output=True, check=False).returncode:
    pytest.skip('cannot mount a tmpfs here')
  yield mount
  subprocess.run(['umount', str(mount)], check=True)


def fill(mount, *, leave: int):
  stat = os.statvfs(mount)
  with open(mount / 'filler', 'wb') as f:
    f.write(b'\0' * (stat.f_bavail * stat.f_frsize - leave))


@pytest.mark.slow
def test_a_run_and_a_damaged_checkpoint_speak_in_our_lines_only(tmp_path):
  """TensorFlow's start-up notices and orbax's late reads of a damaged
  checkpoint (hundreds of tracebacks) stay off stderr."""
  workdir = str(tmp_path / 'run')
  flags = (*SMALL_DIGITS_FLAGS, '--config.eval_every=100')
  result = run_train(workdir, *flags)
  assert result.returncode == 0, result.stderr[-2000:]
  assert foreign_lines(result.stderr) == []
  assert 'step 8: eval_loss ' in result.stderr  # Our INFO records stay.
  for data in glob.glob(os.path.join(workdir, 'checkpoints', '8', 'state',
                                     '**', 'd', '*'), recursive=True):
    os.truncate(data, 10)
  result = run_train(workdir, *flags, '--config.total_steps=12')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'The checkpoint of step 8 is damaged' in result.stderr
  assert foreign_lines(result.stderr) == []
  assert len(result.stderr.splitlines()) < 15


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_with_earlier_checkpoints_intact(
    small_disk):
  workdir = str(small_disk / 'run')
  flags = (*SMALL_DIGITS_FLAGS, '--config.eval_every=100')
  assert run_train(workdir, *flags, '--config.total_steps=4').returncode == 0
  fill(small_disk, leave=64 * 1024)
  result = run_train(workdir, *flags, '--config.total_steps=12')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert re.match(
      r'mixer_jax\.train: error: no space left on device while saving the '
      r'checkpoint of step 8 \(noticed at step \d+\): .* the checkpoints '
      'saved before are intact', last_line(result.stderr))
  assert '4' in os.listdir(os.path.join(workdir, 'checkpoints'))
  os.remove(small_disk / 'filler')
  result = run_train(workdir, *flags, '--config.total_steps=12')
  assert result.returncode == 0, result.stderr[-2000:]
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    assert json.load(f)['step'] == 12


ASYNC_READ = """
import types

@types.coroutine
def suspend():
  yield

async def read():
  try:
    await suspend()
  finally:
    raise Exception('Encountered error while reading array index')
"""


@pytest.mark.parametrize('filename, dropped', [
    ('/x/orbax/checkpoint/_src/serialization/serialization.py', True),
    ('/x/mixer_jax/evals/loading.py', False)])
def test_an_orbax_read_closed_late_is_dropped_and_others_kept(
    monkeypatch, filename, dropped):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook',
                      lambda u: seen.append(str(u.exc_value)))
  cli.drop_orbax_late_errors()
  scope = {}
  exec(compile(ASYNC_READ, filename, 'exec'), scope)  # pylint: disable=exec-used
  read = scope['read']()
  read.send(None)
  del read  # Closed while suspended: its `finally` raises, unraisable.
  assert seen == ([] if dropped else
                  ['Encountered error while reading array index'])


def test_late_closed_event_loop_errors_are_dropped_and_others_kept(
    monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook',
                      lambda u: seen.append(str(u.exc_value)))
  cli.drop_orbax_late_errors()

  class Raises:
    def __init__(self, message):
      self.message = message

    def __del__(self):
      raise RuntimeError(self.message)

  Raises('Event loop is closed')  # Collected at once: an unraisable error.
  Raises('something else')
  assert seen == ['something else']
