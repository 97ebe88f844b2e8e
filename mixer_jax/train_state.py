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
optimizer state, step, the base RNG key and the input position (the number of
global batches consumed, from which the input pipeline restarts exactly).
"""

import json
import os
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

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


class WorkdirError(ValueError):
  """A workdir that holds another model's run."""


class Checkpoints:
  """Orbax checkpoints in WORKDIR/checkpoints, plus WORKDIR/config.json.

  Opening one only reads: a run that fails before `begin` leaves no trace.
  """

  def __init__(self, workdir: str, *, config, max_to_keep: int):
    self._workdir, self._config = workdir, config
    self._config_path = os.path.join(workdir, 'config.json')
    self._check_compatible(config)
    self._directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._manager = ocp.CheckpointManager(
        self._directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False))

  def begin(self):
    """Creates the checkpoint directory and records the run's config."""
    os.makedirs(self._directory, exist_ok=True)
    if jax.process_index() == 0:
      with open(self._config_path, 'w') as f:
        f.write(self._config.to_json_best_effort(indent=2, sort_keys=True))

  def _check_compatible(self, config):
    """Refuses a workdir whose model or data differ from `config`."""
    if not os.path.exists(self._config_path):
      return
    with open(self._config_path) as f:
      previous = json.load(f)
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

  def save(self, state: TrainState, *, global_batch_size: int):
    step = int(state.step)
    meta = {'step': step, 'input_position_batches': step,
            'input_position_examples': step * global_batch_size}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                       force=True)

  def restore(self, like: TrainState) -> TrainState:
    """The latest checkpoint, laid out (shapes, shardings) like `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self._manager.restore(
        self.latest_step(),
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored.state

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
