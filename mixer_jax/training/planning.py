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
"""Whether a run fits a TPU slice and how fast it could go: its own train and
eval steps compiled for the slice's devices (what `python -m mixer_jax.plan`
prints)."""

from absl import logging

from mixer_jax import config_checks
from mixer_jax import hardware
from mixer_jax.model import model_config
from mixer_jax.training import jit_steps
from mixer_jax.training import optim

GIB = 2**30


def plan(config, devices, *, chip: hardware.Chip, num_classes: int) -> dict:
  """Compiles the run's steps for `devices` (of `chip`); returns the plan.

  Memory is what the compiler reserves per device, plus the input batches
  prefetched onto it; "fits" means within hardware.USABLE_FRACTION of HBM.
  With config.accum_steps = 0 the plan is for the smallest accumulation
  that fits, as `train` would pick it. Figures the compiler could not give
  (it ran out of memory) are None, and `compiler_error` says why.
  """
  config_checks.check(config)
  mesh = jit_steps.make_mesh(devices)
  config_checks.check_batch_sizes(config, num_devices=mesh.size)
  model = model_config.model_from_config(config, num_classes=num_classes)
  tx, _ = optim.create_optimizer(config)
  replicated, _ = jit_steps.shardings(mesh)
  state = jit_steps.abstract_state(config, model, tx, replicated)
  per_chip = hardware.devices_per_chip(devices)
  limit = hardware.USABLE_FRACTION * chip.hbm_bytes / per_chip
  train = TrainCosts(config, model, tx, mesh, num_classes=num_classes,
                     state=state)
  min_accum = jit_steps.smallest_fitting(
      jit_steps.accum_candidates(config.batch_size, mesh.size),
      lambda accum_steps: train.fits(accum_steps, limit))
  accum = config.accum_steps or min_accum or 1
  logging.info('Compiling the eval step.')
  try:
    eval_cost = jit_steps.eval_step_cost(config, model, mesh,
                                         num_classes=num_classes, state=state)
    eval_bytes = jit_steps.eval_device_bytes(config, mesh, eval_cost, state)
  except jit_steps.OutOfMemory as e:
    eval_cost, eval_bytes = e, None
  return {
      'chip': chip.name, 'chips': mesh.size // per_chip,
      'devices': mesh.size, 'devices_per_chip': per_chip,
      'hosts': len({d.process_index for d in devices}),
      'variant': config.model.variant, 'dtype': config.model.dtype,
      'image_size': config.image_size, 'batch_size': config.batch_size,
      'accum_steps': accum, 'min_accum_steps': min_accum,
      **_figures(config, chip, mesh, per_chip=per_chip, limit=limit,
                 cost=train.cost(accum), train_bytes=train.bytes(accum),
                 eval_cost=eval_cost, eval_bytes=eval_bytes, state=state)}


class TrainCosts:
  """The train step compiled once per accum_steps asked about: its cost
  (a StepCost, or the OutOfMemory error) and per-device bytes."""

  def __init__(self, config, model, tx, mesh, *, num_classes, state):
    self._args = (config, model, tx, mesh)
    self._num_classes, self._state = num_classes, state
    self._costs = {}

  def cost(self, accum_steps: int):
    if accum_steps not in self._costs:
      logging.info('Compiling the train step, accum_steps=%d.', accum_steps)
      try:
        self._costs[accum_steps] = jit_steps.train_step_cost(
            *self._args, num_classes=self._num_classes,
            accum_steps=accum_steps, state=self._state)
      except jit_steps.OutOfMemory as e:
        self._costs[accum_steps] = e
    return self._costs[accum_steps]

  def bytes(self, accum_steps: int):
    cost = self.cost(accum_steps)
    if isinstance(cost, jit_steps.OutOfMemory):
      return None
    config, _, _, mesh = self._args
    return jit_steps.train_device_bytes(config, mesh, cost)

  def fits(self, accum_steps: int, limit: float) -> bool:
    need = self.bytes(accum_steps)
    return need is not None and need <= limit


def _figures(config, chip, mesh, *, per_chip, limit, cost, train_bytes,
             eval_cost, eval_bytes, state) -> dict:
  """The plan's memory, fit and roofline figures (None where the compiler
  gave none)."""
  device_flops = chip.peak_flops / per_chip
  device_bandwidth = chip.hbm_bandwidth / per_chip

  def seconds(c):  # The roofline time of a compiled step.
    return max(c.flops / device_flops, c.hbm_bytes / device_bandwidth)

  def chip_gib(n):
    return None if n is None else n * per_chip / GIB

  train_ok = not isinstance(cost, jit_steps.OutOfMemory)
  eval_ok = eval_bytes is not None
  need = [b for b in (train_bytes, eval_bytes) if b is not None]
  errors_seen = [str(c) for c in (cost, eval_cost)
                 if isinstance(c, jit_steps.OutOfMemory)]
  per_device_batch = config.batch_size / mesh.size
  return {
      'fits': (train_bytes is not None and train_bytes <= limit and eval_ok
               and eval_bytes <= limit),
      'eval_fits': eval_ok and eval_bytes <= limit,
      'compiler_error': '; '.join(errors_seen) or None,
      'params_gib_per_chip': chip_gib(jit_steps.tree_bytes(state.params)),
      'opt_state_gib_per_chip': chip_gib(
          jit_steps.tree_bytes(state.opt_state)),
      'temp_gib_per_chip': chip_gib(cost.temp_bytes) if train_ok else None,
      'train_hbm_gib_per_chip': chip_gib(train_bytes),
      'eval_hbm_gib_per_chip': chip_gib(eval_bytes),
      'hbm_gib_per_chip': chip_gib(max(need)) if len(need) == 2 else None,
      'capacity_gib': chip.hbm_gib,
      'usable_gib': chip_gib(limit),
      'tflop_per_chip_step': cost.flops * per_chip / 1e12 if train_ok
                             else None,
      'hbm_gb_per_chip_step': cost.hbm_bytes * per_chip / 1e9 if train_ok
                              else None,
      'est_step_seconds': seconds(cost) if train_ok else None,
      'est_img_per_s_per_chip': per_device_batch * per_chip / seconds(cost)
                                if train_ok else None,
      'est_infer_img_per_s_per_chip':
          config.eval_batch_size / mesh.size * per_chip / seconds(eval_cost)
          if eval_ok else None,
  }
