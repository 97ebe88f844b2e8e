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
import os
import sys
import time
from typing import Any, Mapping, Optional

from absl import logging
from flax.metrics import tensorboard
import jax
from jax.experimental import multihost_utils
import numpy as np
from tensorboard.compat.proto import event_pb2
import tensorflow as tf
from tqdm import auto as tqdm_auto

from mixer_jax.training import records


class MetricWriter:
  """TensorBoard events in WORKDIR/tensorboard, every scalar in metrics.jsonl.

  metrics.jsonl gets one JSON object per write: {"step": ..., name: value}.
  Each write reaches the file at once (a kill loses nothing written). A run
  that resumes from `start_step` first drops the records of later steps, which
  the run it resumes wrote after its last checkpoint and which are written
  again. Only the first process writes; on the others this does nothing.
  """

  def __init__(self, workdir: str, *, start_step: int = 0):
    self._active = jax.process_index() == 0
    if self._active:
      logdir = os.path.join(workdir, 'tensorboard')
      jsonl = os.path.join(workdir, 'metrics.jsonl')
      records.drop_jsonl_after(jsonl, start_step)
      drop_events_after(logdir, start_step)
      self._tensorboard = tensorboard.SummaryWriter(logdir, auto_flush=True)
      self._jsonl = open(jsonl, 'a')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if not self._active:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), **scalars}) + '\n')
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tensorboard.scalar(name, value, step)

  def close(self):
    if self._active:
      self._tensorboard.close()
      self._jsonl.close()


def missing_record(workdir: str, step: int, key: str) -> bool:
  """Whether WORKDIR/metrics.jsonl has no record of `step` with a name that
  starts with `key`, as process 0 reads it (every process gets its answer;
  every process must call this)."""
  missing = False
  if jax.process_index() == 0:
    path = os.path.join(workdir, 'metrics.jsonl')
    found = records.read_jsonl(path) if os.path.exists(path) else []
    missing = not any(r.get('step') == step and any(
        name.startswith(key) for name in r) for r in found)
  if jax.process_count() > 1:
    missing = bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))
  return missing


def drop_events_after(logdir: str, step: int):
  """Rewrites TensorBoard event files without the events past `step`.

  A file cut short by a kill keeps the events before the cut.
  """
  if not os.path.isdir(logdir):
    return
  for name in sorted(os.listdir(logdir)):
    if not name.startswith('events.out.tfevents'):
      continue
    path = os.path.join(logdir, name)
    events, damaged = [], False
    try:
      for record in tf.data.TFRecordDataset(path):
        events.append(record.numpy())
    except tf.errors.DataLossError:
      damaged = True
    kept = [r for r in events if event_pb2.Event.FromString(r).step <= step]
    if len(kept) == len(events) and not damaged:
      continue
    partial = path + '.partial'
    with tf.io.TFRecordWriter(partial) as writer:
      for record in kept:
        writer.write(record)
    os.replace(partial, path)


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
