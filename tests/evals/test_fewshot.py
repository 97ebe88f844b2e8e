"""Tests for mixer_jax.fewshot: the least-squares protocol, the command, and
the evaluator in training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mixer_jax import errors
from mixer_jax import fewshot as fewshot_cli
from mixer_jax import trainer
from mixer_jax.evals import evaluation
from mixer_jax.evals import fewshot
from tests.conftest import ROOT
from tests.conftest import read_jsonl
from tests.conftest import small_digits_config
from tests.conftest import write_digits_folder


def clustered(rng, n_per_class, num_classes, dim, noise):
  centres = rng.normal(size=(num_classes, dim)) * 3
  labels = np.repeat(np.arange(num_classes), n_per_class)
  return centres[labels] + noise * rng.normal(size=(len(labels), dim)), labels


@pytest.mark.parametrize('dim', [16, 64])  # More points than features, fewer.
def test_separable_classes_are_learned_and_shuffled_labels_are_not(dim):
  rng = np.random.default_rng(0)
  train_x, train_y = clustered(rng, 5, 10, dim, noise=0.1)
  test_x, test_y = clustered(np.random.default_rng(0), 20, 10, dim, noise=0.1)
  fit = lambda y: fewshot.least_squares_accuracy(
      train_x, y, test_x, test_y, num_classes=10, l2=1.0)
  assert fit(train_y) == 1.0
  assert fit(rng.permutation(train_y)) < 0.5


def test_the_dual_solution_is_the_primal_one():
  """Duplicated features (d = 25 > n = 18) take the example-space solve; the
  fit equals the feature-space one with half the L2 penalty (the weight
  splits evenly over each copy), up to the bias feature's share."""
  rng = np.random.default_rng(1)
  x, y = clustered(rng, 6, 3, 12, noise=2.0)
  test_x, test_y = clustered(rng, 50, 3, 12, noise=2.0)
  doubled = fewshot.least_squares_accuracy(
      np.hstack([x, x]), y, np.hstack([test_x, test_x]), test_y,
      num_classes=3, l2=10.0)
  assert doubled == pytest.approx(fewshot.least_squares_accuracy(
      x, y, test_x, test_y, num_classes=3, l2=5.0), abs=0.02)


def test_k_shots_per_class_deterministic_by_seed():
  rng = np.random.default_rng(2)
  train = clustered(rng, 30, 4, 8, noise=3.0)
  test = clustered(rng, 30, 4, 8, noise=3.0)
  run = lambda seeds: fewshot.shots_accuracy(
      train, test, num_classes=4, shots=(1, 10), seeds=seeds, l2=1024.0)
  assert run([0, 1]) == run([0, 1])
  assert run([0]) != run([1])
  assert run([0])[10] > 0.25


@pytest.mark.slow
def test_the_command_on_a_run(digits_run, tmp_path):
  workdir, _ = digits_run
  output = tmp_path / 'fewshot.json'
  result = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.fewshot', f'--workdir={workdir}',
       '--shots=1,10', f'--output={output}'], cwd=ROOT, capture_output=True,
      text=True, check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  written = json.loads(output.read_text())
  assert set(written) == {'fewshot/digits/1shot', 'fewshot/digits/10shot'}
  assert 0.1 < written['fewshot/digits/1shot'] < written[
      'fewshot/digits/10shot'] <= 1.0
  loaded, config = evaluation.model_and_config(workdir=workdir)
  again = fewshot.evaluate(loaded.model, loaded.params, config, shots=(1, 10))
  assert again == pytest.approx(written, abs=1e-12)


@pytest.mark.slow
def test_the_evaluator_in_training_writes_the_same_keys(tmp_path):
  workdir = str(tmp_path / 'run')
  config = small_digits_config(total_steps=4, fewshot_every=2,
                               fewshot_shots=(1, 5), fewshot_seeds=1)
  final = trainer.train_and_evaluate(config, workdir)
  assert final['step'] == 4
  steps = [r['step'] for r in read_jsonl(workdir)
           if 'fewshot/digits/5shot' in r]
  assert steps == [2, 4]


@pytest.mark.parametrize('shots, seeds, message', [
    ((1, 6), (0,), r'6 shot\(s\) asked for, but .* has 5 example\(s\) of '
     r'class 1, its fewest: use shots from 1 to 5'),
    ((0,), (0,), r'0 shot\(s\) asked for'),
    ((-1, 2), (0,), r'-1 shot\(s\)'),
    ((1,), (), 'No seeds'),
])
def test_shots_beyond_what_each_class_has_are_an_error(shots, seeds, message):
  rng = np.random.default_rng(0)
  labels = np.array([0] * 8 + [1] * 5 + [2] * 7)
  data = rng.normal(size=(len(labels), 4)), labels
  with pytest.raises(errors.UserError, match=message):
    fewshot.shots_accuracy(data, data, num_classes=3, shots=shots,
                           seeds=seeds, l2=1.0)


@pytest.mark.parametrize('values, expected', [
    (['1', '5'], [1, 5]), (['0'], None), (['-1'], None), (['a'], None),
    ([], None)])
def test_shots_flag(values, expected):
  if expected is None:
    with pytest.raises(errors.UserError, match='integers >= 1'):
      fewshot_cli.parse_shots(values)
  else:
    assert fewshot_cli.parse_shots(values) == expected


@pytest.mark.slow
def test_a_suite_runs_what_is_there_and_lists_what_is_missing(digits_run,
                                                               tmp_path):
  """digits, a folder of 3 classes and ImageNet (manual download: missing);
  a table of the means, each seed logged, JSON written."""
  workdir, _ = digits_run
  suite = {'digits': ['digits', 'train', 'test'],
           'three': [write_digits_folder(tmp_path / 'three'), 'train', 'test'],
           'imagenet': ['imagenet2012', 'train[:65000]', 'validation']}
  (tmp_path / 'suite.json').write_text(json.dumps(suite))
  output = tmp_path / 'suite_results.json'
  result = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.fewshot', f'--workdir={workdir}',
       f'--suite={tmp_path / "suite.json"}', '--shots=1,5', '--seeds=2',
       f'--output={output}'], cwd=ROOT, capture_output=True, text=True,
      check=False, timeout=300,
      env={**os.environ, 'TFDS_DATA_DIR': str(tmp_path / 'tfds')})
  assert result.returncode == 0, result.stderr[-2000:]
  written = json.loads(output.read_text())
  assert set(written['datasets']) == {'digits', 'three'}
  assert "tfds dataset 'imagenet2012'" in written['missing']['imagenet']
  digits = written['datasets']['digits']
  assert len(digits['per_seed']['5']) == 2
  assert digits['accuracy']['5'] == pytest.approx(
      np.mean(digits['per_seed']['5']))
  loaded, config = evaluation.model_and_config(workdir=workdir)
  assert digits['accuracy']['5'] == pytest.approx(fewshot.evaluate(
      loaded.model, loaded.params, config, shots=(5,), seeds=(0, 1),
      train_split='train', test_split='test')['fewshot/digits/5shot'])
  table = result.stdout.splitlines()
  assert table[-4].split() == ['dataset', '1-shot', '5-shot', '(mean', 'of',
                               '2', 'seed(s))']
  assert table[-3].split()[0] == 'digits'
  assert table[-3].split()[2] == f'{digits["accuracy"]["5"]:.2%}'
  assert table[-1].startswith('imagenet  missing: ')
  assert 'digits 5-shot: seed 0 ' in result.stderr + result.stdout


def test_the_big_vision_suite_with_nothing_there_lists_all_of_it(
    tmp_path, digits_run):
  workdir, _ = digits_run
  loaded, config = evaluation.model_and_config(workdir=workdir)
  config.update(download=False, tfds_data_dir=str(tmp_path))
  logged = []
  with pytest.raises(errors.UserError) as raised:
    fewshot.run_suite(loaded.model, loaded.params, config,
                      fewshot.load_suite('big_vision'), shots=(1,),
                      seeds=(0,), l2=1024.0, log=logged.append)
  message = str(raised.value)
  assert message.startswith('No dataset of the suite is available: caltech:')
  for name in ('caltech101', 'cars196', 'cifar100', 'dtd', 'imagenet2012',
               'oxford_iiit_pet', 'uc_merced'):
    assert f"tfds dataset '{name}'" in message
  assert len(logged) == 7


@pytest.mark.parametrize('content, message', [
    (None, 'neither big_vision nor a readable JSON file'),
    ('[1, 2]', 'neither big_vision nor a readable JSON file'),
    ('{"a": ["digits", "train"]}', r'each entry is .* \(a\)'),
    ('{}', 'no entries'),
])
def test_a_bad_suite_is_one_clear_error(tmp_path, content, message):
  path = tmp_path / 'suite.json'
  if content is not None:
    path.write_text(content)
  with pytest.raises(errors.UserError, match=message):
    fewshot.load_suite(str(path))
