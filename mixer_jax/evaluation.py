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
"""Evaluation over every example, and host batches onto the device mesh."""

import collections

import jax
import jax.numpy as jnp

from mixer_jax import input_pipeline


def prefetch_to_mesh(iterator, sharding, size: int):
  """Host batches -> global arrays on the mesh, `size` batches ahead."""
  queue = collections.deque()

  def enqueue():
    batch = next(iterator, None)
    if batch is not None:
      queue.append(jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, x),
          batch))

  for _ in range(max(size, 1)):
    enqueue()
  while queue:
    batch = queue.popleft()
    enqueue()
    yield batch


def evaluate(eval_step, params, config, sharding) -> dict:
  """Every example of the eval split, scored exactly once."""
  totals = None
  for batch in prefetch_to_mesh(input_pipeline.eval_iterator(config), sharding,
                                config.prefetch):
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = int(totals['count'])
  results = {'eval_loss': float(totals['loss']) / count,
             'eval_accuracy': float(totals['correct']) / count,
             'eval_examples': count}
  if 'correct_top5' in totals:
    results['eval_top5_accuracy'] = float(totals['correct_top5']) / count
  return results
