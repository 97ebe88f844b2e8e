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
r"""Training's forward against inference's, op by op, at the same moments.

  python experiments/forward_in_training.py --variant S/32 --batch 32

Traces the benchmark's train step and forward pass (experiments/measure.py)
in turns, --rounds of --steps calls each, so that a machine whose speed
drifts within a minute slows both alike: two profiles taken a few minutes
apart (profile_step.py, once per mode) can differ by a quarter for the same
op. The train step's forward ops are matched to the inference ones by their
op name, JAX's name stack less its jit and jvp wrappers, the block number
dropped ('MlpMixer/MixerBlock_*/channel_mixing/Dense_0/dot_general'), and
grouped with profile_step's labels.

Prints ms per step of each group in the train step's forward and in
inference; then how the traced train step's wall time (first op to last)
divides: its matmuls (the union of their traced times, their FLOPs over
it), the other ops where no matmul runs, and idle. XLA:CPU only
(profile_step.py says why).
"""

import collections
import json
import pathlib
import re
import statistics
import sys
import tempfile

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
# pylint: disable=g-bad-import-order,wrong-import-position
from experiments import profile_step  # Sets XLA:CPU's trace flag first.
import jax

from experiments import measure
from mixer_jax import host_memory


def op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name -> its op_name metadata, where it has one."""
  return {name: match[1]
          for scope in profile_step.parse_hlo(hlo_text).values()
          for name, instruction in scope.items()
          if (match := re.search(r'op_name="([^"]*)"', instruction.attrs))}


def forward_key(op_name: str):
  """The forward op's name stack, as both programs share it; None otherwise.

  None for the backward (a `transpose(...)` of the forward) and for ops
  outside the model (the loss, the optimizer).
  """
  name = re.sub(r'^jit\([^)]*\)/', '', op_name)
  if 'transpose(' in name:
    return None
  name = re.sub(r'^jvp\((\w+)\)', r'\1', name)
  if not name.startswith('MlpMixer/'):
    return None
  return re.sub(r'MixerBlock_\d+', 'MixerBlock_*', name)


def compare(*, variant: str, batch: int, image_size: int, num_classes: int,
            num_blocks, rounds: int, steps: int) -> dict:
  """Both programs traced in turns: forward op groups, the train step split."""
  runs = {}
  for mode, (compiled, call) in profile_step.compiled_programs(
      ['train', 'inference'], variant=variant, batch=batch,
      image_size=image_size, dtype='float32', num_classes=num_classes,
      num_blocks=num_blocks).items():
    text = compiled.as_text()
    runs[mode] = dict(call=call, ops=profile_step.hlo_ops(text),
                      names=op_names(text), events=[], seconds=[])
    call()  # Warm-up.
  for _ in range(rounds):
    for mode, r in runs.items():
      r['seconds'] += measure.time_calls(r['call'], steps=steps, warmup=0)
      with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
          for _ in range(steps):
            r['call']()
        # One list per trace: each trace's clock starts afresh.
        r['events'].append([e for e in profile_step.trace_events(trace_dir)
                            if e[0] in r['ops']])
  if not any(runs['train']['events']):
    raise RuntimeError(
        'The trace holds no op of the compiled programs: XLA:CPU traces ops '
        'only with --xla_cpu_enable_xprof_traceme, which importing '
        'profile_step sets before jax starts.')
  traced = rounds * steps
  forward = {mode: collections.defaultdict(float) for mode in runs}
  for mode, r in runs.items():
    for name, start, end in (e for trace in r['events'] for e in trace):
      key = forward_key(r['names'].get(name, ''))
      if key is not None:
        label = re.sub(r'\.\d+', '', r['ops'][name].label)
        forward[mode][key, label] += (end - start) / 1e9 / traced
  train = runs['train']
  is_dot = lambda name: (train['ops'][name].flops and
                         not train['ops'][name].untimed)
  dot_flops = sum(train['ops'][n].flops for trace in train['events']
                  for n, _, _ in trace if is_dot(n))
  dot_s = sum(profile_step.busy_seconds((s, e) for n, s, e in trace
                                        if is_dot(n))
              for trace in train['events']) / traced
  busy_s = sum(profile_step.busy_seconds((s, e) for _, s, e in trace)
               for trace in train['events']) / traced
  span_s = sum((max(e for _, _, e in trace) - min(s for _, s, _ in trace)) /
               1e12 for trace in train['events']) / traced
  step_s = statistics.median(train['seconds'])
  groups = sorted(set(forward['train']) | set(forward['inference']),
                  key=lambda k: -forward['train'].get(k, 0.0))
  return {
      'variant': variant, 'batch': batch, 'image_size': image_size,
      'rounds': rounds, 'steps': steps, 'device': str(jax.devices()[0]),
      'train_step_ms': step_s * 1e3,
      'inference_step_ms': statistics.median(runs['inference']['seconds']) *
                           1e3,
      'train_matmul_ms': dot_s * 1e3,
      'train_matmul_gflop_per_s': dot_flops / traced / dot_s / 1e9,
      'train_other_ms': (busy_s - dot_s) * 1e3,
      'train_traced_step_ms': span_s * 1e3,
      'train_idle_ms': (span_s - busy_s) * 1e3,
      'forward': [{'op': key, 'label': label,
                   'train_ms': forward['train'].get((key, label), 0.0),
                   'inference_ms': forward['inference'].get((key, label),
                                                            0.0)}
                  for key, label in groups]}


def format_comparison(result: dict) -> str:
  """The header and the table the CLI prints."""
  rows = result['forward']
  lines = [
      f'{result["variant"]} float32 batch {result["batch"]} '
      f'@{result["image_size"]}px on {result["device"]}, {result["rounds"]} '
      f'rounds of {result["steps"]} calls each, the programs in turns',
      f'train step {result["train_step_ms"]:.0f} ms, inference '
      f'{result["inference_step_ms"]:.0f} ms (untraced medians)',
      f'traced train step {result["train_traced_step_ms"]:.0f} ms: matmuls '
      f'{result["train_matmul_ms"]:.0f} ms at '
      f'{result["train_matmul_gflop_per_s"]:.0f} GFLOP/s, other ops where no '
      f'matmul runs {result["train_other_ms"]:.0f} ms, idle '
      f'{result["train_idle_ms"]:.0f} ms',
      f'forward ops: train {sum(r["train_ms"] for r in rows):.0f} ms/step, '
      f'inference {sum(r["inference_ms"] for r in rows):.0f} ms/step', '',
      f'{"train":>8} {"infer":>8}  op name / group']
  for row in rows:
    if max(row['train_ms'], row['inference_ms']) >= 0.05:
      lines.append(f'{row["train_ms"]:>8.1f} {row["inference_ms"]:>8.1f}  '
                   f'{row["op"]} / {row["label"]}')
  return '\n'.join(lines)


def define_flags():
  """The CLI's flags, defined on use (as in profile_step.py)."""
  profile_step.define_model_flags()
  flags.DEFINE_integer('rounds', 3, 'Turns of the two programs.')
  flags.DEFINE_integer('steps', 2, 'Calls timed, then traced, per turn.')
  flags.DEFINE_string('json', None, 'Also write the comparison to this file.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  host_memory.reuse_unless_flagged_off()  # Before jax's backends start.
  try:
    result = compare(
        variant=f.variant, batch=f.batch, image_size=f.image_size,
        num_classes=f.num_classes, num_blocks=f.num_blocks, rounds=f.rounds,
        steps=f.steps)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(format_comparison(result))
  if f.json:
    with open(f.json, 'w') as file:
      json.dump(result, file, indent=2)


if __name__ == '__main__':
  define_flags()
  flags.declare_key_flag('reuse_host_memory')
  app.run(main)
