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
"""The mistakes a user makes and can fix: the CLIs print them as one line.

Anything else that goes wrong is a bug, and keeps its traceback.
"""


class UserError(ValueError):
  """A bad config value, dataset, workdir or checkpoint; the message says."""


class MissingError(UserError, FileNotFoundError):
  """Data or a checkpoint that is not where it should be."""


class DiskFullError(UserError):
  """The disk filled up; what was written before stays intact."""


def describe(error) -> str:
  """The message of `error` (or of a string) on one line."""
  return ' '.join(str(error).split()) or type(error).__name__


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or an error it was raised from, is ENOSPC."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == 28:  # ENOSPC.
      return True
    if 'No space left on device' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False
