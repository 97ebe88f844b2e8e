"""Every file in configs/ loads, as the command line loads it, and is sane."""

import importlib.util
import pathlib
import re

from absl import flags
from ml_collections import config_flags
import pytest

from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax.model import models
from mixer_jax.model import published

ROOT = pathlib.Path(__file__).parent.parent
RECIPES = sorted(p.stem for p in (ROOT / 'configs').glob('*.py'))
FINE_TUNE = ('b16', 'b32', 'l16', 's16', 's32', 's8')


def load(config_arg: str, *overrides: str):
  """Parses --config=... exactly as `python -m mixer_jax.train` does."""
  argv = ['train', f'--config={config_arg}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config',
                                  flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_the_recipes_are_all_here():
  assert set(FINE_TUNE) <= set(RECIPES)
  assert {'digits', 'ti4_cifar10', 'i1k_scratch'} <= set(RECIPES)


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_loads_and_is_consistent(name):
  config = load(f'configs/{name}.py')
  # Every field is declared in mixer_jax.recipes: a recipe adds none.
  assert set(config.keys()) == set(recipes.get_config().keys())
  assert set(config.model.keys()) == set(recipes.get_config().model.keys())
  models.parse_variant(config.model.variant)
  if config.pretrained:
    assert config.pretrained in published.PUBLISHED
    variant = published.PUBLISHED[config.pretrained][0]
    assert models.parse_variant(variant) == models.parse_variant(
        config.model.variant)
  assert config.total_steps > config.warmup_steps >= 0
  # The docstring states the exact command.
  doc = _module(name).__doc__
  assert f'python -m mixer_jax.train --config=configs/{name}.py' in doc


@pytest.mark.parametrize('name', FINE_TUNE)
def test_fine_tune_recipes_follow_the_paper(name):
  config = load(f'configs/{name}.py')
  assert (config.optimizer, config.momentum, config.batch_size,
          config.grad_clip_norm, config.weight_decay, config.warmup_steps,
          config.decay_type, config.image_size, config.lr) == (
              'sgd', 0.9, 512, 1.0, 0.0, 500, 'cosine', 224, 0.03)
  assert (config.dataset, config.total_steps) == ('cifar10', 10_000)
  assert config.mixup_alpha == 0 and config.randaugment_layers == 0


@pytest.mark.parametrize('dataset,steps,eval_split', [
    ('cifar100', 10_000, 'test'), ('oxford_iiit_pet', 500, 'test'),
    ('oxford_flowers102', 500, 'test'), ('imagenet2012', 20_000, 'validation'),
])
def test_dataset_argument_selects_the_preset(dataset, steps, eval_split):
  config = load(f'configs/b16.py:{dataset}')
  assert (config.dataset, config.total_steps, config.eval_split) == (
      dataset, steps, eval_split)


def test_fields_override_from_the_command_line():
  config = load('configs/b32.py', '--config.lr=0.01',
                '--config.model.dtype=bfloat16', '--config.accum_steps=8',
                '--config.model.num_blocks=3', '--config.pretrained=x.npz')
  assert (config.lr, config.model.dtype, config.accum_steps,
          config.model.num_blocks, config.pretrained) == (
              0.01, 'bfloat16', 8, 3, 'x.npz')


def test_an_undeclared_field_is_a_clear_error():
  # ml_collections names the field (an AttributeError from the locked config).
  with pytest.raises(AttributeError, match='learning_rate'):
    load('configs/b32.py', '--config.learning_rate=0.01')


def test_unknown_dataset_argument():
  with pytest.raises(Exception, match="Unknown dataset preset 'cifar11'"):
    load('configs/b16.py:cifar11')


def _module(name):
  path = ROOT / 'configs' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_a_recipe_loads_by_path_from_anywhere(tmp_path, monkeypatch):
  (tmp_path / 'mine.py').write_text(
      (ROOT / 'configs' / 'b16.py').read_text())
  monkeypatch.chdir(tmp_path)
  assert recipes.load_file('mine.py:cifar100').dataset == 'cifar100'
  with pytest.raises(errors.MissingError, match='No recipe file nope.py'):
    recipes.load_file('nope.py')


def test_every_field_is_stated_once_with_what_it_is():
  """The config is FIELDS, each once, each with a sentence; every number
  with a range has its check."""
  names = [field.name for field in recipes.FIELDS]
  assert len(names) == len(set(names)) > 40
  config = recipes.get_config()
  assert sorted(names) == sorted(_dotted_names(config))
  for field in recipes.FIELDS:
    assert field.help.endswith('.') and len(field.help) > 10, field.name
  unchecked = {f.name for f in recipes.FIELDS if f.check is None and
               isinstance(f.default, (int, float)) and
               not isinstance(f.default, bool)}
  assert unchecked == {'seed'}


def _dotted_names(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from _dotted_names(value, prefix + key + '.')
    else:
      yield prefix + key
