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

if __name__ == '__main__':  # Before the heavy imports: see supervisor.py.
  from mixer_jax.multihost import supervisor  # pylint: disable=g-import-not-at-top
  supervisor.supervise('mixer_jax.train')

import json
import os
import re
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np

from mixer_jax.model import published
from mixer_jax import cli
from mixer_jax import config_checks
from mixer_jax.training import divergence
from mixer_jax import errors
from mixer_jax import fewshot
from mixer_jax import hardware
from mixer_jax.data import input_pipeline
from mixer_jax.training import jit_steps
from mixer_jax.training import metrics
from mixer_jax.model import model_config
from mixer_jax.model import models
from mixer_jax.training import optim
from mixer_jax import plot
from mixer_jax.multihost import preemption
from mixer_jax.data import preflight
from mixer_jax.evals import scoring
from mixer_jax.data import sources
from mixer_jax.training import train_state
from mixer_jax.multihost import workdir_lock

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags; `python -m mixer_jax.train` defines them, an import
  of this module does not."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/b32.py or configs/b16.py:'
      'cifar100; override fields with --config.<field>=<value>.',
      lock_config=True)
  flags.DEFINE_string(
      'workdir', None, 'Where checkpoints, logs and metrics go; a run in an '
      'existing workdir resumes. Default: workdirs/<config name>.')
  cli.define_distributed_flags()
  flags.adopt_module_key_flags(cli)  # --help shows the launch flags too.


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


def train_and_evaluate(config, workdir: str, *, devices=None,
                       stop_at_step=None, signals=None) -> dict:
  """Trains, evaluates and checkpoints in `workdir`; returns final metrics.

  Args:
    config: a ConfigDict as mixer_jax/recipes.py describes; checked first.
    workdir: checkpoints, TensorBoard events, metrics.jsonl, config.json,
      final_metrics.json and the final params.npz (published layout) go here.
      A run holds WORKDIR/lock while it lives: a second one fails at once.
    devices: the devices to train on (default: all of them).
    stop_at_step: checkpoint and return after this step, as a preempted job
      would (the schedule still spans total_steps); a later call resumes.
    signals: a preemption.StopSignals installed by the caller: on SIGTERM or
      SIGINT the loop checkpoints the current step and raises
      preemption.Stopped.
  Returns:
    The final metrics: step, eval_accuracy, eval_loss, eval_examples, ...
  Raises:
    errors.UserError: a bad config value, dataset, workdir or checkpoint,
      divergence (divergence.Diverged) or a full disk; nothing saved before
      is lost.
  """
  config_checks.check(config)
  preflight.check(config)
  mesh = jit_steps.make_mesh(devices)
  config_checks.check_batch_sizes(config, num_devices=mesh.size)
  info = input_pipeline.get_info(config)
  if config.real_dataset:
    real = input_pipeline.get_info(scoring.real_labels_config(config))
    if real.num_classes != info.num_classes:
      raise errors.UserError(
          f'real_dataset {config.real_dataset!r} has {real.num_classes} '
          f'classes and {config.dataset} {info.num_classes}: use the ReaL '
          "labels of the run's own classes, or --config.real_dataset=''.")
  model = model_config.model_from_config(config,
                                        num_classes=info.num_classes)
  with workdir_lock.hold(workdir):
    return _train(config, workdir, mesh=mesh, info=info, model=model,
                  stop_at_step=stop_at_step, signals=signals)


def _train(config, workdir, *, mesh, info, model, stop_at_step, signals):
  """train_and_evaluate's loop, with the workdir locked."""
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
  train_step = jit_steps.jit_train_step(config, model, tx, mesh,
                                        num_classes=info.num_classes,
                                        accum_steps=accum_steps)
  eval_step = jit_steps.jit_eval_step(model, mesh,
                                      num_classes=info.num_classes)
  writer = metrics.MetricWriter(workdir, start_step=start_step)
  progress = metrics.Progress(total_steps=config.total_steps,
                              start_step=start_step,
                              batch_size=config.batch_size,
                              every=config.progress_every)
  if not config.accum_steps:  # Shown in a notebook too, where info is not.
    progress.write(f'accum_steps=0 (auto): {accum_steps}, {why}.')
  max_eval_loss = divergence.max_loss(factor=config.max_eval_loss_factor,
                                      num_classes=info.num_classes)
  diverged = divergence.DivergedSteps(
      limit=config.max_diverged_steps, max_loss=divergence.max_loss(
          factor=config.max_loss_factor, num_classes=info.num_classes),
      stuck_loss=max_eval_loss)
  logging.info('%s on %d %s device(s): %s, %d train / %d eval examples, '
               '%d classes.', config.model.variant, mesh.size,
               mesh.devices.flat[0].platform, config.dataset,
               info.num_train_examples, info.num_eval_examples,
               info.num_classes)

  def check_divergence(check, *args, **kwargs):
    """check(*args, **kwargs); a Diverged it raises is raised again with the
    unhealthy checkpoints set aside and the advice."""
    try:
      check(*args, **kwargs)
    except divergence.Diverged as e:
      set_aside, aside_dir = checkpoints.set_aside_from(
          divergence.first_unhealthy_checkpoint(e.first_step))
      raise divergence.Diverged(str(e) + divergence.how_to_resume(
          lr=config.lr, last_healthy=checkpoints.latest_step(),
          set_aside=set_aside, aside_dir=aside_dir), reason=str(e)) from None

  def save(state):
    if not divergence.all_finite(state.params):
      raise divergence.Diverged(
          f'the parameters at step {int(state.step)} are not finite; not '
          'saving them. Lower --config.lr and run the same command to resume.')
    checkpoints.save(state)

  def run_eval(step, params):
    return scoring.evaluate(eval_step, params, config, batch_sharding)

  def run_real(step, params):
    return scoring.evaluate_real(eval_step, params, config, batch_sharding)

  def run_fewshot(step, params):
    return fewshot.evaluate(
        model, params, config, dataset=config.fewshot_dataset,
        shots=config.fewshot_shots, seeds=range(config.fewshot_seeds),
        l2=config.fewshot_l2)

  # (name, every, evaluator): big_vision's `evals`, run in this order.
  evaluators = [('eval', config.eval_every, run_eval),
                ('real', (config.real_every or config.total_steps)
                 if config.real_dataset else 0, run_real),
                ('fewshot', config.fewshot_every, run_fewshot)]
  last_step = min(config.total_steps, stop_at_step or config.total_steps)
  results, train_metrics, start_time = {}, {}, time.perf_counter()

  def run_evaluator(evaluator, step, params):
    found = evaluator(step, params)
    results.update(found)
    writer.write_scalars(step, found)
    progress.write(f'step {step}: ' + '  '.join(
        f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
        for k, v in found.items()))
    check_divergence(divergence.check_eval, step, found,
                     max_eval_loss=max_eval_loss)

  step = start_step
  try:
    # A run stopped between the checkpoint of a step and that step's evals
    # (killed, preempted) resumes after them: the missing ones run first.
    for name, every, evaluator in evaluators:
      if start_step and itstime(start_step, every, last=config.total_steps) and (
          metrics.missing_record(workdir, start_step, RECORD_KEYS[name])):
        run_evaluator(evaluator, start_step, state.params)
    batches = input_pipeline.prefetch_to_mesh(
        input_pipeline.train_iterator(config, start_step=start_step),
        batch_sharding, config.prefetch)
    for step in range(start_step + 1, last_step + 1):
      state, step_metrics = train_step(state, next(batches))
      diverged.add(step, step_metrics['finite'], step_metrics['loss'])
      stop = preemption.stop_requested(signals, step, checkpoints)
      due = {name: itstime(step, every, last=config.total_steps)
             for name, every, _ in evaluators}
      save_due = itstime(step, config.checkpoint_every,
                         last=last_step) or bool(stop)
      if progress.due(step) or save_due or any(due.values()):
        check_divergence(diverged.check)  # Reads from the device anyway.
        checkpoints.check_for_errors()
      if progress.due(step):
        train_metrics = progress.update(
            step, loss=float(step_metrics['loss']),
            lr=float(schedule(step - 1)))
        writer.write_scalars(step, train_metrics)
      if save_due and save_policy(step, streak=diverged.streak,
                                  final=step == last_step or bool(stop)):
        save(state)
      if stop:
        checkpoints.wait()
        raise preemption.Stopped(step, stop)
      for name, _, evaluator in evaluators:
        if due[name]:
          run_evaluator(evaluator, step, state.params)
    if 'eval_loss' not in results:  # Nothing left to train: evaluate what is
      results.update(run_eval(step, state.params))  # there.
    checkpoints.wait()
  except BaseException as e:
    checkpoints.close_after_error()
    if errors.is_disk_full(e):
      failed = checkpoints.failed_save()
      raise errors.DiskFullError(
          'no space left on device' + (
              f' while saving the checkpoint of step {failed}' if failed
              else '') + f' (noticed at step {step}): '
          f'{errors.describe(e)[:300]}; the checkpoints saved before are '
          'intact. Free some space and run the same command to resume.') from e
    raise
  finally:
    progress.close()
    writer.close()
  checkpoints.close()
  return _finish(workdir, state, trained=last_step > start_step,
                 results={**results, **train_metrics},
                 diverged_steps=diverged.total,
                 seconds=time.perf_counter() - start_time)


# How each evaluator's records in metrics.jsonl start.
RECORD_KEYS = {'eval': 'eval_loss', 'real': 'eval_real_', 'fewshot': 'fewshot/'}


def itstime(step: int, every: int, *, last: int) -> bool:
  """Whether a periodic task runs at `step`: every `every` steps and at the
  `last` one (never when `every` is 0)."""
  return bool(every) and (step % every == 0 or step == last)


def save_policy(step: int, *, streak: int, final: bool) -> bool:
  """Whether a due checkpoint of `step` is saved: not while steps diverge
  (`streak` > 0 in a row), except the run's final or preempted step, whose
  state must be kept (its parameters are checked finite before saving)."""
  if streak and not final:
    logging.warning('Not saving the checkpoint of step %d: the last %d steps '
                    'diverged.', step, streak)
    return False
  return True


def _finish(workdir, state, *, trained, results, diverged_steps, seconds):
  """Writes params.npz and final_metrics.json (process 0); returns the latter.

  A run that trained nothing (it was finished already) keeps the files of
  the run that did, and returns their metrics with this evaluation's.
  """
  final = {'step': int(state.step), **results,
           'train_seconds_this_run': seconds}
  if diverged_steps:
    final['diverged_steps'] = diverged_steps
  final_path = os.path.join(workdir, 'final_metrics.json')
  if not trained and os.path.exists(final_path):
    with open(final_path) as f:  # This run trained for 0 seconds.
      return {**json.load(f), **results, 'train_seconds_this_run': 0.0}
  if jax.process_index() == 0:
    params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                          state.params)
    try:
      published.save(os.path.join(workdir, 'params.npz'), params,
                      overwrite=True)
      metrics.write_json(final_path, final)
    except OSError as e:
      if not errors.is_disk_full(e):
        raise
      raise errors.DiskFullError(
          f'no space left on device for the final params.npz and '
          f'final_metrics.json of step {final["step"]}; its checkpoint is '
          'saved. Free some space and run the same command to write '
          'them.') from e
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
  cli.leave_out_an_absent_tpu()
  cli.keep_orbax_warnings_only()
  cli.initialize_distributed('mixer_jax.train')
  cli.drop_closed_event_loop_errors()
  if jax.process_index() and not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # One voice: process 0's.
  sources.keep_tensorflow_off_accelerators()
  workdir = FLAGS.workdir or default_workdir(flags.FLAGS['config'].serialize()
                                              .split('=', 1)[-1])
  try:
    with preemption.StopSignals() as signals:
      logging.info('Workdir: %s', os.path.abspath(workdir))
      final = train_and_evaluate(FLAGS.config, workdir, signals=signals)
  except preemption.Stopped as e:
    print(f'mixer_jax.train: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except errors.DiskFullError as e:
    # Orbax's failed background writes would print warnings at interpreter
    # shutdown, after the error line; everything is saved or closed by now.
    print(f'mixer_jax.train: error: {errors.describe(e)}', file=sys.stderr,
          flush=True)
    os._exit(1)  # pylint: disable=protected-access
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.train', e)
  if jax.process_index() == 0:
    curves = plot.draw([workdir], os.path.join(workdir, 'curves.png'))
    print(json.dumps(final, indent=2))
    print(f'Workdir {os.path.abspath(workdir)}:\n'
          f'  checkpoints   {os.path.join(workdir, "checkpoints")}\n'
          f'  final params  {os.path.join(workdir, "params.npz")}\n'
          f'  metrics       {os.path.join(workdir, "metrics.jsonl")}, '
          f'{os.path.join(workdir, "final_metrics.json")}\n'
          f'  curves        {curves}\n'
          f'  TensorBoard   tensorboard --logdir {workdir}')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags_and_config('mixer_jax.train'))
