# Copyright 2026 The mixer_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The train and eval steps: pure functions of (state or params, batch).

train.py jits them over its data and checkpoints; evaluate.py shares
eval_sums. They take arrays, not input pipelines.
"""

import jax
import jax.numpy as jnp
import optax


def mixup(rng, images, labels, *, alpha: float):
  """Mixes each example with the next one (big_vision's mixup).

  One Beta(alpha, alpha) ratio per batch, folded to >= 0.5 so that the
  example keeps the larger share.
  """
  ratio = jax.random.beta(rng, alpha, alpha)
  ratio = jnp.maximum(ratio, 1.0 - ratio)
  mix = lambda x: ratio * x + (1.0 - ratio) * jnp.roll(x, 1, axis=0)
  return mix(images), mix(labels)


def accumulate_gradient(loss_and_grad_fn, params, batch, rng, *,
                        accum_steps: int):
  """Mean loss and gradient over `accum_steps` equal micro-batches.

  One compiled step loops over the micro-batches with `lax.scan`, so memory
  holds one micro-batch of activations. Micro-batch i takes examples i,
  i + accum_steps, ...: every device keeps its share of every micro-batch.

  Args:
    loss_and_grad_fn: (params, micro_batch, rng) -> ((loss, aux), grads).
    params: the parameters.
    batch: a pytree of arrays with a leading batch axis.
    rng: a PRNG key, folded with the micro-batch index.
    accum_steps: number of micro-batches; must divide the batch.
  Returns:
    ((loss, aux), grads), each the mean over micro-batches.
  """
  if accum_steps == 1:
    return loss_and_grad_fn(params, batch, rng)
  micro = jax.tree.map(
      lambda x: jnp.swapaxes(
          x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]),
          0, 1), batch)

  def add(total, i_and_micro_batch):
    i, micro_batch = i_and_micro_batch
    out = loss_and_grad_fn(params, micro_batch, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, total, out), None

  zeros = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype),
      jax.eval_shape(loss_and_grad_fn, params,
                     jax.tree.map(lambda x: x[0], micro), rng))
  total, _ = jax.lax.scan(add, zeros, (jnp.arange(accum_steps), micro))
  return jax.tree.map(lambda x: x / accum_steps, total)


def make_train_step(model, tx, *, num_classes: int, accum_steps: int = 1,
                    mixup_alpha: float = 0.0, label_smoothing: float = 0.0):
  """(state, batch) -> (state, metrics); jit it with the state donated."""

  def loss_fn(params, batch, rng):
    mixup_rng, dropout_rng = jax.random.split(rng)
    images = batch['image']
    labels = jax.nn.one_hot(batch['label'], num_classes)
    if mixup_alpha:
      images, labels = mixup(mixup_rng, images, labels, alpha=mixup_alpha)
    if label_smoothing:
      labels = optax.smooth_labels(labels, label_smoothing)
    logits = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': dropout_rng})
    return optax.softmax_cross_entropy(logits, labels).mean(), None

  loss_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, _), grads = accumulate_gradient(
        loss_and_grad, state.params, batch, rng, accum_steps=accum_steps)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    # A non-finite loss or gradient changes nothing but the step (its batch is
    # consumed): parameters and optimizer state stay those of the last good
    # step, and the loop decides when too many in a row end the run.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep_if_bad = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(finite, n, o), new, old)
    state = state.replace(
        step=state.step + 1,
        params=keep_if_bad(optax.apply_updates(state.params, updates),
                           state.params),
        opt_state=keep_if_bad(opt_state, state.opt_state))
    return state, {'loss': loss, 'grad_norm': grad_norm, 'finite': finite}

  return train_step


def eval_sums(logits, batch, *, num_classes: int) -> dict:
  """Loss, top-1 (top-5 past 10 classes) and count, summed over the real
  (mask 1) examples of the batch; ReaL's sums too when it has 'real'."""
  labels, mask = batch['label'], batch['mask']
  # Arg-max and top-k as vit_jax and big_vision: tied logits pick one
  # class, so a model whose logits all tie scores at chance, not 100 %.
  sums = {
      'loss': optax.softmax_cross_entropy_with_integer_labels(logits, labels),
      'correct': jnp.argmax(logits, axis=-1) == labels,
      'count': jnp.ones_like(mask),
  }
  if num_classes > 10:
    _, top5 = jax.lax.top_k(logits, 5)
    sums['correct_top5'] = jnp.any(top5 == labels[:, None], axis=-1)
  sums = {k: jnp.sum(v * mask) for k, v in sums.items()}
  if 'real' in batch:
    sums.update(real_sums(logits, batch['real'], mask))
  return sums


def real_sums(logits, real, mask) -> dict:
  """ImageNet ReaL top-1 as big_vision scores it: correct when the arg-max
  class is among the example's set of real labels (multi-hot `real`);
  examples without any are left out (masked), not counted wrong."""
  labelled = mask * jnp.max(real, axis=-1)
  hit = jnp.take_along_axis(real, jnp.argmax(logits, axis=-1)[:, None],
                            axis=-1)[:, 0]
  return {'real_correct': jnp.sum(hit * labelled),
          'real_count': jnp.sum(labelled)}


def make_eval_step(model, *, num_classes: int):
  """(params, batch) -> eval_sums of the model's logits on the batch."""

  def eval_step(params, batch):
    logits = model.apply({'params': params}, batch['image'], train=False)
    return eval_sums(logits, batch, num_classes=num_classes)

  return eval_step
