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
r"""How fast a command answers before it does any work: --help and flag
mistakes, each command in a fresh process.

  python experiments/startup.py [--rounds 5]

Prints, per case, the median wall time over the rounds, the exit status and
the heavy libraries the process loaded (none is the point: a command parses
its flags before jax, TensorFlow, flax, orbax or matplotlib load). The
interpreter's own start (`python -c pass`) is the first row, the floor of
every other.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ('train', 'evaluate', 'fewshot', 'transfer', 'predict', 'export',
            'plan', 'plot')
HEAVY = ('jax', 'tensorflow', 'flax', 'orbax', 'matplotlib')
# What a case runs: python -m mixer_jax.<command> <args>, and what it loaded.
_RUN = '''
import runpy, sys
sys.argv = sys.argv[1:]
try:
  runpy.run_module(sys.argv[0], run_name='__main__')
finally:
  print(sorted(m for m in {heavy} if m in sys.modules), file=sys.stderr)
'''.format(heavy=HEAVY)


def cases() -> list[tuple[str, list[str]]]:
  """(name, argv) of every case; argv[0] is the module run."""
  found = [(f'{c} --help', [f'mixer_jax.{c}', '--help']) for c in COMMANDS]
  found += [
      ('export --format=bogus', ['mixer_jax.export', '--format=bogus',
                                 '--output=unused']),
      ('train --no_such_flag', ['mixer_jax.train',
                                '--config=configs/digits.py',
                                '--no_such_flag']),
      ('train --config=configs/b16.py:cifar1000',
       ['mixer_jax.train', '--config=configs/b16.py:cifar1000']),
  ]
  return found


def time_case(argv, rounds: int) -> tuple[float, int, str]:
  """(median seconds, exit status, heavy libraries loaded) of argv."""
  times, result = [], None
  for _ in range(rounds):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, '-c', _RUN, *argv], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    times.append(time.perf_counter() - start)
  loaded = result.stderr.strip().splitlines()[-1] if argv else '[]'
  return statistics.median(times), result.returncode, loaded


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args()
  floor = []
  for _ in range(args.rounds):
    start = time.perf_counter()
    subprocess.run([sys.executable, '-c', 'pass'], check=True)
    floor.append(time.perf_counter() - start)
  print(f'| case | median s | exit | heavy libraries loaded |')
  print('|---|---|---|---|')
  print(f'| python -c pass | {statistics.median(floor):.2f} | 0 | [] |')
  for name, argv in cases():
    seconds, status, loaded = time_case(argv, args.rounds)
    print(f'| {name} | {seconds:.2f} | {status} | {loaded} |', flush=True)


if __name__ == '__main__':
  main()
