"""Importing the library changes nothing in the caller's process: no flag
of its own (its libraries, absl, TF, orbax, define theirs), no setting."""

import subprocess
import sys

from tests.conftest import ROOT

CHECK = '''
import pkgutil, importlib
from absl import flags
import jax
import mixer_jax
dispatch = jax.config.values['jax_cpu_enable_async_dispatch']
for module in pkgutil.iter_modules(mixer_jax.__path__):
  importlib.import_module(f'mixer_jax.{module.name}')
ours = [name for name in flags.FLAGS if (flags.FLAGS.find_module_defining_flag(
    name) or '').startswith('mixer_jax')]
print(ours,
      jax.config.values['jax_cpu_enable_async_dispatch'] == dispatch)
'''


def test_no_module_defines_a_flag_or_changes_a_setting():
  result = subprocess.run([sys.executable, '-c', CHECK], cwd=ROOT,
                          capture_output=True, text=True, check=True,
                          timeout=300)
  assert result.stdout.strip().splitlines()[-1] == '[] True'
