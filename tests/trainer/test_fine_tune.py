"""Fine-tuning end to end on the offline path: the recipes, every option."""

import json
import os

import jax
import numpy as np
import pytest

from mixer_jax import recipes
from mixer_jax import trainer
from mixer_jax.model import models
from mixer_jax.model import published
from tests import test_configs

# Each test here trains, runs a command or several processes.
pytestmark = pytest.mark.slow


def digits_overrides(config, **overrides):
  """Points a recipe at the offline digits data, small enough for a CPU."""
  config.dataset = 'digits'
  config.train_split = 'train'
  config.eval_split = 'test'
  config.batch_size = 8
  config.eval_batch_size = 64
  config.warmup_steps = 1
  config.progress_every = 1
  config.eval_every = 1000
  config.update(overrides)
  return config


def losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['train_loss'] for r in map(json.loads, f) if 'train_loss' in r]


def publish(path, variant, *, image_size, seed=0, **overrides):
  """Writes a random 1000-class checkpoint in the published layout."""
  model = models.create_model(variant, num_classes=1000, **overrides)
  params = models.init_params(model, image_size=image_size,
                              rng=jax.random.PRNGKey(seed))
  params = jax.tree.map(np.asarray, params)
  params['head']['kernel'] = np.random.RandomState(seed).normal(
      size=params['head']['kernel'].shape).astype(np.float32)
  published.save(path, params)
  return str(path)


def test_a_fine_tune_recipe_runs_on_the_offline_path(tmp_path):
  """Every fine-tuning recipe is recipes.fine_tune(variant, checkpoint,
  dataset) and differs only in its model (test_configs checks each file's
  values): configs/s32.py from a published-layout checkpoint."""
  config = test_configs.load('configs/s32.py')
  patch = models.parse_variant(config.model.variant)[1]
  image_size = max(2 * patch, 16)
  config.pretrained = publish(tmp_path / 'published.npz',
                              config.model.variant, image_size=image_size,
                              num_blocks=1)
  config = digits_overrides(config, image_size=image_size, total_steps=2,
                            eval_split='test[:100]', model={'num_blocks': 1})
  final = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert final['step'] == 2 and final['eval_examples'] == 100
  assert all(np.isfinite(losses(str(tmp_path / 'run'))))
  # The body came from the checkpoint; the head is new (10 classes).
  tuned = published.load(tmp_path / 'run' / 'params.npz')
  assert tuned['head']['kernel'].shape[-1] == 10


@pytest.fixture(scope='module')
def pretrained_on_digits(tmp_path_factory):
  """A real pre-training run whose params.npz is in the published layout."""
  workdir = str(tmp_path_factory.mktemp('pretrain'))
  config = recipes.digits()
  # progress_every: the loop reads from the devices there, so at most 10
  # steps are dispatched ahead. With 50, XLA's CPU runtime (8 virtual
  # devices on 2 loaded cores) twice had only 4 of the 8 reach a step's
  # all-reduce within its 40 s limit, and aborted the worker.
  config.update(dict(total_steps=150, eval_every=150, checkpoint_every=150,
                     progress_every=10, batch_size=64, eval_batch_size=64))
  final = trainer.train_and_evaluate(config, workdir)
  assert final['eval_accuracy'] > 0.7
  return os.path.join(workdir, 'params.npz')


def fine_tune_config(**overrides):
  config = recipes.digits()
  config.update(dict(total_steps=20, warmup_steps=2, eval_every=20,
                     checkpoint_every=20, progress_every=5, batch_size=64,
                     eval_batch_size=64))
  config.update(overrides)
  return config


@pytest.fixture(name='tuned', scope='module')
def fixture_tuned(pretrained_on_digits, tmp_path_factory):
  """(workdir, final metrics) of 20 steps fine-tuned from the checkpoint."""
  workdir = str(tmp_path_factory.mktemp('tuned'))
  return workdir, trainer.train_and_evaluate(
      fine_tune_config(pretrained=pretrained_on_digits), workdir)


def test_fine_tuning_starts_from_the_checkpoint_and_learns(tuned, tmp_path):
  scratch = trainer.train_and_evaluate(fine_tune_config(), str(tmp_path / 's'))
  tuned_dir, tuned = tuned
  # A fresh zero head: the first loss is log(10); it goes down from there.
  history = losses(tuned_dir)
  assert history[-1] < 0.7 * history[0]
  # Pre-trained features make 20 steps worth far more than from scratch
  # (measured: about 0.8 against 0.2).
  assert tuned['eval_accuracy'] > 0.6
  assert tuned['eval_accuracy'] > scratch['eval_accuracy'] + 0.3


def test_the_fine_tuned_checkpoint_loads_for_evaluation(tuned, tmp_path):
  tuned_dir, tuned = tuned
  # Evaluation only: zero steps, the fine-tuned weights with their head.
  evaluated = trainer.train_and_evaluate(
      fine_tune_config(pretrained=os.path.join(tuned_dir, 'params.npz'),
                       keep_head=True, total_steps=0),
      str(tmp_path / 'eval'))
  assert evaluated['step'] == 0
  assert evaluated['eval_accuracy'] == pytest.approx(tuned['eval_accuracy'])
  assert evaluated['eval_loss'] == pytest.approx(tuned['eval_loss'], rel=1e-5)


def test_fine_tuning_at_twice_the_resolution(pretrained_on_digits, tmp_path):
  """8 px digits pre-training -> 16 px fine-tuning, block-diagonal init."""
  config = fine_tune_config(pretrained=pretrained_on_digits, image_size=16,
                            resolution_factor=2, keep_head=True,
                            total_steps=0)
  at_16 = trainer.train_and_evaluate(config, str(tmp_path / 'eval16'))
  # Each 8 px quarter of an upsampled digit is not a digit: the identity is
  # tested exactly in test_resolution.py; here the run works end to end and
  # the widened token MLPs are in the fine-tuned params.
  assert at_16['eval_examples'] == 360
  config.update(dict(total_steps=5, keep_head=False))
  trainer.train_and_evaluate(config, str(tmp_path / 'tune16'))
  tuned = published.load(tmp_path / 'tune16' / 'params.npz')
  assert tuned['MixerBlock_0']['token_mixing']['Dense_0']['kernel'].shape == (
      64, 32 * 4)


@pytest.mark.parametrize('overrides,error,message', [
    (dict(pretrained='gsam/Mixer-X_16'), FileNotFoundError,
     'neither a published name.*gsam/Mixer-B_32'),
    (dict(resolution_factor=0), ValueError,
     r'resolution_factor=0 \(must be an integer >= 1'),
    # 10 = 2 x 5, and 5 px does not divide into 2 px patches.
    (dict(image_size=10, resolution_factor=2), ValueError,
     'image_size 10 is not 2 times a pre-training size'),
    # The 8 px checkpoint in a 16 px model, without the factor set.
    (dict(image_size=16), published.CheckpointError,
     r'token_mixing/Dense_0/kernel.*\(64, 32\).*\(16, 32\).*'
     'set resolution_factor=2'),
    # Another variant's weights.
    (dict(model={'hidden_dim': 32}), published.CheckpointError,
     r"'stem/kernel'.*\(2, 2, 3, 32\).*\(2, 2, 3, 64\)"),
])
def test_bad_fine_tuning_input(pretrained_on_digits, tmp_path, overrides,
                               error, message):
  config = fine_tune_config(pretrained=pretrained_on_digits)
  config.update(overrides)
  with pytest.raises(error, match=message):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
