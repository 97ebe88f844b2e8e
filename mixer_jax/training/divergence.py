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
"""Divergence: steps whose loss or gradient is not finite or whose loss
exploded, and when to stop.

The compiled step never applies an update whose loss or gradient is not
finite (steps.make_train_step); it returns a `finite` flag per step. A finite
loss above `max_loss_factor` x ln(num_classes) (the loss of a fresh zero
head) has exploded: its update is applied, but the step counts as diverged
too. The flags and losses stay on the device until `check`, which the loop
calls where it reads from the device anyway (progress, eval, checkpoint), so
no step waits for the host.

A run that does not explode can still diverge into a model worse than one
that knows nothing: an eval loss above `max_eval_loss_factor` x ln(num_classes)
(`check_eval`), or train losses above that for `STUCK_FACTOR` x
`max_diverged_steps` steps in a row, end it the same way.

The parameters saved at step s are judged by the loss of step s + 1; when a
run diverges from step `first` on, the checkpoints of steps >= first - 1 are
not healthy (`first_unhealthy_checkpoint`). A checkpoint whose own eval loss
was too high is not healthy either.
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp

from mixer_jax import errors


class Diverged(errors.UserError):
  """Too many steps in a row diverged; `first_step` is the first of them,
  `reason` the message without the advice on what to run next."""

  def __init__(self, message: str, *, first_step: Optional[int] = None,
               reason: Optional[str] = None):
    super().__init__(message)
    self.first_step = first_step
    self.reason = reason or message


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)]))


def all_finite(tree) -> bool:
  """Whether every value of every array of `tree` is finite."""
  return bool(_all_finite(tree))


def max_loss(*, factor: float, num_classes: int) -> float:
  """The loss above which a step has exploded (inf: the rule is off)."""
  return factor * math.log(num_classes) if factor else math.inf


# A train loss above the eval cut-off diverges only this many times
# max_diverged_steps in a row: it must stay there, not pass through.
STUCK_FACTOR = 10


def check_eval(step: int, results: dict, *, max_eval_loss: float) -> None:
  """Raises Diverged if the eval at `step` scored worse than a fresh head
  (the checkpoint of `step` is the first unhealthy one)."""
  loss = results.get('eval_loss')
  if loss is not None and not loss <= max_eval_loss:
    raise Diverged(
        f'training diverged: the eval loss at step {step} was {loss:.4g}, '
        f'above {max_eval_loss:.4g} (max_eval_loss_factor x ln(num_classes); '
        'a fresh head scores ln(num_classes)), eval accuracy '
        f'{results.get("eval_accuracy", float("nan")):.2%}.',
        first_step=step + 1)


def first_unhealthy_checkpoint(first_step: int) -> int:
  """The first checkpoint of a run that diverged from `first_step` on whose
  parameters are not healthy: those of the step before, which gave the
  first bad loss."""
  return first_step - 1


class DivergedSteps:
  """Counts diverged steps; raises Diverged after `limit` in a row."""

  def __init__(self, *, limit: int, max_loss: float,
               stuck_loss: float = math.inf):
    self._limit, self._max_loss = limit, max_loss
    self._stuck_loss = stuck_loss
    self._pending = []  # (step, finite flag, loss), on the device.
    self.streak = 0  # Diverged steps in a row, up to the last checked one.
    self.stuck = 0  # Steps in a row whose loss was above stuck_loss.
    self.total = 0  # Diverged steps of this run.

  def add(self, step: int, finite: jax.Array, loss: jax.Array):
    self._pending.append((step, finite, loss))

  def check(self):
    """Reads the pending steps; raises Diverged if the streak reached limit."""
    if not self._pending:
      return
    steps, flags, losses = zip(*self._pending)
    self._pending = []
    flags, losses = jax.device_get((flags, losses))
    for step, finite, loss in zip(steps, flags, losses):
      healthy = bool(finite) and float(loss) <= self._max_loss
      self.streak = 0 if healthy else self.streak + 1
      self.total += int(not healthy)
      self.stuck = self.stuck + 1 if not float(loss) <= self._stuck_loss else 0
      if self.stuck >= STUCK_FACTOR * self._limit:
        first = step - self.stuck + 1
        raise Diverged(
            f'training diverged: the loss stayed above {self._stuck_loss:.4g} '
            '(max_eval_loss_factor x ln(num_classes), worse than a fresh '
            f'head) for steps {first}-{step} ({self.stuck} in a row; the '
            f'loss of step {step} was {float(loss):.4g}).', first_step=first)
      if self.streak >= self._limit:
        first = step - self.streak + 1
        raise Diverged(
            f'training diverged: the loss or gradient was not finite, or the '
            f'loss above {self._max_loss:.4g} (max_loss_factor x '
            f'ln(num_classes)), at steps {first}-{step} ({self.streak} in a '
            f'row, max_diverged_steps={self._limit}; the loss of step {step} '
            f'was {float(loss):.4g}).', first_step=first)


def how_to_resume(*, lr: float, last_healthy: Optional[int],
                  set_aside: tuple[int, ...], aside_dir: str) -> str:
  """The end of a Diverged message: what was kept and what to run next."""
  steps = ", ".join(map(str, set_aside))
  moved = ((f' The checkpoint of step {steps} holds diverged parameters; it '
            f'was moved to {aside_dir}.') if len(set_aside) == 1 else
           (f' The checkpoints of steps {steps} hold diverged parameters; '
            f'they were moved to {aside_dir}.') if set_aside else '')
  resume = (f'run the same command to resume from the checkpoint of step '
            f'{last_healthy}, the last healthy one' if last_healthy else
            'run the same command to start again from step 0 (no healthy '
            'checkpoint exists)')
  return f'{moved} Lower --config.lr (now {lr:g}) and {resume}.'
