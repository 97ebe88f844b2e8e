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
r"""The paper's transfer table for a checkpoint, in one command.

  python -m mixer_jax.transfer --pretrained=imagenet21k/Mixer-B_16 \
      --workdir=workdirs/transfer_b16 [--datasets=cifar10,cifar100,...] \
      [--lr_grid=0.003,0.01,0.03,0.06] [--config.accum_steps=8 ...]

Fine-tunes the checkpoint on each dataset with the paper's recipe (momentum
SGD, batch 512, clip 1, warmup then cosine, no weight decay; the dataset's
steps: ImageNet 20k, CIFAR 10k, Pets and Flowers 500), once per learning rate
of the grid, holding out a minival split of train (CIFAR 2 %, ImageNet 1 %,
others 10 %). The learning rate with the best minival top-1 wins; its run is
scored on the test split (ImageNet: validation, and ReaL). Writes
DIR/transfer.md (the paper-shaped row: each task's top-1, ReaL, Avg N) and
DIR/transfer.json. The default datasets are the paper's "Avg 5".

Every run has its own workdir, DIR/<dataset>/lr_<lr>: a stopped sweep resumes
where it stopped, and finished runs are skipped. A run that diverges is left
out of the pick (its diverged.txt says why) and the sweep goes on. --datasets
takes what --config.dataset takes (tfds names, digits, folders); --config.x=y
sets any other field of every run.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from mixer_jax import cli
from mixer_jax import errors
from mixer_jax import recipes

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (an import of this module defines none)."""
  flags.DEFINE_string('pretrained', None, 'A published name, .npz path or '
                      'URL to transfer.')
  flags.DEFINE_string('workdir', None, 'Where every run and the table go.')
  flags.DEFINE_list('datasets', list(recipes.PAPER_DATASETS), 'Tasks: tfds '
                    'names, digits or folders (default: the paper\'s "Avg '
                    '5").')
  flags.DEFINE_list('lr_grid', [f'{lr:g}' for lr in recipes.PAPER_LR_GRID],
                    'Learning rates to pick from on minival.')
  config_flags.DEFINE_config_dict('config', recipes.get_config(),
                                  'Every run: --config.<field>=<value>.')


def parse_lr_grid(values) -> list[float]:
  try:
    grid = [float(v) for v in values]
  except ValueError:
    grid = []
  if not grid or min(grid) <= 0:
    raise errors.UserError(f'--lr_grid={",".join(values)}: give learning '
                           'rates > 0, e.g. --lr_grid=0.003,0.01,0.03.')
  return grid


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The library (jax, TensorFlow, orbax) loads once the flags are good.
  cli.quiet_libraries(tensorflow=True)
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  from mixer_jax.multihost import preemption  # pylint: disable=g-import-not-at-top
  from mixer_jax.trainer import transfer  # pylint: disable=g-import-not-at-top
  cli.leave_out_an_absent_tpu()
  sources.keep_tensorflow_off_accelerators()
  try:
    if not FLAGS.pretrained or not FLAGS.workdir:
      raise errors.UserError('Give --pretrained and --workdir.')
    if not FLAGS.datasets:
      raise errors.UserError('--datasets is empty.')
    with preemption.StopSignals() as signals:
      result = transfer.sweep(
          pretrained=FLAGS.pretrained, workdir=FLAGS.workdir,
          datasets=FLAGS.datasets, lr_grid=parse_lr_grid(FLAGS.lr_grid),
          overrides=cli.config_overrides(FLAGS), signals=signals)
  except preemption.Stopped as e:
    print(f'mixer_jax.transfer: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.transfer', e)
  print(transfer.format_row(result), end='')
  print(f'Written: {os.path.join(FLAGS.workdir, "transfer.md")}, '
        f'{os.path.join(FLAGS.workdir, "transfer.json")}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags('mixer_jax.transfer'))
