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
r"""Evaluates a trained run or a checkpoint on a dataset, every example once.

  python -m mixer_jax.evaluate --workdir=workdirs/digits
  python -m mixer_jax.evaluate --workdir=W --step=400 --split='train[98%:]'
  python -m mixer_jax.evaluate --pretrained=W/params.npz --dataset=DIR \
      --config.eval_batch_size=64

Defaults to the run's own dataset and eval split; --dataset takes a tfds
name, `digits` or a folder DIR/<split>/<class>/*.jpg|png (split: 'test', else
'validation'), and --config.x=y overrides any field as the train command
does. Prints loss, top-1 (top-5 with more than 10 classes; ReaL top-1 on
--dataset=imagenet2012_real, leaving out its images without ReaL labels),
per-class accuracy and the confusion matrix; --output=FILE.json writes them.
The loss and accuracy are the train loop's own final evaluation's.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from mixer_jax import cli
from mixer_jax import errors
from mixer_jax import recipes

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (an import of this module defines none)."""
  flags.DEFINE_string('workdir', None, 'A trained run.')
  flags.DEFINE_integer('step', None, "A checkpoint's step (default: the "
                       'final params.npz).')
  flags.DEFINE_string('pretrained', None, 'A published name, .npz path or '
                      'URL whose head fits the dataset.')
  flags.DEFINE_string('dataset', None, 'Dataset (default: the run\'s).')
  flags.DEFINE_string('split', None, 'Split (default: the run\'s eval split).')
  flags.DEFINE_string('output', None, 'Also write the metrics here (JSON).')
  config_flags.DEFINE_config_dict('config', recipes.get_config(),
                                  'Overrides: --config.<field>=<value>.')


def format_summary(results) -> str:
  lines = [f'{results["dataset"]} {results["split"]}: '
           f'{results["eval_examples"]} examples, loss '
           f'{results["eval_loss"]:.4f}, top-1 {results["eval_accuracy"]:.2%}'
           + (f', top-5 {results["eval_top5_accuracy"]:.2%}'
              if 'eval_top5_accuracy' in results else '')
           + (f', ReaL top-1 {results["eval_real_accuracy"]:.2%} '
              f'({results["eval_real_examples"]} with ReaL labels)'
              if 'eval_real_accuracy' in results else '')]
  names = results['class_names']
  confusion = results['confusion_matrix']
  if len(confusion) <= 20:
    width = max(len(n) for n in names)
    lines.append('per class (accuracy, then predictions per class):')
    for name, accuracy, row in zip(names, results['per_class_accuracy'],
                                   confusion):
      lines.append(f'  {name:>{width}}  {accuracy:6.1%}  ' +
                   ' '.join(f'{n:4d}' for n in row))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The library (jax, TensorFlow, orbax) loads once the flags are good.
  cli.quiet_libraries(tensorflow=True)
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  from mixer_jax import storage  # pylint: disable=g-import-not-at-top
  from mixer_jax.evals import evaluation  # pylint: disable=g-import-not-at-top
  cli.leave_out_an_absent_tpu()
  sources.keep_tensorflow_off_accelerators()
  try:
    loaded, config = evaluation.model_and_config(
        workdir=FLAGS.workdir, step=FLAGS.step, pretrained=FLAGS.pretrained,
        dataset=FLAGS.dataset, split=FLAGS.split,
        values=cli.config_overrides(FLAGS))
    results = evaluation.run(loaded, config)
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.evaluate', e)
  print(format_summary(results))
  if FLAGS.output:
    storage.write_whole(FLAGS.output, json.dumps(results, indent=2))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags('mixer_jax.evaluate'))
