"""Importing the library changes nothing in the caller's process: no flag
of its own (its libraries, absl, TF, orbax, define theirs), no setting."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CHECK = '''
import pkgutil, importlib
from absl import flags
import jax
import mixer_jax
dispatch = jax.config.values['jax_cpu_enable_async_dispatch']
for module in pkgutil.walk_packages(mixer_jax.__path__, 'mixer_jax.'):
  importlib.import_module(module.name)
ours = [name for name in flags.FLAGS if (flags.FLAGS.find_module_defining_flag(
    name) or '').startswith('mixer_jax')]
print(ours,
      jax.config.values['jax_cpu_enable_async_dispatch'] == dispatch)
'''


@pytest.mark.slow
def test_no_module_defines_a_flag_or_changes_a_setting():
  result = subprocess.run([sys.executable, '-c', CHECK], cwd=ROOT,
                          capture_output=True, text=True, check=True,
                          timeout=300)
  assert result.stdout.strip().splitlines()[-1] == '[] True'


def _imports(path) -> set:
  """The mixer_jax modules `path` imports, at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module == 'mixer_jax':
      found |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
        'mixer_jax.'):
      found.add(node.module.split('.')[1])
    elif isinstance(node, ast.Import):
      found |= {a.name.split('.')[1] for a in node.names
                if a.name.startswith('mixer_jax.')}
  return found


def test_the_package_has_no_import_circle():
  """Layers a reader can draw: every import, deferred ones included, points
  down (a topological order of the modules exists)."""
  package = ROOT / 'mixer_jax'
  graph = {p.stem: _imports(p) - {p.stem} for p in package.glob('*.py')}
  done, path = set(), []

  def visit(module):
    if module in path:
      raise AssertionError('import circle: ' + ' -> '.join(
          path[path.index(module):] + [module]))
    if module in done or module not in graph:
      return
    path.append(module)
    for imported in sorted(graph[module]):
      visit(imported)
    path.pop()
    done.add(module)

  for module in sorted(graph):
    visit(module)
