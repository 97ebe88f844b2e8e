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
"""Shared work done once: process 0 first, the other processes after it.

A download into a shared cache or a tfds preparation into a shared data dir
is done by process 0 while the others wait (for at most a timeout, then one
error naming what they waited for); then the others do the same work, which
finds the result in place (or, where each host has its own disk, makes its
own copy). So no two processes write one file.
"""

from typing import Callable, TypeVar

import jax
from orbax.checkpoint import multihost

from mixer_jax import errors

T = TypeVar('T')

# How long the other processes wait for process 0.
DOWNLOAD_TIMEOUT_S = 3600
PREPARE_TIMEOUT_S = 48 * 3600
_DONE, _FAILED = 'done', 'failed: '


def first(what: str, work: Callable[[], T], *, timeout_s: int) -> T:
  """work() on process 0, then on the others; `what` ('download URL')
  names it in the key the others wait on and in their errors."""
  if jax.process_count() == 1:
    return work()
  client = multihost.get_jax_distributed_client()
  key = f'mixer_jax/first/{what}'
  if jax.process_index() == 0:
    try:
      result = work()
    except BaseException as e:
      client.key_value_set(key, _FAILED + errors.describe(e)[:500],
                           allow_overwrite=True)
      raise
    client.key_value_set(key, _DONE, allow_overwrite=True)
    return result
  try:
    status = client.blocking_key_value_get(key, timeout_s * 1000)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(
        f'Waited {timeout_s} s for process 0 to {what}, in vain '
        f'({errors.describe(e)[:200]}). Its log says why.') from None
  if status.startswith(_FAILED):
    raise errors.UserError(f'Process 0 could not {what}: '
                           f'{status[len(_FAILED):]}')
  return work()
