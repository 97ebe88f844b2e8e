"""A smoke test of experiments/benchmark.py: it runs, with sane figures."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_benchmark_reports_our_model(tmp_path):
  output = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, 'experiments/benchmark.py', '--variant=Ti/4',
       '--image_size=32', '--batch=8', '--models=ours,official', '--rounds=1',
       '--steps=2', '--input_batches=2', '--peak_sizes=256',
       f'--json={output}'], cwd=ROOT,
      capture_output=True, text=True, check=False, timeout=300,
      env={'PYTHONPATH': str(ROOT), 'JAX_PLATFORMS': 'cpu',
           'PATH': '/usr/bin:/bin'})
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(output.read_text())
  [ours] = [r for r in results['rows'] if r['model'] == 'ours']
  assert ours['train_img_per_s'] > 0 and ours['infer_img_per_s'] > 0
  assert 0 < ours['train_mfu'] < 2 and results['input_img_per_s'] > 0
  assert '| ours |' in result.stdout
  if 'official' not in {r['model'] for r in results['rows']}:
    assert any(n.startswith('official: left out') for n in results['notes'])
