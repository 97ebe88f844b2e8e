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
"""Linear few-shot evaluation on frozen pre-logits (the paper's Figures 2-4),
as big_vision's `fewshot_lsr` evaluator: for `python -m mixer_jax.fewshot`
and the train loop's `fewshot_every`.

The pre-logit features (the pooled output before the head) of k random
training examples per class, standardised by their mean and std, a bias
feature of 100 (all but unregularised), a closed-form L2-regularised
least-squares fit (l2 = 2^10) to one-hot targets rescaled to +-1, and top-1
accuracy on the test split; the mean over seeds. Features use big_vision's
preprocessing 'resize_crop'. Deterministic.
"""

import functools
import json

import jax
from ml_collections import config_dict
import numpy as np

from mixer_jax import errors
from mixer_jax.data import input_pipeline
from mixer_jax.data import preflight
from mixer_jax.data import sources
from mixer_jax.training import jit_steps

BIAS_FEATURE = 100.0

# Named suites: {name: (dataset, train split, test split)}. big_vision's
# fewshot_lsr list, with ImageNet's first 65,000 training images (at least 30
# per class) where ImageNet is prepared.
SUITES = {
    'big_vision': {
        'caltech': ('caltech101', 'train', 'test'),
        'cars': ('cars196', 'train', 'test'),
        'cifar100': ('cifar100', 'train', 'test'),
        'dtd': ('dtd', 'train', 'test'),
        'imagenet': ('imagenet2012', 'train[:65000]', 'validation'),
        'pets': ('oxford_iiit_pet', 'train', 'test'),
        'uc_merced': ('uc_merced', 'train[:1000]', 'train[1000:]'),
    },
}


@functools.cache
def _representation_fn(body, replicated):
  """The jitted (params, batch) -> (pre-logits, labels, mask), gathered to
  every host; cached, so that the evaluator in training compiles it once."""
  return jax.jit(lambda p, b: (body.apply({'params': p}, b['image']),
                               b['label'], b['mask']),
                 out_shardings=replicated)


def features(model, params, config, split: str, *, devices=None):
  """(pre-logits [N, C], labels [N]) of every example of `split`."""
  replicated, sharding = jit_steps.shardings(jit_steps.make_mesh(devices))
  represent = _representation_fn(model.clone(num_classes=None), replicated)
  params = jax.device_put(
      {k: v for k, v in params.items() if k != 'head'}, replicated)
  config = config_dict.ConfigDict(config.to_dict())
  config.eval_split, config.eval_pp = split, 'resize_crop'
  found, labels = [], []
  for batch in input_pipeline.prefetch_to_mesh(
      input_pipeline.eval_iterator(config), sharding, config.prefetch):
    x, y, mask = (np.asarray(a.addressable_data(0))
                  for a in represent(params, batch))
    found.append(x[mask == 1])
    labels.append(y[mask == 1])
  return np.concatenate(found).astype(np.float64), np.concatenate(labels)


def least_squares_accuracy(train_x, train_y, test_x, test_y, *,
                           num_classes: int, l2: float) -> float:
  """Top-1 of the ridge regression fit on (train_x, train_y)."""
  mean = train_x.mean(0, keepdims=True)
  std = train_x.std(0, keepdims=True) + 1e-5
  with_bias = lambda x: np.pad((x - mean) / std, ((0, 0), (0, 1)),
                               constant_values=BIAS_FEATURE)
  x, x_test = with_bias(train_x), with_bias(test_x)
  targets = 2.0 * np.eye(num_classes)[train_y] - 1.0
  n, d = x.shape
  if n >= d:
    weights = np.linalg.solve(x.T @ x + l2 * np.eye(d), x.T @ targets)
  else:
    weights = x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(n), targets)
  return float(np.mean(np.argmax(x_test @ weights, axis=1) == test_y))


def shots_accuracies(train, test, *, num_classes: int, shots, seeds, l2):
  """{k: [the k-shot accuracy of each seed]}.

  Every k must be at most the examples of the class with fewest in `train`
  (a larger k would silently use all of them), and `seeds` not empty.
  """
  (train_x, train_y), (test_x, test_y) = train, test
  counts = np.bincount(train_y, minlength=num_classes)
  fewest = int(counts.min())
  too_many = [k for k in shots if not 1 <= k <= fewest]
  if too_many:
    raise errors.UserError(
        f'{", ".join(map(str, too_many))} shot(s) asked for, but the few-shot '
        f'train split has {fewest} example(s) of class {int(counts.argmin())}'
        f', its fewest: use shots from 1 to {fewest}.')
  if not len(seeds):
    raise errors.UserError('No seeds to average over: use at least one.')
  scores = {k: [] for k in shots}
  for seed in seeds:
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(train_y == c))
                 for c in range(num_classes)]
    for k in shots:
      chosen = np.concatenate([indices[:k] for indices in per_class])
      scores[k].append(least_squares_accuracy(
          train_x[chosen], train_y[chosen], test_x, test_y,
          num_classes=num_classes, l2=l2))
  return scores


def shots_accuracy(train, test, **kwargs) -> dict:
  """{k: mean over seeds of the k-shot accuracy} (as shots_accuracies)."""
  return {k: float(np.mean(v))
          for k, v in shots_accuracies(train, test, **kwargs).items()}


def dataset_accuracies(model, params, config, *, dataset=None,
                       train_split=None, test_split=None, shots, seeds,
                       l2: float) -> dict:
  """{k: [accuracy per seed]} on `dataset` (default: the config's), the
  shots from its train split, scored on its test split."""
  config = config_dict.ConfigDict(config.to_dict())
  if dataset and dataset != config.dataset:
    config.dataset = dataset
    config.train_split, config.eval_split = 'train', 'test'
  config.train_split = train_split or config.train_split
  config.eval_split = test_split or config.eval_split
  info = input_pipeline.get_info(config)
  train = features(model, params, config, config.train_split)
  test = features(model, params, config, config.eval_split)
  missing = sorted(set(range(info.num_classes)) - set(train[1].tolist()))
  if missing:
    raise errors.UserError(f'The few-shot train split has no example of '
                           f'class(es) {missing}.')
  return shots_accuracies(train, test, num_classes=info.num_classes,
                          shots=shots, seeds=seeds, l2=l2)


def evaluate(model, params, config, *, dataset=None, train_split=None,
             test_split=None, shots=(1, 5, 10, 25), seeds=(0, 1, 2),
             l2: float = 2.0**10) -> dict:
  """{'fewshot/<dataset>/<k>shot': mean accuracy over seeds} (as
  dataset_accuracies)."""
  found = dataset_accuracies(
      model, params, config, dataset=dataset, train_split=train_split,
      test_split=test_split, shots=shots, seeds=seeds, l2=l2)
  name = str(dataset or config.dataset).rstrip('/').split('/')[-1]
  return {f'fewshot/{name}/{k}shot': float(np.mean(v))
          for k, v in found.items()}


def load_suite(name: str) -> dict:
  """--suite: 'big_vision', or a JSON file {name: [dataset, train split,
  test split]} -> {name: (dataset, train split, test split)}."""
  if name in SUITES:
    return SUITES[name]
  try:
    with open(name) as f:
      suite = {k: tuple(v) for k, v in json.load(f).items()}
  except (OSError, ValueError, AttributeError, TypeError) as e:
    raise errors.UserError(
        f'--suite={name}: neither {" nor ".join(SUITES)} nor a readable JSON '
        f'file {{name: [dataset, train split, test split]}} '
        f'({errors.describe(e)[:200]}).') from None
  bad = [k for k, v in suite.items() if len(v) != 3]
  if bad or not suite:
    raise errors.UserError(
        f'--suite={name}: each entry is [dataset, train split, test split] '
        f'({", ".join(bad) or "no entries"}).')
  return suite


def run_suite(model, params, config, suite: dict, *, shots, seeds, l2,
              log=print) -> dict:
  """Every dataset of `suite` that is available: {'datasets': {name:
  {'dataset', 'train_split', 'test_split', 'accuracy': {k: mean},
  'per_seed': {k: [...]}}}, 'missing': {name: why}}.

  A dataset that cannot be had offline (or fetched, with download on) is
  listed in 'missing' with the reason; none available is an error.
  """
  results, missing = {}, {}
  for name, (dataset, train_split, test_split) in suite.items():
    why = preflight.missing_dataset(config, dataset)
    if why:
      missing[name] = why
      log(f'{name}: missing: {why}')
      continue
    per_seed = dataset_accuracies(
        model, params, config, dataset=dataset, train_split=train_split,
        test_split=test_split, shots=shots, seeds=seeds, l2=l2)
    for k, values in per_seed.items():
      log(f'{name} {k}-shot: ' + ', '.join(
          f'seed {s} {v:.2%}' for s, v in zip(seeds, values)))
    results[name] = {
        'dataset': dataset, 'train_split': train_split,
        'test_split': test_split,
        'accuracy': {k: float(np.mean(v)) for k, v in per_seed.items()},
        'per_seed': per_seed}
  if not results:
    raise errors.UserError(
        'No dataset of the suite is available: ' + '; '.join(
            f'{name}: {why}' for name, why in missing.items()) + '.')
  return {'datasets': results, 'missing': missing}
