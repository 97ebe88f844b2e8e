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
r"""Whether a recipe fits a TPU slice, and how fast it could run, before
renting one.

  python -m mixer_jax.plan --config=configs/b16.py --topology=v5e-8 \
      [--json=FILE] [--config.x=y ...]

Compiles the run's own train and eval steps (jit_steps: the same functions,
mesh, shardings, donation and accumulation as `train`) with the real TPU
compiler for a described slice, on any machine: no TPU, dataset or
checkpoint is needed (pip install -e '.[tpu,tf]' brings the compiler, libtpu).
Prints per chip: params, optimizer state, temporaries and total HBM against
the chip's, whether it fits, the smallest accum_steps that fits, FLOPs and
HBM bytes per step and a roofline estimate of the step time and img/s. Exits
1 when the config does not fit.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from mixer_jax import cli
from mixer_jax import errors

FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/b16.py; override fields '
      'with --config.<field>=<value>.', lock_config=True)
  flags.DEFINE_string('topology', 'v5e-8', 'TPU slice: an accelerator type '
                      '(v2-8, v3-8, v4-8, v5e-8, v5e-256, v5p-8, v6e-8, ...) '
                      'or a topology (v5e:2x4).')
  flags.DEFINE_string('json', None, 'Also write the plan here.')
  flags.DEFINE_integer('num_classes', None, 'Head size (default: the '
                       "dataset's, read from its tfds builder or folder).")


def describe(result: dict, *, config_name: str, topology: str) -> str:
  """The plan as a user reads it."""
  r = result

  def gib(key):
    return '     ?    ' if r[key] is None else f'{r[key]:6.2f} GiB'

  lines = [
      f'{config_name} on {topology}: {r["chip"]}, {r["chips"]} chips '
      f'({r["devices"]} devices, {r["hosts"]} host'
      f'{"s" if r["hosts"] > 1 else ""}); {r["variant"]} {r["dtype"]} '
      f'{r["image_size"]} px, batch {r["batch_size"]}, accum_steps '
      f'{r["accum_steps"]}. Per chip:',
      f'  params            {gib("params_gib_per_chip")}',
      f'  optimizer state   {gib("opt_state_gib_per_chip")}',
      f'  temporaries       {gib("temp_gib_per_chip")}  (train step)',
      f'  train step        {gib("train_hbm_gib_per_chip")}  in all, '
      'with the prefetched batches',
      f'  eval step         {gib("eval_hbm_gib_per_chip")}  in all, with '
      'the train state',
      f'  HBM               {gib("hbm_gib_per_chip")}  of '
      f'{r["capacity_gib"]:g} GiB ({r["usable_gib"]:.2f} usable): '
      f'{"fits" if r["fits"] else "DOES NOT FIT"}',
  ]
  if r['compiler_error']:
    lines.append(f'  the TPU compiler: {r["compiler_error"]}')
  lines.append(
      '  smallest accum_steps that fits: '
      f'{r["min_accum_steps"] or "none (the batch per device is too large)"}')
  if r['est_step_seconds'] is not None:
    lines += [
        f'  per train step    {r["tflop_per_chip_step"]:.3f} TFLOP, '
        f'{r["hbm_gb_per_chip_step"]:.2f} GB of HBM traffic',
        '  estimate, not a measurement (roofline: the larger of FLOPs / '
        'peak and bytes / bandwidth, an upper bound on speed):',
        f'    {r["est_step_seconds"] * 1e3:.1f} ms per train step, '
        f'{r["est_img_per_s_per_chip"]:,.0f} img/s per chip training'
        + (f', {r["est_infer_img_per_s_per_chip"]:,.0f} img/s per chip '
           'inference' if r['est_infer_img_per_s_per_chip'] else '')]
  return '\n'.join(lines)


def failure(result: dict) -> str:
  """Why the plan does not fit, and what would; '' when it fits."""
  r = result
  if r['fits']:
    return ''
  if not r['eval_fits']:
    return ('the eval step does not fit '
            f'({r["eval_hbm_gib_per_chip"] or "over"} GiB per chip, usable '
            f'{r["usable_gib"]:.2f}); lower --config.eval_batch_size.')
  need = (f'{r["hbm_gib_per_chip"]:.2f} GiB per chip'
          if r['hbm_gib_per_chip'] is not None else 'more than the chip has')
  over = (f'with accum_steps={r["accum_steps"]} it needs {need}, usable '
          f'{r["usable_gib"]:.2f} GiB')
  if r['min_accum_steps']:
    return (f'does not fit: {over}; --config.accum_steps='
            f'{r["min_accum_steps"]} fits (or --config.accum_steps=0 to pick '
            'it automatically).')
  return (f'does not fit: {over}, and no accumulation fits; lower '
          '--config.batch_size or use a larger slice.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The library (jax, TensorFlow) loads once the flags are good.
  from mixer_jax import hardware  # pylint: disable=g-import-not-at-top
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  from mixer_jax.training import planning  # pylint: disable=g-import-not-at-top
  cli.compile_only_for_tpu()
  sources.keep_tensorflow_off_accelerators()  # tfds reads the class count.
  try:
    tpu_slice = hardware.parse(FLAGS.topology)
    config = FLAGS.config
    num_classes = FLAGS.num_classes or sources.num_classes(config)
    result = planning.plan(config, hardware.devices(tpu_slice),
                           chip=tpu_slice.chip, num_classes=num_classes)
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.plan', e)
  config_name = flags.FLAGS['config'].serialize().split('=', 1)[-1]
  result = {'config': config_name, 'topology': tpu_slice.name,
            'num_classes': num_classes, **result}
  print(describe(result, config_name=config_name, topology=tpu_slice.name))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(result, f, indent=2)
  why = failure(result)
  if why:
    cli.exit_with_error('mixer_jax.plan', why)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags_and_config('mixer_jax.plan'))
