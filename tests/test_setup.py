"""What `pip install` asks for and installs: TensorFlow only through an
extra, so that an installed TensorFlow distribution (Colab's `tensorflow`) is
kept, not joined by `tensorflow-cpu`; a version range whose lower bounds are
Colab's stack; only the library importable from outside the checkout."""

import importlib.metadata
import os
import subprocess
import sys
import tomllib

from packaging import requirements
import pytest

from tests.conftest import ROOT

TENSORFLOWS = {'tensorflow', 'tensorflow-cpu'}
# Colab's preinstalled stack, which CI runs as its own stack (.ci/colab_stack
# installs these pins): the range must admit it.
COLAB = dict(line.split('==') for line in
             (ROOT / '.ci' / 'colab.txt').read_text().splitlines()
             if line and not line.startswith('#'))


def _asked(extras: tuple[str, ...], environment: dict) -> set[str]:
  """The distributions `pip install mixer_jax[extras]` asks for, with this
  package's references to its own extras followed."""
  asked, todo, seen = set(), [''] + list(extras), set()
  while todo:
    extra = todo.pop()
    if extra in seen:
      continue
    seen.add(extra)
    for line in importlib.metadata.requires('mixer_jax'):
      r = requirements.Requirement(line)
      if r.marker is not None and not r.marker.evaluate(
          dict(environment, extra=extra)):
        continue
      if r.name == 'mixer_jax':
        todo.extend(r.extras)
      else:
        asked.add(r.name)
  return asked


X86_LINUX = {'platform_machine': 'x86_64', 'sys_platform': 'linux'}


@pytest.mark.parametrize('extras, wanted', [
    ((), set()), (('tf',), {'tensorflow-cpu'}), (('test',), {'tensorflow-cpu'}),
    (('gpu',), set())])
def test_tensorflow_comes_only_with_an_extra(extras, wanted):
  assert _asked(extras, X86_LINUX) & TENSORFLOWS == wanted


def test_tensorflow_datasets_is_a_plain_requirement():
  assert 'tensorflow-datasets' in _asked((), X86_LINUX)


def test_the_tpu_compiler_comes_with_the_tpu_extra_only():
  """libtpu makes every JAX process on a machine without a TPU try to start
  it: only `.[tpu]` (and the tests, for `plan`) bring it."""
  assert 'jax' in _asked(('tpu',), X86_LINUX)
  tpu = [r for r in map(requirements.Requirement,
                        importlib.metadata.requires('mixer_jax'))
         if r.name == 'jax' and 'tpu' in r.extras]
  assert tpu and all(r.marker.evaluate({'extra': 'tpu'}) for r in tpu)
  assert not any(r.marker.evaluate({'extra': ''}) for r in tpu)


def test_the_range_admits_colabs_stack_and_says_why():
  """Every lower bound is at or below Colab's version of the package."""
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  assert project['requires-python'] == '>=3.11'
  bounds = {r.name: r.specifier for r in map(requirements.Requirement,
                                             project['dependencies'])}
  pinned = {name: COLAB[name] for name in bounds if name in COLAB}
  assert {'jax', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
          'tensorflow-datasets'} <= set(pinned)
  for name, version in pinned.items():
    assert bounds[name], f'{name} has no version bound'
    assert bounds[name].contains(version), (name, bounds[name], version)


def test_only_the_library_is_importable_outside_the_checkout(tmp_path):
  """The install (editable, or the notebooks' from the checkout) maps
  `mixer_jax`, not the checkout's root: its configs/, experiments/ and tests/
  are no top-level packages."""
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  result = subprocess.run(
      [sys.executable, '-c', 'import importlib.util as u, mixer_jax; print('
       '[n for n in ("configs", "experiments", "tests") if u.find_spec(n)])'],
      cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
      timeout=120)
  assert result.stdout.strip() == '[]'
