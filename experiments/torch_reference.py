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
r"""A PyTorch Mixer on the same machine, measured as benchmark.py measures ours.

  pip install torch [timm]
  python experiments/torch_reference.py --variant S/32 --batch 32

Not a mixer_jax dependency: a reference point for experiments/README.md. The
model is timm's `mixer_<w><p>_224` where timm imports, else the same network
written here in plain PyTorch (the output says which). Measured in one
process, on the CPU, float32, with the figures of benchmark.py:

  matmul peak  best FLOP/s of chained square matmuls, 512 up to 2048, each
               call at least --matmul_seconds, best of five calls.
  img/s        batch / median of --steps steps after --warmup. train: forward,
               cross-entropy, backward, clip to norm 1, momentum SGD (as
               configs/common); inference: forward under torch.inference_mode.
  MFU          3 x (train) or 1 x (inference) models.flops_per_image per image
               / the matmul peak.
"""

import statistics
import sys
import pathlib
import time

from absl import app
from absl import flags
import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import measure
from mixer_jax import models

_VARIANT = flags.DEFINE_string('variant', 'S/32', "Mixer variant, e.g. 'S/32'.")
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Image side.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per mode.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps first.')
_MATMUL_SECONDS = flags.DEFINE_float('matmul_seconds', 0.05,
                                     'Least duration of one matmul call.')
_NO_TIMM = flags.DEFINE_bool('no_timm', False,
                             'Use the plain PyTorch network even with timm.')


class MlpBlock(nn.Sequential):

  def __init__(self, width: int, hidden: int):
    super().__init__(nn.Linear(width, hidden), nn.GELU(approximate='tanh'),
                     nn.Linear(hidden, width))


class MixerBlock(nn.Module):
  """As models.MixerBlock: token mixing on the transposed tokens, channels."""

  def __init__(self, tokens: int, width: int, tokens_hidden: int,
               channels_hidden: int):
    super().__init__()
    self.norm1, self.norm2 = (nn.LayerNorm(width, eps=1e-6) for _ in range(2))
    self.token_mixing = MlpBlock(tokens, tokens_hidden)
    self.channel_mixing = MlpBlock(width, channels_hidden)

  def forward(self, x):
    x = x + self.token_mixing(self.norm1(x).transpose(1, 2)).transpose(1, 2)
    return x + self.channel_mixing(self.norm2(x))


class Mixer(nn.Module):
  """models.MlpMixer's network (conv stem, as timm and vit_jax), in PyTorch."""

  def __init__(self, mixer: models.MlpMixer, *, image_size: int):
    super().__init__()
    p, width = mixer.patch_size, mixer.hidden_dim
    self.stem = nn.Conv2d(3, width, p, stride=p)
    self.blocks = nn.Sequential(*[
        MixerBlock((image_size // p)**2, width, mixer.tokens_mlp_dim,
                   mixer.channels_mlp_dim) for _ in range(mixer.num_blocks)])
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, mixer.num_classes)

  def forward(self, images):
    x = self.stem(images).flatten(2).transpose(1, 2)
    return self.head(self.norm(self.blocks(x)).mean(1))


def create_network(variant: str, *, image_size: int, use_timm: bool):
  """(network, name): timm's where it imports, else the plain one."""
  width, patch = models.parse_variant(variant)
  if use_timm:
    try:
      import timm
      name = f'mixer_{width.lower()}{patch}_224'
      return timm.create_model(name, img_size=image_size), f'timm {name}'
    except Exception as e:  # pylint: disable=broad-except
      print(f'timm unavailable ({type(e).__name__}: {e}); plain PyTorch.')
  mixer = models.create_model(variant, num_classes=1000)
  return Mixer(mixer, image_size=image_size), 'plain PyTorch (this file)'


def matmul_peak(*, min_seconds: float) -> tuple[float, int]:
  """(FLOP/s, size) of the fastest chained square float32 matmul."""
  best = (0.0, 0)
  for dim in (512, 1024, 2048):
    a, w = torch.randn(dim, dim), torch.randn(dim, dim) / dim**0.5
    chain = 1
    while True:
      start = time.perf_counter()
      x = a
      for _ in range(chain):
        x = x @ w
      if time.perf_counter() - start >= min_seconds:
        break
      chain *= 2
    calls = []
    for _ in range(5):
      start = time.perf_counter()
      x = a
      for _ in range(chain):
        x = x @ w
      calls.append(time.perf_counter() - start)
    best = max(best, (2 * dim**3 * chain / min(calls), dim))
  return best


def main(argv):
  del argv
  size, batch = _IMAGE_SIZE.value, _BATCH.value
  torch.manual_seed(0)
  network, name = create_network(_VARIANT.value, image_size=size,
                                 use_timm=not _NO_TIMM.value)
  flops = models.flops_per_image(
      models.create_model(_VARIANT.value, num_classes=1000), image_size=size)
  peak, dim = matmul_peak(min_seconds=_MATMUL_SECONDS.value)
  images = torch.rand(batch, 3, size, size) * 2 - 1
  labels = torch.randint(0, 1000, (batch,))
  sgd = torch.optim.SGD(network.parameters(), lr=0.03, momentum=0.9)

  def train_step():
    sgd.zero_grad()
    nn.functional.cross_entropy(network(images), labels).backward()
    nn.utils.clip_grad_norm_(network.parameters(), 1.0)
    sgd.step()

  def inference():
    with torch.inference_mode():
      network(images)

  print(f'{name}, torch {torch.__version__}, {torch.get_num_threads()} '
        f'threads; {flops / 1e9:.3f} GFLOPs/img forward; matmul peak '
        f'{peak / 1e12:.3f} TFLOP/s ({dim}x{dim}, float32)')
  print(f'{"mode":<10} {"batch":>6} {"img/s":>8} {"step ms":>9} {"MFU":>7}')
  for mode, step, passes in (('inference', inference, 1),
                             ('train', train_step, 3)):
    network.train(mode == 'train')
    seconds = statistics.median(
        measure.time_calls(step, steps=_STEPS.value, warmup=_WARMUP.value))
    print(f'{mode:<10} {batch:>6} {batch / seconds:>8.1f} '
          f'{seconds * 1e3:>9.1f} {passes * flops * batch / seconds / peak:>7.1%}')


if __name__ == '__main__':
  app.run(main)
