"""Tests for mixer_jax.training.steps: mixup, accumulation, eval sums, skipped steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixer_jax.training import steps
from mixer_jax.training import train_state


def test_mixup_keeps_the_larger_share_and_label_mass():
  images = np.arange(4, dtype=np.float32).reshape(4, 1)
  labels = np.eye(4, dtype=np.float32)
  mixed_images, mixed_labels = steps.mixup(jax.random.PRNGKey(0), images,
                                           labels, alpha=0.5)
  ratio = float(mixed_labels[1, 1])
  assert 0.5 <= ratio <= 1.0
  np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(mixed_labels[1, 0], 1.0 - ratio, rtol=1e-6)
  np.testing.assert_allclose(mixed_images[1, 0], ratio * 1 + (1 - ratio) * 0,
                             rtol=1e-6)


class FixedLogits:
  """A stand-in model whose logits are its parameters."""

  def apply(self, variables, images, *, train):
    del images, train
    return variables['params']


def test_eval_step_sums_top1_top5_and_loss_over_real_examples_only():
  rng = np.random.RandomState(0)
  logits = rng.randn(16, 20).astype(np.float32)
  labels = rng.randint(0, 20, 16).astype(np.int32)
  mask = np.ones(16, np.float32)
  mask[12:] = 0  # Padding.
  sums = steps.make_eval_step(FixedLogits(), num_classes=20)(
      logits, {'image': np.zeros((16, 1)), 'label': labels, 'mask': mask})
  real = slice(0, 12)
  order = np.argsort(-logits[real], axis=-1)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert float(sums['count']) == 12
  assert float(sums['correct']) == np.sum(order[:, 0] == labels[real])
  assert float(sums['correct_top5']) == np.sum(
      (order[:, :5] == labels[real, None]).any(-1))
  np.testing.assert_allclose(
      sums['loss'], -log_p[np.arange(12), labels[real]].sum(), rtol=1e-5)
  ten = steps.make_eval_step(FixedLogits(), num_classes=10)(
      logits[:, :10], {'image': np.zeros((16, 1)), 'label': labels % 10,
                       'mask': mask})
  assert 'correct_top5' not in ten


def test_tied_logits_score_at_chance_not_100_percent():
  labels = np.arange(20, dtype=np.int32) % 10
  sums = steps.make_eval_step(FixedLogits(), num_classes=10)(
      np.zeros((20, 10), np.float32),
      {'image': np.zeros((20, 1)), 'label': labels, 'mask': np.ones(20)})
  assert float(sums['correct']) == 2  # Arg-max is class 0: 2 of 20 labels.


# ReaL: (logits' arg-max, the example's real labels, mask) -> (correct, counted).
REAL_CASES = [
    (2, [2], 1, (1, 1)),  # The arg-max is the one real label.
    (2, [0, 2, 3], 1, (1, 1)),  # One of several.
    (1, [0, 2, 3], 1, (0, 1)),  # None of several.
    (1, [], 1, (0, 0)),  # No real label: left out, not counted wrong.
    (2, [2], 0, (0, 0)),  # Padding.
]


@pytest.mark.parametrize('top1, labels, mask, expected', REAL_CASES)
def test_real_top1_counts_an_argmax_in_the_set_and_leaves_out_unlabelled(
    top1, labels, mask, expected):
  logits = np.zeros((1, 5), np.float32)
  logits[0, top1] = 1.0
  real = np.zeros((1, 5), np.float32)
  real[0, labels] = 1.0
  sums = steps.make_eval_step(FixedLogits(), num_classes=5)(
      logits, {'image': np.zeros((1, 1)), 'label': np.zeros(1, np.int32),
               'mask': np.full(1, mask, np.float32), 'real': real})
  assert (float(sums['real_correct']), float(sums['real_count'])) == expected


class Scaled:
  """A one-parameter model: logits = w * images."""

  def apply(self, variables, images, *, train, rngs=None):
    del train, rngs
    return variables['params']['w'] * images


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_a_non_finite_step_changes_nothing_but_the_step(bad):
  tx = optax.adam(0.1)
  params = {'w': np.ones((), np.float32)}
  state = train_state.TrainState.create(params=params, tx=tx,
                                        rng=jax.random.PRNGKey(0))
  step = jax.jit(steps.make_train_step(Scaled(), tx, num_classes=2))
  good = {'image': np.array([[1., -1.]], np.float32), 'label': np.array([0])}
  state, metrics = step(state, good)
  assert bool(metrics['finite']) and float(state.params['w']) != 1.0
  before = jax.device_get(state)
  state, metrics = step(state, dict(good, image=np.array([[bad, 0.]],
                                                         np.float32)))
  assert not bool(metrics['finite'])
  assert int(state.step) == 2
  jax.tree.map(np.testing.assert_array_equal,
               (before.params, before.opt_state),
               jax.device_get((state.params, state.opt_state)))


def regression_loss_and_grad(params, batch, rng):
  """Mean squared error of a linear model, plus an rng-dependent term."""

  def loss_fn(params):
    pred = batch['x'] @ params['w']
    noise = jax.random.uniform(rng) * 0.0  # Uses the rng; changes nothing.
    return jnp.mean((pred - batch['y'])**2) + noise, jnp.mean(pred)

  return jax.value_and_grad(loss_fn, has_aux=True)(params)


@pytest.mark.parametrize('accum_steps', [1, 2, 4])
def test_accumulated_gradient_equals_the_full_batch_gradient(accum_steps):
  rng = np.random.RandomState(0)
  batch = {'x': jnp.asarray(rng.randn(16, 3), jnp.float32),
           'y': jnp.asarray(rng.randn(16), jnp.float32)}
  params = {'w': jnp.asarray(rng.randn(3), jnp.float32)}
  (loss, aux), grads = jax.jit(
      lambda p, b: steps.accumulate_gradient(
          regression_loss_and_grad, p, b, jax.random.PRNGKey(0),
          accum_steps=accum_steps))(params, batch)
  (want_loss, want_aux), want_grads = regression_loss_and_grad(
      params, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(aux, want_aux, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads['w'], want_grads['w'], rtol=1e-5)


def test_micro_batch_i_takes_examples_i_plus_multiples_of_accum_steps():
  # Loss = the largest index in the micro-batch: interleaved micro-batches
  # [0, 2, 4, 6] and [1, 3, 5, 7] give a mean of 6.5 (contiguous ones: 5).
  def max_index(params, batch, rng):
    del rng
    return (jnp.max(batch['i']).astype(jnp.float32), None), params

  (loss, _), _ = steps.accumulate_gradient(
      max_index, {'w': jnp.zeros(())}, {'i': jnp.arange(8)},
      jax.random.PRNGKey(0), accum_steps=2)
  assert float(loss) == 6.5


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_train_step_loss_and_grad_norm_are_the_smoothed_cross_entropys(
    smoothing):
  tx = optax.sgd(0.0)
  w = np.float32(0.7)
  state = train_state.TrainState.create(params={'w': w}, tx=tx,
                                        rng=jax.random.PRNGKey(0))
  images = np.array([[1., -1., 0.5], [0., 2., -1.]], np.float32)
  labels = np.array([0, 2])
  step = steps.make_train_step(Scaled(), tx, num_classes=3,
                               label_smoothing=smoothing)
  _, metrics = step(state, {'image': images, 'label': labels})

  def loss(w):  # By hand: targets 1 - s + s/3 on the label, s/3 elsewhere.
    targets = np.eye(3)[labels] * (1 - smoothing) + smoothing / 3
    return -np.mean(np.sum(targets * jax.nn.log_softmax(w * images), -1))

  np.testing.assert_allclose(metrics['loss'], loss(w), rtol=1e-6)
  np.testing.assert_allclose(metrics['grad_norm'], abs(jax.grad(loss)(w)),
                             rtol=1e-5)
