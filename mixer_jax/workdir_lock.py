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
"""One run per workdir: WORKDIR/lock names the live run's host and pid.

Two runs in one workdir would overwrite each other's checkpoints and
metrics; the second one fails at once instead, naming the first, and writes
nothing. A lock whose process is gone (a dead pid on this host, e.g. after
kill -9) is taken over with a warning. On several hosts process 0 holds it.
"""

import contextlib
import json
import os
import socket

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from mixer_jax import errors


class WorkdirInUse(errors.UserError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's process: alive.
    return True
  return True


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):  # Gone, or being written right now.
    return {}


def acquire(workdir: str) -> str:
  """Creates WORKDIR/lock for this process; returns its path."""
  path = os.path.join(workdir, 'lock')
  me = {'host': socket.gethostname(), 'pid': os.getpid()}
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read(path)
      if holder.get('host') == me['host'] and isinstance(
          holder.get('pid'), int) and not _alive(holder['pid']):
        logging.warning('Taking over the lock of a run that is gone (pid %d '
                        'on this host): %s', holder['pid'], path)
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
        continue
      who = (f'pid {holder["pid"]} on host {holder["host"]}' if holder else
             'another run')
      raise WorkdirInUse(
          f'Workdir {workdir} is in use by {who} (lock file {path}). Wait '
          'for that run to end or use another --workdir; if that run is gone, '
          'delete the lock file.') from None
    with os.fdopen(fd, 'w') as f:
      json.dump(me, f)
    return path


def release(path: str):
  """Removes the lock if it is still this process's."""
  if _read(path).get('pid') == os.getpid():
    os.remove(path)


@contextlib.contextmanager
def hold(workdir: str):
  """Holds the workdir's lock (process 0) for the duration of the block.

  Creates the workdir; if it was created here and is left empty (a run that
  failed before writing anything), removes it again.
  """
  created = not os.path.isdir(workdir)
  path, error = None, None
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    try:
      path = acquire(workdir)
    except WorkdirInUse as e:
      error = e
  if jax.process_count() > 1:  # Every process learns process 0's outcome.
    held = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not held and error is None:
      error = WorkdirInUse(f'Workdir {workdir} is in use by another run (see '
                           "process 0's message).")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if path is not None:
      release(path)
    if created and jax.process_index() == 0:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)  # Only if empty.
