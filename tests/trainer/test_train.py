"""Tests for mixer_jax.train: the loop, data parallelism, eval, resume."""

import io
import json
import os
import types

import jax
import numpy as np
import pytest

from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax import storage
from mixer_jax import train
from mixer_jax import trainer
from mixer_jax.data import input_pipeline
from mixer_jax.model import model_config
from mixer_jax.model import published
from mixer_jax.trainer import loop
from mixer_jax.trainer import setup
from mixer_jax.training import jit_steps
from mixer_jax.training import train_state
from tests.conftest import ROOT
from tests.conftest import read_jsonl
from tests.conftest import small_digits_config
from tests.conftest import synthetic_cifar10_manual_dir


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """One short run of the offline default, shared by the tests below."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = small_digits_config(total_steps=100, eval_every=50,
                               progress_every=10, checkpoint_every=50)
  return config, workdir, trainer.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_loss_goes_down_and_accuracy_is_sane(trained):
  _, workdir, final = trained
  losses = [r['train_loss'] for r in read_jsonl(workdir) if 'train_loss' in r]
  assert len(losses) == 10
  assert losses[-1] < 0.7 * losses[0]
  assert final['step'] == 100 and final['eval_accuracy'] > 0.5


def test_workdir_has_checkpoints_logs_and_metrics(trained):
  _, workdir, final = trained
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    assert json.load(f) == pytest.approx(final)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['100',
                                                                      '50']
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(os.path.join(workdir, 'tensorboard')))
  records = read_jsonl(workdir)
  assert {'learning_rate', 'img_per_s', 'train_loss'} <= set(records[0])
  assert [r['step'] for r in records if 'eval_accuracy' in r] == [50, 100]
  assert set(published.load(os.path.join(workdir, 'params.npz'))) >= {
      'stem', 'head', 'MixerBlock_1'}


def test_eval_scores_every_example_exactly_once(trained):
  """The reported accuracy equals a plain numpy pass over the 360 images."""
  config, workdir, final = trained
  assert final['eval_examples'] == 360
  info = input_pipeline.get_info(config)
  model = model_config.model_from_config(config, num_classes=info.num_classes)
  params = published.load(os.path.join(workdir, 'params.npz'))
  correct, losses, seen = 0, [], 0
  for batch in input_pipeline.eval_iterator(config):
    logits = np.asarray(model.apply({'params': params}, batch['image']))
    real = batch['mask'] == 1
    seen += real.sum()
    correct += (logits.argmax(-1) == batch['label'])[real].sum()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    losses += list(-log_p[real, batch['label'][real]])
  assert seen == 360
  assert final['eval_accuracy'] == pytest.approx(correct / 360, abs=1e-6)
  assert final['eval_loss'] == pytest.approx(np.mean(losses), rel=1e-4)


def test_a_finished_run_resumes_to_the_same_result(trained):
  config, workdir, final = trained
  again = trainer.train_and_evaluate(config, workdir)
  assert again['step'] == 100
  assert again['eval_accuracy'] == final['eval_accuracy']


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_parameters(tmp_path):
  assert jax.device_count() == 8
  config = small_digits_config(total_steps=4, model={'dropout_rate': 0.1})
  one = str(tmp_path / 'one')
  eight = str(tmp_path / 'eight')
  trainer.train_and_evaluate(config, one, devices=jax.devices()[:1])
  trainer.train_and_evaluate(config, eight)
  a = published.load(os.path.join(one, 'params.npz'))
  b = published.load(os.path.join(eight, 'params.npz'))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=2e-5, rtol=1e-4)
  # Training moved the parameters: the comparison is not of two inits.
  init = setup.initial_params(
      config, model_config.model_from_config(config, num_classes=10),
      rng=jax.random.split(jax.random.PRNGKey(config.seed))[0])
  assert max(np.abs(x - y).max() for x, y in zip(
      jax.tree.leaves(a), jax.tree.leaves(init))) > 1e-3


@pytest.mark.slow
def test_gradient_accumulation_matches_the_full_batch(tmp_path):
  config = small_digits_config(total_steps=3)
  trainer.train_and_evaluate(config, str(tmp_path / 'full'))
  config.accum_steps = 4
  trainer.train_and_evaluate(config, str(tmp_path / 'accum'))
  a = published.load(str(tmp_path / 'full' / 'params.npz'))
  b = published.load(str(tmp_path / 'accum' / 'params.npz'))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=2e-5, rtol=1e-4)


def test_a_workdir_of_another_model_is_refused_and_kept(trained, tmp_path):
  config, workdir, _ = trained
  before = {p: os.path.getmtime(os.path.join(workdir, p))
            for p in os.listdir(workdir)}
  other = small_digits_config(total_steps=100)
  other.model.hidden_dim = 32
  with pytest.raises(train_state.WorkdirError,
                     match='holds a run of another model.*hidden_dim'):
    trainer.train_and_evaluate(other, workdir)
  after = {p: os.path.getmtime(os.path.join(workdir, p))
           for p in os.listdir(workdir)}
  assert before == after


@pytest.mark.parametrize('overrides,message', [
    (dict(batch_size=60), 'batch_size 60 is not divisible by the 8 devices'),
    (dict(eval_batch_size=20), 'eval_batch_size 20 is not divisible'),
    (dict(accum_steps=16), 'not divisible into accum_steps=16'),
])
def test_bad_batch_sizes(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(small_digits_config(**overrides), str(tmp_path))
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('flag,expected', [
    ('configs/b32.py', 'workdirs/b32'),
    ('configs/b16.py:cifar100', 'workdirs/b16_cifar100'),
    ('/abs/path/my_recipe.py:a=1,b/2', 'workdirs/my_recipe_a_1_b_2'),
])
def test_default_workdir(flag, expected):
  assert train.default_workdir(flag) == expected


@pytest.mark.slow
def test_cifar10_from_scratch_recipe_runs_on_the_real_tfds_loader(
    tmp_path, monkeypatch):
  """configs/ti4_cifar10.py through tfds's own cifar10 builder, offline."""
  manual_dir, _ = synthetic_cifar10_manual_dir(
      tmp_path, monkeypatch, per_file=4, test=5)
  config = recipes.load_file(str(ROOT / 'configs' / 'ti4_cifar10.py'))
  config.update(dict(
      tfds_data_dir=str(tmp_path / 'data'), tfds_manual_dir=str(manual_dir),
      train_split='train', batch_size=16, eval_batch_size=8, total_steps=3,
      warmup_steps=1, progress_every=1, eval_every=3, checkpoint_every=3,
      model={'num_blocks': 1}))
  workdir = str(tmp_path / 'run')
  final = trainer.train_and_evaluate(config, workdir)
  # RandAugment, pad-and-crop, mixup, label smoothing and stochastic depth
  # all ran; every one of the 5 test images was scored once.
  assert final['step'] == 3 and final['eval_examples'] == 5
  assert all(np.isfinite(r['train_loss']) for r in read_jsonl(workdir)
             if 'train_loss' in r)


def test_a_workdir_is_not_resumed_from_another_checkpoint(trained):
  config, workdir, _ = trained
  other = config.copy_and_resolve_references()
  other.pretrained = os.path.join(workdir, 'params.npz')
  with pytest.raises(train_state.WorkdirError, match='pretrained'):
    trainer.train_and_evaluate(other, workdir)


@pytest.mark.slow
def test_auto_accum_steps_trains_as_the_accumulation_it_picks(
    tmp_path, monkeypatch, caplog):
  """accum_steps=0: the run asks jit_steps for the accumulation that fits,
  logs it and trains exactly as with that setting."""
  monkeypatch.setattr(jit_steps, 'auto_accum_steps',
                      lambda *a, **k: (2, 'the smallest that fits'))
  short = dict(total_steps=2, eval_every=2, checkpoint_every=2)
  caplog.set_level('INFO')
  caplog.set_level('INFO', logger='absl')  # Whatever an earlier test set.
  auto = trainer.train_and_evaluate(
      small_digits_config(accum_steps=0, **short), str(tmp_path / 'auto'))
  assert 'accum_steps=0 (auto): 2, the smallest that fits' in caplog.text
  explicit = trainer.train_and_evaluate(
      small_digits_config(accum_steps=2, **short), str(tmp_path / 'two'))
  assert auto['eval_loss'] == explicit['eval_loss']


def test_a_full_disk_at_the_final_write_is_one_error_and_leaves_no_partial(
    tmp_path, monkeypatch):
  class FullDisk(io.FileIO):
    def write(self, data):
      super().write(data[:len(data) // 2])
      raise OSError(28, os.strerror(28))
  monkeypatch.setattr(storage, 'open', FullDisk, raising=False)
  run = types.SimpleNamespace(
      workdir=str(tmp_path), start_step=0, last_step=8, results={},
      train_metrics={}, diverged=types.SimpleNamespace(total=0),
      state=types.SimpleNamespace(step=jax.numpy.asarray(8),
                                  params={'w': jax.numpy.ones(3)}))
  with pytest.raises(errors.DiskFullError,
                     match='final params.npz and final_metrics.json of step '
                     '8; its checkpoint is saved'):
    loop.finish(run, seconds=1.0)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('step, every, last, expected', [
    (100, 100, 1000, True), (150, 100, 1000, False), (1000, 300, 1000, True),
    (7, 0, 7, False)])
def test_itstime(step, every, last, expected):
  assert loop.itstime(step, every, last=last) == expected


@pytest.mark.parametrize('streak, final, expected', [
    (0, False, True), (3, False, False), (3, True, True), (0, True, True)])
def test_save_policy_skips_diverging_steps_but_keeps_the_last(
    streak, final, expected):
  assert loop.save_policy(100, streak=streak, final=final) == expected
