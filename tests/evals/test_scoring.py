"""Tests for mixer_jax.evals.scoring: ImageNet ReaL on a stand-in with known labels,
one host and two, in evaluate and in the train loop."""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mixer_jax import errors
from mixer_jax import evaluate
from mixer_jax import trainer
from mixer_jax.data import input_pipeline
from mixer_jax.evals import evaluation
from mixer_jax.evals import scoring
from mixer_jax.training import jit_steps
from mixer_jax.training import steps
from tests.conftest import read_jsonl
from tests.conftest import small_digits_config

NUM_EXAMPLES = 23
CLASSES = 1000  # imagenet2012_real's.


def real_labels(i: int) -> list[int]:
  """Example i's ReaL labels: none for every 5th, two for every 3rd."""
  if i % 5 == 0:
    return []
  return [i % 7, 7 + i % 3] if i % 3 == 0 else [i % 7]


def predicted(i: int) -> int:
  """The class the stand-in model picks for example i (encoded in its
  pixels)."""
  return (2 * i) % 7


def expected_scores() -> tuple[float, float, int]:
  """(top-1 against original_label i % 7, ReaL top-1, labelled examples)."""
  top1 = np.mean([predicted(i) == i % 7 for i in range(NUM_EXAMPLES)])
  labelled = [i for i in range(NUM_EXAMPLES) if real_labels(i)]
  real = np.mean([predicted(i) in real_labels(i) for i in labelled])
  return float(top1), float(real), len(labelled)


@pytest.fixture(name='real_data', scope='module')
def fixture_real_data(tmp_path_factory):
  """A tfds data dir where imagenet2012_real is prepared, by tfds's own
  builder, from the examples above instead of the ImageNet archive."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))

  def examples():
    for i in range(NUM_EXAMPLES):
      yield i, {'image': np.full((8, 8, 3), 30 * predicted(i), np.uint8),
                'original_label': i % 7, 'real_label': real_labels(i),
                'file_name': f'{i}.JPEG'}

  with mock.patch.object(tfds.builder_cls('imagenet2012_real'),
                         '_split_generators',
                         lambda self, dl_manager: {'validation': examples()}):
    tfds.builder('imagenet2012_real', data_dir=data_dir,
                 file_format='array_record').download_and_prepare(
                     download_config=tfds.download.DownloadConfig(
                         manual_dir=data_dir))
  return data_dir


class PixelClass:
  """A stand-in model: one-hot logits of the class its pixels encode."""

  def apply(self, variables, images, *, train=False):
    del variables, train
    value = jnp.round((images[:, 0, 0, 0] + 1) * 127.5 / 30).astype(jnp.int32)
    return jax.nn.one_hot(value, CLASSES)


def real_config(data_dir):
  config = small_digits_config(dataset='imagenet2012_real',
                               tfds_data_dir=data_dir, eval_pp='resize',
                               train_split='validation',
                               eval_split='validation', eval_batch_size=8)
  return config


def test_real_batches_hold_each_examples_set_as_multi_hot(real_data):
  batches = list(input_pipeline.eval_iterator(real_config(real_data)))
  real = np.concatenate([b['real'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  assert real.shape == (24, CLASSES) and mask.sum() == NUM_EXAMPLES
  found = sorted(tuple(np.flatnonzero(r)) for r in real[mask == 1])
  assert found == sorted(tuple(sorted(real_labels(i)))
                         for i in range(NUM_EXAMPLES))
  assert not real[mask == 0].any()


@pytest.mark.parametrize('hosts', [1, 2])
def test_real_top1_counts_every_labelled_example_once_over_hosts(
    real_data, hosts):
  config = real_config(real_data)
  step = jax.jit(steps.make_eval_step(PixelClass(), num_classes=CLASSES))
  totals = [step(None, batch) for host in range(hosts)
            for batch in input_pipeline.eval_iterator(
                config, process_index=host, process_count=hosts)]
  total = lambda key: sum(float(t[key]) for t in totals)
  top1, real, labelled = expected_scores()
  assert total('count') == NUM_EXAMPLES
  assert total('real_count') == labelled
  assert total('correct') / NUM_EXAMPLES == pytest.approx(top1)
  assert total('real_correct') / labelled == pytest.approx(real)
  assert real != top1  # The stand-in tells the two apart.


def test_scoring_reports_real_top1_beside_top1(real_data):
  config = real_config(real_data)
  mesh = jit_steps.make_mesh(jax.devices()[:1])
  _, sharding = jit_steps.shardings(mesh)
  step = jax.jit(steps.make_eval_step(PixelClass(), num_classes=CLASSES))
  results = scoring.evaluate(step, None, config, sharding)
  top1, real, labelled = expected_scores()
  assert results['eval_accuracy'] == pytest.approx(top1)
  assert results['eval_real_accuracy'] == pytest.approx(real)
  assert results['eval_real_examples'] == labelled
  summary = evaluate.format_summary({
      **results, 'dataset': 'imagenet2012_real', 'split': 'validation',
      'class_names': [], 'confusion_matrix': np.zeros((CLASSES, 1))})
  assert f'ReaL top-1 {real:.2%} ({labelled} with ReaL labels)' in summary


@pytest.mark.slow
def test_a_run_with_real_dataset_scores_real_every_real_every_steps(
    real_data, tmp_path):
  config = real_config(real_data)
  config.update(real_dataset='imagenet2012_real', real_every=2,
                total_steps=3, eval_every=1, checkpoint_every=3,
                batch_size=8, cache=False)
  workdir = str(tmp_path / 'run')
  final = trainer.train_and_evaluate(config, workdir)
  assert final['eval_real_examples'] == expected_scores()[2]
  assert 0 <= final['eval_real_accuracy'] <= 1
  # The ReaL evaluator's records (the run's own eval, on this same data,
  # reports ReaL too, with its loss).
  assert [r['step'] for r in read_jsonl(workdir)
          if 'eval_real_accuracy' in r and 'eval_loss' not in r] == [2, 3]


def test_real_labels_of_other_classes_fail_before_training(real_data,
                                                          tmp_path):
  config = small_digits_config(real_dataset='imagenet2012_real',
                               tfds_data_dir=real_data)
  with pytest.raises(errors.UserError, match="real_dataset 'imagenet2012_real"
                     "' has 1000 classes and digits 10"):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_evaluate_picks_validation_where_a_dataset_has_no_test_split(
    real_data):
  assert evaluation.default_split(real_config(real_data)) == 'validation'
  assert evaluation.default_split(small_digits_config()) == 'test'


def test_a_run_of_other_data_evaluates_on_imagenet2012_real(real_data,
                                                            digits_run):
  """The run's own train split ('train') is no split of imagenet2012_real:
  only the evaluated split counts; then the class counts differ."""
  loaded, config = evaluation.model_and_config(
      workdir=digits_run[0], dataset='imagenet2012_real',
      values={'tfds_data_dir': real_data})
  assert (config.train_split, config.eval_split) == ('validation',
                                                     'validation')
  assert input_pipeline.get_info(config).num_eval_examples == NUM_EXAMPLES
  with pytest.raises(errors.UserError, match='The model has 10 classes and '
                     'imagenet2012_real has 1000'):
    evaluation.run(loaded, config)
