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
import numpy as np
import tqdm


class MetricWriter:
  """TensorBoard events in WORKDIR/tensorboard, every scalar in metrics.jsonl.

  metrics.jsonl gets one JSON object per write: {"step": ..., name: value}.
  Only the first process writes; on the others this does nothing.
  """

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if self._active:
      self._tensorboard = tensorboard.SummaryWriter(
          os.path.join(workdir, 'tensorboard'), auto_flush=False)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if not self._active:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    for name, value in scalars.items():
      self._tensorboard.scalar(name, value, step)
    self._jsonl.write(json.dumps({'step': int(step), **scalars}) + '\n')

  def flush(self):
    if self._active:
      self._tensorboard.flush()
      self._jsonl.flush()

  def close(self):
    if self._active:
      self._tensorboard.close()
      self._jsonl.close()


class Progress:
  """The progress line every `every` steps, and a bar on a terminal.

  The line reports step, loss, learning rate, img/s over the last interval
  and the ETA; img/s counts the global batch, so it is the whole job's rate.
  """

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int,
               every: int, bar: Optional[bool] = None):
    self._total, self._batch, self._every = total_steps, batch_size, every
    self._last_step, self._last_time = start_step, time.perf_counter()
    if bar is None:
      bar = sys.stderr.isatty() and jax.process_index() == 0
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                          dynamic_ncols=True) if bar else None

  def due(self, step: int) -> bool:
    return step % self._every == 0 or step == self._total

  def update(self, step: int, *, loss: float, lr: float) -> dict:
    """Call at a step where `due`; returns the scalars it reported."""
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
