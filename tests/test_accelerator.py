"""experiments/accelerator.py on the CPU: every section at toy sizes, within
its budget, in the JSON it writes."""

import json
import os
import subprocess
import sys

import pytest

from experiments import accelerator
from tests.conftest import FAST_COMPILE
from tests.conftest import ROOT


@pytest.mark.slow
def test_every_section_runs_at_toy_sizes_and_the_fine_tune_learns(tmp_path):
  output = tmp_path / 'accelerator.json'
  env = os.environ | {'PYTHONPATH': str(ROOT), 'XLA_FLAGS': FAST_COMPILE}
  result = subprocess.run(
      [sys.executable, 'experiments/accelerator.py', '--budget_s=120',
       f'--output={output}'], cwd=ROOT, env=env, capture_output=True,
      text=True, check=False, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  found = json.loads(output.read_text())
  assert found['device']['platform'] == 'cpu' and found['device']['jax']
  assert found['sizes']['image_size'] == 64  # The toy sizes.
  assert found['matmul']['float32'] > 0 and found['matmul']['bfloat16'] > 0
  tuned = found['fine_tune']
  assert tuned['steps'] == 300 and tuned['loss_fell'], tuned
  assert tuned['last_loss'] < tuned['first_loss'] / 2
  assert found['memory']['compiled_train_gib_per_device'] > 0
  assert found['memory']['plan'].startswith('skipped: ')
  [first, *_] = found['throughput']
  assert (first['variant'], first['model']) == ('S/32', 'ours')
  assert first['train_img_per_s'] > 0 and 0 < first['infer_mfu'] < 2
  assert any(s.startswith('timm: ') for s in found['skipped'])
  # Whatever the budget left out is named, none of it failed.
  assert not any('failed' in s for s in found['skipped']), found['skipped']
  assert '| S/32 | 1 x cpu | float32 | 8 | ours |' in result.stdout


@pytest.mark.parametrize('kind, count, name', [
    ('TPU v5 lite', 1, 'v5e-1'), ('TPU v6 lite', 8, 'v6e-8'),
    ('TPU v4', 4, 'v4-8'), ('TPU v3', 8, 'v3-8'), ('TPU v5 lite', 3, None),
    ('NVIDIA H100 80GB HBM3', 1, None)])
def test_tpu_slice_name(kind, count, name):
  assert accelerator.tpu_slice_name(kind, count) == name
