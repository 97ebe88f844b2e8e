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
r"""What only a GPU or TPU can tell, in one command within a time budget.

  python experiments/accelerator.py [--budget_s=480] [--output=FILE.json]

On whatever devices JAX sees, in this one process, section after section
while the budget lasts:

  device      the device, its count, platform version (driver or libtpu),
              jax version, date and memory statistics;
  matmul      the best square-matmul FLOP/s of one device in bfloat16 and
              float32 (the MFU denominators);
  fine_tune   300 steps of the real trainer (mixer_jax.train) fine-tuning a
              small Mixer on images this script draws (no download): the
              loss must fall; the step time;
  memory      the compiled memory of configs/b16.py's own train step (as
              `plan` compiles it) on these devices and, on a TPU, `plan`'s
              prediction for the same chips; the devices' memory statistics;
  throughput  train and inference img/s and MFU of ours and of vit_jax's
              module (float32 only; a vision_transformer checkout on
              PYTHONPATH, as experiments/official.py) for S/32, B/16 and
              L/16 at 224 px, float32 and bfloat16, at the largest batch per
              device that fits, up to the recipe's 512;
  timm        timm's mixer_b16_224 AMP inference and train step on the same
              GPU, where timm and a CUDA torch import.

A measurement starts only if the budget still holds what the one before it
took (scaled by their FLOPs): the command stops on time, keeps what finished
and says what it skipped and why. The JSON is written after every section;
the rows print as experiments/README.md's tables. On a CPU the same code
runs at toy sizes (64 px, small batches), which is how the tests keep it
working.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import official
from experiments import timing
from mixer_jax import hardware
from mixer_jax.model import flops
from mixer_jax.model import models

FLAGS = flags.FLAGS

RECIPE_BATCH = 512  # The recipes' batch: the most tried per device.
FINE_TUNE_STEPS = 300


class Budget:
  """The deadline, and whether a measurement may still start."""

  def __init__(self, seconds: float):
    self.start = time.monotonic()
    self.deadline = self.start + seconds

  def left(self) -> float:
    return self.deadline - time.monotonic()

  def allows(self, need_s: float) -> bool:
    return self.left() > need_s

  def elapsed(self) -> float:
    return time.monotonic() - self.start


def sizes(platform_name: str) -> dict:
  """The sizes measured: the real ones on an accelerator, toys on a CPU."""
  if platform_name == 'cpu':
    return dict(image_size=64, max_batch=8, peak_sizes=(256, 512), steps=2,
                rounds=1)
  return dict(image_size=224, max_batch=RECIPE_BATCH,
              peak_sizes=(1024, 2048, 4096, 8192), steps=10, rounds=3)


def device_section() -> dict:
  device = jax.devices()[0]
  return dict(
      platform=device.platform, device_kind=device.device_kind,
      devices=jax.device_count(), processes=jax.process_count(),
      platform_version=' '.join(
          getattr(device.client, 'platform_version', '').split()),
      driver=driver_version(device.platform), jax=jax.__version__,
      python=platform.python_version(), cpu_cores=os.cpu_count(),
      date=datetime.date.today().isoformat(),
      memory_stats=device.memory_stats() or {})


def driver_version(platform_name: str) -> str:
  """libtpu's version on a TPU, the NVIDIA driver's on a GPU."""
  if platform_name == 'tpu':
    try:
      return 'libtpu ' + importlib.metadata.version('libtpu')
    except importlib.metadata.PackageNotFoundError:
      return ''
  try:
    with open('/proc/driver/nvidia/version') as f:
      return f.readline().strip()
  except OSError:
    return ''


def matmul_section(size: dict) -> dict:
  return {name: timing.matmul_peak(jnp.dtype(name), size['peak_sizes']) / 1e12
          for name in ('bfloat16', 'float32')}


def draw_dataset(root: str, *, classes: int = 4, per_class: int = 64,
                 image_size: int = 16) -> None:
  """An image folder whose class is where a bright square sits, on noise."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  half = image_size // 2
  for split, count in (('train', per_class), ('test', per_class // 4)):
    for label in range(classes):
      os.makedirs(os.path.join(root, split, f'class{label}'), exist_ok=True)
      for i in range(count):
        image = rng.integers(0, 96, (image_size, image_size, 3), np.uint8)
        y, x = divmod(label, 2)
        image[y * half:(y + 1) * half, x * half:(x + 1) * half] += 128
        Image.fromarray(image).save(
            os.path.join(root, split, f'class{label}', f'{i}.png'))


def fine_tune_section(workdir: str) -> dict:
  """The real trainer, from a saved "pre-trained" checkpoint (a 10-class
  head, replaced for the 4 classes here), on a drawn image folder."""
  from mixer_jax.model import published  # pylint: disable=g-import-not-at-top
  from mixer_jax.model import model_config  # pylint: disable=g-import-not-at-top
  from mixer_jax import recipes  # pylint: disable=g-import-not-at-top
  from mixer_jax import trainer  # pylint: disable=g-import-not-at-top
  data = os.path.join(workdir, 'data')
  draw_dataset(data)
  config = recipes.digits()
  config.update(dict(dataset=data, train_split='train', eval_split='test',
                     image_size=16, train_pp='resize', crop_padding=0,
                     batch_size=32 * jax.device_count(),
                     eval_batch_size=16 * jax.device_count(),
                     total_steps=FINE_TUNE_STEPS, warmup_steps=30,
                     eval_every=FINE_TUNE_STEPS, progress_every=30,
                     checkpoint_every=FINE_TUNE_STEPS))
  config.model.num_blocks = 2
  pretrained = os.path.join(workdir, 'pretrained.npz')
  published.save(pretrained, models.init_params(
      model_config.model_from_config(config, num_classes=10),
      image_size=16))
  config.pretrained = pretrained
  start = time.monotonic()
  final = trainer.train_and_evaluate(config, os.path.join(workdir, 'run'))
  seconds = time.monotonic() - start
  with open(os.path.join(workdir, 'run', 'metrics.jsonl')) as f:
    losses = [r['train_loss'] for r in map(json.loads, f) if 'train_loss' in r]
  return dict(steps=FINE_TUNE_STEPS, first_loss=losses[0],
              last_loss=losses[-1], loss_fell=losses[-1] < losses[0] / 2,
              eval_accuracy=final['eval_accuracy'],
              img_per_s=final['img_per_s'],
              ms_per_step=1e3 * config.batch_size / final['img_per_s'],
              seconds=seconds)


def tpu_slice_name(device_kind: str, count: int) -> str | None:
  """The accelerator type of `count` JAX devices of `device_kind` ('TPU v5
  lite', 4 -> 'v5e-4'), or None where `plan` knows no such slice."""
  generation = {'TPU v2': 'v2', 'TPU v3': 'v3', 'TPU v4': 'v4',
                'TPU v5 lite': 'v5e', 'TPU v5e': 'v5e', 'TPU v5': 'v5p',
                'TPU v5p': 'v5p', 'TPU v6 lite': 'v6e', 'TPU v6e': 'v6e'}.get(
                    device_kind)
  # v4 and v5p name TensorCores, two a chip, and show one device a chip.
  cores = count * 2 if generation in ('v4', 'v5p') else count
  name = generation and f'{generation}-{cores}'
  return name if name in hardware.known_names() else None


def memory_section(size: dict, matmul: dict) -> dict:
  """configs/b16.py's train step compiled as `plan` compiles it, here; on a
  TPU also `plan`'s compile for the described slice of the same chips."""
  from mixer_jax.training import planning  # pylint: disable=g-import-not-at-top
  from mixer_jax import recipes  # pylint: disable=g-import-not-at-top
  config = recipes.load_file('configs/b16.py')
  config.image_size = size['image_size']
  config.batch_size = config.eval_batch_size = min(
      RECIPE_BATCH, size['max_batch'] * jax.device_count())
  device = jax.devices()[0]
  # The device's memory (a CPU's: the host's), so that `plan` compiles the
  # step once where it fits; only its memory figures are read here, not its
  # roofline (hence the placeholder bandwidth).
  capacity = (device.memory_stats() or {}).get('bytes_limit') or (
      os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))
  here = hardware.Chip(device.device_kind, capacity / 2**30,
                       matmul['float32'] * 1e12 / jax.device_count(), 1e12)
  compiled = planning.plan(config, jax.devices(), chip=here, num_classes=1000)
  result = dict(config='configs/b16.py', batch=config.batch_size,
                image_size=config.image_size,
                compiled_train_gib_per_device=compiled[
                    'train_hbm_gib_per_chip'] / compiled['devices_per_chip'],
                compiled_temp_gib_per_device=compiled['temp_gib_per_chip'] /
                compiled['devices_per_chip'],
                capacity_gib_per_device=capacity / 2**30)
  name = tpu_slice_name(device.device_kind, jax.device_count())
  if device.platform != 'tpu':
    result['plan'] = 'skipped: `plan` predicts for TPUs only'
  elif name is None:
    result['plan'] = f'skipped: no slice known for {device.device_kind}'
  else:
    tpu_slice = hardware.parse(name)
    predicted = planning.plan(config, hardware.devices(tpu_slice),
                          chip=tpu_slice.chip, num_classes=1000)
    result['plan'] = {'topology': name, **predicted}
  return result


def fitting_calls(module, size: dict, mesh):
  """(train, infer, batch per device) at the largest batch per device, from
  size['max_batch'] down by halves, whose steps compile and run."""
  batch = size['max_batch']
  while True:
    try:
      train, infer = timing.jax_calls(module, batch=batch * mesh.size,
                                      image_size=size['image_size'], mesh=mesh)
      train()
      infer()
      return train, infer, batch
    except jax.errors.JaxRuntimeError as e:
      if 'RESOURCE_EXHAUSTED' not in str(e) or batch == 1:
        raise
      batch //= 2


def throughput_rows(size: dict, matmul: dict, budget: Budget, notes: list,
                    variants):
  """One row per (variant, dtype, model), as long as the budget allows."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
  last = None  # (seconds, FLOPs per image) of the last measurement.
  for variant in variants:
    forward = flops.flops_per_image(models.create_model(
        variant, num_classes=timing.NUM_CLASSES),
                                    image_size=size['image_size'])
    for dtype in ('float32', 'bfloat16'):
      for name in ('ours', 'official'):
        label = f'{variant} {dtype} {name}'
        need = last[0] * forward / last[1] if last else 0
        if not budget.allows(need):
          notes.append(f'throughput {label}: skipped, {budget.left():.0f} s '
                       f'of the budget left, about {need:.0f} s needed')
          continue
        try:
          if name == 'ours':
            module = models.create_model(
                variant, num_classes=timing.NUM_CLASSES,
                dtype=jnp.dtype(dtype))
          elif dtype != 'float32':
            continue  # The official model computes in float32 only.
          else:
            module = official.mixer(variant, num_classes=timing.NUM_CLASSES)
        except ImportError as e:
          notes.append(f'throughput {label}: skipped ({e})')
          continue
        start = time.monotonic()
        train, infer, batch = fitting_calls(module, size, mesh)
        medians = [[timing.median_seconds(call, size['steps'])
                    for _ in range(size['rounds'])] for call in (train, infer)]
        global_batch = batch * mesh.size
        train_ips, infer_ips = (global_batch / statistics.median(m)
                                for m in medians)
        peak = matmul[dtype] * 1e12 * jax.device_count()
        last = (time.monotonic() - start, forward)
        yield dict(variant=variant, dtype=dtype, model=name,
                   image_size=size['image_size'], batch_per_device=batch,
                   train_img_per_s=train_ips, infer_img_per_s=infer_ips,
                   train_mfu=3 * forward * train_ips / peak,
                   infer_mfu=forward * infer_ips / peak, seconds=last[0])


def timm_section(size: dict) -> dict:
  """timm's mixer_b16_224 with AMP (bfloat16 autocast) on the same GPU."""
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return dict(skipped=f'timm or torch does not import ({e})')
  if not torch.cuda.is_available():
    return dict(skipped='torch sees no CUDA device')
  batch = min(size['max_batch'], 256)
  model = timm.create_model('mixer_b16_224', num_classes=1000).cuda()
  images = torch.rand(batch, 3, 224, 224, device='cuda') * 2 - 1
  labels = torch.randint(0, 1000, (batch,), device='cuda')
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

  def train():
    with torch.autocast('cuda', dtype=torch.bfloat16):
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    torch.cuda.synchronize()

  def infer():
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
      model(images)
    torch.cuda.synchronize()

  return dict(model='timm mixer_b16_224', dtype='bfloat16 autocast',
              batch=batch, device=torch.cuda.get_device_name(),
              torch=torch.__version__, timm=timm.__version__,
              train_img_per_s=batch / timing.median_seconds(train, 10),
              infer_img_per_s=batch / timing.median_seconds(infer, 10))


def markdown(results: dict) -> str:
  """The rows of experiments/README.md's accelerator tables."""
  d = results['device']
  machine = (f'{d["devices"]} x {d["device_kind"]}'
             + (f' ({d["driver"]})' if d['driver'] else ''))
  lines = ['| variant | device | dtype | batch/device | model | train img/s | '
           'infer img/s | train MFU | infer MFU | jax | date |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results.get('throughput', []):
    lines.append(
        f'| {r["variant"]} | {machine} | {r["dtype"]} | '
        f'{r["batch_per_device"]} | {r["model"]} | '
        f'{r["train_img_per_s"]:,.0f} | {r["infer_img_per_s"]:,.0f} | '
        f'{r["train_mfu"]:.0%} | {r["infer_mfu"]:.0%} | {d["jax"]} | '
        f'{d["date"]} |')
  t = results.get('timm', {})
  if 'train_img_per_s' in t:
    lines.append(f'| B/16 | {t["device"]} | {t["dtype"]} | {t["batch"]} | '
                 f'{t["model"]} | {t["train_img_per_s"]:,.0f} | '
                 f'{t["infer_img_per_s"]:,.0f} | - | - | torch '
                 f'{t["torch"]} | {d["date"]} |')
  m = results.get('matmul')
  if m:
    lines.append(f'\nmatmul peak per device: {m["bfloat16"]:.1f} TFLOP/s '
                 f'bfloat16, {m["float32"]:.1f} float32')
  f = results.get('fine_tune')
  if f:
    lines.append(f'fine-tune: {f["steps"]} steps, loss {f["first_loss"]:.3f} '
                 f'-> {f["last_loss"]:.3f}, {f["ms_per_step"]:.1f} ms/step')
  return '\n'.join(lines)


def write(results: dict) -> None:
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(results, f, indent=2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  budget = Budget(FLAGS.budget_s)
  size = sizes(jax.default_backend())
  results = dict(command=' '.join(['python'] + sys.argv),
                 budget_s=FLAGS.budget_s, sizes=size, skipped=[])
  results['device'] = device_section()
  write(results)
  # Each section, with the seconds it should at least have left to start.
  sections = [('matmul', 10, lambda: matmul_section(size)),
              ('fine_tune', 30, lambda: fine_tune_section(
                  tempfile.mkdtemp(prefix='mixer_jax_accelerator_'))),
              ('memory', 20, lambda: memory_section(size, results['matmul'])),
              ('throughput', 10, lambda: list(throughput_rows(
                  size, results['matmul'], budget, results['skipped'],
                  FLAGS.variants))),
              ('timm', 30, lambda: timm_section(size))]
  for name, need, run in sections:
    if not budget.allows(need) or (name != 'matmul' and
                                   'matmul' not in results):
      results['skipped'].append(f'{name}: skipped, {budget.left():.0f} s of '
                                f'the budget left')
    else:
      print(f'{name} ({budget.left():.0f} s of the budget left)', flush=True)
      try:
        results[name] = run()
        if isinstance(results[name], dict) and 'skipped' in results[name]:
          results['skipped'].append(f'{name}: {results[name]["skipped"]}')
      except Exception as e:  # pylint: disable=broad-except
        results['skipped'].append(f'{name}: failed ({type(e).__name__}: '
                                  f'{str(e)[:300]})')
    results['elapsed_s'] = budget.elapsed()
    write(results)
  print(markdown(results))
  for line in results['skipped']:
    print(line)
  print(f'{results["elapsed_s"]:.0f} s of {FLAGS.budget_s:.0f}'
        + (f'; written to {FLAGS.output}' if FLAGS.output else ''))


def define_flags():
  """The script's flags (an import of this module, as the tests make,
  defines none)."""
  flags.DEFINE_float('budget_s', 480, 'Seconds for everything.')
  flags.DEFINE_string('output', None, 'Also write the results here.')
  flags.DEFINE_list('variants', ['S/32', 'B/16', 'L/16'],
                    'Variants timed in `throughput`.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
