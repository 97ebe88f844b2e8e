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
"""Every config value checked before a run writes anything, all at once.

A bad value fails with one message that lists each bad field, instead of a
crash mid-run (a zero interval) or a run that trains nothing useful (lr 0).
"""

import math

import jax.numpy as jnp

from mixer_jax import errors
from mixer_jax.model import models
from mixer_jax.data import preprocess


def _positive(x):
  return x > 0


def _non_negative(x):
  return x >= 0


def _fraction(x):  # A rate or probability that must leave something.
  return 0 <= x < 1


def _dtype(name):
  try:
    return jnp.issubdtype(jnp.dtype(name), jnp.floating)
  except TypeError:
    return False


def _variant(name):
  try:
    models.parse_variant(name)
    return True
  except errors.UserError:
    return False


# Field -> (test, what a good value is). Dotted names are nested fields.
_RULES = {
    'lr': (_positive, '> 0'),
    'total_steps': (_non_negative, '>= 0 (0: evaluate only)'),
    'warmup_steps': (_non_negative, '>= 0'),
    'batch_size': (_positive, '> 0'),
    'eval_batch_size': (_positive, '> 0'),
    'accum_steps': (_non_negative, '>= 0 (0: the smallest that fits)'),
    'eval_every': (_positive, '> 0'),
    'progress_every': (_positive, '> 0'),
    'checkpoint_every': (_positive, '> 0'),
    'keep_checkpoints': (lambda x: x >= 1, '>= 1'),
    'fewshot_every': (_non_negative, '>= 0 (0: off)'),
    'real_every': (_non_negative, '>= 0 (0: at the end only)'),
    'fewshot_seeds': (_positive, '> 0'),
    'fewshot_l2': (_positive, '> 0'),
    'fewshot_shots': (lambda x: len(x) > 0 and all(k > 0 for k in x),
                      'examples per class, each > 0'),
    'max_diverged_steps': (_positive, '> 0'),
    'max_loss_factor': (_non_negative, '>= 0 (0: off)'),
    'max_eval_loss_factor': (_non_negative, '>= 0 (0: off)'),
    'label_smoothing': (_fraction, 'in [0, 1)'),
    'mixup_alpha': (_non_negative, '>= 0'),
    'momentum': (_fraction, 'in [0, 1)'),
    'b1': (_fraction, 'in [0, 1)'),
    'b2': (_fraction, 'in [0, 1)'),
    'weight_decay': (_non_negative, '>= 0'),
    'grad_clip_norm': (lambda x: x is None or x > 0, '> 0, or None for none'),
    'linear_end': (_non_negative, '>= 0'),
    'image_size': (_positive, '> 0'),
    'resolution_factor': (_positive, 'an integer >= 1'),
    'prefetch': (_non_negative, '>= 0'),
    'crop_padding': (_non_negative, '>= 0'),
    'randaugment_layers': (_non_negative, '>= 0'),
    'randaugment_magnitude': (lambda x: 0 <= x <= 30, 'in [0, 30]'),
    'optimizer': (lambda x: x in ('sgd', 'adamw'), "'sgd' or 'adamw'"),
    'decay_type': (lambda x: x in ('cosine', 'linear'), "'cosine' or 'linear'"),
    'train_pp': (lambda x: x in preprocess.TRAIN_PP,
                 ' or '.join(map(repr, preprocess.TRAIN_PP))),
    'eval_pp': (lambda x: x in preprocess.EVAL_PP,
                ' or '.join(map(repr, preprocess.EVAL_PP))),
    'momentum_dtype': (_dtype, 'a float dtype name'),
    'model.variant': (_variant, "<width>/<patch>, e.g. 'B/16'"),
    'model.dtype': (_dtype, "a float dtype name, e.g. 'bfloat16'"),
    'model.dropout_rate': (_fraction, 'in [0, 1)'),
    'model.stochastic_depth': (_fraction, 'in [0, 1)'),
    'model.num_blocks': (lambda x: x is None or x > 0, '> 0'),
    'model.hidden_dim': (lambda x: x is None or x > 0, '> 0'),
    'model.tokens_mlp_dim': (lambda x: x is None or x > 0, '> 0'),
    'model.channels_mlp_dim': (lambda x: x is None or x > 0, '> 0'),
}


def _get(config, dotted: str):
  for name in dotted.split('.'):
    config = config[name]
  return config


def _is_nan(value) -> bool:
  return isinstance(value, float) and math.isnan(value)


def problems(config, *, only=None) -> list[str]:
  """One line per bad field (empty when every field is good); `only`: check
  just these fields (dotted names)."""
  found = []
  for field, (test, good) in _RULES.items():
    if only is not None and field not in only:
      continue
    value = _get(config, field)
    try:
      ok = not _is_nan(value) and bool(test(value))
    except TypeError:  # e.g. None where a number belongs.
      ok = False
    if not ok:
      found.append(f'{field}={value!r} (must be {good})')
  if only is None and 0 < config.total_steps < config.warmup_steps:
    found.append(f'warmup_steps={config.warmup_steps} (must be <= '
                 f'total_steps={config.total_steps})')
  return found


def check(config, *, only=None) -> None:
  """Raises errors.UserError naming every bad field of `config` (of `only`,
  if given)."""
  found = problems(config, only=only)
  if found:
    raise errors.UserError(
        f'Bad config value{"s" if len(found) > 1 else ""}: '
        + '; '.join(found) + '.')


def check_batch_sizes(config, *, num_devices: int) -> None:
  """Raises errors.UserError unless the batches split evenly over devices
  (hence over processes) and over accum_steps micro-batches."""
  for name in ('batch_size', 'eval_batch_size'):
    if config[name] % num_devices:
      raise errors.UserError(f'{name} {config[name]} is not divisible by the '
                             f'{num_devices} devices.')
  if config.batch_size % (num_devices * max(config.accum_steps, 1)):
    raise errors.UserError(
        f'batch_size {config.batch_size} is not divisible into '
        f'accum_steps={config.accum_steps} micro-batches over {num_devices} '
        'devices.')
