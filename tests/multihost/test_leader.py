"""Tests for mixer_jax.multihost.leader: on two processes sharing a cache,
process 0 downloads a checkpoint and the other uses its file; a failure there
is one line on both."""

import os
import socket
import subprocess
import sys

import pytest

from mixer_jax.multihost import leader
from tests.conftest import ROOT
from tests.conftest import TESTDATA

FIXTURE_NPZ = TESTDATA / 'vit_jax_mixer_tiny.npz'

# Process i of 2 on localhost fetches URL into the shared cache; prints the
# path and its size, or the one-line error.
_FETCH = """
import sys
import jax
index, port, url, cache = sys.argv[1:]
jax.distributed.initialize(f'localhost:{port}', 2, int(index))
from mixer_jax import errors
from mixer_jax.model import published
try:
  path = published.fetch(url, cache_dir=cache)
except errors.UserError as e:
  print('error:', e)
else:
  print(path, len(path.read_bytes()))
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def fetch_on_two_processes(url, cache):
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  processes = [subprocess.Popen(
      [sys.executable, '-c', _FETCH, str(i), str(port), url, str(cache)],
      cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE) for i in range(2)]
  lines = []
  for p in processes:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    lines.append(out.strip().splitlines()[-1])
  return lines


@pytest.mark.multiprocess
def test_one_process_downloads_for_both(http_server, tmp_path):
  url, served, requests = http_server
  (served / 'w.npz').write_bytes(FIXTURE_NPZ.read_bytes())
  lines = fetch_on_two_processes(f'{url}/w.npz', tmp_path / 'cache')
  size = FIXTURE_NPZ.stat().st_size
  assert lines[0] == lines[1] and lines[0].endswith(f'w.npz {size}')
  assert requests == ['/w.npz']  # Once, by process 0.


@pytest.mark.multiprocess
def test_a_failed_download_is_one_line_on_each_process(http_server,
                                                       tmp_path):
  url, _, requests = http_server
  lines = fetch_on_two_processes(f'{url}/missing.npz', tmp_path / 'cache')
  assert lines[0].startswith(f'error: Could not download {url}/missing.npz')
  assert lines[1].startswith(
      f'error: Process 0 could not download {url}/missing.npz: Could not '
      'download')
  assert requests == ['/missing.npz']


def test_one_process_just_works():
  calls = []
  assert leader.first('count', lambda: calls.append(1) or 7,
                      timeout_s=1) == 7
  assert calls == [1]


def test_a_failure_on_process_0_is_raised_there():
  with pytest.raises(ValueError, match='no'):
    leader.first('fail', lambda: (_ for _ in ()).throw(ValueError('no')),
                 timeout_s=1)
