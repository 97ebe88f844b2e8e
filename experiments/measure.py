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
"""How each benchmark figure is measured; experiments/benchmark.py is the CLI."""

import statistics
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from configs import common
from mixer_jax import models
from mixer_jax import optim
from mixer_jax import steps
from mixer_jax import train_state

try:
  import resource  # pylint: disable=g-import-not-at-top
except ImportError:  # Not on Windows.
  resource = None


def data_parallel_shardings(mesh):
  """(replicated, batch-sharded) shardings, as train.train_and_evaluate."""
  return (NamedSharding(mesh, PartitionSpec()),
          NamedSharding(mesh, PartitionSpec('data')))


def time_calls(call, *, steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` calls of `call` (which blocks), after warmup."""
  for _ in range(warmup):
    call()
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - start)
  return seconds


def time_in_turns(calls: Sequence[Callable[[], object]], *,
                  turns: int) -> list[list[float]]:
  """Seconds of each call (which blocks) in `turns` turns, one of each a turn.

  Interleaved, the calls see the same moments of a shared machine, whose
  speed can drift by tens of percent within a minute.
  """
  seconds = [[] for _ in calls]
  for _ in range(turns):
    for call, times in zip(calls, seconds):
      times += time_calls(call, steps=1, warmup=0)
  return seconds


def minor_page_faults() -> Optional[int]:
  """The process's minor page faults so far; None where unknown."""
  if resource is None:
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def random_batch(mesh, *, batch_size: int, image_size: int, num_classes: int):
  """A fixed random batch made on the devices, sharded as training shards it."""
  def make(key):
    image_key, label_key = jax.random.split(key)
    shape = (batch_size, image_size, image_size, 3)
    return {'image': jax.random.uniform(image_key, shape, minval=-1.0),
            'label': jax.random.randint(label_key, shape[:1], 0, num_classes)}

  return jax.jit(make, out_shardings=data_parallel_shardings(mesh)[1])(
      jax.random.PRNGKey(0))


def fine_tuning_optimizer():
  """configs/common's optimizer: the paper's fine-tuning SGD, clipped."""
  return optim.create_optimizer(common.get_config())[0]


def donatable_train_state(params, tx, mesh):
  """A replicated TrainState of its own buffers: donating it spares `params`.

  device_put may reuse a buffer already on a target device, so `params` are
  copied first, where they are (on the host, as init_params leaves them).
  """
  state = train_state.TrainState.create(
      params=jax.tree.map(jnp.copy, params), tx=tx, rng=jax.random.PRNGKey(0))
  return jax.device_put(state, data_parallel_shardings(mesh)[0])


def memory_figures(compiled, devices) -> dict:
  """Peak device memory where the backend reports it, else XLA's estimate.

  The estimate, per device, counts donated buffers once: arguments + outputs
  - aliased + temporaries of the compiled program.
  """
  analysis = compiled.memory_analysis()
  estimate = (analysis.argument_size_in_bytes +
              analysis.output_size_in_bytes - analysis.alias_size_in_bytes +
              analysis.temp_size_in_bytes)
  figures = {'memory_bytes': estimate,
             'memory_source': 'compiled estimate: args+outputs+temp',
             'compiled_memory_bytes': estimate}
  stats = [device.memory_stats() or {} for device in devices]
  if all('peak_bytes_in_use' in s for s in stats):
    figures.update(memory_bytes=max(s['peak_bytes_in_use'] for s in stats),
                   memory_source='device peak_bytes_in_use')
  return figures


def compile_and_time(jitted, args, run, *, mesh, batch_size: int, steps: int,
                     warmup: int,
                     alongside: Optional[Callable[[], object]] = None) -> dict:
  """Compiles `jitted` for `args`, then times run(compiled) (which blocks).

  With `alongside`, each timed step is followed by one timed call of it
  (`alongside_seconds_all`): a reference taken at the same moments.
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  faults = []

  def step():
    before = minor_page_faults()
    run(compiled)
    if before is not None:
      faults.append(minor_page_faults() - before)

  time_calls(step, steps=0, warmup=warmup)
  del faults[:]
  seconds, *alongside_seconds = time_in_turns(
      [step, alongside] if alongside else [step], turns=steps)
  median = statistics.median(seconds)
  figures = {'img_per_s': batch_size / median, 'step_seconds': median,
             'step_seconds_all': seconds, 'compile_seconds': compile_seconds,
             'page_faults_per_step': (statistics.mean(faults) if faults
                                      else None),
             **memory_figures(compiled, mesh.devices.flat)}
  if alongside:
    figures['alongside_seconds_all'] = alongside_seconds[0]
  return figures


def train_step_program(model, params, *, mesh, image_size: int,
                       batch_size: int, num_classes: int, accum_steps: int = 1):
  """(jitted, args, run): the train step as train.py runs it, on a fixed batch.

  State (a copy of `params`) replicated and donated, batch sharded; input is
  excluded. run(compiled) makes one step and waits for it.
  """
  replicated, _ = data_parallel_shardings(mesh)
  tx = fine_tuning_optimizer()
  state = [donatable_train_state(params, tx, mesh)]  # Each step replaces it.
  batch = random_batch(mesh, batch_size=batch_size, image_size=image_size,
                       num_classes=num_classes)
  step = jax.jit(steps.make_train_step(model, tx, num_classes=num_classes,
                                       accum_steps=accum_steps),
                 donate_argnums=(0,), out_shardings=(replicated, replicated))

  def run(compiled):
    state[0], metrics = compiled(state[0], batch)
    jax.block_until_ready((state[0], metrics))

  return step, (state[0], batch), run


def inference_program(model, params, *, mesh, image_size: int,
                      batch_size: int):
  """(jitted, args, run): the jitted forward pass on a fixed batch."""
  replicated, batch_sharding = data_parallel_shardings(mesh)
  params = jax.device_put(params, replicated)
  images = random_batch(mesh, batch_size=batch_size, image_size=image_size,
                        num_classes=1)['image']
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False),
                    out_shardings=batch_sharding)
  return (forward, (params, images),
          lambda compiled: compiled(params, images).block_until_ready())


def time_train_step(model, params, *, mesh, image_size: int,
                    batch_size: int, num_classes: int, steps: int,
                    warmup: int, accum_steps: int = 1,
                    alongside=None) -> dict:
  """Times train_step_program (see there), as compile_and_time."""
  program = train_step_program(model, params, mesh=mesh, image_size=image_size,
                               batch_size=batch_size, num_classes=num_classes,
                               accum_steps=accum_steps)
  return compile_and_time(*program, mesh=mesh, batch_size=batch_size,
                          steps=steps, warmup=warmup, alongside=alongside)


def time_inference(model, params, *, mesh, image_size: int, batch_size: int,
                   steps: int, warmup: int, alongside=None) -> dict:
  """Times inference_program (the forward pass), as compile_and_time."""
  program = inference_program(model, params, mesh=mesh, image_size=image_size,
                              batch_size=batch_size)
  return compile_and_time(*program, mesh=mesh, batch_size=batch_size,
                          steps=steps, warmup=warmup, alongside=alongside)


def input_pipeline_module():
  """mixer_jax.input_pipeline, or a ValueError naming what it lacks.

  Imported here, for the input figure alone: it needs TensorFlow, which
  accelerator images often lack, and the device figures do not.
  """
  try:
    from mixer_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError(
        f'The input mode needs TensorFlow and tensorflow-datasets ({e}): '
        'install them (pip install -e .) or leave it out '
        '(--modes=train,inference).') from e
  return input_pipeline


def time_input(config, *, batches: int, warmup: int) -> dict:
  """Host img/s of input_pipeline.train_iterator alone (no device, no model).

  Total time of `batches` batches after `warmup` ones: the pipeline prefetches,
  so a short run flatters it a little.
  """
  iterator = input_pipeline_module().train_iterator(config)
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  images = sum(len(next(iterator)['label']) for _ in range(batches))
  seconds = time.perf_counter() - start
  return {'img_per_s': images / seconds, 'step_seconds': seconds / batches,
          'dataset': config.dataset, 'train_pp': config.train_pp,
          'image_size': config.image_size}


def xla_flops(jitted, *args) -> Optional[float]:
  """FLOPs in XLA's cost analysis of the compiled program (None if absent)."""
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, list):  # Some jax versions: one dict per program.
    cost = cost[0]
  flops = (cost or {}).get('flops', 0.0)
  return float(flops) if flops > 0 else None


def xla_flops_per_image(model, *, image_size: int, train_step: bool = False,
                        batch_size: int = 2) -> Optional[float]:
  """XLA's count of FLOPs per image of the forward pass or the train step.

  Compiled for one device on abstract inputs: nothing is allocated.
  """
  params = models.init_params(model, image_size=image_size, abstract=True)
  images = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3),
                                jnp.float32)
  if train_step:
    tx = fine_tuning_optimizer()
    state = jax.eval_shape(lambda p: train_state.TrainState.create(
        params=p, tx=tx, rng=jax.random.PRNGKey(0)), params)
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    flops = xla_flops(jax.jit(steps.make_train_step(
        model, tx, num_classes=model.num_classes)), state,
                      {'image': images, 'label': labels})
  else:
    flops = xla_flops(jax.jit(lambda p, x: model.apply(
        {'params': p}, x, train=False)), params, images)
  return flops and flops / batch_size


def analytic_vs_xla_flops(model, *, image_size: int) -> dict:
  """models.flops_per_image against XLA's count, forward and train step."""
  analytic = models.flops_per_image(model, image_size=image_size)
  forward = xla_flops_per_image(model, image_size=image_size)
  step = xla_flops_per_image(model, image_size=image_size, train_step=True)
  return {'analytic_forward': analytic, 'xla_forward': forward,
          'xla_train': step, 'forward_ratio': forward and forward / analytic,
          'train_over_forward': step and forward and step / forward}
