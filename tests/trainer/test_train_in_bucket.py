"""A run whose workdir is a Cloud Storage bucket (a fake-gcs-server on
localhost, reached as the clients document it): killed with kill -9 after
its first checkpoint, it resumes to the result of a run never stopped; the
other commands read it there, export writes there; no local 'gs:' folder."""

import functools
import json
import os
import subprocess
import sys
import time

import pytest

from mixer_jax import storage
from mixer_jax.trainer import transfer
from mixer_jax.training import records
from tests.conftest import DIGITS_RUN
from tests.conftest import foreign_lines
from tests.conftest import last_line
from tests.conftest import override_flags
from tests.conftest import ROOT
from tests.conftest import SMALL_DIGITS_FLAGS
from tests.conftest import upload
from tests.conftest import write_digit_images
from tests.conftest import write_digits_folder

pytestmark = pytest.mark.slow
FLAGS = (f'--config={ROOT}/configs/digits.py', *SMALL_DIGITS_FLAGS,
         *override_flags(DIGITS_RUN))


def command(name, *flags):
  return [sys.executable, '-m', f'mixer_jax.{name}', *flags]


def run(cwd, env, name, *flags):
  return subprocess.run(command(name, *flags), cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600,
                        check=False)


def test_a_killed_run_in_a_bucket_resumes_and_every_command_reads_it(
    fake_gcs, digits_run, tmp_path):
  bucket, env = fake_gcs
  env = {**env, 'PYTHONPATH': str(ROOT)}
  workdir = f'gs://{bucket}/digits'
  first = storage.join(workdir, 'checkpoints', '30', 'commit_success.txt')
  killed = subprocess.Popen(command('train', *FLAGS, f'--workdir={workdir}'),
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 300
  while not storage.exists(first) and killed.poll() is None:
    assert time.monotonic() < deadline, 'no checkpoint of step 30 in time'
    time.sleep(0.2)
  killed.kill()
  killed.wait()
  assert not storage.exists(storage.join(workdir, 'final_metrics.json'))

  resumed = run(tmp_path, env, 'train', *FLAGS, f'--workdir={workdir}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # tensorstore names the emulator's token, a variable of tests alone.
  assert [line for line in foreign_lines(resumed.stderr)
          if 'GOOGLE_AUTH_TOKEN_FOR_TESTING' not in line] == []
  final = records.read_json(storage.join(workdir, 'final_metrics.json'))
  reference_dir, reference = digits_run
  assert final['eval_accuracy'] == reference['eval_accuracy']
  assert final['eval_loss'] == pytest.approx(reference['eval_loss'], rel=1e-6)
  evals = [r for r in records.read_jsonl(storage.join(
      workdir, 'metrics.jsonl')) if 'eval_loss' in r]
  assert [r['step'] for r in evals] == [30, 60]
  assert evals == [r for r in records.read_jsonl(
      os.path.join(reference_dir, 'metrics.jsonl')) if 'eval_loss' in r]
  assert {'params.npz', 'config.json', 'metrics.jsonl', 'final_metrics.json',
          'class_names.json', 'curves.png', 'tensorboard', 'checkpoints'} <= set(
              storage.listdir(workdir))
  assert not storage.exists(storage.join(workdir, 'lock'))

  evaluated = run(tmp_path, env, 'evaluate', f'--workdir={workdir}',
                  f'--output={workdir}/eval.json')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert f'top-1 {final["eval_accuracy"]:.2%}' in evaluated.stdout
  assert records.read_json(storage.join(workdir, 'eval.json'))[
      'eval_accuracy'] == final['eval_accuracy']
  files, _ = write_digit_images(tmp_path / 'images', count=2)
  predicted = run(tmp_path, env, 'predict', f'--workdir={workdir}', *files)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert predicted.stdout.count('(class ') == 2 * 5
  exported = run(tmp_path, env, 'export', f'--workdir={workdir}',
                 '--format=stablehlo', f'--output=gs://{bucket}/exported')
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert storage.listdir(f'gs://{bucket}/exported') == ['metadata.json',
                                                        'model.bin']
  assert json.loads(storage.read_text(f'gs://{bucket}/exported/metadata.json'))[
      'files'] == ['model.bin', 'metadata.json']
  assert os.listdir(tmp_path) == ['images']  # No local 'gs:' folder.


def test_a_sweep_in_a_bucket_equals_one_on_disk(fake_gcs, digits_run,
                                               tmp_path):
  """transfer with its checkpoint, image folder and workdir all in the
  bucket: the result of the same sweep on disk, its table written there."""
  bucket = f'gs://{fake_gcs[0]}'
  pretrained = os.path.join(digits_run[0], 'params.npz')
  folder = write_digits_folder(tmp_path / 'three')
  upload(pretrained, f'{bucket}/params.npz')
  upload(folder, f'{bucket}/three')
  sweep = functools.partial(transfer.sweep, lr_grid=(0.01,), overrides=dict(
      batch_size=32, eval_batch_size=64, total_steps=4, warmup_steps=1,
      eval_every=4, progress_every=2, checkpoint_every=2, eval_pp='resize'))
  on_disk = sweep(pretrained=pretrained, workdir=str(tmp_path / 'transfer'),
                  datasets=[folder])
  in_bucket = sweep(pretrained=f'{bucket}/params.npz',
                    workdir=f'{bucket}/transfer', datasets=[f'{bucket}/three'])
  without_workdir = lambda task: {k: v for k, v in task.items()
                                   if k != 'workdir'}
  assert (without_workdir(in_bucket['tasks'][f'{bucket}/three']) ==
          without_workdir(on_disk['tasks'][folder]))
  assert records.read_json(f'{bucket}/transfer/transfer.json') == in_bucket
  assert storage.listdir(f'{bucket}/transfer') == [
      'three', 'transfer.json', 'transfer.md']


@pytest.mark.parametrize('where, endpoint, expected', [
    ('gs://nope/run', None,
     'Workdir gs://nope/run: bucket gs://nope does not exist; create it'),
    ('gs://{bucket}/run', 'http://127.0.0.1:9',
     'Workdir gs://{bucket}/run: Cloud Storage did not answer within 30 s'),
])
def test_a_bucket_that_is_not_there_is_one_line(fake_gcs, tmp_path, where,
                                                endpoint, expected):
  bucket, env = fake_gcs
  if endpoint:
    env = {**env, 'STORAGE_EMULATOR_HOST': endpoint}
  ended = run(tmp_path, {**env, 'PYTHONPATH': str(ROOT)}, 'train', *FLAGS,
              f'--workdir={where.format(bucket=bucket)}')
  assert ended.returncode == 1
  assert last_line(ended.stderr).startswith(
      'mixer_jax.train: error: ' + expected.format(bucket=bucket))
  assert 'Traceback' not in ended.stderr
  assert os.listdir(tmp_path) == []
