# Copyright 2026 The mixer_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""A run on several processes: each runs as the child of a small parent.

When a process of the run dies, JAX's coordination service ends the others
by aborting them (SIGABRT) with C++ and Python stack dumps; when the lost one
is process 0, which runs the service, at once, before anything of ours can
act (peers.py gets there first for the others). So on several processes the
command runs itself again as a child, passes its stdout through (less Gloo's
connection notices), forwards its stderr line by line, and, from JAX's fatal
message on, keeps the rest back and ends with one line naming the lost
process. The parent imports nothing heavy (it starts before jax and
TensorFlow are imported) and forwards SIGTERM; the child dies with its
parent (a pipe that closes). The child's stdout and stderr are pipes, so its
progress comes as lines, with no bar.

Only this module's `supervise` is called, first thing in a command's
`__main__`; a single-process run has no parent.
"""

import os
import re
import signal
import subprocess
import sys
import threading
from typing import List, Mapping, Optional, Sequence

from absl import flags

# The child's end of the pipe from its parent, by its file descriptor.
_PARENT_PIPE = 'MIXER_JAX_PARENT_PIPE'
# JAX's client (xla/pjrt/distributed/client.h) before it aborts.
_FATAL = re.compile(rb'Terminating process because the JAX distributed '
                    rb'service detected fatal errors')
# The lost tasks follow, one a line: `2` (jax 0.10) or
# `/job:jax_worker/replica:0/task:2`.
_UNHEALTHY = re.compile(r'stopped sending heartbeats\):\n(.*?)(?:\nThe |$)',
                        re.S)
_KEPT_LINES = 40  # Of the fatal message and the dumps after it.
_DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id',
                      'local_device_ids')


def with_flagfiles(argv: Sequence[str]) -> List[str]:
  """`argv` with each --flagfile replaced by the flags in it, as absl reads
  them; as it is where a flagfile cannot be read (absl names it later)."""
  try:
    return flags.FlagValues().read_flags_from_files(list(argv),
                                                    force_gnu=True)
  except flags.Error:
    return list(argv)


def distributed(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
  """Whether the command line (flagfiles read in) asks for several
  processes, as cli.initialize_distributed reads it."""
  for arg in argv:
    if not arg.startswith('-'):
      continue
    name, has_value, value = arg.lstrip('-').partition('=')
    if name in _DISTRIBUTED_FLAGS:
      return True
    if name == 'distributed' and (not has_value or value.lower() in (
        'true', 't', '1')):
      return True
  return bool(environ.get('MIXER_JAX_DISTRIBUTED') or
              environ.get('JAX_COORDINATOR_ADDRESS'))


# What ends every other process when process 0 is lost, whoever notices
# first: JAX's client (its fatal message, read here) or peers.watch.
LOST_PROCESS_0 = ('lost process 0, which runs the coordination service '
                  '(killed, or its host is gone)')
AND_STOP = ('; this process stops too. Start every process again to resume '
            'from the last checkpoint.')


def lost_process(fatal: str) -> str:
  """What JAX's fatal message says was lost, for the one line."""
  unhealthy = _UNHEALTHY.search(fatal)
  block = unhealthy.group(1) if unhealthy else ''
  tasks = sorted({int(t) for t in re.findall(r'(\d+)[ \t]*$', block, re.M)})
  if tasks:
    which = ', '.join(map(str, tasks))
    return (f'process{"es" if len(tasks) > 1 else ""} {which} stopped '
            'responding (killed, or its host is gone)')
  if 'Failed to send RPC to coordination service' in fatal:
    return LOST_PROCESS_0
  status = fatal.split('absl::Status:', 1)[-1].strip().splitlines()
  return ('JAX\'s coordination service failed: '
          f'{status[0][:300] if status else "no reason given"}')


def supervise(program: str) -> None:
  """On several processes: runs this command again as a child and exits as
  it does (never returns). In that child (which from now on dies with its
  parent), or on one process: returns."""
  if _PARENT_PIPE in os.environ:
    _die_with_parent(int(os.environ.pop(_PARENT_PIPE)))
  elif distributed(with_flagfiles(sys.argv[1:]), os.environ):
    sys.exit(_run_child(program))


def _die_with_parent(fd: int) -> None:
  def watch():
    while os.read(fd, 1):
      pass
    os.kill(os.getpid(), signal.SIGKILL)  # As if killed with it.
  threading.Thread(target=watch, daemon=True, name='parent').start()


def _run_child(program: str) -> int:
  read, write = os.pipe()  # Never written: it closes when this one dies.
  child = subprocess.Popen(
      [sys.executable, *sys.orig_argv[1:]], stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, pass_fds=(read,),
      env={**os.environ, _PARENT_PIPE: str(read)})
  os.close(read)
  stdout = threading.Thread(target=_copy_stdout, args=(child.stdout,),
                            daemon=True, name='stdout')
  stdout.start()
  # A SIGTERM to the whole group reaches the child twice: JAX's preemption
  # service, which owns it on several processes, takes it once all the same.
  signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
  # Ctrl-C reaches the child too (one process group): it stops the run.
  signal.signal(signal.SIGINT, lambda *_: None)
  fatal = _forward(child.stderr)
  code = child.wait()
  stdout.join()
  os.close(write)
  if fatal is not None:
    _say(f'{program}: error: {lost_process(fatal)}{AND_STOP}')
    return 1
  if code < 0:
    name = signal.Signals(-code).name
    _say(f'{program}: error: ended by {name}'
         f'{" (out of memory, or killed)" if name == "SIGKILL" else ""}.')
    return 128 - code
  return code


def _copy_stdout(stream) -> None:
  """Copies the child's stdout to ours, but for the lines Gloo (JAX's CPU
  collectives) prints there as the processes connect."""
  for line in stream:
    if not line.startswith(b'[Gloo] '):
      try:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
      except OSError:
        pass  # Our stdout is gone: the child runs on all the same.


def _forward(stream) -> Optional[str]:
  """Copies the child's stderr to ours up to JAX's fatal message; returns
  that message and what followed it, if it came."""
  fatal = None
  for line in stream:
    if fatal is None and _FATAL.search(line):
      fatal = []
    if fatal is None:
      _write(line)
    elif len(fatal) < _KEPT_LINES:
      fatal.append(line)
  return None if fatal is None else b''.join(fatal).decode(errors='replace')


def _write(line: bytes) -> None:
  try:
    sys.stderr.buffer.write(line)
    sys.stderr.flush()
  except OSError:
    pass  # Our stderr is gone: the child runs on all the same.


def _say(line: str) -> None:
  _write(f'{line}\n'.encode())
