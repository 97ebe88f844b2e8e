"""Tests for mixer_jax/host_memory.py, each in a fresh process of one device.

The settings are process-wide and must precede jax's backends, so each case
runs in its own interpreter. Asserted: the page faults per call (median of
10) of a program whose temporaries glibc would map afresh, and its values;
never its time.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc',
    reason='The allocator settings are glibc\'s.')

# Two tanh(x @ w) layers and their gradients, reduced to scalars: about 50 MB
# of temporaries in one block, over glibc's largest mmap threshold (32 MB).
PROGRAM = r"""
import json, resource, sys
import jax, jax.numpy as jnp
from mixer_jax import host_memory

reused = host_memory.reuse_freed_memory() if sys.argv[1] == 'reuse' else None

def loss(x, w):
  for _ in range(2):
    x = jnp.tanh(x @ w)
  return x.sum()

def grad_sums(x, w):
  return [g.sum() for g in jax.grad(loss, argnums=(0, 1))(x, w)]

x, w = jnp.ones((16384, 256)), jnp.eye(256) / 2
compiled = jax.jit(grad_sums).lower(x, w).compile()
faults = []
for _ in range(10):  # The heap may still grow once in the first few calls.
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  sums = jax.block_until_ready(compiled(x, w))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({
    'reused': reused,
    'grad_sums': [float(g) for g in sums],
    'faults_per_call': sorted(faults)[len(faults) // 2],  # The median.
    'temp_pages': compiled.memory_analysis().temp_size_in_bytes /
                  resource.getpagesize(),
    'async_dispatch': jax.config.values['jax_cpu_enable_async_dispatch']}))
"""

# One block of B/16 at batch 32, inference: XLA:CPU fuses LayerNorm, the
# channel MLP's first matmul and its bias into one YNNPACK fusion, which
# allocates its (6272, 3072) product, 77 MB, on a worker thread at every call.
MIXER_BLOCK = r"""
import json, resource, sys
from mixer_jax import host_memory
reused = host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp
from mixer_jax import models

model = models.create_model('B/16', num_classes=10, num_blocks=1)
params = models.init_params(model, image_size=224)
images = jnp.ones((32, 224, 224, 3))
compiled = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False)
                   ).lower(params, images).compile()
faults = []
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(compiled(params, images))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'reused': reused, 'faults_per_call': sorted(faults)[2],
                  'one_heap': host_memory.cpu_is_the_only_backend()}))
"""

PRODUCT_PAGES = 32 * 196 * 3072 * 4 / 4096


def run_program(program: str, *args: str, pythonpath: str = '') -> dict:
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='')  # One device.
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [pythonpath, str(ROOT)]))
  result = subprocess.run([sys.executable, '-c', program, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.splitlines()[-1])


def test_freed_temporaries_are_reused_without_page_faults():
  default, reused = (run_program(PROGRAM, 'default'),
                     run_program(PROGRAM, 'reuse'))
  assert default['temp_pages'] > 32 * 2**20 / 4096  # Over the mmap threshold.
  # Without the settings a call faults its temporaries in again ...
  assert default['faults_per_call'] > 0.5 * default['temp_pages']
  assert default['async_dispatch']
  # ... with them, it reuses the pages the last call freed.
  assert reused['reused'] is True and not reused['async_dispatch']
  assert reused['faults_per_call'] < 0.05 * reused['temp_pages']
  # The same program computes the same values.
  assert reused['grad_sums'] == default['grad_sums']


def test_worker_threads_blocks_are_reused_where_only_the_cpu_can_run(
    tmp_path):
  reused = run_program(MIXER_BLOCK)
  # An empty jax_plugins package: jax might find an accelerator plugin there,
  # so the threads keep their own arenas.
  (tmp_path / 'jax_plugins').mkdir()
  own_arenas = run_program(MIXER_BLOCK, pythonpath=str(tmp_path))
  assert reused['reused'] and own_arenas['reused']
  assert reused['one_heap'] and not own_arenas['one_heap']
  # In their own arenas, the worker threads map the product afresh each call.
  assert own_arenas['faults_per_call'] > PRODUCT_PAGES
  assert reused['faults_per_call'] < 0.05 * PRODUCT_PAGES
