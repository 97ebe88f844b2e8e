"""Tests for mixer_jax.training.jit_steps: the accumulation search, memory
accounting and the automatic accum_steps."""

import jax
import numpy as np
import optax
import pytest

from mixer_jax import errors
from mixer_jax.model import models
from mixer_jax.training import jit_steps
from tests.conftest import small_digits_config


@pytest.mark.parametrize('candidates, first_fit', [
    ([1, 2, 4, 8], 1),
    ([1, 2, 4, 8], 4),
    ([1, 2, 4, 8], 8),
    ([1, 2, 4, 8], None),
    (list(range(1, 65)), 37),
    (list(range(1, 65)), 64),
    ([3], 3),
    ([], None),
])
def test_smallest_fitting_finds_the_first_that_fits(candidates, first_fit):
  tried = []

  def fits(n):
    tried.append(n)
    return first_fit is not None and n >= first_fit

  assert jit_steps.smallest_fitting(candidates, fits) == first_fit
  assert len(tried) <= 2 * max(len(candidates), 1).bit_length()


@pytest.mark.parametrize('batch, devices, expected', [
    (512, 8, [1, 2, 4, 8, 16, 32, 64]),
    (96, 8, [1, 2, 3, 4, 6, 12]),
    (8, 8, [1]),
])
def test_accum_candidates_divide_each_devices_share(batch, devices, expected):
  assert jit_steps.accum_candidates(batch, devices) == expected


def test_step_cost_counts_memory_and_scales_loop_costs():
  cost = jit_steps.StepCost(argument_bytes=100, output_bytes=40,
                            alias_bytes=30, temp_bytes=7, code_bytes=3,
                            flops=1.0, hbm_bytes=2.0)
  assert cost.device_bytes == 100 + 40 - 30 + 7 + 3


def _config_model_tx(**overrides):
  config = small_digits_config(**overrides)
  model = models.create_model(config.model.variant, num_classes=10,
                              num_blocks=config.model.num_blocks)
  return config, model, optax.sgd(0.1)


def test_abstract_state_is_the_real_states_layout():
  from mixer_jax.training import train_state  # pylint: disable=g-import-not-at-top
  config, model, tx = _config_model_tx()
  mesh = jit_steps.make_mesh(None)
  replicated, _ = jit_steps.shardings(mesh)
  abstract = jit_steps.abstract_state(config, model, tx, replicated)
  real = train_state.TrainState.create(
      params=models.init_params(model, image_size=config.image_size),
      tx=tx, rng=jax.random.PRNGKey(1))
  shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
  assert shapes(abstract) == shapes(real)
  assert jit_steps.tree_bytes(abstract.params) == sum(
      x.nbytes for x in jax.tree.leaves(real.params))


@pytest.mark.slow
def test_train_step_cost_shrinks_with_accumulation():
  config, model, tx = _config_model_tx(batch_size=256)
  mesh = jit_steps.make_mesh(None)
  replicated, _ = jit_steps.shardings(mesh)
  state = jit_steps.abstract_state(config, model, tx, replicated)
  one, four = (jit_steps.train_step_cost(config, model, tx, mesh,
                                         num_classes=10, accum_steps=a,
                                         state=state) for a in (1, 4))
  assert four.temp_bytes < one.temp_bytes
  # Scaled by the loop's trips, the work per step stays about the same.
  assert one.flops == pytest.approx(four.flops, rel=0.1)


def test_auto_accum_steps_picks_the_smallest_that_fits(monkeypatch):
  """Devices that state a limit: the smallest accumulation whose compiled
  step (here, a stand-in needing 1000 / accum bytes) fits its share."""
  config, model, tx = _config_model_tx(batch_size=256, accum_steps=0)
  compiled = []

  def cost(*args, accum_steps, **kwargs):
    del args, kwargs
    compiled.append(accum_steps)
    return jit_steps.StepCost(0, 0, 0, 1000 // accum_steps, 0, 0.0, 0.0)

  monkeypatch.setattr(jit_steps, 'train_step_cost', cost)
  monkeypatch.setattr(jit_steps, '_prefetched_bytes', lambda *a, **k: 0)
  monkeypatch.setattr(jit_steps, 'memory_limit', lambda device: 400)
  accum, why = jit_steps.auto_accum_steps(
      config, model, tx, jit_steps.make_mesh(None), num_classes=10,
      usable_fraction=0.5)  # 200 bytes: 1000 // 8 = 125 fits, // 4 not.
  assert accum == 8 and 'fits' in why
  assert set(compiled) < set(jit_steps.accum_candidates(256, 8))
  monkeypatch.setattr(jit_steps, 'memory_limit', lambda device: 1)
  with pytest.raises(errors.UserError, match='does not fit'):
    jit_steps.auto_accum_steps(config, model, tx, jit_steps.make_mesh(None),
                               num_classes=10, usable_fraction=0.5)


def test_auto_accum_steps_is_one_where_no_limit_is_stated():
  config, model, tx = _config_model_tx(accum_steps=0)
  accum, why = jit_steps.auto_accum_steps(
      config, model, tx, jit_steps.make_mesh(None), num_classes=10,
      usable_fraction=0.95)
  assert accum == 1 and 'no memory limit' in why
  assert jit_steps.memory_limit(jax.devices('cpu')[0]) is None


def test_tree_bytes_counts_every_leaf():
  tree = {'a': np.zeros((3, 4), np.float32), 'b': [np.zeros(5, np.int8)]}
  assert jit_steps.tree_bytes(tree) == 3 * 4 * 4 + 5
