"""What the commands share (mixer_jax.cli), as a user's command shows it."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                    reason='libtpu (the TPU compiler) is not installed')
def test_a_command_on_a_cpu_never_starts_libtpu(tmp_path):
  """libtpu is installed (for `plan`), there is no TPU and JAX_PLATFORMS is
  unset, as on a user's laptop: the command runs on the CPU with no word
  from libtpu (JAX would start it and print its errors before anything)."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  result = subprocess.run(
      [sys.executable, '-m', 'mixer_jax.export',
       f'--pretrained={ROOT}/tests/testdata/vit_jax_mixer_tiny.npz',
       '--format=stablehlo', f'--output={tmp_path}'], cwd=tmp_path, env=env,
      capture_output=True, text=True, check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'TPU' not in result.stderr, result.stderr[-2000:]
  assert (tmp_path / 'model.bin').exists()
