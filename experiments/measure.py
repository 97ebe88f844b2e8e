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

import itertools
import math
import statistics
import time
from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from configs import common
from mixer_jax import input_pipeline
from mixer_jax import models
from mixer_jax import optim
from mixer_jax import train
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


def minor_page_faults() -> Optional[int]:
  """The process's minor page faults so far; None where unknown."""
  if resource is None:
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# Products written out in one program at most; a longer chain loops over
# blocks of them, so that its compile time stays bounded (an accelerator needs
# thousands of small products to fill a timed call).
MAX_UNROLLED_PRODUCTS = 64


def chained_matmul(x, *weights, chain: int):
  """x @ w1 @ w2 @ w1 ... (`chain` products, by the weights in turn)."""
  cycle = len(weights)
  block = cycle * max(1, MAX_UNROLLED_PRODUCTS // cycle)
  if chain > block:
    blocks, chain = divmod(chain, block)
    x = jax.lax.fori_loop(
        0, blocks, lambda _, x: chained_matmul(x, *weights, chain=block), x)
  for i in range(chain):
    x = x @ weights[i % cycle]
  return x


def chain_program(mesh, dtype, *, rows: int, dims: Sequence[int],
                  chain: int):
  """A call of `chain` dependent products and its FLOPs, ready on the mesh.

  Each device multiplies its (rows, dims[0]) block of a batch-sharded matrix
  by replicated (dims[0], dims[1]), (dims[1], dims[2]), ... matrices in turn;
  dims[-1] == dims[0], so that the chain can go round.
  """
  replicated, sharded = data_parallel_shardings(mesh)
  shapes = list(itertools.pairwise(dims))

  def make(key):
    x_key, *w_keys = jax.random.split(key, 1 + len(shapes))
    return (jax.random.normal(x_key, (mesh.size * rows, dims[0]), dtype),
            [jax.random.normal(k, shape, dtype) / math.sqrt(shape[0])
             for k, shape in zip(w_keys, shapes)])

  x, weights = jax.jit(make, out_shardings=(sharded, replicated))(
      jax.random.PRNGKey(0))
  product = jax.jit(lambda x, ws: chained_matmul(x, *ws, chain=chain),
                    out_shardings=sharded).lower(x, weights).compile()
  flops = sum(2 * rows * k * n * mesh.size
              for k, n in (shapes[i % len(shapes)] for i in range(chain)))
  return (lambda: product(x, weights).block_until_ready()), flops


def chain_long_enough(mesh, dtype, *, rows: int, dims: Sequence[int],
                      min_seconds: float, repeats: int):
  """chain_program's call with `chain` grown until one call takes min_seconds.

  The chain stays a whole number of rounds of the weights. Returns the call,
  its FLOPs, its chain and its best time of `repeats`.
  """
  cycle = len(dims) - 1
  chain = cycle
  while True:
    call, flops = chain_program(mesh, dtype, rows=rows, dims=dims,
                                chain=chain)
    seconds = min(time_calls(call, steps=repeats, warmup=1))
    if seconds >= min_seconds:  # A product alone may time slower than chained.
      return call, flops, chain, seconds
    chain = cycle * math.ceil(chain * min_seconds / seconds / cycle)


def measure_matmul_peak(mesh, dtype, *, min_seconds: float = 0.05,
                        max_dim: int = 8192, repeats: int = 5) -> dict:
  """The best matmul FLOP/s the mesh's devices reach: the reference for MFU.

  Each device multiplies its [dim, dim] block of a batch-sharded
  [devices x dim, dim] matrix by a replicated [dim, dim] one, `chain` times in
  one program, at the default matmul precision (as the model); `chain` grows
  until a call takes min_seconds, which hides launch overheads. Square sizes
  from 512 double up to max_dim (or until one product takes over a second)
  and the fastest wins: the smallest size that runs long enough is often not
  the fastest (on a 2-core CPU 1024 reaches ~80 % of what 2048 does).
  `by_dim` keeps every size's FLOP/s, so that MFU against another peak
  definition (one fixed size, say) can be worked out from the same run.
  """
  best, by_dim, dim = None, {}, 512
  while dim <= max_dim:
    _, flops, chain, seconds = chain_long_enough(
        mesh, dtype, rows=dim, dims=(dim, dim), min_seconds=min_seconds,
        repeats=repeats)
    by_dim[str(dim)] = flops / seconds
    if best is None or flops / seconds > best['flop_per_s']:
      best = {'flop_per_s': flops / seconds, 'call_seconds': seconds,
              'dim': dim, 'chain': chain}
    if seconds / chain > 1.0:
      break
    dim *= 2
  return {**best, 'by_dim': by_dim, 'dtype': jnp.dtype(dtype).name,
          'devices': mesh.size}


def matmul_ceiling_fraction(matmuls, ratio_to_peak: dict) -> float:
  """The forward's matmul FLOP/s over the peak's, each matmul at its own rate.

  ratio_to_peak: a matmul name's FLOP/s / the peak's (1 where absent); the
  result weighs each by its FLOPs, as its time adds up.
  """
  flops = sum(m.flops for m in matmuls)
  return flops / sum(m.flops / ratio_to_peak.get(m.name, 1.0)
                     for m in matmuls)


def measure_matmul_ceiling(model, mesh, dtype, *, image_size: int,
                           batch_size: int, peak: dict, min_seconds: float,
                           rounds: int = 9) -> dict:
  """The forward's matmuls alone, at their own shapes: inference MFU's ceiling.

  Each mixing MLP's two products are chained (k -> n -> k) on the rows one
  device holds at `batch_size` and timed in `rounds` turns with a square
  chain of the peak's fastest size up to 2048, one call of each per turn, so
  that both see the same moments of a shared machine. A chain's rate is its
  best call over the square's best, scaled by that size's figure in the peak
  (`by_dim`) over the peak. `fraction` is the forward's matmul FLOPs over
  their time at those rates, the stem and the head counted at the peak,
  divided by the peak: the MFU inference would reach if nothing but its
  matmuls took time, and at their best; an upper bound.
  """
  per_device = batch_size // mesh.size
  matmuls = models.forward_matmuls(model, image_size=image_size)
  groups = {}
  for matmul in matmuls:
    groups.setdefault(matmul.name, []).append(matmul)
  by_dim = {int(dim): flop_per_s
            for dim, flop_per_s in peak['by_dim'].items() if int(dim) <= 2048}
  square = max(by_dim, key=by_dim.get)
  chains = {'square': (square, (square, square))}
  chains.update({name: (group[0].rows * per_device,
                        (group[0].k, *(m.n for m in group)))
                 for name, group in groups.items() if len(group) > 1})
  calls = {name: chain_long_enough(mesh, dtype, rows=rows, dims=dims,
                                   min_seconds=min_seconds, repeats=1)[:2]
           for name, (rows, dims) in chains.items()}
  best = {name: 0.0 for name in calls}
  for _ in range(rounds):
    for name, (call, flops) in calls.items():
      seconds = time_calls(call, steps=1, warmup=0)[0]
      best[name] = max(best[name], flops / seconds)
  scale = by_dim[square] / peak['flop_per_s'] / best.pop('square')
  ratio_to_peak = {name: rate * scale for name, rate in best.items()}
  return {'fraction': matmul_ceiling_fraction(matmuls, ratio_to_peak),
          'ratio_to_peak': ratio_to_peak, 'square_dim': square,
          'rounds': rounds}


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
                     warmup: int) -> dict:
  """Compiles `jitted` for `args`, then times run(compiled) (which blocks)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  time_calls(lambda: run(compiled), steps=0, warmup=warmup)
  faults_before = minor_page_faults()
  seconds = time_calls(lambda: run(compiled), steps=steps, warmup=0)
  faults = (None if faults_before is None else
            (minor_page_faults() - faults_before) / steps)
  median = statistics.median(seconds)
  return {'img_per_s': batch_size / median, 'step_seconds': median,
          'step_seconds_all': seconds, 'compile_seconds': compile_seconds,
          'page_faults_per_step': faults,
          **memory_figures(compiled, mesh.devices.flat)}


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
  step = jax.jit(train.make_train_step(model, tx, num_classes=num_classes,
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
                    warmup: int, accum_steps: int = 1) -> dict:
  """Times train_step_program (see there)."""
  program = train_step_program(model, params, mesh=mesh, image_size=image_size,
                               batch_size=batch_size, num_classes=num_classes,
                               accum_steps=accum_steps)
  return compile_and_time(*program, mesh=mesh, batch_size=batch_size,
                          steps=steps, warmup=warmup)


def time_inference(model, params, *, mesh, image_size: int, batch_size: int,
                   steps: int, warmup: int) -> dict:
  """Times inference_program: the forward pass (train=False)."""
  program = inference_program(model, params, mesh=mesh, image_size=image_size,
                              batch_size=batch_size)
  return compile_and_time(*program, mesh=mesh, batch_size=batch_size,
                          steps=steps, warmup=warmup)


def time_input(config, *, batches: int, warmup: int) -> dict:
  """Host img/s of input_pipeline.train_iterator alone (no device, no model).

  Total time of `batches` batches after `warmup` ones: the pipeline prefetches,
  so a short run flatters it a little.
  """
  iterator = input_pipeline.train_iterator(config)
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
    flops = xla_flops(jax.jit(train.make_train_step(
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
