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
"""train_and_evaluate: set up, then the steps, each followed by the periodic
tasks due (progress, checkpoint, eval, ReaL, few-shot: one list, as
big_vision's evaluators), then the final files."""

import contextlib
import dataclasses
import time
from typing import Callable

from absl import logging
import jax
import numpy as np

from mixer_jax import errors
from mixer_jax import storage
from mixer_jax.data import input_pipeline
from mixer_jax.evals import fewshot
from mixer_jax.evals import scoring
from mixer_jax.model import published
from mixer_jax.multihost import preemption
from mixer_jax.multihost import workdir_lock
from mixer_jax.trainer import setup
from mixer_jax.training import divergence
from mixer_jax.training import metrics
from mixer_jax.training import records


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
  mesh, info, model = setup.checked(config, devices=devices)
  with workdir_lock.hold(workdir):
    run = setup.set_up(config, workdir, mesh=mesh, info=info, model=model,
                       stop_at_step=stop_at_step)
    tasks = make_tasks(run)
    start_time = time.perf_counter()
    try:
      with disk_full_is_one_line(run):
        redo_missing_evals(run, tasks)
        train(run, tasks, signals=signals)
        if 'eval_loss' not in run.results:  # Nothing left to train:
          run.results.update(evaluate(run, run.state.params))
        run.checkpoints.wait()
    finally:
      run.progress.close()
      run.writer.close()
    run.checkpoints.close()
    return finish(run, seconds=time.perf_counter() - start_time)


def itstime(step: int, every: int, *, last: int) -> bool:
  """Whether a periodic task runs at `step`: every `every` steps and at the
  `last` one (never when `every` is 0)."""
  return bool(every) and (step % every == 0 or step == last)


@dataclasses.dataclass(frozen=True)
class Task:
  """fn(step, step_metrics) every `every` steps and at step `last`."""
  name: str
  every: int
  last: int
  fn: Callable[[int, dict], None]
  record: str = ''  # How an evaluator's records in metrics.jsonl start.

  def due(self, step: int) -> bool:
    return itstime(step, self.every, last=self.last)


def save_policy(step: int, *, streak: int, final: bool) -> bool:
  """Whether a due checkpoint of `step` is saved: not while steps diverge
  (`streak` > 0 in a row), except the run's final or preempted step, whose
  state must be kept (its parameters are checked finite before saving)."""
  if streak and not final:
    logging.warning('Not saving the checkpoint of step %d: the last %d steps '
                    'diverged.', step, streak)
    return False
  return True


def healthy(run: setup.Run, check, *args, **kwargs) -> None:
  """check(*args, **kwargs); a divergence.Diverged it raises is raised again
  with the unhealthy checkpoints set aside and the advice."""
  try:
    check(*args, **kwargs)
  except divergence.Diverged as e:
    set_aside, aside_dir = run.checkpoints.set_aside_from(
        divergence.first_unhealthy_checkpoint(e.first_step))
    raise divergence.Diverged(str(e) + divergence.how_to_resume(
        lr=run.config.lr, last_healthy=run.checkpoints.latest_step(),
        set_aside=set_aside, aside_dir=aside_dir), reason=str(e)) from None


def _save(run: setup.Run, step: int) -> None:
  """The save decision, all of it: due (or stopping), healthy, finite."""
  final = step == run.last_step or bool(run.stop)
  if not save_policy(step, streak=run.diverged.streak, final=final):
    return
  if not divergence.all_finite(run.state.params):
    raise divergence.Diverged(
        f'the parameters at step {step} are not finite; not saving them. '
        'Lower --config.lr and run the same command to resume.')
  run.checkpoints.save(run.state)
  run.writer.flush()  # A bucket gets the records the checkpoint resumes.


def _progress(run: setup.Run, step: int, step_metrics: dict) -> None:
  run.train_metrics = run.progress.update(
      step, loss=float(step_metrics['loss']),
      lr=float(run.schedule(step - 1)))
  run.writer.write_scalars(step, run.train_metrics)


def _evaluator(run: setup.Run, evaluate: Callable[[dict], dict]):
  """fn(step, _) that runs `evaluate(params)`, records and shows its results
  and ends the run if they diverged."""
  def fn(step, _):
    found = evaluate(run.state.params)
    run.results.update(found)
    run.writer.write_scalars(step, found)
    run.writer.flush()
    run.progress.write(f'step {step}: ' + '  '.join(
        f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
        for k, v in found.items()))
    healthy(run, divergence.check_eval, step, found,
            max_eval_loss=run.max_eval_loss)
  return fn


def evaluate(run: setup.Run, params) -> dict:
  """The eval split's loss and accuracy."""
  return scoring.evaluate(run.eval_step, params, run.config,
                          run.batch_sharding)


def make_tasks(run: setup.Run) -> list[Task]:
  """The run's periodic tasks, in the order they run at a step."""
  config, total = run.config, run.config.total_steps
  return [
      Task('progress', config.progress_every, total,
           lambda step, m: _progress(run, step, m)),
      Task('checkpoint', config.checkpoint_every, run.last_step,
           lambda step, _: _save(run, step)),
      Task('eval', config.eval_every, total,
           _evaluator(run, lambda params: evaluate(run, params)),
           record='eval_loss'),
      Task('real', (config.real_every or total) if config.real_dataset
           else 0, total, _evaluator(run, lambda params: scoring.evaluate_real(
               run.eval_step, params, config, run.batch_sharding)),
           record='eval_real_'),
      Task('fewshot', config.fewshot_every, total,
           _evaluator(run, lambda params: fewshot.evaluate(
               run.model, params, config, dataset=config.fewshot_dataset,
               shots=config.fewshot_shots, seeds=range(config.fewshot_seeds),
               l2=config.fewshot_l2)),
           record='fewshot/'),
  ]


def redo_missing_evals(run: setup.Run, tasks) -> None:
  """A run stopped between the checkpoint of a step and that step's evals
  (killed, preempted) resumes after them: the missing ones run first."""
  for task in tasks:
    if (task.record and run.start_step and task.due(run.start_step) and
        metrics.missing_record(run.workdir, run.start_step, task.record)):
      task.fn(run.start_step, {})


def train(run: setup.Run, tasks, *, signals) -> None:
  """The steps from the one after `run.start_step` to `run.last_step`, each
  followed by the tasks due; a stop request saves the step and raises
  preemption.Stopped before its evals."""
  batches = input_pipeline.prefetch_to_mesh(
      input_pipeline.train_iterator(run.config, start_step=run.start_step),
      run.batch_sharding, run.config.prefetch)
  for step in range(run.start_step + 1, run.last_step + 1):
    run.state, step_metrics = run.train_step(run.state, next(batches))
    run.step = step
    run.diverged.add(step, step_metrics['finite'], step_metrics['loss'])
    run.stop = preemption.stop_requested(signals, step, run.checkpoints)
    if run.stop:  # The progress line if due and the checkpoint; no evals.
      due = [task for task in tasks if task.name == 'checkpoint' or (
          task.name == 'progress' and task.due(step))]
    else:
      due = [task for task in tasks if task.due(step)]
    if due:  # Reads the loss from the device, as the tasks do anyway.
      healthy(run, run.diverged.check)
      run.checkpoints.check_for_errors()
    for task in due:
      task.fn(step, step_metrics)
    if run.stop:
      run.checkpoints.wait()
      raise preemption.Stopped(step, run.stop)


@contextlib.contextmanager
def disk_full_is_one_line(run: setup.Run):
  """Closes the checkpoints after any error; a full disk becomes one
  errors.DiskFullError naming the step, the saves before it intact."""
  try:
    yield
  except BaseException as e:
    run.checkpoints.close_after_error()
    if errors.is_disk_full(e):
      failed = run.checkpoints.failed_save()
      raise errors.DiskFullError(
          'no space left on device' + (
              f' while saving the checkpoint of step {failed}' if failed
              else '') + f' (noticed at step {run.step}): '
          f'{errors.describe(e)[:300]}; the checkpoints saved before are '
          'intact. Free some space and run the same command to resume.') from e
    raise


def finish(run: setup.Run, *, seconds: float) -> dict:
  """Writes params.npz and final_metrics.json (process 0); returns the latter.

  A run that trained nothing (it was finished already) keeps the files of
  the run that did, and returns their metrics with this evaluation's.
  """
  results = {**run.results, **run.train_metrics}
  final = {'step': int(run.state.step), **results,
           'train_seconds_this_run': seconds}
  if run.diverged.total:
    final['diverged_steps'] = run.diverged.total
  final_path = storage.join(run.workdir, 'final_metrics.json')
  if run.last_step <= run.start_step and storage.exists(final_path):
    return {**records.read_json(final_path), **results,  # Trained 0 s.
            'train_seconds_this_run': 0.0}
  if jax.process_index() == 0:
    params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                          run.state.params)
    try:
      published.save(storage.join(run.workdir, 'params.npz'), params,
                     overwrite=True)
      records.write_json(final_path, final)
    except OSError as e:
      if not errors.is_disk_full(e):
        raise
      raise errors.DiskFullError(
          f'no space left on device for the final params.npz and '
          f'final_metrics.json of step {final["step"]}; its checkpoint is '
          'saved. Free some space and run the same command to write '
          'them.') from e
  return final
