"""Tests for mixer_jax.kernel_grads: the same values, through the forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixer_jax import kernel_grads
from mixer_jax import models
from mixer_jax import steps
from mixer_jax import train_state


def small_mixer(**overrides):
  fields = dict(patch_size=4, num_classes=10, num_blocks=2, hidden_dim=16,
                tokens_mlp_dim=8, channels_mlp_dim=32)
  return models.MlpMixer(**{**fields, **overrides})


def perturbed(params):
  """Random nonzero head and biases, so that every gradient is nonzero."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return tree.unflatten([p + 0.1 * jax.random.normal(k, p.shape)
                         for p, k in zip(leaves, keys)])


def images(batch=4):
  return jnp.asarray(np.random.RandomState(0).randn(batch, 16, 16, 3),
                     jnp.float32)


def counted_forms(monkeypatch):
  """Replaces each form with one that counts its calls per (MLP, Dense)."""
  calls = {}

  def counting(key, form):
    def call(*args):
      calls[key] = calls.get(key, 0) + 1
      return form(*args)
    return call

  for key, form in list(kernel_grads.FORMS.items()):
    monkeypatch.setitem(kernel_grads.FORMS, key, counting(key, form))
  return calls


@pytest.mark.parametrize('dtype,rtol', [(jnp.float32, 1e-5),
                                        (jnp.bfloat16, 2e-2)])
def test_forms_give_the_same_loss_and_gradients(monkeypatch, dtype, rtol):
  model = small_mixer(dtype=dtype)
  x = images()
  params = perturbed(model.init(jax.random.PRNGKey(0), x)['params'])

  def loss(p):
    return jnp.sum(model.apply({'params': p}, x, train=True)**2)

  want_loss, want = jax.value_and_grad(loss)(params)
  calls = counted_forms(monkeypatch)
  with kernel_grads.forms():
    got_loss, got = jax.value_and_grad(loss)(params)
  # Every Mixer block's four Dense layers, and nothing else (stem, head).
  assert calls == {key: 2 for key in kernel_grads.FORMS}
  np.testing.assert_allclose(got_loss, want_loss, rtol=rtol)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    scale = float(jnp.max(jnp.abs(w.astype(jnp.float32))))
    assert scale > 0
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


def test_init_under_the_forms_is_the_plain_init():
  model = small_mixer()
  want = model.init(jax.random.PRNGKey(0), images())
  with kernel_grads.forms():
    got = model.init(jax.random.PRNGKey(0), images())
  jax.tree.map(np.testing.assert_array_equal, want, got)


def test_the_train_step_option_steps_like_the_plain_step(monkeypatch):
  model = small_mixer()
  tx = optax.sgd(0.1, momentum=0.9)
  batch = {'image': images(8), 'label': jnp.arange(8) % 10}
  params = perturbed(model.init(jax.random.PRNGKey(0),
                                batch['image'])['params'])
  states = {}
  calls = counted_forms(monkeypatch)
  for option in (False, True):
    step = jax.jit(steps.make_train_step(model, tx, num_classes=10,
                                         accum_steps=2,
                                         cpu_kernel_grads=option))
    state = train_state.TrainState.create(params=params, tx=tx,
                                          rng=jax.random.PRNGKey(1))
    for _ in range(3):
      state, metrics = step(state, batch)
    states[option] = (jax.device_get(state.params), float(metrics['loss']))
    assert bool(calls) == option  # Off means untouched.
  np.testing.assert_allclose(states[True][1], states[False][1], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               states[True][0], states[False][0])
