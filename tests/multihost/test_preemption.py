"""Tests for mixer_jax.multihost.preemption: SIGTERM / SIGINT save the step and stop."""

import os
import signal
import subprocess

import jax
import numpy as np
import pytest

from mixer_jax import storage
from mixer_jax import trainer
from mixer_jax.model import published
from tests.conftest import ROOT
from tests.conftest import SMALL_DIGITS_FLAGS
from tests.conftest import last_line
from tests.conftest import read_jsonl
from tests.conftest import small_digits_config
from tests.conftest import train_command

# Each test here trains, runs a command or several processes.
pytestmark = pytest.mark.slow


# Dropout, stochastic depth and mixup: the resumed run must redraw each
# random number exactly.
RANDOM = dict(mixup_alpha=0.2, model={'dropout_rate': 0.1,
                                      'stochastic_depth': 0.1})
RANDOM_FLAGS = ('--config.mixup_alpha=0.2', '--config.model.dropout_rate=0.1',
                '--config.model.stochastic_depth=0.1')


def start_and_signal(workdir, *signums):
  """Starts the train CLI and sends it `signums`, each once it is handled.

  The first arrives before the first step, so the run stops after step 1
  whatever the machine's speed. Returns (exit code, stderr).
  """
  process = subprocess.Popen(
      train_command(workdir, *SMALL_DIGITS_FLAGS, *RANDOM_FLAGS,
                    '--config.progress_every=1'),
      cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  lines, signums = [], list(signums)
  for line in process.stderr:
    lines.append(line)
    if signums and ('Workdir: ' in line or 'stopping after this step' in line):
      process.send_signal(signums.pop(0))
  return process.wait(timeout=300), ''.join(lines)


def assert_stopped_after_step_1(workdir, code, stderr, signum):
  assert code == 128 + signum, stderr[-2000:]
  assert last_line(stderr) == ('mixer_jax.train: stopped at step 1 '
                               f'({signum.name}); run the same command to '
                               'resume.')
  assert storage.listdir(storage.join(workdir, 'checkpoints')) == ['1']
  assert [r['step'] for r in read_jsonl(workdir)] == [1]
  assert not storage.exists(storage.join(workdir, 'lock'))


def test_ctrl_c_saves_the_step_and_stops(tmp_path):
  workdir = str(tmp_path / 'stopped')
  code, stderr = start_and_signal(workdir, signal.SIGINT)
  assert_stopped_after_step_1(workdir, code, stderr, signal.SIGINT)


@pytest.mark.parametrize('where', ['on disk', 'in a bucket'])
def test_sigterm_saves_the_step_and_the_run_resumes_exactly(
    tmp_path, caplog, where, request):
  """Stopped by SIGTERM after step 1, resumed to step 8 from what it saved:
  the weights of 8 steps in one go, bit for bit."""
  workdir = (str(tmp_path / 'stopped') if where == 'on disk' else
             f'gs://{request.getfixturevalue("fake_gcs")[0]}/stopped')
  code, stderr = start_and_signal(workdir, signal.SIGTERM)
  assert_stopped_after_step_1(workdir, code, stderr, signal.SIGTERM)
  caplog.set_level('INFO', logger='absl')
  trainer.train_and_evaluate(small_digits_config(**RANDOM), workdir)
  assert 'Resuming from step 1' in caplog.text
  whole = str(tmp_path / 'whole')
  trainer.train_and_evaluate(small_digits_config(**RANDOM), whole)
  a = published.load(os.path.join(whole, 'params.npz'))
  b = published.load(storage.join(workdir, 'params.npz'))
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_second_signal_exits_at_once(tmp_path):
  workdir = str(tmp_path / 'run')
  code, _ = start_and_signal(workdir, signal.SIGINT, signal.SIGINT)
  assert code == -signal.SIGINT
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', '1'))
