"""Tests for experiments/benchmark.py: FLOPs accounting and the harness.

No timing is asserted: the figures only have to be well formed.
"""

import dataclasses
import json
import math
import os
import pathlib
import platform
import subprocess
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from experiments import benchmark
from experiments import matmul_peak
from experiments import measure
from mixer_jax import models

ROOT = pathlib.Path(__file__).parent.parent


# A one-block Ti/4 on 16 px images, on the 8 virtual CPU devices: seconds.
TINY = benchmark.Settings(variant='Ti/4', num_blocks=1, image_size=16, batch=16,
                          num_classes=10, accum_steps=2, steps=2, warmup=1,
                          matmul_seconds=0.005, matmul_max_dim=512)


def input_config(image_size=16, batch_size=16):
  config = digits.get_config()
  config.update(image_size=image_size, batch_size=batch_size,
                train_pp='inception_crop')
  return config


@pytest.fixture(scope='module')
def mesh():
  return jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))


@pytest.fixture(scope='module')
def results():
  """Every mode of the harness, end to end, once for the tests below."""
  return benchmark.run_benchmark(TINY, input_config=input_config(),
                                 command='test')


def is_positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# XLA also counts LayerNorm, GELU and the adds, which the formula leaves out.
@pytest.mark.parametrize('variant,image_size', [
    ('Ti/4', 32), ('S/32', 224), ('B/16', 224), ('L/32', 224),
])
def test_analytic_forward_flops_match_xla(variant, image_size):
  model = models.create_model(variant, num_classes=1000, num_blocks=2)
  xla = measure.xla_flops_per_image(model, image_size=image_size)
  analytic = models.flops_per_image(model, image_size=image_size)
  assert xla == pytest.approx(analytic, rel=0.03)


def test_train_step_flops_are_three_forward_passes(results):
  model = results['model']
  assert model['analytic_forward'] == models.flops_per_image(
      models.create_model('Ti/4', num_classes=10, num_blocks=1),
      image_size=16)
  assert model['xla_train'] == pytest.approx(3 * model['xla_forward'],
                                             rel=0.1)
  assert model['train_over_forward'] == pytest.approx(
      model['xla_train'] / model['xla_forward'])


def test_matmul_ceiling(results):
  ceiling = results['matmul_ceiling']
  assert set(ceiling['ratio_to_peak']) == {'token_mixing', 'channel_mixing'}
  assert all(is_positive(r) for r in ceiling['ratio_to_peak'].values())
  model = models.create_model(TINY.variant, num_classes=TINY.num_classes,
                              num_blocks=TINY.num_blocks)
  matmuls = models.forward_matmuls(model, image_size=TINY.image_size)
  assert ceiling['fraction'] == pytest.approx(
      matmul_peak.matmul_ceiling_fraction(matmuls, ceiling['ratio_to_peak']))
  assert set(ceiling['train_ratio_to_peak']) == set(ceiling['ratio_to_peak'])
  assert all(is_positive(r) for r in ceiling['train_ratio_to_peak'].values())
  assert ceiling['train_fraction'] == pytest.approx(
      matmul_peak.matmul_ceiling_fraction(
          matmuls, ceiling['train_ratio_to_peak'], train=True))
  assert str(ceiling['square_dim']) in results['matmul_peak']['by_dim']
  assert 'matmul ceiling' in benchmark.format_report(results)


def test_kernel_grad_forms_are_recorded_and_can_be_forced():
  """The GPU comparison needs both settings; the JSON says which ran."""
  forced = dataclasses.replace(TINY, modes=('inference',),
                               per_example_token_grad=False,
                               transposed_channel_grad=True)
  results = benchmark.run_benchmark(forced, command='test')
  assert results['model']['per_example_token_grad'] is False
  assert results['settings']['per_example_token_grad'] is False
  assert results['model']['transposed_channel_grad'] is True
  assert results['settings']['transposed_channel_grad'] is True
  assert ('kernel gradients: per-example token off, transposed channel on'
          in benchmark.format_report(results))


def test_matmul_peak(results):
  peak = results['matmul_peak']
  assert is_positive(peak['flop_per_s'])
  assert peak['call_seconds'] > 0 and peak['chain'] >= 1 and peak['turns'] == 5
  assert peak['devices'] == jax.device_count()
  # Every size tried is kept, the reported one is the fastest of them.
  assert peak['by_dim'][str(peak['dim'])] == peak['flop_per_s']
  assert peak['flop_per_s'] == max(peak['by_dim'].values())
  assert list(peak['by_dim'])[0] == '512'


@pytest.mark.parametrize('mode', ['train', 'inference'])
def test_device_modes_are_well_formed(results, mode):
  figures = results[mode]
  for key in ('img_per_s', 'step_seconds', 'compile_seconds', 'mfu',
              'memory_bytes', 'compiled_memory_bytes'):
    assert is_positive(figures[key]), key
  assert len(figures['step_seconds_all']) == TINY.steps
  assert figures['page_faults_per_step'] >= 0  # Counted on Linux.
  assert figures['img_per_s'] == pytest.approx(TINY.batch /
                                               figures['step_seconds'])
  passes = 3 if mode == 'train' else 1
  assert figures['mfu'] == pytest.approx(
      passes * results['model']['analytic_forward'] * figures['img_per_s'] /
      results['matmul_peak']['flop_per_s'])
  # CPU devices report no peak memory: the compiled estimate stands in.
  assert figures['memory_source'].startswith('compiled estimate')


@pytest.mark.parametrize('mode', ['train', 'inference'])
def test_device_modes_have_the_peak_alongside(results, mode):
  """The square chain, timed after each step, rescaled to the peak."""
  figures, peak = results[mode], results['matmul_peak']
  square = peak['alongside']
  assert len(figures['alongside_seconds_all']) == TINY.steps
  assert square['dim'] <= matmul_peak.SQUARE_MAX_DIM
  assert figures['peak_alongside'] == pytest.approx(
      square['flops'] / min(figures['alongside_seconds_all']) *
      peak['flop_per_s'] / peak['by_dim'][str(square['dim'])])
  assert figures['mfu_alongside'] == pytest.approx(
      figures['mfu'] * peak['flop_per_s'] / figures['peak_alongside'])
  # Paired: each step against the chain call right after it, median.
  flops = figures['mfu'] * peak['flop_per_s'] * figures['step_seconds']
  scale = peak['flop_per_s'] / peak['by_dim'][str(square['dim'])]
  ratios = sorted(
      flops / step / (square['flops'] / chain * scale)
      for step, chain in zip(figures['step_seconds_all'],
                             figures['alongside_seconds_all']))
  assert figures['mfu_paired'] == pytest.approx(
      (ratios[(TINY.steps - 1) // 2] + ratios[TINY.steps // 2]) / 2)


def test_calls_take_turns():
  order = []
  seconds = measure.time_in_turns(
      [lambda: order.append('a'), lambda: order.append('b')], turns=3)
  assert order == ['a', 'b'] * 3
  assert [len(s) for s in seconds] == [3, 3]
  assert all(t >= 0 for s in seconds for t in s)


def test_input_mode(results):
  assert is_positive(results['input']['img_per_s'])
  assert results['input']['train_pp'] == 'inception_crop'
  assert results['input']['image_size'] == 16


def test_report_has_a_row_per_mode_and_json_round_trips(results):
  report = benchmark.format_report(results)
  for mode in benchmark.MODES:
    assert any(line.startswith(mode + ' ') for line in report.splitlines())
  assert 'matmul peak' in report and 'command: test' in report
  assert 'MFU alongside' in report and 'paired' in report
  assert ('kernel gradients: per-example token on, transposed channel on'
          in report)  # The CPU's defaults.
  assert json.loads(json.dumps(results))['settings']['num_blocks'] == 1


@pytest.mark.parametrize('platform_name, reused, caveat', [
    ('cpu', False, True), ('cpu', True, False), ('gpu', False, False)])
def test_report_warns_where_the_figures_alongside_overstate(
    results, platform_name, reused, caveat):
  machine = dict(results['machine'], platform=platform_name,
                 host_memory_reused=reused)
  report = benchmark.format_report(dict(results, machine=machine))
  assert (benchmark.ALONGSIDE_CAVEAT in report) is caveat


AVX512_VM = ('processor\t: 0\nmodel name\t: AMD EPYC\n'
             'flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_bf16\n\n'
             'processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n')


@pytest.mark.parametrize('cpuinfo, model, extensions', [
    (AVX512_VM, 'AMD EPYC', 'avx2 fma avx512f avx512_bf16'),
    ('model name\t: Xeon: Sapphire Rapids\nflags\t: avx2 amx_bf16 amx_tile\n',
     'Xeon: Sapphire Rapids', 'avx2 amx_bf16'),
    ('model name\t: Old\nflags\t: sse4_2 avx\n', 'Old', ''),
])
def test_cpu_record_names_the_matmul_extensions(cpuinfo, model, extensions):
  assert benchmark.cpu_record(cpuinfo) == {'cpu': model,
                                           'cpu_extensions': extensions}


def test_report_names_the_cpu_extensions(results):
  machine = dict(results['machine'], cpu='AMD EPYC',
                 cpu_extensions='avx2 avx512f')
  report = benchmark.format_report(dict(results, machine=machine))
  assert f'CPU AMD EPYC ({machine["cpu_cores"]} cores; avx2 avx512f)' in report


def test_donated_train_state_spares_the_params(mesh):
  params = {'kernel': jnp.ones((4, 4))}
  state = measure.donatable_train_state(
      params, measure.fine_tuning_optimizer(), mesh)
  jax.jit(lambda s: s.replace(step=s.step + 1), donate_argnums=(0,))(state)
  assert state.params['kernel'].is_deleted()
  assert not params['kernel'].is_deleted()


def test_cli_writes_json(tmp_path, capsys):
  path = tmp_path / 'out.json'
  # This process's jax already runs: the allocator is left as it is.
  flags.FLAGS(['benchmark.py', '--image_size=16', '--batch=8', '--steps=1',
               '--warmup=0', '--modes=input', f'--json={path}',
               '--noreuse_host_memory'])
  try:
    benchmark.main(['benchmark.py'])
  finally:
    flags.FLAGS.unparse_flags()
  assert any(line.startswith('input ')
             for line in capsys.readouterr().out.splitlines())
  results = json.loads(path.read_text())
  assert is_positive(results['input']['img_per_s'])
  # The default input config gets the fine-tuning crop at the benchmark size.
  assert results['input']['train_pp'] == 'inception_crop'
  assert results['input']['image_size'] == 16
  assert results['settings']['input_config'].endswith('configs/digits.py')
  for key in ('date', 'device_kind', 'device_count', 'platform', 'cpu',
              'cpu_cores', 'jax', 'jaxlib', 'flax', 'command'):
    assert results['machine'][key], key
  assert 'cpu_extensions' in results['machine']  # Empty on a CPU without.
  # conftest's virtual devices come from XLA_FLAGS: the record names them.
  assert 'device_count=8' in results['machine']['xla_flags']
  assert results['machine']['host_memory_reused'] is False


# Accelerator images (this project's GPU machines among them) often have jax
# but no TensorFlow: the device modes must not import it. None in sys.modules
# makes every import of these packages fail.
WITHOUT_TENSORFLOW = """
import runpy, sys
sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_cli_in_a_fresh_process_without_tensorflow_reuses_host_memory(
    tmp_path):
  path = tmp_path / 'out.json'
  result = subprocess.run(
      [sys.executable, '-c', WITHOUT_TENSORFLOW, 'experiments/benchmark.py',
       '--variant=Ti/4', '--num_blocks=1', '--image_size=16', '--batch=8',
       '--num_classes=10', '--steps=2', '--warmup=1',
       '--modes=train,inference', '--matmul_seconds=0.005',
       '--matmul_max_dim=512', f'--json={path}'],
      cwd=ROOT, env=dict(os.environ, XLA_FLAGS=''), capture_output=True,
      text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(path.read_text())
  assert is_positive(results['train']['img_per_s'])
  assert is_positive(results['inference']['img_per_s'])
  reused = platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc'
  assert results['machine']['host_memory_reused'] is reused
  assert ('host memory freed by a step: reused by the next' in
          result.stdout) is reused
  assert results['train']['page_faults_per_step'] >= 0


def test_input_mode_alone_needs_tensorflow(tmp_path):
  path = tmp_path / 'out.json'
  result = subprocess.run(
      [sys.executable, '-c', WITHOUT_TENSORFLOW, 'experiments/benchmark.py',
       '--image_size=16', '--batch=8', '--steps=1', '--warmup=0',
       '--modes=train,input', '--num_blocks=1', f'--json={path}'],
      cwd=ROOT, env=dict(os.environ, XLA_FLAGS=''), capture_output=True,
      text=True, timeout=300, check=False)
  assert result.returncode != 0
  message = result.stderr.strip().splitlines()[-1]
  assert 'The input mode needs TensorFlow' in message
  assert '--modes=train,inference' in message
  assert 'XLA/analytic' not in result.stdout  # Stopped before measuring.
  assert not path.exists()


# Stands in for $PYTHON in accelerator_rows.sh: the benchmark without
# TensorFlow, its rows shrunk to seconds (later flags win).
SHRINKING_PYTHON = """#!/bin/sh
case "$1" in -c) exec "$PY" "$@" ;; esac
exec "$PY" -c "$WITHOUT_TENSORFLOW" "$@" --num_blocks=1 --image_size=32 \\
    --batch=8 --num_classes=10 --steps=1 --warmup=0 --matmul_seconds=0.005 \\
    --matmul_max_dim=512
"""


def test_accelerator_rows_script_runs_the_rows_it_is_given(tmp_path):
  python = tmp_path / 'python'
  python.write_text(SHRINKING_PYTHON)
  python.chmod(0o755)
  out = tmp_path / 'rows'
  result = subprocess.run(
      ['bash', 'experiments/accelerator_rows.sh', str(out), 's32',
       'b16_channel_grad_on'], cwd=ROOT,
      env=dict(os.environ, XLA_FLAGS='', PYTHON=str(python),
               PY=sys.executable, WITHOUT_TENSORFLOW=WITHOUT_TENSORFLOW),
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(p.name for p in out.iterdir()) == [
      'b16_channel_grad_on.json', 'log.txt', 's32.json']
  s32 = json.loads((out / 's32.json').read_text())
  b16 = json.loads((out / 'b16_channel_grad_on.json').read_text())
  assert (s32['settings']['variant'], s32['settings']['dtype']) == (
      'S/32', 'bfloat16')
  assert b16['settings']['variant'] == 'B/16'
  assert (b16['settings']['per_example_token_grad'],
          b16['settings']['transposed_channel_grad']) == (False, True)
  assert is_positive(b16['train']['img_per_s'])
  log = (out / 'log.txt').read_text()
  assert log.count('matmul peak') == 2


def test_accelerator_rows_script_refuses_an_unknown_row(tmp_path):
  result = subprocess.run(
      ['bash', 'experiments/accelerator_rows.sh', str(tmp_path / 'rows'),
       's32', 'b61'], cwd=ROOT, capture_output=True, text=True, timeout=60,
      check=False)
  assert result.returncode != 0
  assert "unknown run 'b61'" in result.stderr
  assert not (tmp_path / 'rows').exists()


def test_cli_rejects_a_batch_that_does_not_split():
  flags.FLAGS(['benchmark.py', '--batch=12', '--modes=input'])
  try:
    with pytest.raises(app.UsageError, match='does not split'):
      benchmark.main(['benchmark.py'])
  finally:
    flags.FLAGS.unparse_flags()
