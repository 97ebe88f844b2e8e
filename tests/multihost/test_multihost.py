"""Two processes x 2 CPU devices on localhost, as on two hosts of a pod slice.

The reference is one process with 4 devices: the global stream of batches
does not depend on the number of hosts (input_pipeline), so both compute the
same steps.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from mixer_jax import storage
from mixer_jax import trainer
from mixer_jax.model import published
from tests.conftest import FAST_COMPILE
from tests.conftest import ROOT
from tests.conftest import SMALL_DIGITS_FLAGS
from tests.conftest import small_digits_config
from tests.conftest import train_command

# Each test here trains, runs a command or several processes.
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

# SGD: Adam's normalised step would turn float-rounding differences of tiny
# gradients into visible ones.
STEPS = dict(total_steps=24, checkpoint_every=12, eval_every=24,
             progress_every=6, optimizer='sgd', lr=0.1)
FLAGS = SMALL_DIGITS_FLAGS + tuple(
    f'--config.{k}={v}' for k, v in STEPS.items()) + ('--heartbeat_timeout=10',)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def start(workdir, i, port, *flags, num_processes=2):
  """Process i of a two-process run on localhost, its stderr piped."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'{FAST_COMPILE} '
             '--xla_force_host_platform_device_count=2')
  return subprocess.Popen(
      train_command(workdir, *SMALL_DIGITS_FLAGS, *flags,
                    f'--coordinator_address=localhost:{port}',
                    f'--num_processes={num_processes}', f'--process_id={i}'),
      cwd=ROOT, env=env, text=True, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE)


def launch(workdir):
  """Runs the train CLI as the 2 processes of one run; returns their logs."""
  port = free_port()
  running = [start(workdir, i, port, *FLAGS) for i in range(2)]
  logs = [p.communicate(timeout=300)[1] for p in running]
  for p, log in zip(running, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def load_params(workdir):
  return published.load(os.path.join(workdir, 'params.npz'))


@pytest.fixture(name='two_hosts', scope='module')
def fixture_two_hosts(tmp_path_factory):
  """A two-process run killed and started again: kill -9 of process 0 (it
  runs JAX's coordination service and writes the metrics) after step 18 (the
  last checkpoint is step 12), then both processes again, to the end.
  Returns (workdir, what the kill left, the rerun's logs)."""
  workdir = str(tmp_path_factory.mktemp('two_hosts') / 'run')
  port = free_port()
  running = [start(workdir, i, port, *FLAGS) for i in range(2)]
  killed_at = signal_after(running, 'step 18/24', process=0)
  stderr = running[1].communicate(timeout=120)[1]
  running[0].wait()
  killed = dict(code=running[1].returncode, stderr=stderr,
                seconds=time.monotonic() - killed_at)
  killed['saved'] = sorted(int(s) for s in os.listdir(os.path.join(
      workdir, 'checkpoints')) if s.isdigit())  # Not a save cut short.
  return workdir, killed, launch(workdir)


def signal_after(running, line, *, process, signum=signal.SIGKILL):
  """Sends `signum` (kill -9) to `process` once process 0 logs `line`;
  returns when."""
  for logged in running[0].stderr:
    if line in logged:
      running[process].send_signal(signum)
      return time.monotonic()
  pytest.fail(f'process 0 ended before {line!r}')


def test_a_killed_process_0_ends_the_other_in_one_line(two_hosts):
  """Process 0 runs JAX's coordination service, whose loss aborts the others
  at once: their parents (supervisor.py) say so in one line instead. The
  checkpoints saved before the kill are intact."""
  _, killed, _ = two_hosts
  assert killed['code'] == 1
  assert killed['seconds'] < 60  # At once; a slow machine.
  assert killed['stderr'].strip().splitlines()[-1] == (
      'mixer_jax.train: error: lost process 0, which runs the coordination '
      'service (killed, or its host is gone); this process stops too. Start '
      'every process again to resume from the last checkpoint.'), (
          killed['stderr'][-2000:])
  assert 'Check failure' not in killed['stderr']
  assert 'Fatal Python' not in killed['stderr']
  assert killed['saved'] == [12]


def test_a_killed_process_ends_the_other_in_one_line(tmp_path):
  """Process 1 killed as training starts: process 0 ends within the
  heartbeat timeout (peers.py), naming it."""
  port = free_port()
  running = [start(str(tmp_path / 'run'), i, port, *FLAGS,
                   '--heartbeat_timeout=5') for i in range(2)]
  killed_at = signal_after(running, ' device(s): ', process=1)
  stderr = running[0].communicate(timeout=120)[1]
  running[1].wait()
  assert running[0].returncode == 1
  assert time.monotonic() - killed_at < 60  # 5 to 6 s; a slow machine.
  assert re.fullmatch(
      r'mixer_jax\.train: error: process 1 of 2 stopped responding \d+ s ago '
      r'\(killed, or its host is gone\); this process stops too\. Start '
      r'every process again to resume from the last checkpoint\.',
      stderr.strip().splitlines()[-1]), stderr[-2000:]
  assert 'Check failure' not in stderr
  # Not silent until then: a word at a third of the timeout.
  assert re.search(r'process 1 of 2 has not answered for \d+ s; this process '
                   r'stops once it has been silent for 5 s', stderr)


def test_the_two_processes_started_again_resume_exactly(two_hosts, tmp_path):
  """Resumed from step 12, they end with the weights of a two-process run
  that was never stopped, bit for bit."""
  workdir, _, logs = two_hosts
  assert 'Resuming from step 12' in logs[0] and 'step 24/24' in logs[0]
  uninterrupted = str(tmp_path / 'run')
  launch(uninterrupted)
  jax.tree.map(np.testing.assert_array_equal, load_params(uninterrupted),
               load_params(workdir))


def test_two_processes_end_as_one_process_does(two_hosts, tmp_path):
  """The same steps as one process with the same 4 devices, to float
  rounding (the all-reduce sums in another order)."""
  workdir, _, logs = two_hosts
  reference = trainer.train_and_evaluate(
      small_digits_config(**STEPS), str(tmp_path / 'reference'),
      devices=jax.devices()[:4])
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    final = json.load(f)
  assert final['eval_examples'] == 360  # Each example scored once.
  assert final['eval_loss'] == pytest.approx(reference['eval_loss'], abs=1e-5)
  assert final['eval_accuracy'] == pytest.approx(reference['eval_accuracy'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               load_params(workdir),
               load_params(str(tmp_path / 'reference')))
  # One voice: process 0 logs progress and writes the files, process 1 only
  # its checkpoint shards.
  assert 'step 24/24' not in logs[1]
  assert sorted(os.listdir(workdir)) == [
      'checkpoints', 'class_names.json', 'config.json', 'curves.png',
      'final_metrics.json', 'metrics.jsonl', 'params.npz', 'tensorboard']
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= set(os.listdir(
      os.path.join(workdir, 'checkpoints', '24', 'state')))


def test_two_processes_run_in_a_bucket(two_hosts, fake_gcs):
  """Both processes with their workdir in a Cloud Storage bucket (the fake
  server): the result of the run on a shared disk, bit for bit."""
  workdir, _, _ = two_hosts
  bucket, _ = fake_gcs
  in_bucket = f'gs://{bucket}/run'
  launch(in_bucket)
  jax.tree.map(np.testing.assert_array_equal, load_params(workdir),
               published.load(storage.join(in_bucket, 'params.npz')))
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= set(storage.listdir(
      storage.join(in_bucket, 'checkpoints', '24', 'state')))
  assert not storage.exists(storage.join(in_bucket, 'lock'))


def forget_after_step_12(source, target):
  """A copy of the workdir as a kill of both processes after step 12 would
  leave it (the files, not a real kill)."""
  shutil.copytree(source, target)
  shutil.rmtree(os.path.join(target, 'checkpoints', '24'))
  os.remove(os.path.join(target, 'final_metrics.json'))
  os.remove(os.path.join(target, 'params.npz'))


def test_one_process_resumes_the_two_process_run(two_hosts, tmp_path,
                                                 caplog):
  """Same global batches on one host (this one, 4 devices): the same
  weights, to float rounding."""
  workdir = two_hosts[0]
  resumed = str(tmp_path / 'one')
  forget_after_step_12(workdir, resumed)
  caplog.set_level('INFO', logger='absl')
  trainer.train_and_evaluate(small_digits_config(**STEPS), resumed,
                           devices=jax.devices()[:4])
  assert 'Resuming from step 12' in caplog.text
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               load_params(workdir), load_params(resumed))


def test_sigterm_on_one_host_stops_both_at_the_same_saved_step(tmp_path):
  """JAX's preemption service spreads one host's SIGTERM to every process."""
  workdir, port = str(tmp_path / 'run'), free_port()
  running = [start(workdir, i, port, '--config.total_steps=5000',
                   '--config.progress_every=5',
                   '--config.checkpoint_every=1000') for i in range(2)]
  # Process 0 is training: stop process 1.
  signal_after(running, 'step 5/5000', process=1, signum=signal.SIGTERM)
  logs = [p.stderr.read() for p in running]
  assert [p.wait(timeout=300) for p in running] == [143, 143]
  stopped = [re.search(r'stopped at step (\d+) \(SIGTERM\); run the same '
                       r'command to resume\.', log) for log in logs]
  assert all(stopped), logs[0][-2000:]
  step = stopped[0].group(1)
  assert stopped[1].group(1) == step
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [step]


def test_a_process_whose_peer_never_starts_gives_up_in_one_line(tmp_path):
  port = free_port()
  alone = start(str(tmp_path / 'run'), 0, port, '--initialization_timeout=5')
  stderr = alone.communicate(timeout=120)[1]
  assert alone.returncode == 1
  assert stderr.strip().splitlines()[-1] == (
      'mixer_jax.train: error: waited 5 s for the 2 processes of the run to '
      f'join at localhost:{port} (--initialization_timeout): start every '
      'process, each with the same --coordinator_address and '
      '--num_processes.')
  assert 'Traceback' not in stderr and 'Check failure' not in stderr
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
  # It said what it waited for before it gave up (after 3 s).
  assert re.search(r'mixer_jax\.train: waiting for process 1 of 2 \(this is '
                   r'process 0\) to join at localhost:\d+; giving up in \d+ '
                   r's\.', stderr), stderr[-2000:]


def test_processes_told_different_counts_each_say_so(tmp_path):
  """Process 1 told 3 processes, process 0 told 2: JAX runs them as 2; both
  end in one line naming the difference, before anything is written."""
  port = free_port()
  running = [start(str(tmp_path / 'run'), i, port, num_processes=n)
             for i, n in ((0, 2), (1, 3))]
  for i, (process, theirs) in enumerate(zip(running, (3, 2))):
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1] == (
        'mixer_jax.train: error: the processes of the run were launched '
        f'differently (--num_processes={(2, 3)[i]} here, {theirs} on process '
        f'{1 - i}; the run has 2 processes): start every process with the '
        'same values.'), stderr[-2000:]
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
