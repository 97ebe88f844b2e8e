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
"""The train and eval steps jitted over a device mesh, and what they cost.

One place builds what a run compiles: the mesh, the shardings (batch split
over 'data', state replicated), the donation, the accumulation. `train` runs
it on its devices; `plan` compiles the very same functions for a TPU topology
it does not have, from abstract arguments, and reads the compiler's memory
and cost figures.
"""

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mixer_jax import errors
from mixer_jax.model import models
from mixer_jax.training import steps
from mixer_jax.training import train_state


def make_mesh(devices) -> jax.sharding.Mesh:
  """A one-axis ('data') mesh over `devices` (default: every device)."""
  return jax.sharding.Mesh(np.asarray(devices or jax.devices()), ('data',))


def shardings(mesh) -> tuple[jax.sharding.NamedSharding,
                             jax.sharding.NamedSharding]:
  """(replicated, batch-split) shardings of `mesh`."""
  return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))


def jit_train_step(config, model, tx, mesh, *, num_classes: int,
                   accum_steps: int):
  """The train step as a run jits it: state donated, outputs replicated."""
  replicated, _ = shardings(mesh)
  return jax.jit(
      steps.make_train_step(model, tx, num_classes=num_classes,
                            accum_steps=accum_steps,
                            mixup_alpha=config.mixup_alpha,
                            label_smoothing=config.label_smoothing),
      donate_argnums=(0,), out_shardings=(replicated, replicated))


def jit_eval_step(model, mesh, *, num_classes: int):
  """The eval step as a run jits it: summed metrics, replicated."""
  replicated, _ = shardings(mesh)
  return jax.jit(steps.make_eval_step(model, num_classes=num_classes),
                 out_shardings=replicated)


def abstract_state(config, model, tx, sharding):
  """The train state's shapes and dtypes, placed with `sharding`."""
  state = jax.eval_shape(lambda: train_state.TrainState.create(
      params=models.init_params(model, image_size=config.image_size,
                                abstract=True), tx=tx,
      rng=jax.random.PRNGKey(0)))
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      state)


def abstract_batch(config, mesh, *, train: bool) -> dict:
  """A global batch's shapes as the input pipeline feeds the steps."""
  _, sharding = shardings(mesh)
  size = config.batch_size if train else config.eval_batch_size
  s = config.image_size
  batch = {'image': jax.ShapeDtypeStruct((size, s, s, 3), jnp.float32,
                                         sharding=sharding),
           'label': jax.ShapeDtypeStruct((size,), jnp.int32,
                                         sharding=sharding)}
  if not train:
    batch['mask'] = jax.ShapeDtypeStruct((size,), jnp.float32,
                                         sharding=sharding)
  return batch


def tree_bytes(tree) -> int:
  """Bytes of the arrays (or shapes) in `tree`, as one device holds them
  when they are replicated."""
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


class OutOfMemory(Exception):
  """The compiler found that a step cannot fit the device's memory."""


def _compile(lowered):
  """lowered.compile(); a step too large for the device is OutOfMemory."""
  try:
    return lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' in str(e):
      raise OutOfMemory(errors.describe(e).split('RESOURCE_EXHAUSTED: ')[-1]
                        ) from None
    raise


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What the compiler says of one compiled step, per device.

  `device_bytes` is what the step needs in device memory while it runs:
  its arguments, outputs not aliased to a donated argument, temporaries and
  code. `flops` and `hbm_bytes` are the compiler's cost analysis; it counts
  a loop body once, so with accumulation they are scaled by `accum_steps`
  (an estimate: the optimizer update, outside the loop, is counted that many
  times, a small share).
  """
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  flops: float
  hbm_bytes: float

  @property
  def device_bytes(self) -> int:
    return (self.argument_bytes + self.output_bytes - self.alias_bytes +
            self.temp_bytes + self.code_bytes)


def step_cost(compiled, *, loop_trips: int = 1) -> StepCost:
  """StepCost of a `jax.jit(...).lower(...).compile()` result."""
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0]
  return StepCost(
      argument_bytes=memory.argument_size_in_bytes,
      output_bytes=memory.output_size_in_bytes,
      alias_bytes=memory.alias_size_in_bytes,
      temp_bytes=memory.temp_size_in_bytes,
      code_bytes=memory.generated_code_size_in_bytes,
      flops=float(cost.get('flops', 0.0)) * loop_trips,
      hbm_bytes=float(cost.get('bytes accessed', 0.0)) * loop_trips)


def accum_candidates(batch_size: int, num_devices: int) -> list[int]:
  """Every accumulation a global batch allows: each device's share divides
  into that many equal micro-batches."""
  per_device = batch_size // num_devices
  return [a for a in range(1, per_device + 1) if per_device % a == 0]


def smallest_fitting(candidates, fits: Callable[[int], bool]) -> Optional[int]:
  """The smallest candidate for which `fits` holds, assuming that a larger
  one fits whenever a smaller one does; None if none fits.

  Doubles through the sorted candidates, then bisects, so that a large
  accumulation costs a few compiles, not one per candidate.
  """
  candidates = sorted(candidates)
  if not candidates:
    return None
  failed, hi = -1, 0  # The last index that did not fit; the next to try.
  while not fits(candidates[hi]):
    if hi == len(candidates) - 1:
      return None
    failed, hi = hi, min(2 * hi + 1, len(candidates) - 1)
  lo = failed + 1
  while lo < hi:
    mid = (lo + hi) // 2
    if fits(candidates[mid]):
      hi = mid
    else:
      lo = mid + 1
  return candidates[hi]


def train_step_cost(config, model, tx, mesh, *, num_classes: int,
                    accum_steps: int, state) -> StepCost:
  """Compiles the train step for `mesh` from the abstract `state`; raises
  OutOfMemory if the compiler finds it cannot fit."""
  compiled = _compile(jit_train_step(
      config, model, tx, mesh, num_classes=num_classes,
      accum_steps=accum_steps).lower(
          state, abstract_batch(config, mesh, train=True)))
  return step_cost(compiled, loop_trips=accum_steps)


def eval_step_cost(config, model, mesh, *, num_classes: int,
                   state) -> StepCost:
  """Compiles the eval step for `mesh` from the abstract `state`; raises
  OutOfMemory if the compiler finds it cannot fit."""
  compiled = _compile(jit_eval_step(model, mesh, num_classes=num_classes).lower(
      state.params, abstract_batch(config, mesh, train=False)))
  return step_cost(compiled)


def _prefetched_bytes(config, mesh, *, train: bool) -> int:
  """Per device: the batches prefetched onto it beyond the one in use."""
  batch = tree_bytes(abstract_batch(config, mesh, train=train))
  return config.prefetch * batch // mesh.size


def train_device_bytes(config, mesh, cost: StepCost) -> int:
  """Per device, while training: the train step and the prefetched batches."""
  return cost.device_bytes + _prefetched_bytes(config, mesh, train=True)


def eval_device_bytes(config, mesh, cost: StepCost, state) -> int:
  """Per device, while evaluating: the eval step, the rest of the train
  state (it stays on the devices) and the prefetched batches."""
  rest = tree_bytes(state) - tree_bytes(state.params)
  return (cost.device_bytes + rest +
          _prefetched_bytes(config, mesh, train=False))


def memory_limit(device) -> Optional[int]:
  """Bytes the allocator of `device` may use (None where it does not say,
  e.g. on a CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return (stats or {}).get('bytes_limit')


def auto_accum_steps(config, model, tx, mesh, *, num_classes: int,
                     usable_fraction: float) -> tuple[int, str]:
  """(accum_steps, why): the smallest accumulation whose train step fits
  `usable_fraction` of the devices' memory, as the compiler lays it out;
  1 where the devices state no limit (a CPU)."""
  limit = memory_limit(mesh.devices.flat[0])
  if not limit:
    return 1, 'the devices state no memory limit'
  replicated, _ = shardings(mesh)
  state = abstract_state(config, model, tx, replicated)
  usable = usable_fraction * limit

  def fits(accum_steps):
    try:
      cost = train_step_cost(config, model, tx, mesh, num_classes=num_classes,
                             accum_steps=accum_steps, state=state)
    except OutOfMemory:
      return False
    return train_device_bytes(config, mesh, cost) <= usable

  found = smallest_fitting(accum_candidates(config.batch_size, mesh.size),
                           fits)
  if found is None:
    raise errors.UserError(
        f'batch_size {config.batch_size} does not fit the devices\' memory '
        f'({usable / 2**30:.2f} GiB usable each) with any accum_steps; lower '
        '--config.batch_size.')
  return found, f'the smallest that fits {usable / 2**30:.2f} GiB per device'
