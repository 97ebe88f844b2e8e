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
"""The paper's transfer table for a checkpoint: fine-tune on each dataset at
each learning rate of a grid, pick on minival, score the pick on test (what
`python -m mixer_jax.transfer` runs; its docstring tells the recipe)."""

import math
import re

from absl import logging
from ml_collections import config_dict
import numpy as np

from mixer_jax import config_checks
from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax import storage
from mixer_jax.data import preflight
from mixer_jax.evals import evaluation
from mixer_jax.evals import loading
from mixer_jax.model import models
from mixer_jax.trainer import loop
from mixer_jax.trainer import setup
from mixer_jax.training import divergence
from mixer_jax.training import records

# Fields the sweep sets per run, and the flag that sets them.
_SWEPT = {'lr': 'the rates come from --lr_grid',
          'dataset': 'the tasks from --datasets',
          'train_split': 'train and minival from the dataset',
          'eval_split': 'train and minival from the dataset',
          'pretrained': 'the checkpoint from --pretrained'}
# The share of train that trains, for a dataset without a preset.
_DEFAULT_TRAIN_SPLIT = 'train[:90%]'


def model_fields(loaded: loading.Loaded) -> dict:
  """config.model fields that build the checkpoint's Mixer: the named width
  nearest its shapes (the digits model's is Ti, as its recipe says), with
  overrides where they differ."""
  model = loaded.model
  dims = {k: getattr(model, k) for k in
          ('num_blocks', 'hidden_dim', 'tokens_mlp_dim', 'channels_mlp_dim')}
  width = min(models.WIDTHS, key=lambda w: sum(
      abs(math.log(dims[k] / v)) for k, v in models.WIDTHS[w].items()))
  fields = {'variant': f'{width}/{model.patch_size}'}
  fields.update({k: v for k, v in dims.items()
                 if models.WIDTHS[width][k] != v})
  return fields


def splits(dataset: str, config) -> tuple[str, str, str]:
  """(train, minival, test) splits of `dataset` for the sweep."""
  train_split = recipes.DATASET_PRESETS.get(dataset, {}).get(
      'train_split', _DEFAULT_TRAIN_SPLIT)
  match = re.fullmatch(r'(\w+)\[:(\d+%?)\]', train_split)
  minival = f'{match[1]}[{match[2]}:]'
  test = recipes.DATASET_PRESETS.get(dataset, {}).get('eval_split')
  if not test:
    probe = config_dict.ConfigDict(config.to_dict())
    probe.dataset = dataset
    test = evaluation.default_split(probe)
  return train_split, minival, test


def task_name(dataset: str) -> str:
  """The sub-workdir of a dataset: its last path part, made a file name."""
  return re.sub(r'[^A-Za-z0-9_.-]+', '_',
                dataset.rstrip('/').split('/')[-1]) or 'dataset'


def run_config(base, dataset: str, lr: float, overrides: dict, *,
               train_split: str, minival: str):
  """One run of the sweep: base, the dataset's preset, the lr, the
  --config overrides, trained on train_split and evaluated on minival."""
  config = config_dict.ConfigDict(base.to_dict())
  if dataset in recipes.DATASET_PRESETS:
    recipes.with_dataset(config, dataset)
  config.dataset = dataset
  config.train_split, config.eval_split = train_split, minival
  config.lr = lr
  recipes.apply_overrides(config, overrides)
  config_checks.check(config)
  return config


def _finished(workdir: str, total_steps: int):
  """The final metrics of a run that trained all its steps, else None."""
  path = storage.join(workdir, 'final_metrics.json')
  if not storage.exists(path):
    return None
  final = records.read_json(path)
  return final if final.get('step') == total_steps else None


def _test_scores(workdir: str, test_split: str, real_dataset: str) -> dict:
  """{'top1'[, 'real_top1']} of a finished run on the test split."""
  loaded, config = evaluation.model_and_config(workdir=workdir,
                                             split=test_split)
  scores = {'top1': evaluation.run(loaded, config)['eval_accuracy']}
  if real_dataset:
    loaded, config = evaluation.model_and_config(
        workdir=workdir, dataset=real_dataset, split='validation')
    scores['real_top1'] = evaluation.run(loaded, config)['eval_real_accuracy']
  return scores


def _check_available(pretrained: str, datasets, overrides: dict) -> None:
  """Raises errors.MissingError listing every dataset and the checkpoint
  that can neither be found nor fetched, before any run starts."""
  probe = recipes.get_config()
  probe.pretrained = pretrained
  recipes.apply_overrides(probe, overrides)
  missing = [setup.missing_checkpoint(probe)] + [
      preflight.missing_dataset(probe, d) for d in datasets]
  missing = [m for m in missing if m]
  if missing:
    raise errors.MissingError(
        'Missing, and not to be fetched: ' + '; '.join(missing) + '. Or leave '
        'the missing datasets out of --datasets.')


def _fine_tune(config, run_dir: str, *, signals, log):
  """The run's final metrics (trained now, or before), or None where it
  diverged (then or before: its `diverged.txt` says why)."""
  diverged_path = storage.join(run_dir, 'diverged.txt')
  if storage.exists(diverged_path):
    return None
  final = _finished(run_dir, config.total_steps)
  if final is None:
    log(f'{config.dataset}: fine-tuning with lr {config.lr:g} in {run_dir}')
    try:
      final = loop.train_and_evaluate(config, run_dir, signals=signals)
    except divergence.Diverged as e:
      logging.warning('%s lr %g diverged, left out of the pick: %s',
                      config.dataset, config.lr, e)
      storage.makedirs(run_dir)
      storage.write_whole(
          diverged_path, f'{e.reason} Learning rate {config.lr:g} is left '
          'out of the pick: give smaller rates with --lr_grid (delete this '
          'file to try this one again).\n')
      return None
  log(f'{config.dataset} lr {config.lr:g}: minival ({config.eval_split}) '
      f'top-1 {final["eval_accuracy"]:.2%}')
  return final


def _task(base, dataset: str, task_dir: str, *, lr_grid, overrides, signals,
          log) -> dict:
  """One dataset's runs, the pick on minival and the chosen run's test
  scores (kept in task_dir/test_scores.json)."""
  probe = config_dict.ConfigDict(base.to_dict())
  recipes.apply_overrides(probe, overrides)  # Where the data is.
  train_split, minival, test_split = splits(dataset, probe)
  runs, diverged = {}, []
  for lr in lr_grid:
    config = run_config(base, dataset, lr, overrides,
                        train_split=train_split, minival=minival)
    run_dir = storage.join(task_dir, f'lr_{lr:g}')
    final = _fine_tune(config, run_dir, signals=signals, log=log)
    if final is None:
      diverged.append(lr)
    else:
      runs[lr] = (final['eval_accuracy'], run_dir, config)
  if not runs:
    raise divergence.Diverged(
        f'{dataset}: every learning rate of the grid diverged (see '
        f'{task_dir}/lr_*/diverged.txt); try smaller ones with --lr_grid.')
  best = max(runs, key=lambda lr: runs[lr][0])  # The first of ties.
  minival_top1, run_dir, config = runs[best]
  scores_path = storage.join(task_dir, 'test_scores.json')
  scores = {}
  if storage.exists(scores_path):
    scores = records.read_json(scores_path)
  if scores.get('workdir') != run_dir:
    scores = {'workdir': run_dir, 'split': test_split,
              **_test_scores(run_dir, test_split, config.real_dataset)}
    records.write_json(scores_path, scores)
  log(f'{dataset}: lr {best:g}, {test_split} top-1 {scores["top1"]:.2%}')
  return {'top1': scores['top1'], 'lr': best, 'workdir': run_dir,
          'minival_top1': minival_top1, 'test_split': test_split,
          **({'real_top1': scores['real_top1']} if 'real_top1' in scores
             else {}), **({'diverged_lrs': diverged} if diverged else {})}


def sweep(*, pretrained: str, workdir: str, datasets, lr_grid,
          overrides=None, signals=None, log=logging.info) -> dict:
  """Fine-tunes, picks, tests and writes DIR/transfer.{json,md}; returns
  the JSON's content. Finished runs and test scores are reused."""
  overrides = dict(overrides or {})
  owned = sorted(set(overrides) & set(_SWEPT))
  if owned:
    raise errors.UserError(
        f'The sweep sets {", ".join(owned)}: drop --config.'
        f'{", --config.".join(owned)} (' + '; '.join(
            _SWEPT[k] for k in owned) + ').')
  names = [task_name(d) for d in datasets]
  if len(set(names)) < len(names) or len(set(datasets)) < len(datasets):
    raise errors.UserError(
        f'--datasets={",".join(datasets)}: two datasets share the sub-workdir'
        f' name {", ".join(sorted({n for n in names if names.count(n) > 1}))};'
        ' give each once, from folders of different names.')
  _check_available(pretrained, datasets, overrides)
  loaded = loading.from_pretrained(
      pretrained, cache_dir=overrides.get('pretrained_cache_dir'))
  base = recipes.get_config()
  base.model.update(model_fields(loaded))
  base.image_size = loaded.image_size
  base.pretrained = pretrained
  tasks = {dataset: _task(base, dataset, storage.join(workdir, name),
                          lr_grid=lr_grid, overrides=overrides,
                          signals=signals, log=log)
           for dataset, name in zip(datasets, names)}
  result = {'pretrained': pretrained, 'tasks': tasks,
            'avg': float(np.mean([t['top1'] for t in tasks.values()]))}
  records.write_json(storage.join(workdir, 'transfer.json'), result)
  storage.write_whole(storage.join(workdir, 'transfer.md'),
                      format_row(result))
  return result


def format_row(result) -> str:
  """The paper-shaped table: top-1 per task (ReaL after ImageNet), Avg N."""
  header, row = ['checkpoint'], [result['pretrained']]
  for dataset, task in result['tasks'].items():
    header.append(dataset)
    row.append(f'{100 * task["top1"]:.2f}')
    if 'real_top1' in task:
      header.append('ReaL')
      row.append(f'{100 * task["real_top1"]:.2f}')
  header.append(f'Avg {len(result["tasks"])}')
  row.append(f'{100 * result["avg"]:.2f}')
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
           '| ' + ' | '.join(row) + ' |', '',
           'Top-1 (%) on each test split, with the learning rate picked on '
           'minival:', '']
  for dataset, task in result['tasks'].items():
    lines.append(f'- {dataset}: lr {task["lr"]:g} (minival top-1 '
                 f'{100 * task["minival_top1"]:.2f}), '
                 f'{task["test_split"]}, `{task["workdir"]}`' + (
                     ''.join(f'; lr {lr:g} diverged'
                             for lr in task.get('diverged_lrs', ()))))
  return '\n'.join(lines) + '\n'
