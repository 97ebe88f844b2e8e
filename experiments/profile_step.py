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
r"""Where one compiled Mixer step spends its time, by HLO op (XLA:CPU).

  python experiments/profile_step.py --variant S/32 --batch 32 [--mode inference]

Runs the benchmark's program (experiments/measure.py: the donated train step,
or the forward pass) on one device, traces --steps calls with jax.profiler and
groups the traced HLO ops:

  dot <form> <lhs> x <rhs>  matmuls, alone or in a library (YNNPACK) fusion,
                            by operand shapes and form: NN is x @ w, NT
                            contracts the last axes of both (x @ w.T), TN the
                            first ones (x.T @ w). GFLOP/s from the compiled
                            HLO's shapes (2 per multiply-add).
  ... (Eigen)               a plain XLA:CPU dot: Eigen runs it on its own
                            threads after the traced launch returns, so its
                            row holds the launch only; its work shows in the
                            rows of the ops that share the cores with it,
                            and in idle. Its FLOPs are counted.
  <fusion name> (ops)       every other op, by XLA's name for it less its
                            number, and the ops it fuses.

  ms/step   traced time of the group per step. Ops on the two sides of a
            thread pool can overlap, so the rows may add up to more than the
            busy time, and an op that shares the cores looks slower.
  busy      time per step with at least one traced op running; idle = the
            untraced step time less busy (dispatch, waits, and work XLA runs
            without a trace event, such as Eigen's threads inside a dot).

XLA:CPU emits these events only with --xla_cpu_enable_xprof_traceme, which
this script adds to XLA_FLAGS. The trace stays in --trace_dir for XProf or
TensorBoard, the way to read GPU and TPU traces.
"""

import os

# Before jax starts its backends: per-op trace events on XLA:CPU.
os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
    os.environ.get('XLA_FLAGS'), '--xla_cpu_enable_xprof_traceme=true']))

# pylint: disable=g-import-not-at-top,g-bad-import-order,wrong-import-position
import collections
import dataclasses
import functools
import json
import math
import pathlib
import re
import statistics
import sys
import tempfile
from typing import Iterable, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # Run as a script: `configs` lives at the root.

from experiments import measure
from mixer_jax import host_memory
from mixer_jax import models

_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%?(?P<name>[\w.\-]+) = (?P<shape>\(.*?\)|\S+) '
    r'(?P<op>[\w\-]+)\((?P<operands>.*?)\)(?P<attrs>,.*)?$')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%?(?P<name>[\w.\-]+) .*\{$')


@dataclasses.dataclass(frozen=True)
class Instruction:
  shape: str
  op: str
  operands: tuple[str, ...]
  attrs: str


@dataclasses.dataclass(frozen=True)
class Op:
  """What a traced HLO op is: its group's label and its FLOPs per run.

  `untimed`: a plain XLA:CPU dot, which Eigen runs on its threads after the
  traced launch returns, so that its event does not hold its time.
  """
  label: str
  flops: float = 0.0
  untimed: bool = False


def parse_hlo(hlo_text: str) -> dict[str, dict[str, Instruction]]:
  """Computation name -> instruction name -> Instruction, from HLO text."""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    if (match := _COMPUTATION.match(line)) and ' = ' not in line:
      current = computations.setdefault(match['name'], {})
    elif line.startswith('}'):
      current = None
    elif current is not None and (match := _INSTRUCTION.match(line)):
      current[match['name']] = Instruction(
          match['shape'], match['op'],
          tuple(re.findall(r'%([\w.\-]+)', match['operands'])),
          match['attrs'] or '')
  return computations


def _dims(shape: str) -> list[int]:
  return [int(d) for d in re.match(r'\w+\[([\d,]*)\]', shape)[1].split(',')
          if d]


def _dims_attr(attrs: str, key: str) -> list[int]:
  match = re.search(key + r'=\{([\d,]*)\}', attrs)
  return [int(d) for d in match[1].split(',') if d] if match else []


def describe_dot(dot: Instruction, scope: dict[str, Instruction]) -> Op:
  """'dot NT f32[1568,512] x f32[2048,512]' and its FLOPs."""
  lhs, rhs = (scope[name].shape for name in dot.operands[:2])
  lhs_dims, rhs_dims = _dims(lhs), _dims(rhs)
  lhs_contract = _dims_attr(dot.attrs, 'lhs_contracting_dims')
  rhs_contract = _dims_attr(dot.attrs, 'rhs_contracting_dims')
  rhs_free = sorted(set(range(len(rhs_dims))) -
                    set(_dims_attr(dot.attrs, 'rhs_batch_dims')))
  form = ('N' if lhs_contract == [len(lhs_dims) - 1] else 'T') + (
      'N' if rhs_contract == rhs_free[:1] else 'T')
  depth = math.prod(lhs_dims[i] for i in lhs_contract)
  strip = lambda shape: re.sub(r'\{.*\}', '', shape)
  return Op(f'dot {form} {strip(lhs)} x {strip(rhs)}',
            2.0 * math.prod(_dims(dot.shape)) * depth)


_PLUMBING = {'parameter', 'constant', 'bitcast', 'tuple', 'get-tuple-element'}


def hlo_ops(hlo_text: str) -> dict[str, Op]:
  """Name of every instruction that can run as a traced op -> its Op.

  A fusion that holds matmuls is labelled by them and carries their FLOPs;
  any other op by its name less the trailing number, and a fusion also by
  the ops it fuses: 'copy_bitcast_fusion (copy,transpose)'.
  """
  computations = parse_hlo(hlo_text)
  ops = {}
  for scope in computations.values():
    for name, instruction in scope.items():
      label = re.sub(r'\.\d+$', '', name)
      if instruction.op == 'dot':
        dot = describe_dot(instruction, scope)
        ops[name] = Op(dot.label + ' (Eigen)', dot.flops, untimed=True)
        continue
      inner = {}
      if called := re.search(r'calls=%?([\w.\-]+)', instruction.attrs):
        inner = computations.get(called[1], {})
      dots = [describe_dot(i, inner) for i in inner.values() if i.op == 'dot']
      if dots:
        ops[name] = Op(' + '.join(d.label for d in dots),
                       sum(d.flops for d in dots))
      elif fused := sorted({i.op for i in inner.values()} - _PLUMBING):
        ops[name] = Op(f'{label} ({",".join(fused)})')
      else:
        ops[name] = Op(label)
  return ops


def trace_events(trace_dir: str) -> list[tuple[str, int, int]]:
  """(name, start ps, end ps) of every event of the trace under trace_dir."""
  try:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
  except ImportError as e:
    raise RuntimeError('Reading the trace needs TensorFlow\'s XPlane protos '
                       '(tensorflow-cpu, a mixer_jax dependency).') from e
  paths = sorted(pathlib.Path(trace_dir).glob('**/*.xplane.pb'))
  if not paths:
    raise RuntimeError(f'No *.xplane.pb trace under {trace_dir}.')
  space = xplane_pb2.XSpace()
  space.ParseFromString(paths[-1].read_bytes())
  events = []
  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        start = line.timestamp_ns * 1000 + event.offset_ps
        events.append((plane.event_metadata[event.metadata_id].name, start,
                       start + event.duration_ps))
  return events


def busy_seconds(intervals: Iterable[tuple[int, int]]) -> float:
  """Length of the union of (start ps, end ps) intervals, in seconds."""
  total, end = 0, None
  for start, stop in sorted(intervals):
    if end is None or start > end:
      total, end = total + stop - start, stop
    elif stop > end:
      total, end = total + stop - end, stop
  return total / 1e12


def summarize(events, ops: dict[str, Op], *, steps: int) -> dict:
  """Per-step time, calls and FLOP/s of each op group, and the busy time."""
  traced = [(ops[name], start, end) for name, start, end in events
            if name in ops]
  if not traced:
    raise RuntimeError(
        'The trace holds no op of the compiled program: XLA:CPU traces ops '
        'only with --xla_cpu_enable_xprof_traceme (set by this script before '
        'jax starts); on GPU or TPU read the trace with XProf.')
  groups = collections.defaultdict(lambda: {'seconds': 0.0, 'calls': 0,
                                            'flops': 0.0, 'untimed': False})
  for op, start, end in traced:
    group = groups[op.label]
    group['untimed'] = op.untimed
    group['seconds'] += (end - start) / 1e12 / steps
    group['calls'] += 1 / steps
    group['flops'] += op.flops / steps
  rows = [{'op': label, 'ms_per_step': g['seconds'] * 1e3,
           'calls_per_step': round(g['calls'], 2),
           'gflop_per_step': g['flops'] / 1e9,
           'gflop_per_s': (g['flops'] / g['seconds'] / 1e9 if g['flops'] and
                           g['seconds'] and not g['untimed'] else None),
           'untimed': g['untimed']}
          for label, g in groups.items()]
  rows.sort(key=lambda row: -row['ms_per_step'])
  dots = [row for row in rows if row['gflop_per_step'] and not row['untimed']]
  dot_ms = sum(row['ms_per_step'] for row in dots)
  dot_gflop = sum(row['gflop_per_step'] for row in dots)
  return {
      'untimed_dot_gflop_per_step': sum(
          row['gflop_per_step'] for row in rows if row['untimed']),
      'busy_ms_per_step': busy_seconds((s, e) for _, s, e in traced) / steps *
                          1e3,
      'dot_ms_per_step': dot_ms, 'dot_gflop_per_step': dot_gflop,
      'dot_gflop_per_s': dot_gflop / dot_ms * 1e3 if dot_ms else None,
      'other_ms_per_step': sum(row['ms_per_step'] for row in rows
                               if not row['gflop_per_step']),
      'rows': rows}


def compiled_programs(modes: Sequence[str], *, variant: str, batch: int,
                      image_size: int, dtype: str, num_classes: int,
                      num_blocks) -> dict:
  """Mode -> (compiled program, a call of it): the benchmark's on one device.

  'train' is the donated train step, 'inference' the forward pass
  (experiments/measure.py), both of one model and its parameters.
  """
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',))
  depth = {'num_blocks': num_blocks} if num_blocks else {}
  model = models.create_model(variant, dtype=jnp.dtype(dtype),
                              num_classes=num_classes, **depth)
  params = models.init_params(model, image_size=image_size)
  timing = dict(mesh=mesh, image_size=image_size, batch_size=batch)
  programs = {}
  for mode in modes:
    if mode == 'train':
      jitted, args, run = measure.train_step_program(
          model, params, num_classes=num_classes, **timing)
    else:
      jitted, args, run = measure.inference_program(model, params, **timing)
    compiled = jitted.lower(*args).compile()
    programs[mode] = (compiled, functools.partial(run, compiled))
  return programs


def profile(*, variant: str, batch: int, image_size: int, dtype: str,
            mode: str, num_classes: int, num_blocks, steps: int, warmup: int,
            trace_dir: str) -> dict:
  """Times `steps` untraced steps, then traces `steps` more; the summary."""
  compiled, call = compiled_programs(
      [mode], variant=variant, batch=batch, image_size=image_size,
      dtype=dtype, num_classes=num_classes, num_blocks=num_blocks)[mode]
  ops = hlo_ops(compiled.as_text())
  seconds = measure.time_calls(call, steps=steps, warmup=warmup)
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      call()
  summary = summarize(trace_events(trace_dir), ops, steps=steps)
  step_ms = statistics.median(seconds) * 1e3
  return {'variant': variant, 'mode': mode, 'dtype': dtype, 'batch': batch,
          'image_size': image_size, 'device': str(jax.devices()[0]),
          'jax': jax.__version__, 'trace_dir': trace_dir,
          'step_ms': step_ms,
          'idle_ms_per_step': step_ms - summary['busy_ms_per_step'],
          **summary}


def format_summary(result: dict, *, top: int) -> str:
  """The header and the table the CLI prints."""
  step = result['step_ms']
  lines = [
      f'{result["variant"]} {result["mode"]} {result["dtype"]} batch '
      f'{result["batch"]} @{result["image_size"]}px on {result["device"]}, '
      f'jax {result["jax"]}',
      f'step {step:.1f} ms (untraced median); traced ops busy '
      f'{result["busy_ms_per_step"]:.1f} ms/step, idle '
      f'{result["idle_ms_per_step"]:.1f} ms/step',
      f'traced dots {result["dot_ms_per_step"]:.1f} ms/step, '
      f'{result["dot_gflop_per_step"]:.1f} GFLOP/step at '
      f'{result["dot_gflop_per_s"] or 0:.1f} GFLOP/s; Eigen dots '
      f'{result["untimed_dot_gflop_per_step"]:.1f} GFLOP/step (launches '
      f'traced, not their work); other ops '
      f'{result["other_ms_per_step"]:.1f} ms/step',
      f'trace: {result["trace_dir"]}', '',
      f'{"ms/step":>9} {"% step":>7} {"calls":>6} {"GFLOP/s":>8}  op']
  for row in result['rows'][:top]:
    rate = f'{row["gflop_per_s"]:.1f}' if row['gflop_per_s'] else '-'
    lines.append(f'{row["ms_per_step"]:>9.1f} '
                 f'{row["ms_per_step"] / step:>7.1%} '
                 f'{row["calls_per_step"]:>6g} {rate:>8}  {row["op"]}')
  return '\n'.join(lines)


def define_model_flags():
  """The flags that choose the model and its batch: compiled_programs' own."""
  flags.DEFINE_string('variant', 'S/32', "Mixer variant: 'S/32', 'B/16', ...")
  flags.DEFINE_integer('batch', 32, 'Batch size (one device).')
  flags.DEFINE_integer('image_size', 224, 'Side of the square images.')
  flags.DEFINE_integer('num_classes', 1000, 'Head classes.')
  flags.DEFINE_integer('num_blocks', None,
                       "Overrides the variant's number of blocks (quick runs).")


def define_flags():
  """The CLI's flags, defined on use: tests import this with benchmark.py."""
  define_model_flags()
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                    'Compute dtype; parameters stay float32.')
  flags.DEFINE_enum('mode', 'train', ['train', 'inference'], 'Which program.')
  flags.DEFINE_integer('steps', 5, 'Steps timed untraced, then traced.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_integer('top', 25, 'Rows of the printed table.')
  flags.DEFINE_string('trace_dir', None,
                      'Where the trace goes (default: a new temporary folder).')
  flags.DEFINE_string('json', None, 'Also write the summary to this file.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  host_memory.reuse_unless_flagged_off()  # Before jax's backends start.
  try:
    result = profile(
        variant=f.variant, batch=f.batch, image_size=f.image_size,
        dtype=f.dtype, mode=f.mode, num_classes=f.num_classes,
        num_blocks=f.num_blocks, steps=f.steps, warmup=f.warmup,
        trace_dir=f.trace_dir or tempfile.mkdtemp(prefix='mixer_profile_'))
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(format_summary(result, top=f.top))
  if f.json:
    with open(f.json, 'w') as file:
      json.dump(result, file, indent=2)


if __name__ == '__main__':
  define_flags()
  # mixer_jax.host_memory's --[no]reuse_host_memory.
  flags.declare_key_flag('reuse_host_memory')
  app.run(main)
