"""The package's layers: importing it changes nothing in the caller's
process; commands sit on top of a library that never imports them; import
chains stay short and circle-free; TensorFlow loads only where tf.data or
tfds runs; a command answers --help before jax loads."""

import ast
import functools
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / 'mixer_jax'
COMMANDS = ('train', 'evaluate', 'fewshot', 'transfer', 'predict', 'export',
            'plan', 'plot')
MAX_CHAIN = 8
# The library modules that may import TensorFlow: they run tf.data or tfds
# (or, in serving/export.py, write a SavedModel, deferred to that format).
# cli imports it first for a command that uses it, to keep its start-up
# notices off stderr.
TENSORFLOW_USERS = {'cli', 'data.input_pipeline', 'data.preflight',
                    'data.preprocess', 'data.sources', 'serving.export'}

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


def _name(path) -> str:
  """mixer_jax/data/sources.py -> 'data.sources'; a package's __init__.py
  -> the package ('trainer')."""
  parts = path.relative_to(PACKAGE).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path, names) -> tuple[set, set]:
  """(the package's modules `path` imports, at any depth of its code; the
  outside packages it imports)."""
  ours, outside = set(), set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom):
      module = node.module or ''
      if module == 'mixer_jax' or module.startswith('mixer_jax.'):
        base = module[len('mixer_jax.'):] if '.' in module else ''
        for alias in node.names:
          full = f'{base}.{alias.name}' if base else alias.name
          ours.add(full if full in names else base)
      else:
        outside.add(module.split('.')[0])
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('mixer_jax.'):
          ours.add(alias.name[len('mixer_jax.'):])
        else:
          outside.add(alias.name.split('.')[0])
  return ours - {'', _name(path)}, outside


@functools.cache
def _graph() -> dict:
  """{module: (modules it imports, outside packages it imports)}."""
  paths = sorted(PACKAGE.rglob('*.py'))
  names = {_name(p) for p in paths}
  return {_name(p): _imports(p, names) for p in paths}


def _longest_chain(graph) -> list:
  """The longest import chain; raises AssertionError naming a circle."""
  longest, path = {}, []

  def visit(module):
    if module in path:
      raise AssertionError('import circle: ' + ' -> '.join(
          path[path.index(module):] + [module]))
    if module not in longest:
      path.append(module)
      below = [visit(m) for m in sorted(graph[module][0]) if m in graph]
      path.pop()
      longest[module] = [module] + max(below, key=len, default=[])
    return longest[module]

  return max((visit(m) for m in sorted(graph)), key=len)


def test_the_graph_is_read_from_the_sources():
  graph = _graph()
  assert 'trainer.loop' in graph['trainer'][0]
  assert 'data.sources' in graph['data.input_pipeline'][0]
  assert 'tensorflow' in graph['data.input_pipeline'][1]
  assert set(COMMANDS) <= set(graph)


def test_a_command_is_imported_by_no_module_of_the_package():
  importers = {module: sorted(m for m in modules if m in COMMANDS)
               for module, (modules, _) in _graph().items()}
  assert {m: c for m, c in importers.items() if c} == {}


def test_no_import_circle_and_chains_of_at_most_eight_modules():
  chain = _longest_chain(_graph())
  assert len(chain) <= MAX_CHAIN, ' -> '.join(chain)


def test_the_longest_chain_is_measured():
  graph = {'a': ({'b'}, set()), 'b': ({'c'}, set()), 'c': (set(), set())}
  assert _longest_chain(graph) == ['a', 'b', 'c']
  with pytest.raises(AssertionError, match='import circle: a -> b -> a'):
    _longest_chain({'a': ({'b'}, set()), 'b': ({'a'}, set())})


def test_tensorflow_only_where_tf_data_or_tfds_runs():
  users = {m for m, (_, outside) in _graph().items()
           if outside & {'tensorflow', 'tensorflow_datasets'}}
  assert users == TENSORFLOW_USERS


HELP = '''
import runpy, sys
sys.argv = ['{command}', '--help']
try:
  runpy.run_module('mixer_jax.{command}', run_name='__main__')
except SystemExit as e:
  code = e.code
print(code, sorted({{'jax', 'tensorflow', 'orbax', 'flax', 'matplotlib'}}
                   & set(sys.modules)))
'''


@pytest.mark.parametrize('command', COMMANDS)
def test_help_answers_before_the_library_loads(command):
  """--help (and so every flag mistake) is parsed before jax, TensorFlow,
  flax, orbax or matplotlib is imported (experiments/startup.py times it)."""
  result = subprocess.run(
      [sys.executable, '-c', HELP.format(command=command)], cwd=ROOT,
      capture_output=True, text=True, timeout=120, check=True)
  assert result.stdout.strip().splitlines()[-1] == '0 []', result.stderr
