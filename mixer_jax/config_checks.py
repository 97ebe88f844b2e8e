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
"""Every config value checked before a run writes anything, all at once,
by the checks recipes.FIELDS states beside each field.

A bad value fails with one message that lists each bad field, instead of a
crash mid-run (a zero interval) or a run that trains nothing useful (lr 0).
"""

import math

from mixer_jax import errors
from mixer_jax import recipes


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
  for field in recipes.FIELDS:
    if field.check is None or only is not None and field.name not in only:
      continue
    value = _get(config, field.name)
    try:
      ok = not _is_nan(value) and bool(field.check.test(value))
    except TypeError:  # e.g. None where a number belongs.
      ok = False
    if not ok:
      found.append(f'{field.name}={value!r} (must be {field.check.good})')
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
