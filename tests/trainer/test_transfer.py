"""Tests for mixer_jax.transfer: a sweep end to end on stand-ins (digits and
a folder), stopped and resumed, the command, the table and its errors."""

import json
import os
import subprocess
import sys

import pytest

from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax import transfer as transfer_cli
from mixer_jax.evals import loading
from mixer_jax.model import model_config
from mixer_jax.multihost import preemption
from mixer_jax.trainer import transfer
from tests.conftest import ROOT
from tests.conftest import read_jsonl
from tests.conftest import write_digits_folder

# Each test here trains, runs a command or several processes.
pytestmark = pytest.mark.slow

# Every run of the sweep: 4 steps of the paper's recipe, shrunk; 2 diverged
# steps in a row end a run.
OVERRIDES = dict(batch_size=32, eval_batch_size=64, total_steps=4,
                 warmup_steps=1, eval_every=4, progress_every=2,
                 checkpoint_every=2, eval_pp='resize', max_diverged_steps=2)
LR_GRID = (0.001, 0.03, 1e6)  # The last diverges.
TRAINED = LR_GRID[:2]


class StopAtQuestion:
  """Stands in for preemption.StopSignals: a SIGTERM at the loop's n-th
  question (n = 6: step 2 of the second run)."""

  def __init__(self, n: int):
    self.asked, self.n = 0, n

  def requested(self, step, checkpoints):
    del step, checkpoints
    self.asked += 1
    return 'SIGTERM' if self.asked == self.n else None


def final_metrics(run_dir) -> dict:
  with open(os.path.join(run_dir, 'final_metrics.json')) as f:
    return json.load(f)


def mtimes(folder) -> dict:
  return {os.path.join(root, f): os.stat(os.path.join(root, f)).st_mtime_ns
          for root, _, files in os.walk(folder) for f in files}


def test_a_stopped_sweep_resumes_and_writes_the_paper_shaped_row(
    digits_run, tmp_path):
  pretrained = os.path.join(digits_run[0], 'params.npz')
  folder = write_digits_folder(tmp_path / 'three')
  workdir = str(tmp_path / 'transfer')
  sweep = lambda **kw: transfer.sweep(
      pretrained=pretrained, workdir=workdir, datasets=['digits', folder],
      lr_grid=LR_GRID, overrides=OVERRIDES, **kw)
  with pytest.raises(preemption.Stopped, match='stopped at step 2'):
    sweep(signals=StopAtQuestion(6))
  first, second = (os.path.join(workdir, 'digits', f'lr_{lr:g}')
                   for lr in TRAINED)
  assert os.path.exists(os.path.join(first, 'final_metrics.json'))
  assert not os.path.exists(os.path.join(second, 'final_metrics.json'))
  assert not os.path.exists(os.path.join(workdir, 'transfer.json'))
  finished = mtimes(first)

  result = sweep()
  assert mtimes(first) == finished  # Skipped, not trained again.
  assert [r['step'] for r in read_jsonl(second)
          if 'train_loss' in r] == [2, 4]  # Resumed after step 2.
  assert list(result['tasks']) == ['digits', folder]
  for dataset, task in result['tasks'].items():
    task_dir = os.path.join(workdir, transfer.task_name(dataset))
    minival = {lr: final_metrics(os.path.join(task_dir, f'lr_{lr:g}'))
               for lr in TRAINED}
    assert task['lr'] == max(TRAINED,
                             key=lambda lr: minival[lr]['eval_accuracy'])
    assert task['diverged_lrs'] == [1e6]
    with open(os.path.join(task_dir, 'lr_1e+06', 'diverged.txt')) as f:
      why = f.read()
    assert why.startswith('training diverged: ') and '--config.lr' not in why
    assert 'Learning rate 1e+06 is left out of the pick: give smaller ' \
        'rates with --lr_grid' in why
    assert task['minival_top1'] == minival[task['lr']]['eval_accuracy']
    assert task['test_split'] == 'test'
    assert 0 <= task['top1'] <= 1
  assert final_metrics(first)['eval_examples'] == 144  # Digits' train[90%:].
  assert result['avg'] == pytest.approx(
      (result['tasks']['digits']['top1'] + result['tasks'][folder]['top1']) / 2)
  with open(os.path.join(workdir, 'transfer.json')) as f:
    assert json.load(f) == result

  # The command on the finished sweep: nothing trains again; the same row.
  before = mtimes(os.path.join(workdir, 'digits'))
  command = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.transfer',
       f'--pretrained={pretrained}', f'--workdir={workdir}',
       f'--datasets=digits,{folder}', f'--lr_grid={",".join(map(str, LR_GRID))}',
       *(f'--config.{k}={v}' for k, v in OVERRIDES.items())],
      cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
  assert command.returncode == 0, command.stderr[-2000:]
  assert mtimes(os.path.join(workdir, 'digits')) == before
  row = command.stdout.splitlines()[2]
  assert row == (f'| {pretrained} | '
                 f'{100 * result["tasks"]["digits"]["top1"]:.2f} | '
                 f'{100 * result["tasks"][folder]["top1"]:.2f} | '
                 f'{100 * result["avg"]:.2f} |')
  with open(os.path.join(workdir, 'transfer.md')) as f:
    table = f.read()
  assert row in table
  assert f'- digits: lr {result["tasks"]["digits"]["lr"]:g} ' in table
  assert table.count('; lr 1e+06 diverged') == 2


@pytest.mark.parametrize('dataset, expected', [
    ('cifar10', ('train[:98%]', 'train[98%:]', 'test')),
    ('imagenet2012', ('train[:99%]', 'train[99%:]', 'validation')),
    ('oxford_iiit_pet', ('train[:90%]', 'train[90%:]', 'test')),
    ('digits', ('train[:90%]', 'train[90%:]', 'test')),
])
def test_each_dataset_holds_out_its_minival(dataset, expected):
  from mixer_jax import recipes  # pylint: disable=g-import-not-at-top
  assert transfer.splits(dataset, recipes.get_config()) == expected


def test_the_row_puts_real_after_imagenet():
  result = {'pretrained': 'imagenet21k/Mixer-B_16', 'avg': 0.9, 'tasks': {
      'imagenet2012': {'top1': 0.8064, 'real_top1': 0.858, 'lr': 0.03,
                       'minival_top1': 0.8, 'test_split': 'validation',
                       'workdir': 'W/imagenet2012/lr_0.03'},
      'cifar10': {'top1': 0.9936, 'lr': 0.01, 'minival_top1': 0.99,
                  'test_split': 'test', 'workdir': 'W/cifar10/lr_0.01'}}}
  lines = transfer.format_row(result).splitlines()
  assert lines[0] == '| checkpoint | imagenet2012 | ReaL | cifar10 | Avg 2 |'
  assert lines[2] == ('| imagenet21k/Mixer-B_16 | 80.64 | 85.80 | 99.36 | '
                      '90.00 |')


@pytest.mark.parametrize('kwargs, message', [
    (dict(overrides={'lr': 0.1}), r'The sweep sets lr: drop --config.lr '
     r'\(the rates come from --lr_grid\)'),
    (dict(overrides={'dataset': 'x', 'eval_split': 'y'}),
     'The sweep sets dataset, eval_split: drop --config.dataset, '
     '--config.eval_split'),
    (dict(datasets=['a/digits', 'b/digits']), 'share the sub-workdir name '
     'digits'),
])
def test_sweep_errors(tmp_path, kwargs, message):
  with pytest.raises(errors.UserError, match=message):
    transfer.sweep(**{'pretrained': 'unused', 'workdir': str(tmp_path),
                      'datasets': ['digits'], 'lr_grid': (0.01,), **kwargs})


@pytest.mark.parametrize('values, expected', [
    (['0.01', '0.03'], [0.01, 0.03]), (['0'], None), (['x'], None),
    ([], None)])
def test_lr_grid_flag(values, expected):
  if expected is None:
    with pytest.raises(errors.UserError, match='learning rates > 0'):
      transfer_cli.parse_lr_grid(values)
  else:
    assert transfer_cli.parse_lr_grid(values) == expected


def test_missing_datasets_are_listed_before_any_run(tmp_path):
  with pytest.raises(errors.MissingError) as raised:
    transfer.sweep(pretrained='unused', workdir=str(tmp_path / 'transfer'),
                   datasets=['digits', 'imagenet2012', 'cifar100'],
                   lr_grid=(0.01,), overrides={
                       'download': False, 'tfds_data_dir': str(tmp_path)})
  message = str(raised.value)
  assert message.startswith("Missing, and not to be fetched: tfds dataset "
                            "'imagenet2012'")
  assert "; tfds dataset 'cifar100' (download is off)" in message
  assert message.endswith('Or leave the missing datasets out of --datasets.')
  assert not (tmp_path / 'transfer').exists()


def test_a_task_takes_its_presets_length_and_the_models_variant(digits_run):
  """digits: configs/digits.py's 600 steps at batch 128, not the paper's
  10,000 at 512; the digits model is a Ti/2 (with its own widths), not B/2."""
  loaded = loading.from_run(digits_run[0])
  fields = transfer.model_fields(loaded)
  assert fields['variant'] == 'Ti/2'
  base = recipes.get_config()
  base.model.update(fields)
  config = transfer.run_config(base, 'digits', 0.01, {},
                               train_split='train[:90%]', minival='train[90%:]')
  assert (config.total_steps, config.batch_size, config.warmup_steps) == (
      600, 128, 50)
  assert config.model.variant == 'Ti/2'
  built = model_config.model_from_config(config, num_classes=10)
  assert all(getattr(built, k) == getattr(loaded.model, k) for k in (
      'num_blocks', 'hidden_dim', 'tokens_mlp_dim', 'channels_mlp_dim',
      'patch_size'))
