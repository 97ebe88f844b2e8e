"""Tests for mixer_jax.training.optim: schedules, the optax chain, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer_jax import recipes
from mixer_jax.training import optim


def vit_jax_schedule(step, *, total_steps, base, decay_type, warmup_steps,
                     linear_end=1e-5):
  """vit_jax's create_learning_rate_schedule, written out as the reference."""
  progress = np.clip((step - warmup_steps) / (total_steps - warmup_steps), 0, 1)
  if decay_type == 'linear':
    lr = linear_end + (base - linear_end) * (1.0 - progress)
  else:
    lr = base * 0.5 * (1.0 + np.cos(np.pi * progress))
  return lr * min(1.0, step / warmup_steps) if warmup_steps else lr


@pytest.mark.parametrize('decay_type', ['cosine', 'linear'])
@pytest.mark.parametrize('warmup_steps', [0, 50])
def test_schedule_matches_vit_jax(decay_type, warmup_steps):
  kwargs = dict(total_steps=300, base=0.03, decay_type=decay_type,
                warmup_steps=warmup_steps)
  schedule = optim.create_learning_rate_schedule(**kwargs)
  steps = np.arange(0, 320)
  got = np.array([schedule(s) for s in steps])
  want = np.array([vit_jax_schedule(s, **kwargs) for s in steps])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


def test_schedule_landmarks():
  schedule = optim.create_learning_rate_schedule(
      total_steps=1000, base=1.0, warmup_steps=100, decay_type='cosine')
  assert [round(float(schedule(s)), 6) for s in (0, 50, 100, 550, 1000)] == [
      0.0, 0.5, 1.0, 0.5, 0.0]


def test_unknown_decay_type():
  with pytest.raises(ValueError, match="Unknown decay_type 'step'"):
    optim.create_learning_rate_schedule(total_steps=10, base=1.0,
                                        warmup_steps=0, decay_type='step')


def make_config(**overrides):
  config = recipes.get_config()
  config.update(dict(total_steps=100, warmup_steps=0, decay_type='linear',
                     linear_end=0.1, lr=0.1, **overrides))
  return config


PARAMS = {'Dense_0': {'kernel': jnp.full((2, 2), 2.0), 'bias': jnp.ones(2)},
          'LayerNorm_0': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}


def test_kernel_mask():
  mask = optim.kernel_mask(PARAMS)
  assert mask == {'Dense_0': {'kernel': True, 'bias': False},
                  'LayerNorm_0': {'scale': False, 'bias': False}}


def first_updates(config, grads):
  tx, _ = optim.create_optimizer(config)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  return updates


def test_sgd_first_step_is_clipped_gradient_times_lr():
  grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), PARAMS)
  updates = first_updates(make_config(grad_clip_norm=1.0), grads)
  # Global norm of ten 3s is sqrt(90): clipped to norm 1, times -lr.
  np.testing.assert_allclose(updates['Dense_0']['kernel'],
                             -0.1 * 3 / np.sqrt(90), rtol=1e-6)
  unclipped = first_updates(make_config(grad_clip_norm=None), grads)
  np.testing.assert_allclose(unclipped['Dense_0']['kernel'], -0.3, rtol=1e-6)


def test_sgd_momentum_accumulates():
  config = make_config(grad_clip_norm=None, momentum=0.9)
  tx, _ = optim.create_optimizer(config)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  state = tx.init(PARAMS)
  _, state = tx.update(grads, state, PARAMS)
  updates, _ = tx.update(grads, state, PARAMS)
  # make_config's schedule is a constant 0.1; the trace is 1 + 0.9.
  np.testing.assert_allclose(updates['Dense_0']['bias'], -0.1 * 1.9,
                             rtol=1e-6)


@pytest.mark.parametrize('optimizer', ['sgd', 'adamw'])
def test_weight_decay_is_decoupled_lr_scaled_and_only_on_kernels(optimizer):
  config = make_config(optimizer=optimizer, weight_decay=0.5,
                       grad_clip_norm=None)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  updates = first_updates(config, zeros)
  np.testing.assert_allclose(updates['Dense_0']['kernel'], -0.1 * 0.5 * 2.0,
                             rtol=1e-6)
  for leaf in (updates['Dense_0']['bias'], updates['LayerNorm_0']['scale']):
    np.testing.assert_array_equal(leaf, 0.0)


def test_momentum_dtype():
  tx, _ = optim.create_optimizer(make_config(momentum_dtype='bfloat16'))
  momentum = tx.init(PARAMS)[1].trace
  assert {x.dtype for x in jax.tree.leaves(momentum)} == {jnp.dtype('bfloat16')}


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="Unknown optimizer 'lamb'"):
    optim.create_optimizer(make_config(optimizer='lamb'))
