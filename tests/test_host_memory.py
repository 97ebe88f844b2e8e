"""Tests for mixer_jax.host_memory and the train command's opt-in."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DIGITS_RUN
from tests.conftest import override_flags
from tests.conftest import ROOT
from tests.conftest import run_train
from tests.conftest import SMALL_DIGITS_FLAGS

CALL = '''
import jax
from mixer_jax import host_memory
print(host_memory.reuse_freed_memory(),
      jax.config.values['jax_cpu_enable_async_dispatch'])
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc')
@pytest.mark.parametrize('platforms,want', [
    ('cpu', 'True False'),  # Made, dispatch on the calling thread.
    ('tpu', 'False True'),  # An accelerator host: nothing changes.
])
def test_the_setting_is_made_only_where_the_cpu_is_the_only_backend(
    platforms, want):
  result = subprocess.run([sys.executable, '-c', CALL], cwd=ROOT,
                          capture_output=True, text=True, check=True,
                          timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS=platforms))
  assert result.stdout.split('\n')[-2] == want


def test_train_with_both_cpu_options_ends_like_the_plain_run(digits_run,
                                                            tmp_path):
  # The session's digits run, repeated with the opt-ins: same results up to
  # float rounding.
  _, want = digits_run
  result = run_train(tmp_path / 'run', '--reuse_host_memory',
                     '--config.cpu_kernel_grads=True', *SMALL_DIGITS_FLAGS,
                     *override_flags(DIGITS_RUN))
  assert result.returncode == 0, result.stderr[-3000:]
  got = json.loads((tmp_path / 'run' / 'final_metrics.json').read_text())
  assert got['step'] == want['step'] == 60
  np.testing.assert_allclose(got['eval_loss'], want['eval_loss'], rtol=1e-3)
  assert abs(got['eval_accuracy'] - want['eval_accuracy']) <= 2 / 360
