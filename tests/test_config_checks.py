"""Tests for mixer_jax.config_checks: every bad value named, all at once."""

import os

import pytest

from mixer_jax import config_checks
from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax import trainer
from tests.conftest import small_digits_config


@pytest.mark.parametrize('field,value', [
    ('lr', 0.0), ('lr', -0.1), ('lr', float('nan')), ('total_steps', -1),
    ('batch_size', 0), ('eval_batch_size', -8), ('accum_steps', -1),
    ('eval_every', 0), ('progress_every', 0), ('checkpoint_every', 0),
    ('keep_checkpoints', 0), ('max_diverged_steps', 0),
    ('label_smoothing', 1.0), ('mixup_alpha', -0.5), ('momentum', 1.0),
    ('weight_decay', -1e-4), ('grad_clip_norm', 0.0), ('image_size', 0),
    ('resolution_factor', 0), ('optimizer', 'sgdd'),
    ('decay_type', 'step'), ('train_pp', 'crop'), ('eval_pp', 'crop'),
    ('momentum_dtype', 'int8'), ('model.variant', 'Q/16'),
    ('model.dtype', 'float12'), ('model.dropout_rate', 1.0),
    ('model.stochastic_depth', -0.1), ('model.num_blocks', 0),
])
def test_a_bad_value_is_named_with_what_is_allowed(field, value):
  config = recipes.get_config()
  section, _, name = field.rpartition('.')
  (config[section] if section else config)[name] = value
  found = config_checks.problems(config)
  assert len(found) == 1 and found[0].startswith(f'{field}={value!r} (must')


def test_the_defaults_are_good():
  assert not config_checks.problems(recipes.get_config())


def test_every_bad_field_in_one_message_before_anything_is_written(tmp_path):
  config = small_digits_config(lr=0.0, eval_every=0, keep_checkpoints=0,
                               warmup_steps=9)
  workdir = str(tmp_path / 'run')
  with pytest.raises(errors.UserError) as error:
    trainer.train_and_evaluate(config, workdir)
  message = str(error.value)
  for part in ('lr=0.0', 'eval_every=0', 'keep_checkpoints=0',
               'warmup_steps=9 (must be <= total_steps=8)'):
    assert part in message
  assert not os.path.exists(workdir)


def test_warmup_may_exceed_zero_total_steps_when_only_evaluating():
  assert not config_checks.problems(small_digits_config(total_steps=0))
