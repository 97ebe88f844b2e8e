"""Tests for mixer_jax.divergence: skipped steps, the stop, the saved state."""

import os

import jax
import numpy as np
import pytest

from mixer_jax import checkpoint
from mixer_jax import divergence
from mixer_jax import optim
from mixer_jax import train
from mixer_jax import train_state
from tests.conftest import small_digits_config


@pytest.mark.parametrize('flags,limit,raises_at', [
    ([1, 0, 0, 1, 0, 0], 3, None),  # Never three in a row.
    ([1, 0, 0, 0, 1], 3, 4),
    ([0, 0], 2, 2),
    ([0, 1, 0, 1], 1, 1),
])
def test_stops_after_limit_non_finite_steps_in_a_row(flags, limit, raises_at):
  counter = divergence.NonFiniteSteps(limit=limit, lr=0.1)
  for step, finite in enumerate(flags, start=1):
    counter.add(step, jax.numpy.asarray(bool(finite)))
  if raises_at is None:
    counter.check(last_checkpoint=None)
    assert counter.total == flags.count(0)
  else:
    with pytest.raises(divergence.Diverged,
                       match=f'not finite at steps {raises_at - limit + 1}-'
                       f'{raises_at} '):
      counter.check(last_checkpoint=None)


def test_all_finite():
  assert divergence.all_finite({'a': np.ones(3), 'b': [np.zeros(2)]})
  assert not divergence.all_finite({'a': np.ones(3), 'b': [np.array([np.inf])]})


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / 'run')
  config = small_digits_config(total_steps=60, checkpoint_every=100,
                               eval_every=100, progress_every=4)
  train.train_and_evaluate(config, workdir, stop_at_step=4)
  config.lr = 1e6
  with pytest.raises(divergence.Diverged, match=r'Lower --config.lr \(now '
                     r'1e\+06\) and run the same command to resume from the '
                     'checkpoint of step 4'):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'lock'))
  last = max(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  # The last checkpoint holds finite values, and training goes on from it
  # with a sane learning rate.
  model = train.create_model(config, num_classes=10)
  tx, _ = optim.create_optimizer(config)
  manager = train_state.Checkpoints(workdir, config=config, max_to_keep=9)
  state, step = train.restore_or_init(
      config, model, tx, manager,
      jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  manager.close()
  assert step == last and divergence.all_finite(state)
  config.lr = 3e-3
  final = train.train_and_evaluate(config, workdir)
  assert final['step'] == 60 and np.isfinite(final['eval_loss'])
  assert divergence.all_finite(checkpoint.load(os.path.join(workdir,
                                                            'params.npz')))
