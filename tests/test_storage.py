"""Tests for mixer_jax.storage and the bucket lock: every file of a run on a
local disk or in a Cloud Storage bucket (a fake-gcs-server on localhost)."""

import http.server
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from mixer_jax import errors
from mixer_jax import storage
from mixer_jax.multihost import workdir_lock
from tests.conftest import optional_module

# The bucket check's client: the gcs extra (absent from Colab's stacks).
needs_gcs_client = pytest.mark.skipif(
    optional_module('google.cloud.storage') is None,
    reason='google-cloud-storage (the gcs extra) is not installed here')


@pytest.fixture(name='where', params=['local', 'bucket'])
def fixture_where(request, tmp_path):
  """A folder on this disk, or in the fake bucket."""
  if request.param == 'local':
    return str(tmp_path / 'run')
  bucket, _ = request.getfixturevalue('fake_gcs')
  return f'gs://{bucket}/run'


def test_whole_files_read_back_and_list(where):
  path = storage.join(where, 'metrics.jsonl')
  assert not storage.exists(path) and storage.listdir(where) == []
  storage.makedirs(where)
  storage.write_whole(path, 'one\n')
  storage.write_whole(path, b'two\n')  # Replaces, whole.
  storage.write_whole(storage.join(where, 'sub', 'x.bin'), b'\0\1')
  assert storage.read_text(path) == 'two\n'
  assert storage.read_bytes(storage.join(where, 'sub', 'x.bin')) == b'\0\1'
  assert storage.listdir(where) == ['metrics.jsonl', 'sub']
  storage.remove(storage.join(where, 'sub'))
  assert storage.listdir(where) == ['metrics.jsonl']
  assert storage.is_url(where) == where.startswith('gs://')
  assert not os.path.exists('gs:')


def test_a_local_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / 'config.json'
  path.write_text('old')

  def full(*_):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(os, 'replace', full)
  with pytest.raises(OSError):
    storage.write_whole(str(path), 'new')
  assert path.read_text() == 'old' and os.listdir(tmp_path) == [
      'config.json']


def test_an_object_is_created_only_where_there_is_none(fake_gcs):
  bucket, _ = fake_gcs
  url = f'gs://{bucket}/lock'
  first = storage.create_object(url, 'a')
  assert first and storage.create_object(url, 'b') is None
  assert storage.read_object(url) == ('a', first)
  second = storage.replace_object(url, 'c', first)
  assert second and storage.replace_object(url, 'd', first) is None
  storage.delete_object(url, first)  # Not its generation any more: kept.
  assert storage.read_object(url) == ('c', second)
  storage.delete_object(url, second)
  assert storage.read_object(url) == (None, None)


def test_a_missing_bucket_is_one_line(fake_gcs):
  bucket, _ = fake_gcs
  with pytest.raises(errors.MissingError,
                     match=r'^Workdir gs://nope/run: bucket gs://nope does '
                     'not exist; create it'):
    storage.check_bucket('gs://nope/run', what='Workdir')
  storage.check_bucket(f'gs://{bucket}/run', what='Workdir')
  storage.check_bucket('/local/path', what='Workdir')  # Nothing to check.


def test_the_bucket_lock_refuses_a_second_run_and_frees_on_exit(fake_gcs):
  bucket, _ = fake_gcs
  workdir = f'gs://{bucket}/run'
  with workdir_lock.hold(workdir):
    assert storage.exists(storage.join(workdir, 'lock'))
    with pytest.raises(workdir_lock.WorkdirInUse,
                       match=r'is in use by pid \d+ on host .*renewed 0 s '
                       'ago'):
      workdir_lock.BucketLock(workdir).acquire()
  assert not storage.exists(storage.join(workdir, 'lock'))


def test_a_lock_not_renewed_is_taken_over(fake_gcs, monkeypatch):
  bucket, _ = fake_gcs
  workdir = f'gs://{bucket}/run'
  storage.create_object(storage.join(workdir, 'lock'),
                        '{"host": "gone", "pid": 1, "time": 0}')
  with workdir_lock.hold(workdir):
    text, _ = storage.read_object(storage.join(workdir, 'lock'))
    assert f'"pid": {os.getpid()}' in text
  monkeypatch.setattr(workdir_lock, 'HEARTBEAT_S', 0.05)
  lock = workdir_lock.BucketLock(workdir).acquire()
  _, generation = storage.read_object(lock.url)
  time.sleep(0.5)
  assert storage.read_object(lock.url)[1] != generation  # Renewed.
  lock.release()


def test_a_lock_of_a_killed_process_on_this_host_is_taken_over(fake_gcs):
  bucket, _ = fake_gcs
  workdir = f'gs://{bucket}/run'
  ended = subprocess.Popen(['true'])
  ended.wait()
  storage.create_object(storage.join(workdir, 'lock'), json.dumps(
      {'host': socket.gethostname(), 'pid': ended.pid, 'time': time.time()}))
  with workdir_lock.hold(workdir):
    text, _ = storage.read_object(storage.join(workdir, 'lock'))
    assert json.loads(text)['pid'] == os.getpid()


@needs_gcs_client
def test_no_credentials_is_one_line(monkeypatch, tmp_path):
  """Outside a cloud VM and without `gcloud auth application-default
  login`: the way to get credentials, in one line."""
  for name in ('STORAGE_EMULATOR_HOST', 'GOOGLE_APPLICATION_CREDENTIALS'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('CLOUDSDK_CONFIG', str(tmp_path))
  monkeypatch.setenv('GCE_METADATA_HOST', '127.0.0.1:9')  # No metadata
  monkeypatch.setenv('GCE_METADATA_IP', '127.0.0.1:9')  # server here.
  with pytest.raises(errors.UserError, match=r'^Workdir gs://b/run: no '
                     'credentials for Cloud Storage .*application-default '
                     r"login'\)\.$"):
    storage.check_bucket('gs://b/run', what='Workdir')


class Forbidden(http.server.BaseHTTPRequestHandler):
  """Cloud Storage as it answers an account without access to the bucket."""

  def do_GET(self):  # pylint: disable=invalid-name
    body = json.dumps({'error': {'code': 403, 'message': (
        'me@example.com does not have storage.buckets.get access to the '
        'Google Cloud Storage bucket.')}}).encode()
    self.send_response(403)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):
    del args


@needs_gcs_client
def test_no_permission_is_one_line(monkeypatch):
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Forbidden)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  monkeypatch.setenv('STORAGE_EMULATOR_HOST',
                     f'http://127.0.0.1:{server.server_port}')
  try:
    with pytest.raises(errors.UserError, match=(
        r'^Workdir gs://b/run: no permission to use bucket gs://b \(.*'
        r'does not have storage.buckets.get access.*\)\.$')):
      storage.check_bucket('gs://b/run', what='Workdir')
  finally:
    server.shutdown()
