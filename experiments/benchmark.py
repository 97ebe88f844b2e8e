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
r"""Mixer throughput: train step, inference and input pipeline, with MFU.

  python experiments/benchmark.py --variant S/32 --batch 32 [--dtype bfloat16]

Measured in one process on one set of devices; printed as a table and written
to JSON with a record of the machine and the command. The figures:

  matmul peak  the best FLOP/s of chained square matmuls in --dtype, sizes
               512 up to 8192, batch-sharded over the devices like the
               model, each call's chain grown to --matmul_seconds; the
               sizes timed in 5 turns of one call each, best call of each.
               The reference for MFU. Each size's figure is printed and
               kept in the JSON (by_dim), for MFU against another peak.
  ceiling      inference and train MFU if nothing but their matmuls took
               time: each mixing MLP's two products chained at the model's
               own shapes on one device's rows (for train, forward and
               backward, with the model's kernel-gradient forms), timed by
               turns with a square chain of the peak's largest size up to
               2048 (best call of each; the square's stands for the peak);
               the stem and the head counted at the peak. Upper bounds.
  img/s        global batch / median of --steps step times (each step waited
               for, after compilation and --warmup steps). train: the jitted
               data-parallel train step, state donated, on a fixed random
               batch already on the devices (input excluded); inference: the
               jitted forward pass; input: input_pipeline.train_iterator
               alone on the host (its step ms: mean time per batch).
  compile s    wall time of jit(...).lower(...).compile(), tracing included.
  faults/step  the process's minor page faults per timed step (Unix): memory
               the step maps afresh and the kernel zeroes. Near 0 where a
               step reuses what the last one freed (--reuse_host_memory).
  MFU          model FLOP/s / matmul peak, with 3 x models.flops_per_image
               per trained image (backward = 2 forward), 1 x per inferred one.
  alongside    MFU against the peak as it stood during the mode's own steps:
               each timed step is followed by one call of the ceiling's
               square chain, and its best FLOP/s, times the peak over that
               size's figure in the peak's sweep, is the peak alongside (in
               TFLOP/s in brackets). A shared machine's speed drifts within
               a minute; this MFU compares the step with the matmuls of the
               same moments.
  paired       the same chain calls, each beside its own step: the median over
               steps of the step's FLOP/s over the peak that the chain call
               right after it stands for. Like for like (each step against a
               matmul of its own moment), where alongside sets a median step
               against the chain's fastest call; the two agree where the
               machine's speed does not drift. Not a best-of figure: a peak's
               targets are judged by MFU and alongside. On a CPU with
               --noreuse_host_memory both overstate: the chain runs while the
               step's memory is still being freed.
  memory       device peak_bytes_in_use where the backend reports it (GPU,
               TPU: the process's high-water mark, max over devices), else
               the compiled program's arguments + outputs - donated +
               temporaries per device (XLA's estimate), labelled as such.
  FLOPs check  XLA's cost analysis / models.flops_per_image for the forward
               pass, and XLA's train step / forward (should be about 3).
  header       the devices; the CPU's model name and MATMUL_EXTENSIONS (a
               VM may name its CPU by family alone; the extensions tell
               such machines apart); the versions; the command.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
import flax
import jax
import jax.numpy as jnp
import jaxlib
from ml_collections import config_flags
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # Run as a script: `configs` lives at the root.

# pylint: disable=g-import-not-at-top,g-bad-import-order
from experiments import matmul_peak
from experiments import measure
from mixer_jax import host_memory
from mixer_jax import models

MODES = ('train', 'inference', 'input')
# Model FLOPs per image of the device modes, in forward passes.
FORWARD_PASSES = {'train': 3, 'inference': 1}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What one run measures; each field is set by the flag of its name."""
  variant: str = 'S/32'
  batch: int = 32
  image_size: int = 224
  dtype: str = 'float32'
  devices: Optional[int] = None
  accum_steps: int = 1
  num_classes: int = 1000
  num_blocks: Optional[int] = None
  steps: int = 10
  warmup: int = 2
  modes: Sequence[str] = MODES
  matmul_seconds: float = 0.05
  matmul_max_dim: int = 8192
  per_example_token_grad: Optional[bool] = None
  transposed_channel_grad: Optional[bool] = None


flags.DEFINE_string('variant', Settings.variant,
                    "Mixer variant: 'S/32', 'B/16', 'L/16', 'Ti/4', ...")
flags.DEFINE_integer('batch', Settings.batch,
                     'Global batch size, over all the devices used.')
flags.DEFINE_integer('image_size', Settings.image_size,
                     'Side of the square images.')
flags.DEFINE_enum('dtype', Settings.dtype, ['float32', 'bfloat16'],
                  'Compute dtype of the model and of the matmul peak; '
                  'parameters stay float32.')
flags.DEFINE_integer('devices', Settings.devices,
                     'Use the first N devices (default: all of them).')
flags.DEFINE_integer('accum_steps', Settings.accum_steps,
                     'Micro-batches per train step (gradient accumulation in '
                     'the compiled step); img/s counts the whole batch.')
flags.DEFINE_integer('num_classes', Settings.num_classes, 'Head classes.')
flags.DEFINE_integer('num_blocks', Settings.num_blocks,
                     "Overrides the variant's number of blocks (quick runs).")
flags.DEFINE_integer('steps', Settings.steps,
                     'Timed steps per mode (input: timed batches).')
flags.DEFINE_integer('warmup', Settings.warmup, 'Untimed steps after '
                     'compilation (input: untimed batches).')
flags.DEFINE_list('modes', list(Settings.modes),
                  f'What to measure, of {", ".join(MODES)}.')
flags.DEFINE_float('matmul_seconds', Settings.matmul_seconds,
                   'Least duration of one timed call of the matmul peak.')
flags.DEFINE_integer('matmul_max_dim', Settings.matmul_max_dim,
                     'Largest square size the matmul peak tries.')
flags.DEFINE_boolean('per_example_token_grad',
                     Settings.per_example_token_grad,
                     'Force the per-example token-mixing kernel gradient on '
                     'or off (--noper_example_token_grad); default: the '
                     "model's own choice for the backend (on for the CPU).")
flags.DEFINE_boolean('transposed_channel_grad',
                     Settings.transposed_channel_grad,
                     'Force the channel-mixing kernel gradient as row-major '
                     'matmuls of a transposed operand on or off '
                     '(--notransposed_channel_grad); default: the model\'s '
                     'own choice for the backend (on for the CPU).')
_INPUT_CONFIG = config_flags.DEFINE_config_file(
    'input_config', str(ROOT / 'configs' / 'digits.py'),
    'Config whose train input the input mode measures, with image_size and '
    'batch_size set to the benchmark\'s. The default (digits, offline) also '
    'gets train_pp=inception_crop, so that the per-image cost at the '
    'benchmark resolution is measured. Override: --input_config.<field>=...',
    lock_config=False)
# mixer_jax.host_memory's --[no]reuse_host_memory, listed in this --help.
flags.declare_key_flag('reuse_host_memory', flag_values=flags.FLAGS)
_JSON = flags.DEFINE_string('json', None, 'Results file (default: '
                            'benchmark_<variant>_<dtype>_b<batch>.json here).')


# The vector extensions that set an x86 CPU's fp32 and bf16 matmul speed.
MATMUL_EXTENSIONS = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_fp16',
                     'amx_bf16', 'amx_fp16')


def cpu_record(cpuinfo: str) -> dict:
  """The model name and MATMUL_EXTENSIONS in a /proc/cpuinfo text.

  A VM often names its CPU by family alone ('AMD EPYC'); the extensions tell
  two such machines, and their matmul peaks, apart.
  """
  fields = {}
  for line in cpuinfo.splitlines():
    key, colon, value = line.partition(':')
    if colon:
      fields.setdefault(key.strip(), value.strip())  # The first processor's.
  flags_seen = fields.get('flags', '').split()
  return {'cpu': fields.get('model name') or platform.processor() or
                 platform.machine(),
          'cpu_extensions': ' '.join(
              f for f in MATMUL_EXTENSIONS if f in flags_seen)}


def machine_record(devices, command: str) -> dict:
  """Where and how the figures were taken; main adds host_memory_reused."""
  return {
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'platform': devices[0].platform, 'device_kind': devices[0].device_kind,
      'device_count': len(devices), 'devices_available': jax.device_count(),
      **cpu_record(pathlib.Path('/proc/cpuinfo').read_text()
                   if os.path.exists('/proc/cpuinfo') else ''),
      'cpu_cores': os.cpu_count(),
      'python': platform.python_version(), 'jax': jax.__version__,
      'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
      'command': command,
      # XLA's flags change the compiled programs, hence the figures.
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def run_benchmark(settings: Settings, *, input_config=None,
                  command: str = '') -> dict:
  """Every figure, as the JSON holds them; input_config feeds the input mode."""
  unknown = sorted(set(settings.modes) - set(MODES))
  used = jax.devices()[:settings.devices or None]
  if unknown:
    raise ValueError(f'Unknown mode(s) {", ".join(unknown)}; choose from '
                     f'{", ".join(MODES)}.')
  if 'input' in settings.modes:
    measure.input_pipeline_module()  # Before any figure is taken.
  if settings.devices and settings.devices > len(used):
    raise ValueError(f'--devices={settings.devices}: there are {len(used)}.')
  if settings.batch % (len(used) * settings.accum_steps):
    raise ValueError(f'Batch {settings.batch} does not split into '
                     f'{settings.accum_steps} micro-batch(es) over '
                     f'{len(used)} devices.')
  mesh = jax.sharding.Mesh(np.asarray(used), ('data',))
  depth = {'num_blocks': settings.num_blocks} if settings.num_blocks else {}
  model = models.create_model(
      settings.variant, dtype=jnp.dtype(settings.dtype),
      num_classes=settings.num_classes,
      per_example_token_grad=settings.per_example_token_grad,
      transposed_channel_grad=settings.transposed_channel_grad, **depth)
  size = settings.image_size
  results = {'machine': machine_record(used, command),
             'settings': dataclasses.asdict(settings)}
  if set(settings.modes) & set(FORWARD_PASSES):  # What MFU needs, first.
    results['model'] = {
        'params': models.count_params(models.init_params(
            model, image_size=size, abstract=True)),
        'per_example_token_grad': model.resolved_per_example_token_grad(),
        'transposed_channel_grad': model.resolved_transposed_channel_grad(),
        **measure.analytic_vs_xla_flops(model, image_size=size)}
    dtype = jnp.dtype(settings.dtype)
    peak = results['matmul_peak'] = matmul_peak.measure_matmul_peak(
        mesh, dtype, min_seconds=settings.matmul_seconds,
        max_dim=settings.matmul_max_dim)
    square = matmul_peak.square_reference(
        mesh, dtype, peak=peak, min_seconds=settings.matmul_seconds)
    peak['alongside'] = {'dim': square['dim'], 'flops': square['flops']}
    results['matmul_ceiling'] = matmul_peak.measure_matmul_ceiling(
        model, mesh, dtype, image_size=size, batch_size=settings.batch,
        square=square, min_seconds=settings.matmul_seconds)
    params = models.init_params(model, image_size=size)
  # The modes' steps take turns with the square chain: the peak alongside.
  timing = dict(mesh=mesh, image_size=size, batch_size=settings.batch,
                steps=settings.steps, warmup=settings.warmup,
                alongside=square['call'] if 'model' in results else None)
  # Inference before train: a device's peak memory only ever grows.
  if 'inference' in settings.modes:
    results['inference'] = measure.time_inference(model, params, **timing)
  if 'train' in settings.modes:
    results['train'] = measure.time_train_step(
        model, params, num_classes=settings.num_classes,
        accum_steps=settings.accum_steps, **timing)
  for mode, passes in FORWARD_PASSES.items():
    if mode in results:
      row = results[mode]
      flop_per_s = (passes * results['model']['analytic_forward'] *
                    row['img_per_s'])
      row['peak_alongside'] = matmul_peak.peak_at(
          square, row['alongside_seconds_all'])
      row['mfu'] = flop_per_s / peak['flop_per_s']
      row['mfu_alongside'] = flop_per_s / row['peak_alongside']
      row['mfu_paired'] = statistics.median(
          flop_per_s * row['step_seconds'] / step /
          matmul_peak.peak_at(square, [chain])
          for step, chain in zip(row['step_seconds_all'],
                                 row['alongside_seconds_all']))
  if 'input' in settings.modes:
    results['input'] = measure.time_input(input_config, batches=settings.steps,
                                  warmup=settings.warmup)
  return results


# On a CPU without the memory reused, the chain timed after a step runs while
# that step's temporaries are still being freed (experiments/README.md).
ALONGSIDE_CAVEAT = ('alongside and paired overstate here: the square chain '
                    'timed after each step runs while that step\'s memory is '
                    'still being freed; judge by MFU')


def format_report(results: dict) -> str:
  """The header lines and the table that the CLI prints."""
  settings = results['settings']
  lines = ['{date}  {device_count}x {device_kind} ({platform})  CPU {cpu} '
           '({cpu_cores} cores; {cpu_extensions})  jax {jax} jaxlib {jaxlib} '
           'flax {flax}\ncommand: {command}'.format(**results['machine'])]
  if results['machine'].get('xla_flags'):
    lines.append(f'XLA_FLAGS: {results["machine"]["xla_flags"]}')
  if 'host_memory_reused' in results['machine']:
    lines.append('host memory freed by a step: ' + (
        'reused by the next (CPU dispatch synchronous, glibc mmap and trim '
        'off)' if results['machine']['host_memory_reused'] else
        'allocator defaults'))
    if (not results['machine']['host_memory_reused'] and
        results['machine']['platform'] == 'cpu' and 'model' in results):
      lines.append(ALONGSIDE_CAVEAT)
  if 'model' in results:
    model, peak = results['model'], results['matmul_peak']
    ratio = lambda x: f'x{x:.3f}' if x else 'n/a'
    lines += [
        f'model {settings["variant"]} @{settings["image_size"]}px: '
        f'{model["params"]:,} params, {model["analytic_forward"] / 1e9:.3f} '
        f'GFLOPs/img forward (XLA/analytic {ratio(model["forward_ratio"])}, '
        f'XLA train/forward {ratio(model["train_over_forward"])}); '
        f'kernel gradients: per-example token '
        f'{"on" if model["per_example_token_grad"] else "off"}, transposed '
        f'channel {"on" if model["transposed_channel_grad"] else "off"}',
        f'matmul peak ({peak["dtype"]}, {peak["devices"]} device(s)): '
        f'{peak["flop_per_s"] / 1e12:.3f} TFLOP/s (chain of {peak["chain"]} '
        f'{peak["dim"]}x{peak["dim"]} matmuls per device, best call '
        f'{peak["call_seconds"] * 1e3:.1f} ms); by size: ' + ', '.join(
            f'{dim} {flop_per_s / 1e9:,.0f}'
            for dim, flop_per_s in peak['by_dim'].items()) + ' GFLOP/s']
    ceiling = results['matmul_ceiling']
    rates = lambda ratios: ', '.join(
        f'{name.replace("_", "-")} {ratio:.0%}'
        for name, ratio in ratios.items())
    lines.append(
        f'matmul ceiling (MFU if nothing but matmuls took time): inference '
        f'{ceiling["fraction"]:.1%} ({rates(ceiling["ratio_to_peak"])}), '
        f'train {ceiling["train_fraction"]:.1%} '
        f'({rates(ceiling["train_ratio_to_peak"])}, forward and backward) of '
        f'the peak at their own shapes, best of {ceiling["rounds"]} turns '
        f'with a {ceiling["square_dim"]} square chain; stem and head counted '
        'at 100 %')
  if 'model' in results:
    lines.append(f'MFU alongside: against the peak as re-timed between the '
                 f'steps, by its {peak["alongside"]["dim"]} square chain (peak '
                 'alongside in TFLOP/s); paired: each step against the chain '
                 'call after it, median')
  lines += ['', f'{"mode":<10} {"dtype":<9} {"batch":>6} {"img/s":>10} '
            f'{"step ms":>9} {"compile s":>9} {"MFU":>7} {"alongside":>16} '
            f'{"paired":>7} '
            f'{"faults/step":>11}  memory']
  for mode in (m for m in MODES if m in results):
    row = results[mode]
    dtype, compile_s, mfu, faults, memory = 'host', '-', '-', '-', '-'
    alongside = paired = '-'
    if mode in FORWARD_PASSES:
      dtype, compile_s, mfu = (settings['dtype'],
                               f'{row["compile_seconds"]:.2f}',
                               f'{row["mfu"]:.1%}')
      alongside = (f'{row["mfu_alongside"]:.1%} '
                   f'({row["peak_alongside"] / 1e12:.3f})')
      paired = f'{row["mfu_paired"]:.1%}'
      if row.get('page_faults_per_step') is not None:
        faults = f'{row["page_faults_per_step"]:,.0f}'
      memory = f'{row["memory_bytes"] / 2**20:.1f} MiB ({row["memory_source"]})'
    lines.append(f'{mode:<10} {dtype:<9} {settings["batch"]:>6} '
                 f'{row["img_per_s"]:>10.1f} {row["step_seconds"] * 1e3:>9.2f} '
                 f'{compile_s:>9} {mfu:>7} {alongside:>16} {paired:>7} '
                 f'{faults:>11}  '
                 f'{memory}')
  if 'input' in results and 'train' in results:
    bound = results['input']['img_per_s'] < results['train']['img_per_s']
    lines.append(f'input pipeline {"slower" if bound else "faster"} than the '
                 f'train step: training would be '
                 f'{"input" if bound else "compute"}-bound here.')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  settings = Settings(**{field.name: flags.FLAGS[field.name].value
                         for field in dataclasses.fields(Settings)})
  # Before run_benchmark starts jax's backends.
  reused = host_memory.reuse_unless_flagged_off()
  input_config = _INPUT_CONFIG.value
  input_config.update(image_size=settings.image_size,
                      batch_size=settings.batch)
  overrides = config_flags.get_override_values(flags.FLAGS['input_config'])
  if not flags.FLAGS['input_config'].present and 'train_pp' not in overrides:
    input_config.train_pp = 'inception_crop'
  try:
    results = run_benchmark(settings, input_config=input_config,
                            command=shlex.join(sys.orig_argv))
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  results['settings']['input_config'] = config_flags.get_config_filename(
      flags.FLAGS['input_config'])
  results['machine']['host_memory_reused'] = reused
  print(format_report(results))
  path = _JSON.value or (f'benchmark_{settings.variant.replace("/", "")}_'
                         f'{settings.dtype}_b{settings.batch}.json')
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'results: {os.path.abspath(path)}')


if __name__ == '__main__':
  app.run(main)
