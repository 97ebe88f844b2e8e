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
"""Scores a model on an eval split: every example exactly once (the loop's
evaluation and the evaluate command's detail)."""

import jax
import jax.numpy as jnp
import numpy as np

from mixer_jax.data import input_pipeline
from mixer_jax.training import jit_steps
from mixer_jax.training import steps


def evaluate(eval_step, params, config, sharding) -> dict:
  """Every example of the eval split, scored exactly once."""
  totals = None
  for batch in input_pipeline.prefetch_to_mesh(
      input_pipeline.eval_iterator(config), sharding, config.prefetch):
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return _results(jax.device_get(totals))


def evaluate_in_detail(model, params, config, *, num_classes: int,
                       devices=None) -> dict:
  """evaluate()'s metrics, plus per-class accuracy and the confusion matrix.

  The loss and accuracy come from the train loop's own eval step, so they are
  the numbers its final evaluation reports. One process.
  """
  replicated, sharding = jit_steps.shardings(jit_steps.make_mesh(devices))

  def step(params, batch):  # The eval step's sums and the predictions.
    logits = model.apply({'params': params}, batch['image'], train=False)
    return (steps.eval_sums(logits, batch, num_classes=num_classes),
            jnp.argmax(logits, axis=-1))

  step = jax.jit(step, out_shardings=replicated)
  params = jax.device_put(params, replicated)
  totals, confusion = None, np.zeros((num_classes, num_classes), np.int64)
  for batch in input_pipeline.prefetch_to_mesh(
      input_pipeline.eval_iterator(config), sharding, config.prefetch):
    sums, predicted = step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    real = np.asarray(batch['mask']) == 1
    np.add.at(confusion, (np.asarray(batch['label'])[real],
                          np.asarray(predicted)[real]), 1)
  results = _results(jax.device_get(totals))
  per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
  return {**results, 'per_class_accuracy': per_class.tolist(),
          'confusion_matrix': confusion.tolist()}


def _results(totals) -> dict:
  count = int(totals['count'])
  results = {'eval_loss': float(totals['loss']) / count,
             'eval_accuracy': float(totals['correct']) / count,
             'eval_examples': count}
  if 'correct_top5' in totals:
    results['eval_top5_accuracy'] = float(totals['correct_top5']) / count
  if 'real_count' in totals:
    labelled = int(totals['real_count'])
    results['eval_real_examples'] = labelled
    if labelled:
      results['eval_real_accuracy'] = float(totals['real_correct']) / labelled
  return results


def evaluate_real(eval_step, params, config, sharding) -> dict:
  """{'eval_real_accuracy', 'eval_real_examples'} on config.real_dataset."""
  results = evaluate(eval_step, params,
                     input_pipeline.real_labels_config(config), sharding)
  return {k: v for k, v in results.items() if k.startswith('eval_real_')}
