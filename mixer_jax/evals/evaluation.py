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
"""Evaluating a run or a checkpoint on a dataset, every example once: what
`python -m mixer_jax.evaluate` and transfer's test scores run."""

from typing import Any

from ml_collections import config_dict

from mixer_jax import config_checks
from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax.data import input_pipeline
from mixer_jax.data import sources
from mixer_jax.evals import loading
from mixer_jax.evals import scoring


def model_and_config(*, workdir=None, step=None, pretrained=None,
                     dataset=None, split=None,
                     values=None) -> tuple[loading.Loaded, Any]:
  """The model to evaluate, and the config of the data to evaluate it on."""
  loaded = loading.from_run_or_pretrained(workdir=workdir,
                                          pretrained=pretrained)
  if pretrained:
    config = recipes.get_config()
    config.image_size = loaded.image_size
  else:
    config = config_dict.ConfigDict(loaded.config.to_dict())
  own_dataset = config.dataset
  recipes.apply_overrides(config, {**({'dataset': dataset} if dataset else {}),
                 **({'eval_split': split} if split else {}), **(values or {})})
  if dataset and dataset != own_dataset:
    if not split:
      config.eval_split = default_split(config)
    config.train_split = config.eval_split  # Another dataset's splits.
  config_checks.check(config, only=set(values or ()))
  if step is not None:
    if not workdir:
      raise errors.UserError('--step needs --workdir.')
    loaded.params = loading.checkpoint_params(workdir, loaded, step)
  return loaded, config


def default_split(config) -> str:
  """'test', or 'validation' for a dataset without a test split (ImageNet,
  ImageNet ReaL)."""
  splits = sources.get_source(config).splits
  return 'validation' if 'test' not in splits and 'validation' in splits \
      else 'test'


def run(loaded: loading.Loaded, config) -> dict:
  info = input_pipeline.get_info(config)
  head = loaded.model.num_classes
  if head != info.num_classes:
    raise errors.UserError(
        f'The model has {head} classes and {config.dataset} has '
        f'{info.num_classes}: evaluate it on a dataset of its classes.')
  results = scoring.evaluate_in_detail(
      loaded.model, loaded.params, config, num_classes=head)
  return {'dataset': config.dataset, 'split': config.eval_split,
          **results, 'class_names': list(info.class_names)}
