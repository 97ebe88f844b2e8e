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
"""Where metrics go: TensorBoard, a JSON-lines file, and the progress line."""

import json
import sys
import time
from typing import Any, Mapping, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from tqdm import auto as tqdm_auto

from mixer_jax import storage
from mixer_jax.training import events
from mixer_jax.training import records


class Sink:
  """A file that grows: on a local disk each write is appended at once (a
  kill loses nothing written); in a bucket, which cannot append, the whole
  object is written again on flush() when it changed (a kill loses what
  came after the last flush: no more than the run redoes when it resumes,
  as the loop flushes with every checkpoint)."""

  def __init__(self, path: str, *, keep: bytes = b''):
    self._path, self._local = path, not storage.is_url(path)
    if self._local:
      storage.write_whole(path, keep)
      self._file = open(path, 'ab')
    else:
      self._content, self._dirty = bytearray(keep), True

  def write(self, data: bytes):
    if self._local:
      self._file.write(data)
      self._file.flush()
    else:
      self._content += data
      self._dirty = True

  def flush(self):
    if not self._local and self._dirty:
      storage.write_whole(self._path, bytes(self._content))
      self._dirty = False

  def close(self):
    if self._local:
      self._file.close()
    else:
      self.flush()


class MetricWriter:
  """TensorBoard events in WORKDIR/tensorboard, every scalar in metrics.jsonl.

  metrics.jsonl gets one JSON object per write: {"step": ..., name: value}.
  A run that resumes from `start_step` first drops the records of later
  steps, which the run it resumes wrote after its last checkpoint and which
  are written again. In a bucket the files are written whole on flush(), at
  most every FLUSH_S and on close. Only the first process writes; on the
  others this does nothing.
  """

  FLUSH_S = 60

  def __init__(self, workdir: str, *, start_step: int = 0):
    self._active = jax.process_index() == 0
    if self._active:
      logdir = storage.join(workdir, 'tensorboard')
      jsonl = storage.join(workdir, 'metrics.jsonl')
      kept = records.read_jsonl(jsonl) if storage.exists(jsonl) else []
      self._jsonl = Sink(jsonl, keep=records.jsonl_text(
          [r for r in kept if r.get('step', 0) <= start_step]).encode())
      drop_events_after(logdir, start_step)
      storage.makedirs(logdir)
      self._events = Sink(storage.join(logdir, events.file_name()),
                          keep=events.first_event())
      self._flushed = time.monotonic()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if not self._active:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write((json.dumps({'step': int(step), **scalars}) + '\n')
                      .encode())
    self._events.write(events.scalars(int(step), scalars))
    if time.monotonic() - self._flushed > self.FLUSH_S:
      self.flush()

  def flush(self):
    """Writes what a bucket does not have yet (nothing to do on a disk)."""
    if self._active:
      self._jsonl.flush()
      self._events.flush()
      self._flushed = time.monotonic()

  def close(self):
    if self._active:
      self._events.close()
      self._jsonl.close()


def missing_record(workdir: str, step: int, key: str) -> bool:
  """Whether WORKDIR/metrics.jsonl has no record of `step` with a name that
  starts with `key`, as process 0 reads it (every process gets its answer;
  every process must call this)."""
  missing = False
  if jax.process_index() == 0:
    path = storage.join(workdir, 'metrics.jsonl')
    found = records.read_jsonl(path) if storage.exists(path) else []
    missing = not any(r.get('step') == step and any(
        name.startswith(key) for name in r) for r in found)
  if jax.process_count() > 1:
    missing = bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))
  return missing


def drop_events_after(logdir: str, step: int):
  """Rewrites TensorBoard event files without the events past `step`.

  A file cut short by a kill keeps the events before the cut.
  """
  for name in storage.listdir(logdir):
    if not name.startswith(events.PREFIX):
      continue
    path = storage.join(logdir, name)
    data = storage.read_bytes(path)
    kept = events.cut_after(data, step)
    if kept != data:
      storage.write_whole(path, kept)


def _interactive() -> bool:
  """Whether someone watches: a terminal, or a notebook (Jupyter, Colab)."""
  return sys.stderr.isatty() or 'ipykernel' in sys.modules


class Progress:
  """The progress line every `every` steps, and a bar where someone watches
  (a terminal, or a notebook, where absl's info lines would not show).

  The line reports step, loss, learning rate, img/s over the last interval
  and the ETA; img/s counts the global batch, so it is the whole job's rate.
  """

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int,
               every: int, bar: Optional[bool] = None):
    self._total, self._batch, self._every = total_steps, batch_size, every
    self._last_step, self._last_time = start_step, time.perf_counter()
    if bar is None:
      bar = _interactive() and jax.process_index() == 0
    self._bar = tqdm_auto.tqdm(total=total_steps, initial=start_step,
                               unit='step', dynamic_ncols=True) if bar else None

  def update(self, step: int, *, loss: float, lr: float) -> dict:
    """Call every `every` steps; returns the scalars it reported."""
    now = time.perf_counter()
    steps, seconds = step - self._last_step, max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    img_per_s = steps * self._batch / seconds
    eta = (self._total - step) * seconds / max(steps, 1)
    line = (f'step {step}/{self._total}  loss {loss:.4f}  lr {lr:.3g}  '
            f'{img_per_s:,.0f} img/s  ETA {_duration(eta)}')
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(loss=f'{loss:.4f}', refresh=False)
      self._bar.write(line)
    else:
      logging.info(line)
    return {'train_loss': loss, 'learning_rate': lr, 'img_per_s': img_per_s}

  def write(self, line: str):
    (self._bar.write if self._bar is not None else logging.info)(line)

  def close(self):
    if self._bar is not None:
      self._bar.close()


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'
