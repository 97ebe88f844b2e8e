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
"""SIGTERM and SIGINT: finish the step, save it, and stop with a clear line.

A preempted Cloud TPU VM or a cluster scheduler sends SIGTERM; Ctrl-C sends
SIGINT. `StopSignals` (a context manager for a `main`; a library call installs
no handler) records the first one, and the train loop checkpoints the step it
is on and raises `Stopped`. A second signal ends the process at once.

On several processes every one of them must save the same step. JAX's
preemption service (started by `jax.distributed.initialize`) owns SIGTERM
there and agrees on a step across processes, which orbax's
`CheckpointManager.reached_preemption` reports; SIGINT is passed on to it as
a SIGTERM.
"""

import os
import signal
from typing import Optional

from absl import logging
import jax

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """Training stopped on a signal after checkpointing `step`."""

  def __init__(self, step: int, signal_name: str):
    self.step, self.signal_name = step, signal_name
    self.exit_code = 128 + getattr(signal, signal_name, signal.SIGTERM)
    super().__init__(f'stopped at step {step} ({signal_name}); run the same '
                     'command to resume.')


class StopSignals:
  """Records SIGTERM / SIGINT while installed; a second one exits at once."""

  def __init__(self):
    self.received: Optional[str] = None
    self._previous = {}

  def __enter__(self) -> 'StopSignals':
    self._multiprocess = jax.process_count() > 1
    for signum in _SIGNALS:
      if signum == signal.SIGTERM and self._multiprocess:
        continue  # JAX's preemption service handles it.
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None:  # The second signal: no more waiting.
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.received = signal.Signals(signum).name
    logging.warning('%s: stopping after this step, with a checkpoint (a '
                    'second signal stops at once).', self.received)
    if self._multiprocess:
      os.kill(os.getpid(), signal.SIGTERM)

  def requested(self, step: int, checkpoints) -> Optional[str]:
    """The signal to stop at `step` for, once every process agrees on it."""
    if self._multiprocess:
      if checkpoints.reached_preemption(step):
        return self.received or 'SIGTERM'
      return None
    return self.received


def stop_requested(signals: Optional[StopSignals], step: int,
                   checkpoints) -> Optional[str]:
  """What the loop asks after each step: with no handlers, only preemption."""
  if signals is not None:
    return signals.requested(step, checkpoints)
  if jax.process_count() > 1 and checkpoints.reached_preemption(step):
    return 'SIGTERM'
  return None
