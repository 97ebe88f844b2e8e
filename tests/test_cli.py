"""What the commands share (mixer_jax.cli), as a user's command shows it."""

import importlib.util
import logging
import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from mixer_jax import cli
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


COMMANDS = ('train', 'evaluate', 'fewshot', 'transfer', 'predict', 'export',
            'plan', 'plot')


def run_command(name, *args):
  return subprocess.run([sys.executable, '-m', f'mixer_jax.{name}', *args],
                        cwd=ROOT, capture_output=True, text=True, check=False,
                        timeout=300)


def test_every_command_parses_its_flags_with_ours():
  """cli.parse_flags makes --help exit 0 and a flag mistake one line; the
  commands below run it for real."""
  for name in COMMANDS:
    source = (ROOT / 'mixer_jax' / f'{name}.py').read_text()
    assert (f"flags_parser=cli.parse_flags('mixer_jax.{name}')" in source or
            f"flags_parser=cli.parse_flags_and_config('mixer_jax.{name}')"
            in source), name


@pytest.mark.slow
@pytest.mark.parametrize('name', ['train', 'export', 'plot'])
def test_help_exits_0_and_a_bad_flag_is_one_line(name):
  shown = run_command(name, '--help')
  assert shown.returncode == 0, shown.stderr[-2000:]
  assert f'mixer_jax.{name}' in shown.stdout
  bad = run_command(name, '--no_such_flag=1')
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == (
      f"mixer_jax.{name}: error: Unknown command line flag 'no_such_flag'")


@pytest.mark.slow
def test_train_help_shows_the_launch_flags_readme_uses():
  shown = run_command('train', '--help').stdout
  for flag in ('--config', '--workdir', '--coordinator_address',
               '--num_processes', '--process_id', '--[no]distributed'):
    assert flag in shown


def test_a_config_file_that_fails_is_its_error_alone():
  """ml_collections puts the file's whole traceback in its flag error."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values)
  with pytest.raises(flags.Error) as e:
    values(['prog', '--config=configs/b16.py:cifar1000'])
  found = cli.config_file_error(str(e.value))
  assert found.startswith("--config=configs/b16.py:cifar1000: Unknown "
                          "dataset preset 'cifar1000'; known: cifar10, ")
  assert 'Traceback' not in found and '\n' not in found
  assert cli.config_file_error("Unknown command line flag 'x'") is None


@pytest.mark.parametrize('path, level, message, kept', [
    ('/x/orbax/checkpoint/a.py', logging.INFO, 'Saving step 4', False),
    ('/x/orbax/checkpoint/a.py', logging.WARNING, 'Slow save', True),
    ('/x/orbax/checkpoint/a.py', logging.ERROR, 'Save failed', True),
    ('/x/tensorflow_datasets/core/utils/file_utils.py', logging.WARNING,
     'Variant folder %s has no %s', False),
    ('/x/tensorflow_datasets/core/load.py', logging.WARNING, 'Other', True),
    ('/x/gcsfs/core.py', logging.WARNING, 'Could not determine bucket type',
     False),
    ('/x/fsspec/caching.py', logging.INFO, 'AdaptiveReadaheadCache', False),
    ('/x/mixer_jax/.venv/lib/gcsfs/__init__.py', logging.INFO, 'gcsfs', False),
    ('{ours}train.py', logging.INFO, 'Variant folder', True),
    ('{ours}training/metrics.py', logging.INFO, 'step 50/600', True)])
def test_library_notices_are_dropped(path, level, message, kept):
  record = logging.LogRecord('absl', level, path.format(ours=cli.PACKAGE), 1,
                             message, None, None)
  assert cli.not_a_library_notice(record) is kept


NEVER_RETRIEVED = ('Task exception was never retrieved\nfuture: <Task '
                   "finished name='Task-194' coro=<{}() done, defined at "
                   '{}:394> exception=ValueError(\'OUT_OF_RANGE\')>')


@pytest.mark.parametrize('coroutine, defined_in, kept', [
    ('async_deserialize',
     '/x/orbax/checkpoint/_src/serialization/serialization.py', False),
    ('fetch', '/x/mixer_jax/data/sources.py', True)])
def test_orbax_tasks_never_retrieved_are_dropped(coroutine, defined_in, kept):
  """orbax's late reads of a damaged checkpoint, as asyncio logs them."""
  record = logging.LogRecord(
      'asyncio', logging.ERROR, '/usr/lib/python3.11/asyncio/base_events.py',
      1771, NEVER_RETRIEVED.format(coroutine, defined_in), None, None)
  assert cli.not_a_library_notice(record) is kept


@pytest.mark.parametrize('raised_in, kept', [
    ('/x/orbax/checkpoint/_src/serialization/serialization.py', False),
    ('/x/mixer_jax/data/sources.py', True)])
def test_orbax_futures_never_retrieved_are_dropped(raised_in, kept):
  """A future's record names no coroutine: its traceback says whose."""
  scope = {}
  exec(compile('def read():\n  raise ValueError("OUT_OF_RANGE")\n',  # pylint: disable=exec-used
               raised_in, 'exec'), scope)
  try:
    scope['read']()
  except ValueError:
    record = logging.LogRecord(
        'asyncio', logging.ERROR, '/usr/lib/python3.11/asyncio/base_events.py',
        1771, 'Future exception was never retrieved\nfuture: <Future '
        'finished exception=ValueError(\'OUT_OF_RANGE\')>', None,
        sys.exc_info())
  assert cli.not_a_library_notice(record) is kept


@pytest.mark.parametrize('path, traceback_kept', [
    ('/x/orbax/checkpoint/_src/futures/future.py', False),
    ('{ours}training/train_state.py', True)])
def test_orbax_errors_are_kept_without_their_tracebacks(path, traceback_kept):
  try:
    raise ValueError('RESOURCE_EXHAUSTED: No space left on device')
  except ValueError:
    record = logging.LogRecord('absl', logging.ERROR,
                               path.format(ours=cli.PACKAGE), 1, 'failed',
                               None, sys.exc_info())
  assert cli.not_a_library_notice(record)
  assert (record.exc_info is not None) is traceback_kept
  assert ('Traceback' in logging.Formatter().format(record)) is traceback_kept


@pytest.mark.parametrize('line, dropped', [
    ('WARNING: All log messages before absl::InitializeLog() is called are '
     'written to STDERR\n', True),
    ('I0000 00:00:1796644141.166945   27823 port.cc:153] oneDNN custom '
     'operations are on. You may see slightly different numerical results\n',
     True),
    ('I0000 00:00:1796644180.476783   28255 cpu_feature_guard.cc:227] This '
     'TensorFlow binary is optimized to use available CPU instructions\n', True),
    ('To enable the following instructions: AVX2 FMA, in other operations, '
     'rebuild TensorFlow with the appropriate compiler flags.\n', True),
    ('E0000 00:00:1796644180.5 1 cuda_dnn.cc:8310] Unable to register cuDNN '
     'factory\n', False),
    ('W0000 00:00:1796644180.5 1 gpu_device.cc:2344] Cannot dlopen some GPU '
     'libraries.\n', False),
    ('Traceback (most recent call last):\n', False)])
def test_only_tensorflows_start_up_notices_are_dropped(line, dropped):
  assert bool(cli.TENSORFLOW_NOTICES.match(line)) is dropped
