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
r"""Trains and evaluates a Mixer, data-parallel over every device.

  python -m mixer_jax.train --config=configs/digits.py [--workdir=DIR] \
      [--config.lr=0.01 ...]

Starting again with the same workdir resumes from its last checkpoint.
"""

if __name__ == '__main__':  # Before the heavy imports: see supervisor.py.
  from mixer_jax.multihost import supervisor  # pylint: disable=g-import-not-at-top
  supervisor.supervise('mixer_jax.train')

import json
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mixer_jax import cli
from mixer_jax import errors

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags; `python -m mixer_jax.train` defines them, an import
  of this module does not."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/b32.py or configs/b16.py:'
      'cifar100; override fields with --config.<field>=<value>.',
      lock_config=True)
  flags.DEFINE_string(
      'workdir', None, 'Where checkpoints, logs and metrics go; a run in an '
      'existing workdir resumes. Default: workdirs/<config name>.')
  cli.define_distributed_flags()
  flags.adopt_module_key_flags(cli)  # --help shows the launch flags too.


def default_workdir(config_flag: str) -> str:
  """workdirs/<config file name>[_<config argument>]."""
  path, _, arg = config_flag.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  if arg:
    name += '_' + re.sub(r'[^A-Za-z0-9_.-]+', '_', arg)
  return os.path.join('workdirs', name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The library (jax, TensorFlow, orbax) loads once the flags are good.
  cli.quiet_libraries(tensorflow=True)
  import jax  # pylint: disable=g-import-not-at-top
  from mixer_jax import storage  # pylint: disable=g-import-not-at-top
  from mixer_jax import trainer  # pylint: disable=g-import-not-at-top
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  from mixer_jax.multihost import preemption  # pylint: disable=g-import-not-at-top
  from mixer_jax.training import curves  # pylint: disable=g-import-not-at-top
  cli.leave_out_an_absent_tpu()
  cli.initialize_distributed('mixer_jax.train')
  if jax.process_index() and not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # One voice: process 0's.
  sources.keep_tensorflow_off_accelerators()
  workdir = FLAGS.workdir or default_workdir(flags.FLAGS['config'].serialize()
                                              .split('=', 1)[-1])
  try:
    with preemption.StopSignals() as signals:
      logging.info('Workdir: %s', storage.where(workdir))
      final = trainer.train_and_evaluate(FLAGS.config, workdir, signals=signals)
  except preemption.Stopped as e:
    print(f'mixer_jax.train: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except errors.DiskFullError as e:
    # Orbax's failed background writes would print warnings at interpreter
    # shutdown, after the error line; everything is saved or closed by now.
    print(f'mixer_jax.train: error: {errors.describe(e)}', file=sys.stderr,
          flush=True)
    os._exit(1)  # pylint: disable=protected-access
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.train', e)
  if jax.process_index() == 0:
    drawn = curves.draw([workdir], storage.join(workdir, 'curves.png'))
    print(json.dumps(final, indent=2))
    print(f'Workdir {storage.where(workdir)}:\n'
          f'  checkpoints   {storage.join(workdir, "checkpoints")}\n'
          f'  final params  {storage.join(workdir, "params.npz")}\n'
          f'  metrics       {storage.join(workdir, "metrics.jsonl")}, '
          f'{storage.join(workdir, "final_metrics.json")}\n'
          f'  curves        {drawn}\n'
          f'  TensorBoard   tensorboard --logdir {workdir}')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags_and_config('mixer_jax.train'))
