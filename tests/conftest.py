"""Test setup: 8 virtual CPU devices (multi-device code runs for real), and
the helpers several test files share."""

import json
import os
import pathlib
import subprocess
import sys

# Must be set before jax is imported anywhere.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

ROOT = pathlib.Path(__file__).parent.parent


def small_digits_config(**overrides):
  """The offline default, shrunk so a test trains in seconds."""
  from configs import digits  # pylint: disable=g-import-not-at-top
  config = digits.get_config()
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


def read_jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


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
