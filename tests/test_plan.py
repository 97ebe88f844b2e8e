"""Tests for `python -m mixer_jax.plan` and mixer_jax.hardware: the real TPU
compiler (libtpu), no TPU."""

import dataclasses
import importlib.util
import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.compilation_cache import compilation_cache
import numpy as np
import pytest

from experiments import same_as_official
from mixer_jax import cli
from mixer_jax import errors
from mixer_jax import hardware
from mixer_jax import plan
from mixer_jax import recipes
from mixer_jax.model import model_config
from mixer_jax.model import models
from mixer_jax.training import jit_steps
from mixer_jax.training import optim
from mixer_jax.training import planning
from tests.conftest import ROOT

# Where libtpu does not install (not x86-64 Linux), nothing compiles for TPU.
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec('libtpu') is None,
    reason="libtpu (pip install -e '.[tpu]') is not installed")



@pytest.mark.parametrize('name, topology, chip', [
    ('v2-8', 'v2:2x2', 'TPU v2'),
    ('v3-8', 'v3:2x2', 'TPU v3'),
    ('v3-32', 'v3:4x4', 'TPU v3'),
    ('v4-8', 'v4:2x2x1', 'TPU v4'),
    ('v4-128', 'v4:4x4x4', 'TPU v4'),
    ('v5p-8', 'v5p:2x2x1', 'TPU v5p'),
    ('v5e-1', 'v5e:1x1', 'TPU v5e'),
    ('v5e-8', 'v5e:2x4', 'TPU v5e'),
    ('v5litepod-16', 'v5e:4x4', 'TPU v5e'),
    ('v5e-256', 'v5e:16x16', 'TPU v5e'),
    ('v6e-8', 'v6e:2x4', 'TPU v6e'),
    ('v5e:2x4', 'v5e:2x4', 'TPU v5e'),
])
def test_accelerator_types_map_to_topologies(name, topology, chip):
  tpu_slice = hardware.parse(name)
  assert (tpu_slice.topology, tpu_slice.chip.name) == (topology, chip)


@pytest.mark.parametrize('name', ['v9-8', 'v5e-7', 'v3-1', 'tpu', 'a100'])
def test_unknown_topologies_are_a_clear_error(name):
  with pytest.raises(errors.UserError, match='Unknown TPU topology'):
    hardware.parse(name)


def run_plan(*flags, json_path=None):
  command = [sys.executable, '-m', 'mixer_jax.plan', *flags]
  if json_path:
    command.append(f'--json={json_path}')
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        timeout=600, check=False)


@pytest.fixture(name='tpu_env')
def fixture_tpu_env(monkeypatch):
  """What cli.compile_only_for_tpu sets, for this test only."""
  for name, value in cli.TPU_COMPILE_ENV.items():
    monkeypatch.setenv(name, value)
  previous = jax.config.jax_enable_compilation_cache
  jax.config.update('jax_enable_compilation_cache', False)
  compilation_cache.reset_cache()  # JAX decides once per process otherwise.
  yield
  jax.config.update('jax_enable_compilation_cache', previous)
  compilation_cache.reset_cache()


def small_config(**overrides):
  """configs/digits.py with 2 blocks: a plan compiles in seconds."""
  config = recipes.digits()
  config.model.num_blocks = 2
  config.update(overrides)
  return config


@pytest.mark.slow
@pytest.mark.tpu_compile
@needs_libtpu
def test_the_command_plans_a_small_recipe_on_v5e_8(tmp_path):
  result = run_plan('--config=configs/digits.py',
                    '--config.model.num_blocks=2', '--topology=v5e-8',
                    json_path=tmp_path / 'plan.json')
  assert result.returncode == 0, result.stderr[-3000:]
  plan_json = json.loads((tmp_path / 'plan.json').read_text())
  assert plan_json['fits'] and plan_json['min_accum_steps'] == 1
  assert plan_json['topology'] == 'v5e-8' and plan_json['num_classes'] == 10
  assert {'fits', 'hbm_gib_per_chip', 'capacity_gib', 'min_accum_steps',
          'tflop_per_chip_step', 'est_img_per_s_per_chip'} <= set(plan_json)
  assert 'fits' in result.stdout and 'estimate, not a measurement' in (
      result.stdout)


@pytest.mark.tpu_compile
@pytest.mark.slow
@needs_libtpu
@pytest.mark.parametrize('topology, chips, devices_per_chip', [
    ('v5e-8', 8, 1), ('v3-8', 4, 2)])
def test_a_small_recipe_fits_with_its_figures(tpu_env, topology, chips,
                                              devices_per_chip):
  del tpu_env
  tpu_slice = hardware.parse(topology)
  result = planning.plan(small_config(), hardware.devices(tpu_slice),
                     chip=tpu_slice.chip, num_classes=10)
  assert result['fits'] and result['min_accum_steps'] == 1
  assert (result['chips'], result['devices_per_chip']) == (chips,
                                                           devices_per_chip)
  assert 0 < result['hbm_gib_per_chip'] <= result['usable_gib'] < result[
      'capacity_gib']
  assert result['hbm_gib_per_chip'] >= (result['params_gib_per_chip'] +
                                        result['opt_state_gib_per_chip'])
  assert result['tflop_per_chip_step'] > 0
  assert result['hbm_gb_per_chip_step'] > 0
  assert 0 < result['est_img_per_s_per_chip'] < result[
      'est_infer_img_per_s_per_chip']
  assert plan.failure(result) == ''


@pytest.mark.tpu_compile
@pytest.mark.slow
@needs_libtpu
def test_a_recipe_too_large_names_the_accumulation_that_fits(tpu_env):
  """On a v5e-8 whose chips had less HBM than one step needs, but more than
  two micro-batches need: the plan does not fit and names accum_steps=2."""
  del tpu_env
  tpu_slice = hardware.parse('v5e-8')
  config = small_config(image_size=16, batch_size=256)
  config.model.variant = 'Ti/4'
  config.model.num_blocks = 1
  mesh = jit_steps.make_mesh(hardware.devices(tpu_slice))
  model = model_config.model_from_config(config, num_classes=10)
  tx, _ = optim.create_optimizer(config)
  state = jit_steps.abstract_state(config, model, tx,
                                   jit_steps.shardings(mesh)[0])
  need = {a: jit_steps.train_device_bytes(
      config, mesh, jit_steps.train_step_cost(
          config, model, tx, mesh, num_classes=10, accum_steps=a,
          state=state)) for a in (1, 2)}
  assert need[2] < need[1]
  small_chip = dataclasses.replace(  # One device per v5e chip.
      tpu_slice.chip,
      hbm_gib=(need[1] + need[2]) / 2 / hardware.USABLE_FRACTION / 2**30)
  result = planning.plan(config, list(mesh.devices.flat), chip=small_chip,
                     num_classes=10)
  assert not result['fits'] and result['min_accum_steps'] == 2
  assert '--config.accum_steps=2 fits' in plan.failure(result)


@pytest.mark.parametrize('result, expected', [
    (dict(fits=True), ''),
    (dict(fits=False, eval_fits=False, eval_hbm_gib_per_chip=20.0,
          usable_gib=15.2), 'lower --config.eval_batch_size'),
    (dict(fits=False, eval_fits=True, hbm_gib_per_chip=None, accum_steps=1,
          usable_gib=15.2, min_accum_steps=8),
     'does not fit: with accum_steps=1 it needs more than the chip has, '
     'usable 15.20 GiB; --config.accum_steps=8 fits'),
    (dict(fits=False, eval_fits=True, hbm_gib_per_chip=40.0, accum_steps=1,
          usable_gib=15.2, min_accum_steps=None),
     'no accumulation fits; lower --config.batch_size'),
])
def test_failure_says_what_would_fit(result, expected):
  if expected:
    assert expected in plan.failure(result)
  else:
    assert plan.failure(result) == ''


class _OfficialMlp(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, x):
    y = nn.gelu(nn.Dense(self.dim)(x))
    return nn.Dense(x.shape[-1])(y)


class _OfficialBlock(nn.Module):
  tokens_mlp_dim: int
  channels_mlp_dim: int

  @nn.compact
  def __call__(self, x):
    y = jnp.swapaxes(nn.LayerNorm()(x), 1, 2)
    y = _OfficialMlp(self.tokens_mlp_dim, name='token_mixing')(y)
    x = x + jnp.swapaxes(y, 1, 2)
    y = nn.LayerNorm()(x)
    return x + _OfficialMlp(self.channels_mlp_dim, name='channel_mixing')(y)


class _OfficialMixer(nn.Module):
  """vit_jax/models_mixer.py's computation (an nn.Conv stem, float32), with
  the widths of `model`."""
  model: models.MlpMixer

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    m, p = self.model, self.model.patch_size
    x = nn.Conv(m.hidden_dim, (p, p), strides=(p, p), name='stem')(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    for i in range(m.num_blocks):
      x = _OfficialBlock(m.tokens_mlp_dim, m.channels_mlp_dim,
                         name=f'MixerBlock_{i}')(x)
    x = nn.LayerNorm(name='pre_head_layer_norm')(x)
    return nn.Dense(m.num_classes, kernel_init=nn.initializers.zeros,
                    name='head')(jnp.mean(x, axis=1))


def test_the_official_computation_here_is_our_model():
  ours = models.create_model('Ti/8', num_classes=100, num_blocks=2)
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3),
                              minval=-1, maxval=1)
  params = models.init_params(ours, image_size=64)
  params['head'] = jax.tree.map(
      lambda x: jax.random.normal(jax.random.PRNGKey(2), x.shape),
      params['head'])
  np.testing.assert_allclose(
      _OfficialMixer(ours).apply({'params': params}, images),
      ours.apply({'params': params}, images), atol=1e-5)


@pytest.mark.tpu_compile
@needs_libtpu
@pytest.mark.parametrize('topology', ['v5e-8', 'v3-8'])
@pytest.mark.parametrize('mode', ['train', 'infer'])
def test_the_model_is_the_official_program(tpu_env, topology, mode):
  """The same parameters, sharded over a TPU slice: our inference and train
  step lower to the official computation's program, so the TPU compiler
  gives both the same executable, HBM traffic and temporaries
  (experiments/same_as_official.py compiles both and prints them)."""
  del tpu_env
  ours = models.create_model('Ti/8', num_classes=100, num_blocks=2)
  devices = hardware.devices(hardware.parse(topology))
  ours_text, official_text = (
      same_as_official.lowered(module, mode=mode, image_size=64, batch=128,
                               devices=devices).as_text(debug_info=False)
      for module in (ours, _OfficialMixer(ours)))
  assert 'stablehlo.convolution' in ours_text  # The stem is a convolution.
  assert ours_text == official_text
