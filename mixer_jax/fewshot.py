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
r"""Linear few-shot evaluation on frozen pre-logits (the paper's Figures 2-4).

  python -m mixer_jax.fewshot --workdir=W | --pretrained=NAME \
      --dataset=cifar10 [--shots=1,5,10,25] [--output=FILE.json]

The protocol of big_vision's `fewshot_lsr` evaluator: the pre-logit features
(the pooled output before the head) of k random training examples per class,
standardised by their mean and std, a bias feature of 100 (all but
unregularised), a closed-form L2-regularised least-squares fit (l2 = 2^10)
to one-hot targets rescaled to +-1, and top-1 accuracy on the test split;
the mean over seeds 0, 1, 2. Features use big_vision's preprocessing
'resize_crop' (for 224 px: resize to 256x256, centre crop 224).
Deterministic.

  python -m mixer_jax.fewshot --pretrained=NAME --suite=big_vision \
      [--output=FILE.json]

runs big_vision's suite (caltech101, cars196, cifar100, dtd, ImageNet,
oxford_iiit_pet, uc_merced), every dataset that is available, logs each
(dataset, shots, seed), prints a dataset x shots table of the means and lists
the datasets that are missing. --suite=FILE.json runs a suite of one's own,
{name: [dataset, train split, test split]}.
"""

import json

from absl import app
from absl import flags

from mixer_jax import cli
from mixer_jax import errors

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (an import of this module defines none)."""
  flags.DEFINE_string('workdir', None, 'A trained run.')
  flags.DEFINE_string('pretrained', None, 'A published name, .npz or URL.')
  flags.DEFINE_string('dataset', None, 'tfds name, digits or a folder '
                      "(default: the run's).")
  flags.DEFINE_string('train_split', None, 'Where the shots come from '
                      "(default: 'train', or the run's train split).")
  flags.DEFINE_string('test_split', None, "Scored split (default: 'test', or "
                      "the run's eval split).")
  flags.DEFINE_list('shots', ['1', '5', '10', '25'], 'Examples per class.')
  flags.DEFINE_integer('seeds', 3, 'Seeds 0..N-1; the mean is reported.',
                       lower_bound=1)
  flags.DEFINE_float('l2', 2.0**10, 'L2 regularisation.')
  flags.DEFINE_string('suite', None, 'A suite of datasets instead of '
                      '--dataset: big_vision, or a JSON file {name: '
                      '[dataset, train split, test split]}.')
  flags.DEFINE_string('output', None, 'Also write the accuracies here (JSON).')


def parse_shots(values) -> list[int]:
  """--shots=1,5 -> [1, 5]; anything but integers >= 1 is a UserError."""
  try:
    shots = [int(k) for k in values]
  except ValueError:
    shots = []
  if not shots or min(shots) < 1:
    raise errors.UserError(f'--shots={",".join(values)}: give examples per '
                           'class as integers >= 1, e.g. --shots=1,5,10,25.')
  return shots


def format_table(suite_results, *, shots, num_seeds: int) -> str:
  """Dataset x shots, mean over seeds, in %; then the missing datasets."""
  found = suite_results['datasets']
  width = max(len(n) for n in [*found, *suite_results['missing'], 'dataset'])
  lines = [f'{"dataset":<{width}}' + ''.join(f'{f"{k}-shot":>9}'
                                              for k in shots) +
           f'   (mean of {num_seeds} seed(s))']
  for name, result in found.items():
    lines.append(f'{name:<{width}}' + ''.join(
        f'{result["accuracy"][k]:>9.2%}' for k in shots))
  for name, why in suite_results['missing'].items():
    lines.append(f'{name:<{width}}  missing: {why}')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The library (jax, TensorFlow) loads once the flags are good.
  cli.quiet_libraries(tensorflow=True)
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  from mixer_jax import storage  # pylint: disable=g-import-not-at-top
  from mixer_jax.evals import evaluation  # pylint: disable=g-import-not-at-top
  from mixer_jax.evals import fewshot  # pylint: disable=g-import-not-at-top
  cli.leave_out_an_absent_tpu()
  sources.keep_tensorflow_off_accelerators()
  try:
    if FLAGS.suite and (FLAGS.dataset or FLAGS.train_split or
                        FLAGS.test_split):
      raise errors.UserError('--suite names its datasets and splits: drop '
                             '--dataset, --train_split and --test_split.')
    if FLAGS.pretrained and not (FLAGS.dataset or FLAGS.suite):
      raise errors.UserError('--pretrained needs --dataset or --suite.')
    suite = fewshot.load_suite(FLAGS.suite) if FLAGS.suite else None
    loaded, config = evaluation.model_and_config(
        workdir=FLAGS.workdir, pretrained=FLAGS.pretrained)
    shots = parse_shots(FLAGS.shots)
    if suite:
      results = fewshot.run_suite(
          loaded.model, loaded.params, config, suite, shots=shots,
          seeds=range(FLAGS.seeds), l2=FLAGS.l2)
    else:
      results = fewshot.evaluate(
          loaded.model, loaded.params, config, dataset=FLAGS.dataset,
          train_split=FLAGS.train_split, test_split=FLAGS.test_split,
          shots=shots, seeds=range(FLAGS.seeds), l2=FLAGS.l2)
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.fewshot', e)
  if suite:
    print(format_table(results, shots=shots, num_seeds=FLAGS.seeds))
  else:
    for key, value in results.items():
      print(f'{key}: {value:.2%}')
  if FLAGS.output:
    storage.write_whole(FLAGS.output, json.dumps(results, indent=2))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags('mixer_jax.fewshot'))
