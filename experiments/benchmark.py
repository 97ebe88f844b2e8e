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
r"""Mixer throughput, ours beside the official model and timm's, like for like.

  python experiments/benchmark.py --variant S/32 --batch 32 \
      [--dtype bfloat16] [--models ours,official,timm] [--rounds 3]

Every model runs in this one process, with the same settings, in turns (one
round times each model once; the figures are medians over rounds):

  train      img/s of one jitted SGD-momentum step (softmax cross-entropy,
             the state donated, data-parallel over the devices) on a fixed
             random batch already on the devices; timm: the same step in
             PyTorch (torch.optim.SGD), on the CPU threads.
  infer      img/s of the forward pass.
  MFU        model FLOPs (mixer_jax.model.flops; a train step counts 3 forward
             passes) per second over the devices' matmul peak, measured here
             as the best of square float matmuls (--dtype) of sizes 1024 to
             8192 (--peak_sizes) on one device, times the device count.
  input      img/s of input_pipeline.train_iterator alone, and per CPU
             core: --input_dataset (digits, or an image folder
             DIR/train/<class>/*.jpg) at the variant's image size, with the
             fine-tuning preprocessing (--input_pp=finetune: Inception crop +
             flip) or the from-scratch one (randaugment: + RandAugment 2/15;
             mixup runs on the devices, not here). --input_only times only
             this.

'official' is vit_jax's models_mixer.MlpMixer (float32 only): put a checkout
of github.com/google-research/vision_transformer on PYTHONPATH (it needs
einops). 'timm' needs `pip install torch timm`. A model whose package is
missing is left out with a note. Writes a markdown table, and --json FILE.
"""

import datetime
import json
import os
import platform
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import official
from experiments import timing
from experiments.timing import NUM_CLASSES
from mixer_jax.model import flops
from mixer_jax.model import models

_VARIANT = flags.DEFINE_string('variant', 'S/32', 'Mixer variant.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Global batch size.')
_IMAGE = flags.DEFINE_integer('image_size', 224, 'Image side.')
_DTYPE = flags.DEFINE_string('dtype', 'float32', 'Computation dtype.')
_MODELS = flags.DEFINE_list('models', ['ours', 'official', 'timm'],
                            'Models to time: ours, official, timm.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds; each times every model.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per round and mode.')
_INPUT_BATCHES = flags.DEFINE_integer('input_batches', 20,
                                      'Batches timed of the input pipeline '
                                      '(0: skip).')
_INPUT_DATASET = flags.DEFINE_string('input_dataset', 'digits',
                                     "'digits' or an image folder.")
_INPUT_PP = flags.DEFINE_enum('input_pp', 'finetune',
                              ['finetune', 'randaugment'],
                              'Input preprocessing timed.')
_INPUT_ONLY = flags.DEFINE_bool('input_only', False,
                                'Time the input pipeline only.')
_PEAK_SIZES = flags.DEFINE_list('peak_sizes', ['1024', '2048', '4096', '8192'],
                                'Square matmul sizes timed for the peak.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here.')

def input_images_per_second(batches: int) -> float:
  from mixer_jax import recipes  # pylint: disable=g-import-not-at-top
  from mixer_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  config = recipes.get_config()
  config.update(dict(dataset=_INPUT_DATASET.value, train_split='train',
                     eval_split='train', image_size=_IMAGE.value,
                     batch_size=_BATCH.value, train_pp='inception_crop',
                     flip=True))
  if _INPUT_PP.value == 'randaugment':
    config.update(dict(randaugment_layers=2, randaugment_magnitude=15))
  iterator = input_pipeline.train_iterator(config)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * _BATCH.value / (time.perf_counter() - start)


def main_input_only():
  img_per_s = input_images_per_second(_INPUT_BATCHES.value)
  cores = os.cpu_count()
  print(f'input pipeline, {_INPUT_DATASET.value}, {_INPUT_PP.value}, '
        f'{_IMAGE.value} px, batch {_BATCH.value}: {img_per_s:,.1f} img/s, '
        f'{img_per_s / cores:,.1f} img/s per core ({cores} cores)')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(dict(input_img_per_s=img_per_s, cores=cores,
                     dataset=_INPUT_DATASET.value, pp=_INPUT_PP.value,
                     date=datetime.date.today().isoformat(),
                     command=' '.join(['python'] + sys.argv)), f, indent=2)


def main(argv):
  del argv
  if _INPUT_ONLY.value:
    main_input_only()
    return
  variant, batch, size = _VARIANT.value, _BATCH.value, _IMAGE.value
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
  calls, notes = {}, []
  for name in _MODELS.value:
    try:
      if name == 'ours':
        module = models.create_model(variant, num_classes=NUM_CLASSES,
                                     dtype=jnp.dtype(_DTYPE.value))
        calls[name] = timing.jax_calls(module, batch=batch, image_size=size,
                                       mesh=mesh)
      elif name == 'official':
        if _DTYPE.value != 'float32':
          raise ImportError('the official model computes in float32 only')
        calls[name] = timing.jax_calls(
            official.mixer(variant, num_classes=NUM_CLASSES), batch=batch,
            image_size=size, mesh=mesh)
      elif name == 'timm':
        calls[name] = timing.timm_calls(variant, batch=batch, image_size=size)
      else:
        raise app.UsageError(f'Unknown model {name!r}.')
    except ImportError as e:
      notes.append(f'{name}: left out ({e})')
  times = {name: ([], []) for name in calls}
  for _ in range(_ROUNDS.value):
    for name, (train, infer) in calls.items():
      times[name][0].append(timing.median_seconds(train, _STEPS.value))
      times[name][1].append(timing.median_seconds(infer, _STEPS.value))
  peak = timing.matmul_peak(jnp.dtype(_DTYPE.value),
                             [int(n) for n in _PEAK_SIZES.value])
  forward = flops.flops_per_image(
      models.create_model(variant, num_classes=NUM_CLASSES), image_size=size)
  rows = []
  for name, (train, infer) in times.items():
    train_ips = batch / statistics.median(train)
    infer_ips = batch / statistics.median(infer)
    rows.append(dict(model=name, train_img_per_s=train_ips,
                     infer_img_per_s=infer_ips,
                     train_mfu=3 * forward * train_ips / peak,
                     infer_mfu=forward * infer_ips / peak))
  device = jax.devices()[0]
  results = dict(
      variant=variant, batch=batch, image_size=size, dtype=_DTYPE.value,
      rounds=_ROUNDS.value, steps=_STEPS.value, rows=rows, notes=notes,
      devices=f'{jax.device_count()} x {device.device_kind}',
      cpu=platform.processor() or platform.machine(),
      matmul_peak_tflops=peak / 1e12,
      date=datetime.date.today().isoformat(), jax=jax.__version__,
      command=' '.join(['python'] + sys.argv))
  if _INPUT_BATCHES.value:
    results['input_img_per_s'] = input_images_per_second(
        _INPUT_BATCHES.value)
  print(f'{results["devices"]}, {variant} {_DTYPE.value}, batch {batch}, '
        f'{size} px, matmul peak {peak / 1e12:.3f} TFLOP/s, median of '
        f'{_ROUNDS.value} rounds of {_STEPS.value} steps\n')
  print('| model | train img/s | infer img/s | train MFU | infer MFU |')
  print('|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["model"]} | {r["train_img_per_s"]:.1f} | '
          f'{r["infer_img_per_s"]:.1f} | {r["train_mfu"]:.0%} | '
          f'{r["infer_mfu"]:.0%} |')
  if 'input_img_per_s' in results:
    print(f'\ninput pipeline: {results["input_img_per_s"]:,.0f} img/s')
  for note in notes:
    print(note)
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
