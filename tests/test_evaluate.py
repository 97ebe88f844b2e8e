"""Tests for mixer_jax.evaluate: a run's numbers, steps, other data, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mixer_jax import errors
from mixer_jax import trainer
from mixer_jax.evals import evaluation
from mixer_jax.evals import inference
from tests.conftest import ROOT
from tests.conftest import read_jsonl
from tests.conftest import small_digits_config
from tests.conftest import write_digits_folder


def test_the_final_evaluation_again_with_per_class_detail(digits_run):
  workdir, final = digits_run
  loaded, config = evaluation.model_and_config(workdir=workdir)
  results = evaluation.run(loaded, config)
  for key in ('eval_loss', 'eval_accuracy'):
    assert results[key] == pytest.approx(final[key], abs=1e-6)
  assert results['eval_examples'] == 360
  confusion = np.asarray(results['confusion_matrix'])
  assert confusion.sum() == 360
  assert confusion.trace() / 360 == pytest.approx(results['eval_accuracy'])
  np.testing.assert_allclose(results['per_class_accuracy'],
                             confusion.diagonal() / confusion.sum(1))


def test_a_checkpoint_step_and_another_split(digits_run):
  workdir, _ = digits_run
  loaded, config = evaluation.model_and_config(
      workdir=workdir, step=30, split='train[:100]',
      values={'eval_batch_size': 40})
  results = evaluation.run(loaded, config)
  assert results['eval_examples'] == 100 and config.eval_batch_size == 40
  loaded, config = evaluation.model_and_config(workdir=workdir, step=30)
  at_30 = [r for r in read_jsonl(workdir) if r['step'] == 30 and
           'eval_loss' in r][0]
  assert evaluation.run(loaded, config)['eval_loss'] == pytest.approx(
      at_30['eval_loss'], abs=1e-6)


def test_errors_name_the_problem(digits_run):
  workdir, _ = digits_run
  with pytest.raises(errors.UserError, match='No checkpoint of step 7'):
    evaluation.model_and_config(workdir=workdir, step=7)
  with pytest.raises(errors.UserError, match='one of --workdir and'):
    evaluation.model_and_config()
  with pytest.raises(errors.UserError, match=r'eval_batch_size=0 \(must be'):
    evaluation.model_and_config(workdir=workdir, values={'eval_batch_size': 0})
  with pytest.raises(errors.UserError, match='is no finished run'):
    evaluation.model_and_config(workdir=f'{os.path.dirname(workdir)}/nothing')


@pytest.mark.slow
def test_the_cli_writes_the_metrics(digits_run, tmp_path):
  workdir, final = digits_run
  output = tmp_path / 'metrics.json'
  result = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.evaluate', f'--workdir={workdir}',
       f'--output={output}', '--config.eval_batch_size=32'], cwd=ROOT,
      capture_output=True, text=True, check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  written = json.loads(output.read_text())
  assert written['eval_accuracy'] == pytest.approx(final['eval_accuracy'])
  assert result.stdout.startswith('digits test: 360 examples')


@pytest.mark.slow
def test_a_run_on_an_image_folder_evaluates_and_predicts_with_its_names(
    tmp_path):
  """DIR/{train,test}/<class>/*.png made of digits 0, 1 and 2, named."""
  names = ('zero', 'one', 'two')
  config = small_digits_config(dataset=write_digits_folder(tmp_path / 'data',
                                                           names),
                               batch_size=16, eval_batch_size=16,
                               total_steps=4)
  workdir = str(tmp_path / 'run')
  final = trainer.train_and_evaluate(config, workdir)
  loaded, eval_config = evaluation.model_and_config(workdir=workdir)
  assert loaded.class_names == ('one', 'two', 'zero')  # Sorted folders.
  results = evaluation.run(loaded, eval_config)
  assert results['class_names'] == list(loaded.class_names)
  assert results['eval_accuracy'] == pytest.approx(final['eval_accuracy'],
                                                   abs=1e-6)
  test_file = next((tmp_path / 'data' / 'test' / 'one').iterdir())
  [result] = inference.predict(loaded, [str(test_file)], top_k=3)
  assert {t['name'] for t in result['top']} == set(names)
