"""Tests for mixer_jax.training.divergence: skipped steps, the stop, the saved state."""

import os
import re

import jax
import numpy as np
import pytest

from mixer_jax import recipes
from mixer_jax import trainer
from mixer_jax.model import published
from mixer_jax.training import divergence
from tests.conftest import DIGITS_RUN
from tests.conftest import read_jsonl
from tests.conftest import small_digits_config


@pytest.mark.parametrize('flags,losses,limit,raises_at', [
    ([1, 0, 0, 1, 0, 0], [1] * 6, 3, None),  # Never three in a row.
    ([1, 0, 0, 0, 1], [1] * 5, 3, 4),
    ([0, 0], [1, 1], 2, 2),
    ([0, 1, 0, 1], [1] * 4, 1, 1),
    ([1, 1, 1, 1], [1, 50, 1e12, 24], 3, 4),  # Exploded: above 23.03.
    ([1, 1, 1, 1], [1, 50, 20, 1e12], 2, None),  # 20 is healthy.
    ([1, 0, 1, 1], [1, 1, 99, 99], 3, 4),  # Both kinds count.
])
def test_stops_after_limit_diverged_steps_in_a_row(flags, losses, limit,
                                                   raises_at):
  counter = divergence.DivergedSteps(
      limit=limit, max_loss=divergence.max_loss(factor=10, num_classes=10))
  for step, (finite, loss) in enumerate(zip(flags, losses), start=1):
    counter.add(step, jax.numpy.asarray(bool(finite)),
                jax.numpy.asarray(loss, jax.numpy.float32))
  if raises_at is None:
    counter.check()
    assert counter.total == sum(not f or l > 23.03
                                for f, l in zip(flags, losses))
  else:
    with pytest.raises(divergence.Diverged,
                       match=f'at steps {raises_at - limit + 1}-'
                       f'{raises_at} ') as e:
      counter.check()
    assert e.value.first_step == raises_at - limit + 1


@pytest.mark.parametrize('factor,num_classes,expected', [
    (10, 10, 10 * np.log(10)), (2, 1000, 2 * np.log(1000)), (0, 10, np.inf)])
def test_max_loss_is_a_multiple_of_a_fresh_heads_loss(factor, num_classes,
                                                     expected):
  assert divergence.max_loss(factor=factor,
                             num_classes=num_classes) == pytest.approx(expected)


def test_all_finite():
  assert divergence.all_finite({'a': np.ones(3), 'b': [np.zeros(2)]})
  assert not divergence.all_finite({'a': np.ones(3), 'b': [np.array([np.inf])]})


@pytest.mark.slow
def test_an_exploding_run_keeps_no_poisoned_checkpoint_and_reruns_normally(
    tmp_path, digits_run):
  """lr=1e6: the loss explodes while finite. The run stops early, sets the
  checkpoint saved just before aside, and a rerun with a sane lr trains as
  if the diverged run had never been."""
  workdir = str(tmp_path / 'run')
  config = small_digits_config(**DIGITS_RUN)
  config.lr, config.checkpoint_every = 1e6, 2
  with pytest.raises(divergence.Diverged, match=(
      r'at steps 3-12 .* The checkpoint of step 2 holds diverged parameters;'
      r' it was moved to .*checkpoints_diverged\. Lower --config.lr \(now '
      r'1e\+06\) and run the same command to start again from step 0 \(no '
      r'healthy checkpoint exists\)\.')):
    trainer.train_and_evaluate(config, workdir)
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == []
  assert os.listdir(os.path.join(workdir, 'checkpoints_diverged')) == ['2']
  final = trainer.train_and_evaluate(small_digits_config(**DIGITS_RUN),
                                   workdir)
  assert final['eval_accuracy'] == digits_run[1]['eval_accuracy']
  jax.tree.map(np.testing.assert_array_equal,
               published.load(os.path.join(digits_run[0], 'params.npz')),
               published.load(os.path.join(workdir, 'params.npz')))


@pytest.mark.slow
def test_a_diverging_run_resumes_from_its_last_healthy_checkpoint(tmp_path):
  workdir = str(tmp_path / 'run')
  config = small_digits_config(total_steps=20, checkpoint_every=100,
                               eval_every=100, progress_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at_step=4)
  config.lr = 1e6
  with pytest.raises(divergence.Diverged, match=r'Lower --config.lr \(now '
                     r'1e\+06\) and run the same command to resume from the '
                     'checkpoint of step 4, the last healthy one'):
    trainer.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'lock'))
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['4']
  config.lr = 3e-3
  final = trainer.train_and_evaluate(config, workdir)
  assert final['step'] == 20 and np.isfinite(final['eval_loss'])
  assert divergence.all_finite(published.load(os.path.join(workdir,
                                                            'params.npz')))


@pytest.mark.parametrize('results, raises', [
    ({'eval_loss': 0.5}, False), ({'eval_loss': 2.878}, False),
    ({'eval_loss': 3.64, 'eval_accuracy': 0.1}, True),
    ({'eval_loss': float('nan')}, True), ({'real_accuracy': 0.5}, False)])
def test_an_eval_worse_than_a_fresh_head_diverged(results, raises):
  cut = divergence.max_loss(factor=1.25, num_classes=10)  # 2.878
  if not raises:
    divergence.check_eval(30, results, max_eval_loss=cut)
    return
  with pytest.raises(divergence.Diverged, match='the eval loss at step 30 '
                     'was .*, above 2.878') as e:
    divergence.check_eval(30, results, max_eval_loss=cut)
  # The checkpoint of step 30 itself is the first unhealthy one.
  assert divergence.first_unhealthy_checkpoint(e.value.first_step) == 30


def test_a_loss_that_stays_above_a_fresh_heads_diverged():
  """Finite, below the explosion cut-off, but above the eval cut-off for
  STUCK_FACTOR x limit steps in a row; a step below resets the count."""
  counter = divergence.DivergedSteps(limit=2, max_loss=100.0, stuck_loss=3.0)
  losses = [5.0] * 19 + [1.0] + [5.0] * 20
  for step, loss in enumerate(losses, start=1):
    counter.add(step, jax.numpy.asarray(True),
                jax.numpy.asarray(loss, jax.numpy.float32))
  with pytest.raises(divergence.Diverged, match='stayed above 3 .* steps '
                     '21-40 ') as e:
    counter.check()
  assert e.value.first_step == 21 and counter.total == 0


@pytest.mark.slow
def test_the_digits_recipe_at_lr_1_ends_as_diverged(tmp_path):
  """Its loss never explodes past 10 x ln 10 but stays far above ln 10: it
  used to finish with chance accuracy and exit 0."""
  config = recipes.digits()
  config.lr = 1.0
  with pytest.raises(divergence.Diverged, match='the loss stayed above 2.878'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))


@pytest.mark.slow
def test_the_advice_never_names_a_checkpoint_whose_eval_diverged(tmp_path):
  """20 healthy steps, then lr=3, an eval and a checkpoint every 10 steps:
  the first bad eval sets its checkpoint aside, and the checkpoint named
  last healthy is the one before, whose eval was under the cut-off."""
  workdir = tmp_path / 'run'
  config = recipes.digits()
  config.update(dict(eval_every=10, checkpoint_every=10, progress_every=10,
                     total_steps=100))
  trainer.train_and_evaluate(config, str(workdir), stop_at_step=20)
  config.lr = 3.0
  with pytest.raises(divergence.Diverged) as e:
    trainer.train_and_evaluate(config, str(workdir))
  evals = {r['step']: r['eval_loss'] for r in read_jsonl(workdir)
           if 'eval_loss' in r}
  cut = divergence.max_loss(factor=config.max_eval_loss_factor,
                            num_classes=10)
  named = int(re.search(r'checkpoint of step (\d+), the last healthy',
                        str(e.value)).group(1))
  assert named >= 20 and evals[named] <= cut
  assert max(int(s) for s in os.listdir(workdir / 'checkpoints')) == named
  aside = workdir / 'checkpoints_diverged'
  for step in os.listdir(aside) if aside.exists() else []:
    assert evals.get(int(step), np.inf) > cut
