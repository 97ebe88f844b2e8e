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
"""The optimizer: schedule, clipping, SGD-momentum or AdamW.

Fine-tuning follows the paper (and vit_jax): momentum SGD, global-norm clip 1,
linear warmup then cosine, no weight decay. Pre-training follows its Table 4:
Adam with decoupled weight decay, linear warmup then linear decay. Weight decay
is decoupled, multiplied by the learning rate as in `optax.adamw`, and applies
to kernels only (not biases, LayerNorm or the stem bias), as big_vision.
"""

import jax
import jax.numpy as jnp
import optax

from mixer_jax import errors


def create_learning_rate_schedule(*, total_steps: int, base: float,
                                  warmup_steps: int, decay_type: str,
                                  linear_end: float = 1e-5) -> optax.Schedule:
  """Linear warmup from 0 to `base`, then cosine to 0 or linear to linear_end."""
  if decay_type == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0)
  if decay_type == 'linear':
    return optax.join_schedules([
        optax.linear_schedule(0.0, base, warmup_steps),
        optax.linear_schedule(base, linear_end,
                              max(total_steps - warmup_steps, 1)),
    ], [warmup_steps])
  raise errors.UserError(
      f"Unknown decay_type {decay_type!r}: 'cosine' or 'linear'.")


def kernel_mask(params):
  """True for the kernels (matrices) weight decay applies to."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key == 'kernel', params)


def create_optimizer(config) -> tuple[optax.GradientTransformation,
                                      optax.Schedule]:
  """The optax chain the config asks for, and its learning-rate schedule."""
  schedule = create_learning_rate_schedule(
      total_steps=config.total_steps, base=config.lr,
      warmup_steps=config.warmup_steps, decay_type=config.decay_type,
      linear_end=config.linear_end)
  chain = []
  if config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.optimizer == 'sgd':
    chain.append(optax.trace(decay=config.momentum,
                             accumulator_dtype=jnp.dtype(
                                 config.momentum_dtype)))
  elif config.optimizer == 'adamw':
    chain.append(optax.scale_by_adam(b1=config.b1, b2=config.b2))
  else:
    raise errors.UserError(
        f"Unknown optimizer {config.optimizer!r}: 'sgd' or "
        "'adamw'.")
  if config.weight_decay:
    chain.append(optax.add_decayed_weights(config.weight_decay,
                                           mask=kernel_mask))
  chain.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*chain), schedule
