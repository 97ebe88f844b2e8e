# Copyright 2026 The mixer_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""What the commands share: one-line errors, config flags, several processes.

Only a command's `main` calls these (they read flags and end the process).
Importing this module loads no jax: a command's flags parse, and --help
answers, before the library loads.
"""

import glob
import importlib.util
import logging as std_logging
import os
import re
import sys
import tempfile
import threading
import traceback

from absl import flags
from absl import logging

from mixer_jax import errors

FLAGS = flags.FLAGS


def exit_with_error(program: str, error) -> None:
  """An expected mistake: `PROGRAM: error: ...` on one line, exit code 1."""
  print(f'{program}: error: {errors.describe(error)}', file=sys.stderr,
        flush=True)
  sys.exit(1)


# absl's help flags: it prints the help, then exits 1 (we exit 0).
HELP_FLAGS = ('-h', '-?', '--help', '--helpshort', '--helpfull', '--helpxml')


def parse_flags_and_config(program: str):
  """parse_flags for a command with --config, loaded at once."""
  return parse_flags(program, config=True)


def parse_flags(program: str, *, config: bool = False):
  """absl's flag parser for app.run: --help exits 0 after the help, a flag
  mistake (and with `config`, a bad config file, field or value) is one
  line."""

  def parse(argv):
    try:
      try:
        argv = FLAGS(argv)
      except SystemExit as e:
        if e.code == 1 and any(a.split('=')[0] in HELP_FLAGS
                               for a in argv[1:]):
          sys.exit(0)
        raise
      if config:
        FLAGS.config.lr  # pylint: disable=pointless-statement  # Loads it.
      return argv
    except (flags.Error, errors.UserError) as e:
      exit_with_error(program, config_file_error(str(e)) or e)
    except OSError as e:  # ml_collections: the config file did not load.
      exit_with_error(program, 'cannot load the config file: ' +
                      str(e).strip().split('\n')[-1].strip())
    except (KeyError, AttributeError) as e:  # ml_collections: no such field.
      while isinstance(e, BaseException) and e.args:  # The innermost message.
        e = e.args[0]
      name, _, hint = str(e).partition('\n')
      exit_with_error(program, f'unknown config field {name} '
                      '(mixer_jax/recipes.py declares every field)'
                      f'{". " + hint if hint else ""}')

  return parse


def config_file_error(message: str):
  """The error that stopped a config file loading, without the traceback
  ml_collections puts into its flag error (its last line is the error)."""
  if 'Error whilst parsing config file' not in message:
    return None
  last = message.strip().splitlines()[-1].strip()
  kind, colon, text = last.partition(': ')
  text = text if colon and ' ' not in kind else last
  flag = message.split(': Error whilst', 1)[0].removeprefix('flag ')
  return f'{flag}: {text}'


def config_overrides(flag_values) -> dict:
  """{'eval_batch_size': 64, 'model.dtype': ...}: the --config.x given."""
  return {name[len('config.'):]: flag_values[name].value
          for name in flag_values if name.startswith('config.') and
          flag_values[name].present}


def define_distributed_flags():
  """The launch flags of a run on several processes."""
  flags.DEFINE_bool(
      'distributed', False, 'Run on several processes that JAX finds by '
      'itself (Cloud TPU pod slices, SLURM, Open MPI): calls '
      'jax.distributed.initialize() with no arguments. Also on when '
      '$MIXER_JAX_DISTRIBUTED or $JAX_COORDINATOR_ADDRESS is set.')
  flags.DEFINE_string(
      'coordinator_address', None, 'HOST:PORT of process 0, for several '
      'processes that JAX does not find by itself (with --num_processes and '
      '--process_id).')
  flags.DEFINE_integer('num_processes', None, 'How many processes the run has.')
  flags.DEFINE_integer('process_id', None,
                       'This process, in [0, num_processes).')
  flags.DEFINE_list(
      'local_device_ids', None, 'The local devices this process uses '
      '(default: all of them), e.g. one GPU each for several processes on one '
      'machine.')
  flags.DEFINE_integer(
      'initialization_timeout', 300, 'Seconds for every process to join; '
      'then each that started ends with one error line.', lower_bound=1)
  flags.DEFINE_integer(
      'heartbeat_timeout', 100, 'A process that stops responding (killed, '
      'its host lost) ends the others within this many seconds, each with '
      'one error line.', lower_bound=1)


def initialize_distributed(program: str) -> None:
  """jax.distributed.initialize() as the launch flags ask; nothing without."""
  import jax  # pylint: disable=g-import-not-at-top
  from mixer_jax.multihost import peers  # pylint: disable=g-import-not-at-top
  explicit = dict(coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes,
                  process_id=FLAGS.process_id)
  if any(v is not None for v in explicit.values()):
    missing = [f'--{k}' for k, v in explicit.items() if v is None]
    if missing:
      exit_with_error(program, f'{", ".join(missing)} missing: several '
                      'processes need --coordinator_address, --num_processes '
                      'and --process_id together (or --distributed on a '
                      'cluster that JAX recognises).')
  elif not (FLAGS.distributed or os.environ.get('MIXER_JAX_DISTRIBUTED') or
            os.environ.get('JAX_COORDINATOR_ADDRESS') or
            FLAGS.local_device_ids):
    return
  local = FLAGS.local_device_ids
  joined, wait = threading.Event(), FLAGS.initialization_timeout
  where = (f'at {FLAGS.coordinator_address}' if FLAGS.coordinator_address
           else 'as the cluster describes them')
  peers.end_unless(joined, seconds=wait, program=program, message=(
      f'waited {wait} s for the {FLAGS.num_processes or "other"} processes '
      f'of the run to join {where} (--initialization_timeout): start every '
      'process, each with the same --coordinator_address and '
      '--num_processes.'))
  peers.say_while_waiting(joined, seconds=wait, program=program, awaited=(
      peers.awaited(FLAGS.process_id, FLAGS.num_processes) + f' to join '
      f'{where}'))
  jax.distributed.initialize(
      **{k: v for k, v in explicit.items() if v is not None},
      local_device_ids=[int(i) for i in local] if local else None,
      # JAX's own limits come after ours, which end with one line.
      initialization_timeout=wait * peers.JAX_TIMEOUT_FACTOR,
      heartbeat_timeout_seconds=(FLAGS.heartbeat_timeout *
                                 peers.JAX_TIMEOUT_FACTOR))
  joined.set()
  if FLAGS.num_processes is not None:
    peers.check_same(program, timeout_s=wait,
                     num_processes=FLAGS.num_processes)
  peers.watch(program, timeout_s=FLAGS.heartbeat_timeout)


# What JAX itself looks for before it starts a GPU runtime (hardware_utils):
# an NVIDIA (or WSL) device node; and ROCm's.
GPU_DEVICE_NODES = ('/dev/nvidia0', '/dev/nvidiactl', '/dev/dxg', '/dev/kfd')
GOOGLE_PCI_VENDOR = '0x1ae0'  # A TPU chip on this host's PCI bus.


def a_tpu_is_attached() -> bool:
  for vendor in glob.glob('/sys/bus/pci/devices/*/vendor'):
    with open(vendor) as f:
      if f.read().strip() == GOOGLE_PCI_VENDOR:
        return True
  return False


def leave_out_an_absent_tpu() -> None:
  """On a machine with neither a TPU nor a GPU, JAX runs on the CPU without
  starting libtpu first: where `.[tpu]` installed it (for `plan`), JAX would
  start it in every command and print its start-up errors, as it does not
  for CUDA where no NVIDIA GPU is visible. JAX_PLATFORMS, when set, decides."""
  if os.environ.get('JAX_PLATFORMS') or 'JAX_FORCE_TPU_INIT' in os.environ:
    return
  if not (importlib.util.find_spec('libtpu') or
          os.environ.get('TPU_LIBRARY_PATH')):
    return
  if a_tpu_is_attached() or any(map(os.path.exists, GPU_DEVICE_NODES)):
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')


# libtpu loaded only to compile for a described TPU slice: no TPU metadata
# server to ask, and several such processes at once.
TPU_COMPILE_ENV = {'ALLOW_MULTIPLE_LIBTPU_LOAD': '1', 'TPU_SKIP_MDS_QUERY': '1',
                   'TPU_ACCELERATOR_TYPE': 'v5litepod-8',
                   'TPU_WORKER_HOSTNAMES': 'localhost', 'TPU_WORKER_ID': '0'}


def compile_only_for_tpu() -> None:
  """For a command that compiles for a TPU slice it does not have: nothing
  runs on a local accelerator, and libtpu starts without a TPU. A persistent
  compilation cache (JAX_COMPILATION_CACHE_DIR) is not used: an executable
  compiled for a slice without its devices cannot be loaded back, and each
  entry read would only warn."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_enable_compilation_cache', False)
  for name, value in TPU_COMPILE_ENV.items():
    os.environ.setdefault(name, value)


def quiet_libraries(*, tensorflow: bool) -> None:
  """What a command's main does before it loads the library, so that the
  user reads our lines: other projects' notices and late errors, each
  explained by a line of ours, stay off the screen (see each function).
  `tensorflow`: the command reads data with tf.data."""
  drop_library_notices()
  read_buckets_afresh()
  drop_orbax_late_errors()
  if tensorflow:
    import_tensorflow_quietly()


def drop_orbax_late_errors() -> None:
  """After a checkpoint fails to restore (train_state logs it once and
  falls back), orbax's reads still in flight end later as 'unraisable'
  errors, each a traceback: its coroutines raise as they are closed, or
  finish on an event loop that is gone ('Event loop is closed'). Hundreds
  of tracebacks after a recovery that worked; any other unraisable error
  still prints. (Those that asyncio logs instead, never retrieved, are
  dropped by not_a_library_notice.)"""
  previous = sys.unraisablehook

  def hook(unraisable):
    if not is_orbax_late_error(unraisable):
      previous(unraisable)

  sys.unraisablehook = hook


def is_orbax_late_error(unraisable) -> bool:
  if (isinstance(unraisable.exc_value, RuntimeError) and
      str(unraisable.exc_value) == 'Event loop is closed'):
    return True
  code = getattr(unraisable.object, 'cr_code', None)  # A coroutine's.
  return code is not None and '/orbax/' in code.co_filename


# What TensorFlow's C++ start-up writes to stderr and nothing hides (TF 2.20
# logs through absl before any InitializeLog, so TF_CPP_MIN_LOG_LEVEL has no
# say): absl's warning about it, and INFO lines ("oneDNN custom operations
# are on", the CPU instructions it was not built for).
TENSORFLOW_NOTICES = re.compile(
    r'WARNING: All log messages before absl::InitializeLog\(\) is called'
    r'|I\d{4} [\d:. ]+\S+\.cc:\d+\] '
    r'|To enable the following instructions: ')


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow with stderr (the file descriptor its C++ writes to)
  held in a file, then writes back every line but TENSORFLOW_NOTICES: its
  warnings and errors still reach the user, after the import."""
  if 'tensorflow' in sys.modules or not importlib.util.find_spec('tensorflow'):
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      for line in held.read().decode(errors='replace').splitlines(True):
        if not TENSORFLOW_NOTICES.match(line):
          sys.stderr.write(line)
      sys.stderr.flush()


def read_buckets_afresh() -> None:
  """gcsfs (epath's client for gs:// without TensorFlow) would answer from
  listings it cached, blind to objects that tensorstore (orbax's
  checkpoints) and other hosts write since: a command's main turns its
  listings cache off."""
  try:
    import fsspec  # pylint: disable=g-import-not-at-top
  except ImportError:  # No gcsfs either.
    return
  fsspec.config.conf.setdefault('gs', {})['use_listings_cache'] = False


# This package's folder: log records from files under it are ours.
PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def drop_library_notices() -> None:
  """absl shows every library's INFO records (orbax logs every step of
  every save; fsspec and gcsfs each file they open in a bucket), orbax logs
  each failed write of a save (a full disk) as an error with its traceback,
  five times over, before our line that explains it; tfds warns of each
  folder in its data dir that holds no prepared dataset, and gcsfs of each
  bucket whose type it cannot ask without credentials (a Cloud Storage
  emulator). A command's main drops these from the log; other projects'
  warnings and errors stay, orbax's a line each."""
  logging.get_absl_handler().addFilter(not_a_library_notice)
  std_logging.getLogger('gcsfs').addFilter(not_a_library_notice)


def not_a_library_notice(record: std_logging.LogRecord) -> bool:
  """False for other projects' INFO records, tfds's 'Variant folder'
  warnings, gcsfs's 'Could not determine bucket type' ones and asyncio's
  'Task exception was never retrieved' for orbax's tasks (its late reads
  of a checkpoint that failed to restore, as in drop_orbax_late_errors);
  orbax's records are kept without their tracebacks."""
  if record.levelno < std_logging.WARNING:
    return record.pathname.startswith(PACKAGE)
  if record.name == 'asyncio' and _about_orbax(record):
    return False
  if '/orbax/' in record.pathname:
    record.exc_info = record.exc_text = None
    return True
  if '/gcsfs/' in record.pathname and str(record.msg).startswith(
      'Could not determine bucket type'):
    return False
  return not ('/tensorflow_datasets/' in record.pathname and
              str(record.msg).startswith('Variant folder '))


def _about_orbax(record: std_logging.LogRecord) -> bool:
  """Whether an asyncio record is of orbax's code: a task of its coroutines,
  or an exception raised in it."""
  if '/orbax/' in record.getMessage():
    return True
  trace = record.exc_info[2] if record.exc_info else None
  return any('/orbax/' in frame.filename
             for frame in traceback.extract_tb(trace))
