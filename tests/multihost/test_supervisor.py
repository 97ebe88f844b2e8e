"""The parent of a process of a multi-process run, around a stand-in child
(a few lines of Python that end as the case asks); test_multihost.py kills
real runs."""

import os
import signal
import subprocess
import sys
import time

import pytest

from mixer_jax.multihost import supervisor
from tests.conftest import ROOT

# JAX's fatal messages (xla/pjrt/distributed/client.h), as jax 0.10.2 prints
# them when process 0 is lost and when others stop sending heartbeats (with
# the tasks as JAX's documentation shows them too).
FATAL = ('F1206 17:31:02.335491   26556 client.h:80] Terminating process '
         'because the JAX distributed service detected fatal errors. This '
         'most likely indicates that another task died; see the other task '
         'logs for more details. absl::Status: ')
LOST_0 = FATAL + (
    'UNAVAILABLE: Failed to send RPC to coordination service. Either the '
    'leader task was preempted/died/restarted unexpectedly or this task is '
    'experiencing network issues.\n')
UNHEALTHY = ('UNAVAILABLE: The following tasks are unhealthy (stopped '
             'sending heartbeats):\n{}\nThe tasks have crashed. Check the '
             'task logs for an earlier error.\nRPC: /xla.coordination.'
             'CoordinationService/PollForError\n')


@pytest.mark.parametrize('argv, environ, expected', [
    ([], {}, False),
    (['--config=configs/b16.py', '--config.lr=0.1'], {}, False),
    (['--num_processes=2', '--process_id=1'], {}, True),
    (['--coordinator_address', 'host:1234'], {}, True),
    (['--local_device_ids=0'], {}, True),
    (['--distributed'], {}, True),
    (['--distributed=true'], {}, True),
    (['--distributed=false'], {}, False),
    (['--nodistributed'], {}, False),
    ([], {'MIXER_JAX_DISTRIBUTED': '1'}, True),
    ([], {'JAX_COORDINATOR_ADDRESS': 'host:1234'}, True),
])
def test_distributed_reads_the_launch_flags_and_the_environment(
    argv, environ, expected):
  assert supervisor.distributed(argv, environ) is expected


def test_flagfiles_are_read_in_as_absl_reads_them(tmp_path):
  flagfile = tmp_path / 'launch.cfg'
  flagfile.write_text('# two hosts\n--num_processes=2\n--process_id=1\n')
  argv = supervisor.with_flagfiles(['--config=configs/b16.py',
                                    f'--flagfile={flagfile}'])
  assert argv == ['--config=configs/b16.py', '--num_processes=2',
                  '--process_id=1']
  assert supervisor.distributed(argv, {})
  missing = ['--flagfile=/no/such/file']  # absl names it in the child.
  assert supervisor.with_flagfiles(missing) == missing


@pytest.mark.parametrize('fatal, expected', [
    (LOST_0, 'lost process 0, which runs the coordination service (killed, '
     'or its host is gone)'),
    (FATAL + UNHEALTHY.format('2'),
     'process 2 stopped responding (killed, or its host is gone)'),
    (FATAL + UNHEALTHY.format('/job:jax_worker/replica:0/task:3\n'
                              '/job:jax_worker/replica:0/task:1'),
     'processes 1, 3 stopped responding (killed, or its host is gone)'),
    (FATAL + 'INTERNAL: something else\nmore', "JAX's coordination service "
     'failed: INTERNAL: something else'),
])
def test_lost_process_names_what_jax_lost(fatal, expected):
  assert supervisor.lost_process(fatal) == expected


# The command under the parent: supervise() returns in the child, which then
# writes a line to stderr, prints its pid and ends as its last argument asks.
CHILD = f"""
import os, signal, sys, time
from mixer_jax.multihost import supervisor
supervisor.supervise('prog')
signal.signal(signal.SIGTERM, lambda *_: (print('SIGTERM', file=sys.stderr),
                                          sys.exit(143)))
print('before', file=sys.stderr, flush=True)
print(os.getpid(), flush=True)  # Last: the test may signal it from now on.
ending = sys.argv[-1]
if ending == 'jax_abort':
  sys.stderr.write({LOST_0!r} + '*** Check failure stack trace ***\\n')
  sys.stderr.flush()
  os.abort()
elif ending == 'sigkill':
  os.kill(os.getpid(), signal.SIGKILL)
elif ending == 'exit3':
  sys.exit(3)
elif ending == 'gloo':
  print('[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of '
        'connected peer ranks is : 1')
  print('ours')
  sys.exit(0)
time.sleep(60)
"""


def parent(ending):
  env = {k: v for k, v in os.environ.items()
         if k not in ('MIXER_JAX_DISTRIBUTED', 'JAX_COORDINATOR_ADDRESS')}
  return subprocess.Popen(
      [sys.executable, '-c', CHILD, '--distributed', ending], cwd=ROOT,
      env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize('ending, code, last', [
    ('jax_abort', 1, 'prog: error: lost process 0, which runs the '
     'coordination service (killed, or its host is gone); this process stops '
     'too. Start every process again to resume from the last checkpoint.'),
    ('sigkill', 137, 'prog: error: ended by SIGKILL (out of memory, or '
     'killed).'),
    ('exit3', 3, 'before'),
])
def test_the_parent_passes_the_child_through_and_names_its_end(ending, code,
                                                                last):
  running = parent(ending)
  out, err = running.communicate(timeout=60)
  assert running.returncode == code
  assert int(out) != running.pid  # The child printed it.
  assert err.splitlines()[0] == 'before'
  assert err.splitlines()[-1] == last
  # JAX's message and the dumps after it are held back.
  assert 'Terminating' not in err and 'Check failure' not in err


def test_the_parent_keeps_gloo_notices_out_of_stdout():
  """Gloo prints a line per peer on stdout as the processes connect."""
  running = parent('gloo')
  out, _ = running.communicate(timeout=60)
  assert running.returncode == 0
  assert out.splitlines()[1:] == ['ours']


def test_sigterm_to_the_parent_reaches_the_child():
  running = parent('sleep')
  child = int(running.stdout.readline())
  running.send_signal(signal.SIGTERM)
  _, err = running.communicate(timeout=60)
  assert running.returncode == 143
  assert 'SIGTERM' in err.splitlines()
  assert gone(child)


def test_the_child_dies_with_its_parent():
  """A kill -9 of a process of the run (the parent) ends its child too: the
  others then find that process gone."""
  running = parent('sleep')
  child = int(running.stdout.readline())
  running.kill()
  running.wait()
  deadline = time.monotonic() + 30
  while not gone(child) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert gone(child)


def gone(pid: int) -> bool:
  """No such process, or a zombie (its parent died; init reaps it)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
  except FileNotFoundError:
    return True
