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
r"""Training curves of one or more runs, overlaid: WORKDIR/curves.png.

  python -m mixer_jax.plot workdirs/digits [workdirs/other ...]

Train loss, learning rate, eval loss and eval accuracy against steps, from
each run's metrics.jsonl, labelled by workdir; written into the first one.
The train command draws it at the end of every run.
"""

import os

from absl import app

from mixer_jax import cli
from mixer_jax import errors


def main(argv):
  if len(argv) < 2:
    raise app.UsageError(
        'Usage: python -m mixer_jax.plot WORKDIR [WORKDIR ...]')
  # matplotlib loads once the arguments are good.
  cli.quiet_libraries(tensorflow=False)
  from mixer_jax.training import curves  # pylint: disable=g-import-not-at-top
  try:
    print(curves.draw(argv[1:], os.path.join(argv[1], 'curves.png')))
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.plot', e)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags('mixer_jax.plot'))
