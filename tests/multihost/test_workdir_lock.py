"""Tests for mixer_jax.multihost.workdir_lock: one live run per workdir."""

import json
import os
import socket
import subprocess
import sys

import pytest

from mixer_jax import errors
from mixer_jax import trainer
from mixer_jax.multihost import workdir_lock
from tests.conftest import small_digits_config


def write_lock(workdir, pid):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'lock'), 'w') as f:
    json.dump({'host': socket.gethostname(), 'pid': pid}, f)


def test_a_second_run_fails_at_once_naming_the_first_and_changes_nothing(
    tmp_path):
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(small_digits_config(total_steps=4), workdir)
  live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    write_lock(workdir, live.pid)
    before = {name: os.path.getmtime(os.path.join(workdir, name))
              for name in os.listdir(workdir)}
    with pytest.raises(workdir_lock.WorkdirInUse,
                       match=f'in use by pid {live.pid} on host '
                       f'{socket.gethostname()}'):
      trainer.train_and_evaluate(small_digits_config(total_steps=8), workdir)
    assert before == {name: os.path.getmtime(os.path.join(workdir, name))
                      for name in os.listdir(workdir)}
  finally:
    live.kill()
    live.wait()


def test_the_lock_of_a_dead_run_is_taken_over_and_released(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  workdir = str(tmp_path / 'run')
  write_lock(workdir, dead.pid)
  final = trainer.train_and_evaluate(small_digits_config(total_steps=4), workdir)
  assert final['step'] == 4
  assert f'pid {dead.pid}' in caplog.text and 'Taking over' in caplog.text
  assert not os.path.exists(os.path.join(workdir, 'lock'))


def test_a_run_that_fails_early_leaves_no_workdir_behind(tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(FileNotFoundError):
    trainer.train_and_evaluate(
        small_digits_config(pretrained=str(tmp_path / 'missing.npz')), workdir)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('content', ['', '{"host": "h', '[]', '{}'])
def test_a_half_made_lock_is_taken_over(tmp_path, caplog, content):
  (tmp_path / 'lock').write_text(content)
  path = workdir_lock.acquire(str(tmp_path))
  assert json.loads((tmp_path / 'lock').read_text())['pid'] == os.getpid()
  assert 'empty or unreadable' in caplog.text
  workdir_lock.release(path)
  assert os.listdir(tmp_path) == []


class _FailingFile:
  """A file whose writes fail with `errno`, as on a full or read-only disk."""

  def __init__(self, errno):
    self.errno = errno

  def __enter__(self):
    return self

  def __exit__(self, *args):
    return False

  def write(self, _):
    raise OSError(self.errno, os.strerror(self.errno))


@pytest.mark.parametrize('errno, error, message', [
    (28, errors.DiskFullError, 'no space left on device for workdir'),
    (30, errors.UserError, 'Cannot use workdir .*Read-only file system'),
])
def test_a_lock_that_cannot_be_written_is_one_error_and_leaves_nothing(
    tmp_path, monkeypatch, errno, error, message):
  monkeypatch.setattr(workdir_lock, 'open',
                      lambda *a, **k: _FailingFile(errno), raising=False)
  workdir = tmp_path / 'run'
  with pytest.raises(error, match=message):
    with workdir_lock.hold(str(workdir)):
      pass
  assert not workdir.exists()  # Not even a half-made lock.


def test_a_workdir_that_is_a_file_is_one_error(tmp_path):
  (tmp_path / 'run').write_text('not a directory')
  with pytest.raises(errors.UserError, match='is a file, not a directory'):
    with workdir_lock.hold(str(tmp_path / 'run')):
      pass
  assert (tmp_path / 'run').read_text() == 'not a directory'
