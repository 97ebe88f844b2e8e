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
"""Non-finite training: the steps the train step skipped, and when to stop.

The compiled step never applies an update whose loss or gradient is not
finite (steps.make_train_step); it returns a `finite` flag per step. The flags
stay on the device until `check`, which the loop calls where it reads from the
device anyway (progress, eval, checkpoint), so no step waits for the host.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mixer_jax import errors


class Diverged(errors.UserError):
  """Too many steps in a row had a non-finite loss or gradient."""


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)]))


def all_finite(tree) -> bool:
  """Whether every value of every array of `tree` is finite."""
  return bool(_all_finite(tree))


class NonFiniteSteps:
  """Counts skipped steps; raises Diverged after `limit` in a row."""

  def __init__(self, *, limit: int, lr: float):
    self._limit, self._lr = limit, lr
    self._pending = []  # (step, finite flag on the device).
    self.streak = 0  # Non-finite steps in a row, up to the last checked one.
    self.total = 0  # Non-finite steps of this run.

  def add(self, step: int, finite: jax.Array):
    self._pending.append((step, finite))

  def check(self, *, last_checkpoint: Optional[int]):
    """Reads the pending flags; raises Diverged if the streak reached limit."""
    if not self._pending:
      return
    steps, flags = zip(*self._pending)
    self._pending = []
    for step, finite in zip(steps, np.asarray(jax.device_get(flags))):
      self.streak = 0 if finite else self.streak + 1
      self.total += int(not finite)
      if self.streak >= self._limit:
        raise Diverged(self._message(step, last_checkpoint))

  def _message(self, step: int, last_checkpoint: Optional[int]) -> str:
    first = step - self.streak + 1
    resume = (f'run the same command to resume from the checkpoint of step '
              f'{last_checkpoint}' if last_checkpoint else
              'run the same command to start again')
    return (f'training diverged: the loss or gradient was not finite at '
            f'steps {first}-{step} ({self.streak} in a row, '
            f'max_nonfinite_steps={self._limit}); those updates were skipped '
            f'and no checkpoint was saved during them. Lower --config.lr (now '
            f'{self._lr:g}) and {resume}.')
