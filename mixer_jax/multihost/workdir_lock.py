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
kill -9) is taken over with a warning, as is an empty or unreadable one. The
lock is written whole or not at all. On several hosts process 0 holds it.

In a bucket (gs://), where no host can see another host's pids, the lock is
an object created only if there is none (Cloud Storage's generation
precondition) and renewed every HEARTBEAT_S; one not renewed for STALE_S
belongs to a run that is gone, and is taken over with a warning.
"""

import contextlib
import json
import os
import socket
import threading
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from mixer_jax import errors
from mixer_jax import storage

HEARTBEAT_S = 30  # A bucket lock is renewed this often,
STALE_S = 150  # and taken over when not renewed for this long.


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
      holder = json.load(f)
    return holder if isinstance(holder, dict) and 'pid' in holder else {}
  except (OSError, ValueError):  # Gone, or half-made by an older version.
    return {}


def _create(path: str, content: str) -> bool:
  """Creates `path` holding `content` unless it exists; False if it does.

  The content is written to a temporary file first and linked into place,
  so a lock is never seen half-made (a kill or a full disk mid-write leaves
  no lock). Where hard links are unsupported, falls back to O_EXCL.
  """
  temporary = f'{path}.{socket.gethostname()}.{os.getpid()}.tmp'
  try:
    with open(temporary, 'w') as f:
      f.write(content)
    try:
      os.link(temporary, path)
    except FileExistsError:
      return False
    except OSError:  # No hard links here (e.g. some FUSE file systems).
      try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'w') as f:
        f.write(content)
    return True
  finally:
    with contextlib.suppress(OSError):
      os.remove(temporary)


def acquire(workdir: str) -> str:
  """Creates WORKDIR/lock for this process; returns its path."""
  path = os.path.join(workdir, 'lock')
  me = {'host': socket.gethostname(), 'pid': os.getpid()}
  while not _create(path, json.dumps(me)):
    holder = _read(path)
    gone = holder.get('host') == me['host'] and isinstance(
        holder.get('pid'), int) and not _alive(holder['pid'])
    if gone or not holder:
      logging.warning('Taking over the lock of a run that is gone (%s): %s',
                      f'pid {holder["pid"]} on this host' if holder else
                      'the lock file is empty or unreadable', path)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    raise WorkdirInUse(
        f'Workdir {workdir} is in use by pid {holder["pid"]} on host '
        f'{holder["host"]} (lock file {path}). Wait for that run to end or '
        'use another --workdir; if that run is gone, delete the lock '
        'file.') from None
  return path


class BucketLock:
  """WORKDIR/lock in a bucket: created if absent, renewed while held."""

  def __init__(self, workdir: str):
    self.workdir, self.url = workdir, storage.join(workdir, 'lock')
    self._generation, self._stop = None, threading.Event()
    self._thread = threading.Thread(target=self._renew, daemon=True)

  def _content(self) -> str:
    return json.dumps({'host': socket.gethostname(), 'pid': os.getpid(),
                       'time': time.time()})

  def acquire(self) -> 'BucketLock':
    while self._generation is None:
      self._generation = storage.create_object(self.url, self._content())
      if self._generation is not None:
        break
      text, generation = storage.read_object(self.url)
      if text is None:
        continue  # Released meanwhile.
      holder = _parse(text)
      age = time.time() - holder.get('time', 0)
      gone = holder.get('host') == socket.gethostname() and not _alive(
          holder['pid'])  # Killed on this host: no need to wait.
      if holder and age < STALE_S and not gone:
        raise WorkdirInUse(
            f'Workdir {self.workdir} is in use by pid {holder["pid"]} on '
            f'host {holder["host"]} (lock {self.url}, renewed {age:.0f} s '
            'ago). Wait for that run to end or use another --workdir; the '
            f'lock of a run that is gone expires {STALE_S} s after its last '
            'renewal.')
      logging.warning('Taking over the lock of a run that is gone (%s): %s',
                      f'pid {holder["pid"]} on this host' if gone else
                      f'not renewed for {age:.0f} s' if holder else
                      'unreadable', self.url)
      self._generation = storage.replace_object(self.url, self._content(),
                                                generation)
    self._thread.start()
    return self

  def _renew(self):
    while not self._stop.wait(HEARTBEAT_S):
      renewed = storage.replace_object(self.url, self._content(),
                                       self._generation)
      if renewed is None:
        logging.warning('The lock %s was taken by another run.', self.url)
        return
      self._generation = renewed

  def release(self):
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()
    storage.delete_object(self.url, self._generation)


def _parse(text: str) -> dict:
  try:
    holder = json.loads(text)
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) and 'pid' in holder else {}


def _usable_workdir(workdir: str):
  """Creates `workdir` if needed, or says in one line why it cannot be."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except FileExistsError:
    raise errors.UserError(f'Workdir {workdir} is a file, not a '
                           'directory; use another --workdir.') from None
  except OSError as e:
    raise _os_error(workdir, e) from None


def _os_error(workdir: str, error: OSError) -> errors.UserError:
  if errors.is_disk_full(error):
    return errors.DiskFullError(f'no space left on device for workdir '
                                f'{workdir}; nothing was written.')
  return errors.UserError(f'Cannot use workdir {workdir}: '
                          f'{errors.describe(error)}.')


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
  in_bucket = storage.is_url(workdir)
  created = not in_bucket and not os.path.isdir(workdir)
  path, bucket_lock, error = None, None, None
  if jax.process_index() == 0:
    try:
      if in_bucket:
        storage.check_bucket(workdir, what='Workdir')
        bucket_lock = BucketLock(workdir).acquire()
      else:
        _usable_workdir(workdir)
        path = acquire(workdir)
    except errors.UserError as e:
      error = e
    except OSError as e:  # A read-only workdir, a full disk.
      error = _os_error(workdir, e)
  if jax.process_count() > 1:  # Every process learns process 0's outcome.
    held = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not held and error is None:
      error = errors.UserError(f'Workdir {workdir} cannot be used (see '
                               "process 0's message).")
  try:
    if error is not None:
      raise error
    yield
  finally:
    if path is not None:
      release(path)
    if bucket_lock is not None:
      bucket_lock.release()
    if created and jax.process_index() == 0:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)  # Only if empty.
