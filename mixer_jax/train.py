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
r"""Trains and evaluates a Mixer, data-parallel over every device.

  python -m mixer_jax.train --config=configs/digits.py [--workdir=DIR] \
      [--config.lr=0.01 ...]

Starting again with the same workdir resumes from its last checkpoint.
"""

import collections
import json
import logging as std_logging
import os
import re
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from mixer_jax import checkpoint
from mixer_jax import host_memory
from mixer_jax import input_pipeline
from mixer_jax import metrics
from mixer_jax import models
from mixer_jax import optim
from mixer_jax import resolution
from mixer_jax import steps
from mixer_jax import train_state

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/b32.py or configs/b16.py:'
    'cifar100; override fields with --config.<field>=<value>.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, logs and metrics go; a run in an '
    'existing workdir resumes. Default: workdirs/<config name>.')

_MODEL_OVERRIDES = ('num_blocks', 'hidden_dim', 'tokens_mlp_dim',
                    'channels_mlp_dim')


def create_model(config, *, num_classes: int) -> models.MlpMixer:
  """The model the config describes, widened for `resolution_factor`."""
  model = models.create_model(
      config.model.variant, num_classes=num_classes,
      dtype=jnp.dtype(config.model.dtype),
      approximate_gelu=config.model.approximate_gelu,
      dropout_rate=config.model.dropout_rate,
      stochastic_depth=config.model.stochastic_depth,
      **{k: config.model[k] for k in _MODEL_OVERRIDES
         if config.model[k] is not None})
  resolution.pretraining_image_size(config.image_size,
                                    factor=config.resolution_factor,
                                    patch_size=model.patch_size)
  return resolution.widen_model(model, factor=config.resolution_factor)


def initial_params(config, model, *, rng):
  """Fresh parameters, or the pre-trained ones with a fresh head."""
  params = models.init_params(model, image_size=config.image_size, rng=rng)
  if config.pretrained:
    params = checkpoint.load_pretrained(
        init_params=params, pretrained=config.pretrained,
        keep_head=config.keep_head, resolution_factor=config.resolution_factor,
        cache_dir=config.pretrained_cache_dir)
  return params


def prefetch_to_mesh(iterator, sharding, size: int):
  """Host batches -> global arrays on the mesh, `size` batches ahead."""
  queue = collections.deque()

  def enqueue():
    batch = next(iterator, None)
    if batch is not None:
      queue.append(jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, x),
          batch))

  for _ in range(max(size, 1)):
    enqueue()
  while queue:
    batch = queue.popleft()
    enqueue()
    yield batch


def evaluate(eval_step, params, config, sharding) -> dict:
  """Every example of the eval split, scored exactly once."""
  totals = None
  for batch in prefetch_to_mesh(input_pipeline.eval_iterator(config), sharding,
                                config.prefetch):
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = int(totals['count'])
  results = {'eval_loss': float(totals['loss']) / count,
             'eval_accuracy': float(totals['correct']) / count,
             'eval_examples': count}
  if 'correct_top5' in totals:
    results['eval_top5_accuracy'] = float(totals['correct_top5']) / count
  return results


def check_batch_sizes(config, num_devices: int):
  for name in ('batch_size', 'eval_batch_size'):
    if config[name] % num_devices:
      raise ValueError(f'{name} {config[name]} is not divisible by the '
                       f'{num_devices} devices.')
  if config.batch_size % (num_devices * config.accum_steps):
    raise ValueError(
        f'batch_size {config.batch_size} is not divisible into '
        f'accum_steps={config.accum_steps} micro-batches over {num_devices} '
        'devices.')


def train_and_evaluate(config, workdir: str, *, devices=None,
                       stop_at_step=None) -> dict:
  """Trains, evaluates and checkpoints in `workdir`; returns final metrics.

  Args:
    config: a ConfigDict as configs/common.py describes.
    workdir: checkpoints, TensorBoard events, metrics.jsonl, config.json,
      final_metrics.json and the final params.npz (published layout) go here.
    devices: the devices to train on (default: all of them).
    stop_at_step: checkpoint and return after this step, as a preempted job
      would (the schedule still spans total_steps); a later call resumes.
  Returns:
    The final metrics: step, eval_accuracy, eval_loss, eval_examples, ...
  """
  mesh = jax.sharding.Mesh(np.asarray(devices or jax.devices()), ('data',))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('data'))
  check_batch_sizes(config, mesh.size)
  info = input_pipeline.get_info(config)
  model = create_model(config, num_classes=info.num_classes)
  tx, schedule = optim.create_optimizer(config)

  checkpoints = train_state.Checkpoints(workdir, config=config,
                                        max_to_keep=config.keep_checkpoints)
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  start_step = checkpoints.latest_step()
  if start_step is None:
    state = train_state.TrainState.create(
        params=initial_params(config, model, rng=init_rng), tx=tx,
        rng=train_rng)
    state = jax.device_put(state, replicated)
    start_step = 0
  else:
    abstract = jax.eval_shape(lambda: train_state.TrainState.create(
        params=models.init_params(model, image_size=config.image_size,
                                  abstract=True), tx=tx, rng=train_rng))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        abstract)
    state = checkpoints.restore(abstract)
    logging.info('Resuming from step %d in %s', start_step, workdir)
  checkpoints.begin()  # Nothing is written to the workdir before this.

  train_step = jax.jit(
      steps.make_train_step(model, tx, num_classes=info.num_classes,
                            accum_steps=config.accum_steps,
                            mixup_alpha=config.mixup_alpha,
                            label_smoothing=config.label_smoothing),
      donate_argnums=(0,), out_shardings=(replicated, replicated))
  eval_step = jax.jit(
      steps.make_eval_step(model, num_classes=info.num_classes),
      out_shardings=replicated)
  batches = prefetch_to_mesh(
      input_pipeline.train_iterator(config, start_step=start_step),
      batch_sharding, config.prefetch)
  writer = metrics.MetricWriter(workdir)
  progress = metrics.Progress(total_steps=config.total_steps,
                              start_step=start_step,
                              batch_size=config.batch_size,
                              every=config.progress_every)
  logging.info('%s on %d %s device(s): %s, %d train / %d eval examples, '
               '%d classes.', config.model.variant, mesh.size,
               mesh.devices.flat[0].platform, config.dataset,
               info.num_train_examples, info.num_eval_examples,
               info.num_classes)

  last_step = min(config.total_steps, stop_at_step or config.total_steps)
  eval_metrics, train_metrics, start_time = {}, {}, time.perf_counter()
  for step in range(start_step + 1, last_step + 1):
    state, step_metrics = train_step(state, next(batches))
    if progress.due(step):
      train_metrics = progress.update(
          step, loss=float(step_metrics['loss']), lr=float(schedule(step - 1)))
      writer.write_scalars(step, train_metrics)
    if step % config.eval_every == 0 or step == config.total_steps:
      eval_metrics = evaluate(eval_step, state.params, config, batch_sharding)
      writer.write_scalars(step, eval_metrics)
      progress.write(f'step {step}: ' + '  '.join(
          f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
          for k, v in eval_metrics.items()))
    if step % config.checkpoint_every == 0 or step == last_step:
      checkpoints.save(state, global_batch_size=config.batch_size)
  progress.close()
  if not eval_metrics:  # Nothing left to train: evaluate what is there.
    eval_metrics = evaluate(eval_step, state.params, config, batch_sharding)

  final = {'step': int(state.step), **eval_metrics, **train_metrics,
           'train_seconds_this_run': time.perf_counter() - start_time}
  checkpoints.wait()
  checkpoints.close()
  writer.close()
  if jax.process_index() == 0:
    params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                          state.params)
    checkpoint.save(os.path.join(workdir, 'params.npz'), params,
                    overwrite=True)
    with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
      json.dump(final, f, indent=2)
  return final


def default_workdir(config_flag: str) -> str:
  """workdirs/<config file name>[_<config argument>]."""
  path, _, arg = config_flag.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  if arg:
    name += '_' + re.sub(r'[^A-Za-z0-9_.-]+', '_', arg)
  return os.path.join('workdirs', name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Orbax reports every save step at INFO; keep its warnings only.
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname)
  if os.environ.get('MIXER_JAX_DISTRIBUTED') or os.environ.get(
      'JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize()
  host_memory.reuse_unless_flagged_off()  # Before jax's backends start.
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].serialize()
                                              .split('=', 1)[-1])
  logging.info('Workdir: %s', os.path.abspath(workdir))
  final = train_and_evaluate(_CONFIG.value, workdir)
  if jax.process_index() == 0:
    print(json.dumps(final, indent=2))
    print(f'Workdir {os.path.abspath(workdir)}:\n'
          f'  checkpoints   {os.path.join(workdir, "checkpoints")}\n'
          f'  final params  {os.path.join(workdir, "params.npz")}\n'
          f'  metrics       {os.path.join(workdir, "metrics.jsonl")}, '
          f'{os.path.join(workdir, "final_metrics.json")}\n'
          f'  TensorBoard   tensorboard --logdir {workdir}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
