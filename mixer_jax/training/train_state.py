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
"""The training state, and its orbax checkpoints in the workdir.

A checkpoint holds everything a run needs to continue bit for bit: params,
optimizer state, step and the base RNG key; the input restarts exactly from
the step (the train stream is a function of it). Published-layout weights
(`.npz`) are `model/published.py`'s.
"""

import json
from typing import Any, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mixer_jax import errors
from mixer_jax import storage

# Config fields that define the model, its starting point and its data: a
# workdir trained with other values holds "another model" and is never
# resumed into this one.
MODEL_FIELDS = ('model', 'pretrained', 'image_size', 'resolution_factor',
                'dataset')


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken.
  params: Any
  opt_state: Any
  rng: jax.Array  # Raw uint32 key; each step folds in its own number.

  @classmethod
  def create(cls, *, params, tx, rng) -> 'TrainState':
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(params), rng=rng)


class WorkdirError(errors.UserError):
  """A workdir that holds another model's run."""


CLASS_NAMES_FILE = 'class_names.json'


def save_class_names(workdir: str, names) -> None:
  """WORKDIR/class_names.json: the dataset's class names in head order."""
  storage.write_whole(storage.join(workdir, CLASS_NAMES_FILE),
                      json.dumps(list(names), indent=0))


def read_class_names(workdir: str) -> tuple[str, ...]:
  """The run's class names; () where the file is missing."""
  path = storage.join(workdir, CLASS_NAMES_FILE)
  if not storage.exists(path):
    return ()
  return tuple(json.loads(storage.read_text(path)))


def read_config(workdir: str) -> Optional[dict]:
  """WORKDIR/config.json as a dict; None if there is none. A file that is
  not a JSON object (truncated, edited) is a UserError naming it."""
  path = storage.join(workdir, 'config.json')
  try:
    config = json.loads(storage.read_text(path))
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise WorkdirError(f'{path} does not read as a run config '
                       f'({errors.describe(e)}); restore it from a copy, or '
                       'use another --workdir.') from None
  if not isinstance(config, dict):
    raise WorkdirError(f'{path} does not read as a run config (not a JSON '
                       'object); restore it from a copy, or use another '
                       '--workdir.')
  return config


class Checkpoints:
  """Orbax checkpoints in WORKDIR/checkpoints, plus WORKDIR/config.json.

  Opening one only reads: a run that fails before `begin` leaves no trace.
  """

  def __init__(self, workdir: str, *, config, max_to_keep: int):
    self._workdir, self._config = workdir, config
    self._config_path = storage.join(workdir, 'config.json')
    self._check_compatible(config)
    self._directory = storage.where(storage.join(workdir, 'checkpoints'))
    self._saving = None  # The step of the last save started, until checked.
    self._last_save = None  # The step of the last save started.
    self._manager = ocp.CheckpointManager(
        self._directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False))

  def begin(self):
    """Creates the checkpoint directory and records the run's config."""
    storage.makedirs(self._directory)
    if jax.process_index() == 0:
      storage.write_whole(self._config_path, self._config.to_json_best_effort(
          indent=2, sort_keys=True))

  def _check_compatible(self, config):
    """Refuses a workdir whose model or data differ from `config`."""
    previous = read_config(self._workdir)
    if previous is None:
      return
    current = json.loads(config.to_json_best_effort())
    differ = [f'{k}: {previous.get(k)!r} there, {current.get(k)!r} now'
              for k in MODEL_FIELDS if previous.get(k) != current.get(k)]
    if differ:
      raise WorkdirError(
          f'Workdir {self._workdir} holds a run of another model or dataset '
          f'({"; ".join(differ)}). Use another --workdir, or delete this one '
          'to start over.')

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: TrainState):
    """Saves `state` in the background; the input position is the step (the
    train stream is a function of it)."""
    step = int(state.step)
    meta = {'step': step}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                       force=True)
    self._saving = self._last_save = step

  def restore_step(self, like: TrainState, step: int) -> TrainState:
    """The checkpoint of `step`, laid out like `like`."""
    if step not in self._manager.all_steps():
      raise errors.MissingError(
          f'No checkpoint of step {step} in {self._directory} (there are: '
          f'{", ".join(map(str, self._manager.all_steps())) or "none"}).')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract))).state

  def restore(self, like: TrainState) -> tuple[Optional[int], Any]:
    """(step, state) of the newest checkpoint that restores, laid out like
    `like` (shapes, shardings); (None, None) if there is no checkpoint.

    A checkpoint that fails while an older one restores is damaged (a kill
    or a full disk mid-write, a deleted file): it is moved aside to
    WORKDIR/checkpoints_damaged, never deleted. If none restores, nothing is
    moved (the cause may be this config, e.g. another optimizer) and the
    error names each step.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    failed = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
      except Exception as e:  # pylint: disable=broad-except
        failed.append((step, e))
        logging.warning('Checkpoint of step %d does not restore: %s', step,
                        errors.describe(e)[:300])
        continue
      for bad, error in failed:
        self._move_aside(bad, error)
      return step, restored.state
    if failed:
      unknown = ('; its config.json is missing, so the run cannot be '
                 'compared with this config' if read_config(self._workdir)
                 is None else '')
      raise WorkdirError(
          f'No checkpoint in {self._directory} restores with this config'
          f'{unknown}. Most likely they belong to another model or optimizer '
          '(e.g. another width, optimizer, grad_clip_norm, weight_decay or '
          'momentum_dtype): use another --workdir for this config; nothing '
          'was moved or changed. ' + '; '.join(
              f'Step {step}: {errors.describe(e)[:300]}' for step, e in failed))
    return None, None

  def _move_aside(self, step: int, error: Exception):
    target = self._move(step, 'checkpoints_damaged')
    if target:
      logging.warning('The checkpoint of step %d is damaged (%s); moved it to '
                      '%s and resumed from an older one.', step,
                      errors.describe(error)[:300], target)

  def set_aside_from(self, first: int) -> tuple[tuple[int, ...], str]:
    """Moves the checkpoints of steps >= `first` to WORKDIR/
    checkpoints_diverged (never deleted); returns (their steps, the folder).
    """
    self.wait()
    steps = tuple(s for s in self._manager.all_steps() if s >= first)
    for step in steps:
      self._move(step, 'checkpoints_diverged')
    return steps, storage.join(self._workdir, 'checkpoints_diverged')

  def _move(self, step: int, folder: str) -> Optional[str]:
    """Moves the checkpoint of `step` into WORKDIR/`folder` (process 0);
    returns where it went there, None on other processes."""
    aside = storage.join(self._workdir, folder)
    target = storage.join(aside, str(step))
    if jax.process_index() == 0:
      storage.makedirs(aside)
      suffix = 0
      while storage.exists(target):
        suffix += 1
        target = storage.join(aside, f'{step}.{suffix}')
      storage.rename(storage.join(self._directory, str(step)), target)
    self._manager.reload()
    return target if jax.process_index() == 0 else None

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  def check_for_errors(self):
    """Raises the error of the last background save if it failed.

    Orbax reports a failed asynchronous save only at the next save; a save
    that is over but left no step directory has failed, and waiting on it
    raises its error now.
    """
    step = self._saving
    if step is None or self._manager.is_saving_in_progress():
      return
    self._saving = None
    if not storage.isdir(storage.join(self._directory, str(step))):
      try:
        self._manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        raise errors.UserError(f'the checkpoint of step {step} was not saved: '
                               f'{errors.describe(e)[:300]}') from e
      raise errors.UserError(f'the checkpoint of step {step} was not saved '
                             '(the log above says why).')

  def failed_save(self) -> Optional[int]:
    """The step of the last save started if it left no checkpoint."""
    step = self._last_save
    if step is None or self._manager.is_saving_in_progress() or (
        storage.isdir(storage.join(self._directory, str(step)))):
      return None
    return step

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()

  def close_after_error(self):
    """On an error: lets the save in flight finish, or logs why it did not."""
    try:
      self._manager.wait_until_finished()
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('The checkpoint being saved was not completed: %s',
                      errors.describe(e)[:500])
