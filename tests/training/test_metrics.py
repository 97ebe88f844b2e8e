"""Tests for mixer_jax.training.metrics: durable records, none twice after a resume."""

import collections
import json
import os
import shutil

import pytest
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

from mixer_jax import trainer
from mixer_jax.training import metrics
from tests.conftest import read_jsonl
from tests.conftest import small_digits_config


def tensorboard_scalars(workdir):
  """Counter of (tag, step) over every event file of the run."""
  logdir = os.path.join(workdir, 'tensorboard')
  seen = collections.Counter()
  for name in os.listdir(logdir):
    for record in tf.data.TFRecordDataset(os.path.join(logdir, name)):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        seen[value.tag, event.step] += 1
  return seen


def test_each_record_is_on_disk_as_soon_as_it_is_written(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write_scalars(3, {'train_loss': 0.5})
  assert read_jsonl(tmp_path) == [{'step': 3, 'train_loss': 0.5}]
  assert tensorboard_scalars(tmp_path) == {('train_loss', 3): 1}
  writer.close()


@pytest.mark.slow
def test_a_resume_writes_no_record_twice(tmp_path):
  """A run killed after step 6 with its last checkpoint at 4, resumed."""
  workdir = str(tmp_path / 'run')
  config = small_digits_config(total_steps=8, progress_every=1, eval_every=3,
                               checkpoint_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at_step=6)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '6'))  # Never saved.
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 7, "train_lo')  # Cut short by the kill.
  trainer.train_and_evaluate(config, workdir)
  records = read_jsonl(workdir)
  assert [r['step'] for r in records if 'train_loss' in r] == list(
      range(1, 9))
  assert [r['step'] for r in records if 'eval_loss' in r] == [3, 6, 8]
  scalars = tensorboard_scalars(workdir)
  assert set(scalars.values()) == {1}
  assert {step for tag, step in scalars if tag == 'train_loss'} == set(
      range(1, 9))


@pytest.mark.parametrize('lines, step, key, missing', [
    ([], 4, 'eval_loss', True),
    (['{"step": 4, "train_loss": 1.0}'], 4, 'eval_loss', True),
    (['{"step": 4, "eval_loss": 1.0}'], 4, 'eval_loss', False),
    (['{"step": 4, "eval_loss": 1.0}'], 8, 'eval_loss', True),
    (['{"step": 8, "fewshot/digits/5shot": 0.9}'], 8, 'fewshot/', False),
    (['{"step": 8, "eval_lo'], 8, 'eval_loss', True)])  # Cut by a kill.
def test_missing_record(tmp_path, lines, step, key, missing):
  if lines:
    (tmp_path / 'metrics.jsonl').write_text('\n'.join(lines))
  assert metrics.missing_record(str(tmp_path), step, key) is missing


@pytest.mark.slow
def test_an_eval_lost_to_a_kill_after_its_checkpoint_is_redone(tmp_path):
  """Killed after saving the checkpoint of step 8, before that step's eval
  was written: the rerun evaluates step 8 first, and metrics.jsonl ends with
  the eval records of a run never stopped."""
  config = small_digits_config(total_steps=12, eval_every=4,
                               checkpoint_every=4)
  trainer.train_and_evaluate(config, str(tmp_path / 'whole'))
  workdir = tmp_path / 'killed'
  trainer.train_and_evaluate(config, str(workdir), stop_at_step=8)
  records = read_jsonl(workdir)
  assert [r['step'] for r in records if 'eval_loss' in r] == [4, 8]
  (workdir / 'metrics.jsonl').write_text(''.join(  # The eval of 8 never was.
      json.dumps(r) + '\n' for r in records
      if not (r['step'] == 8 and 'eval_loss' in r)))
  trainer.train_and_evaluate(config, str(workdir))
  evals = lambda run: [r for r in read_jsonl(run) if 'eval_loss' in r]
  assert evals(workdir) == evals(tmp_path / 'whole')


@pytest.mark.slow
def test_rerunning_a_finished_run_keeps_its_final_metrics(tmp_path):
  workdir = str(tmp_path / 'run')
  config = small_digits_config(total_steps=4)
  final = trainer.train_and_evaluate(config, workdir)
  path = os.path.join(workdir, 'final_metrics.json')
  with open(path) as f:
    written = f.read()
  again = trainer.train_and_evaluate(config, workdir)
  with open(path) as f:
    assert f.read() == written
  assert again['train_loss'] == final['train_loss']
  assert again['eval_accuracy'] == pytest.approx(final['eval_accuracy'])
  # This run trained nothing; the file keeps the time of the one that did.
  assert again['train_seconds_this_run'] == 0.0
  assert final['train_seconds_this_run'] > 0
