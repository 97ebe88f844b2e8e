"""The notebooks run top to bottom, offline on the CPU, as a user runs them:
`jupyter nbconvert --execute` with no extra environment."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

NOTEBOOKS = {'inference': ['offline (stand-ins)', '1000 classes',
                           'photo_1.jpg'],
             'fine_tune': ['digits 150 steps', 'test_3.png label',
                           'parameters saved to fine_tuned.npz']}


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_the_notebook_runs_offline_end_to_end(name, tmp_path):
  notebook = tmp_path / f'{name}.ipynb'
  shutil.copy(ROOT / 'notebooks' / f'{name}.ipynb', notebook)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  result = subprocess.run(
      [sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'notebook',
       '--execute', f'--output-dir={tmp_path / "out"}', str(notebook)],
      cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'out' / f'{name}.ipynb') as f:
    cells = json.load(f)['cells']
  printed = ''.join(''.join(o.get('text', '')) for c in cells
                    for o in c.get('outputs', []))
  for expected in NOTEBOOKS[name]:
    assert expected in printed
  assert any('image/png' in o.get('data', {}) for c in cells
             for o in c.get('outputs', []))


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_the_notebook_is_kept_without_outputs(name):
  with open(ROOT / 'notebooks' / f'{name}.ipynb') as f:
    cells = json.load(f)['cells']
  assert all(not c.get('outputs') and c.get('execution_count') is None
             for c in cells if c['cell_type'] == 'code')
