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
"""A training run's set-up, before its first step: the checks, then the
state (restored or fresh), the compiled steps and the writers."""

import dataclasses
import urllib.parse
from typing import Any, Callable, Optional

from absl import logging
import jax

from mixer_jax import config_checks
from mixer_jax import errors
from mixer_jax import hardware
from mixer_jax.data import input_pipeline
from mixer_jax.data import preflight
from mixer_jax.model import model_config
from mixer_jax.model import models
from mixer_jax.model import published
from mixer_jax.training import divergence
from mixer_jax.training import jit_steps
from mixer_jax.training import metrics
from mixer_jax.training import optim
from mixer_jax.training import train_state


def missing_checkpoint(config):
  """What is missing of a published checkpoint not yet cached, or None."""
  if not config.pretrained:
    return None
  found = published.remote(config.pretrained,
                            cache_dir=config.pretrained_cache_dir)
  if found is None or found[1].exists():
    return None
  url, cached = found
  if not config.download:
    return f'checkpoint {url} (download is off): put it at {cached}'
  if not preflight.reachable(url):
    host = urllib.parse.urlparse(url).hostname
    return f'checkpoint {url} ({host} unreachable): put it at {cached}'
  return None


def check_available(config) -> None:
  """Raises errors.MissingError listing everything the run needs that cannot
  be had: its dataset, the ReaL labels, the pre-trained checkpoint."""
  real = config.get('real_dataset') and preflight.missing_dataset(
      config, config.real_dataset)
  if real:
    real += " (the ReaL labels; --config.real_dataset='' skips them)"
  missing = [m for m in (preflight.missing_dataset(config), real,
                         missing_checkpoint(config)) if m]
  if missing:
    raise errors.MissingError(
        'Missing, and not to be fetched: ' + '; '.join(
            f'({i}) {m}' for i, m in enumerate(missing, 1)) +
        '. Or point --config.tfds_data_dir at a prepared dataset; '
        '--config.download=False never uses the network.')


def checked(config, *, devices=None):
  """(mesh, data info, model) once the config, the data and the devices are
  known to fit; raises errors.UserError before anything is written."""
  config_checks.check(config)
  check_available(config)
  mesh = jit_steps.make_mesh(devices)
  config_checks.check_batch_sizes(config, num_devices=mesh.size)
  info = input_pipeline.get_info(config)
  if config.real_dataset:
    real = input_pipeline.get_info(input_pipeline.real_labels_config(config))
    if real.num_classes != info.num_classes:
      raise errors.UserError(
          f'real_dataset {config.real_dataset!r} has {real.num_classes} '
          f'classes and {config.dataset} {info.num_classes}: use the ReaL '
          "labels of the run's own classes, or --config.real_dataset=''.")
  model = model_config.model_from_config(config,
                                        num_classes=info.num_classes)
  return mesh, info, model


def initial_params(config, model, *, rng):
  """Fresh parameters, or the pre-trained ones with a fresh head."""
  params = models.init_params(model, image_size=config.image_size, rng=rng)
  if config.pretrained:
    params = published.load_pretrained(
        init_params=params, pretrained=config.pretrained,
        keep_head=config.keep_head, resolution_factor=config.resolution_factor,
        cache_dir=config.pretrained_cache_dir)
  return params


def restore_or_init(config, model, tx, checkpoints, sharding):
  """(state, step): the newest checkpoint that restores, or a fresh state.

  A fresh state is made on the host and placed from host memory, so that on
  several hosts each process places its own copy (no cross-host transfer).
  """
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  step, state = checkpoints.restore(
      jit_steps.abstract_state(config, model, tx, sharding))
  if step is not None:
    return state, step
  state = train_state.TrainState.create(
      params=initial_params(config, model, rng=init_rng), tx=tx, rng=train_rng)
  return jax.device_put(jax.device_get(state), sharding), 0


@dataclasses.dataclass
class Run:
  """What the loop and its tasks read, and the little they change."""
  config: Any
  workdir: str
  model: models.MlpMixer
  schedule: Callable[[int], Any]
  checkpoints: train_state.Checkpoints
  state: train_state.TrainState
  start_step: int
  last_step: int  # total_steps, or an earlier stop_at_step.
  train_step: Callable
  eval_step: Callable
  batch_sharding: Any
  writer: metrics.MetricWriter
  progress: metrics.Progress
  diverged: divergence.DivergedSteps
  max_eval_loss: float
  step: int = 0  # The last step trained.
  stop: Optional[str] = None  # Set when a signal or preemption stops it.
  results: dict = dataclasses.field(default_factory=dict)  # Latest evals.
  train_metrics: dict = dataclasses.field(default_factory=dict)


def set_up(config, workdir: str, *, mesh, info, model, stop_at_step) -> Run:
  """The run, restored from WORKDIR's newest checkpoint or fresh; the first
  thing it writes (class_names.json) comes after the restore."""
  replicated, batch_sharding = jit_steps.shardings(mesh)
  tx, schedule = optim.create_optimizer(config)
  checkpoints = train_state.Checkpoints(workdir, config=config,
                                        max_to_keep=config.keep_checkpoints)
  state, start_step = restore_or_init(config, model, tx, checkpoints,
                                      replicated)
  if start_step:
    logging.info('Resuming from step %d in %s', start_step, workdir)
  checkpoints.begin()  # Nothing is written to the workdir before this.
  if jax.process_index() == 0:
    train_state.save_class_names(workdir, info.class_names)
  accum_steps = config.accum_steps
  if not accum_steps:
    accum_steps, why = jit_steps.auto_accum_steps(
        config, model, tx, mesh, num_classes=info.num_classes,
        usable_fraction=hardware.USABLE_FRACTION)
  progress = metrics.Progress(total_steps=config.total_steps,
                              start_step=start_step,
                              batch_size=config.batch_size,
                              every=config.progress_every)
  if not config.accum_steps:  # Shown in a notebook too, where info is not.
    progress.write(f'accum_steps=0 (auto): {accum_steps}, {why}.')
  max_eval_loss = divergence.max_loss(factor=config.max_eval_loss_factor,
                                      num_classes=info.num_classes)
  logging.info('%s on %d %s device(s): %s, %d train / %d eval examples, '
               '%d classes.', config.model.variant, mesh.size,
               mesh.devices.flat[0].platform, config.dataset,
               info.num_train_examples, info.num_eval_examples,
               info.num_classes)
  return Run(
      config=config, workdir=workdir, model=model, schedule=schedule,
      checkpoints=checkpoints, state=state, start_step=start_step,
      last_step=min(config.total_steps, stop_at_step or config.total_steps),
      train_step=jit_steps.jit_train_step(
          config, model, tx, mesh, num_classes=info.num_classes,
          accum_steps=accum_steps),
      eval_step=jit_steps.jit_eval_step(model, mesh,
                                        num_classes=info.num_classes),
      batch_sharding=batch_sharding,
      writer=metrics.MetricWriter(workdir, start_step=start_step),
      progress=progress,
      diverged=divergence.DivergedSteps(
          limit=config.max_diverged_steps, max_loss=divergence.max_loss(
              factor=config.max_loss_factor, num_classes=info.num_classes),
          stuck_loss=max_eval_loss),
      max_eval_loss=max_eval_loss, step=start_step)
