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
"""What the speed scripts share: timing a call, the steps they time, the
device's matmul peak. No flags: each script owns its command line."""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixer_jax.model import models

NUM_CLASSES = 1000


def median_seconds(call, steps: int) -> float:
  """Median wall time of `call()` (which must wait for its result)."""
  call()  # Compiles, warms up.
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def jax_calls(module, *, batch: int, image_size: int, mesh):
  """(train call, inference call) of a flax Mixer, data-parallel on `mesh`."""
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  same = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rng = np.random.RandomState(0)
  images = jax.device_put(rng.uniform(-1, 1, (batch, image_size, image_size,
                                              3)).astype(np.float32), data)
  labels = jax.device_put(rng.randint(0, NUM_CLASSES, batch), data)
  params = jax.jit(lambda: module.init(jax.random.PRNGKey(0), images[:1],
                                       train=False)['params'],
                   out_shardings=same)()
  tx = optax.sgd(0.01, momentum=0.9)
  state = [(params, jax.jit(tx.init, out_shardings=same)(params))]

  def step(params, opt_state, images, labels):
    def loss(p):
      logits = module.apply({'params': p}, images, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  step = jax.jit(step, donate_argnums=(0, 1))
  forward = jax.jit(lambda p, x: module.apply({'params': p}, x, train=False))

  def train():
    state[0] = step(*state[0], images, labels)
    jax.block_until_ready(state[0])

  return train, lambda: forward(state[0][0], images).block_until_ready()


def timm_calls(variant: str, *, batch: int, image_size: int):
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  width, patch = models.parse_variant(variant)
  model = timm.create_model(f'mixer_{width.lower()}{patch}_224',
                            num_classes=NUM_CLASSES, img_size=image_size)
  images = torch.rand(batch, 3, image_size, image_size) * 2 - 1
  labels = torch.randint(0, NUM_CLASSES, (batch,))
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

  def train():
    model.train()
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    opt.step()

  def infer():
    model.eval()
    with torch.no_grad():
      model(images)

  return train, infer


def matmul_peak(dtype, sizes=(1024, 2048, 4096, 8192)) -> float:
  """Best FLOP/s of square matmuls of `sizes` on one device, times the
  device count."""
  best = 0.0
  for n in sizes:
    x = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda a: a @ a)
    seconds = min(median_seconds(lambda: matmul(x).block_until_ready(), 3)
                  for _ in range(2))
    best = max(best, 2 * n**3 / seconds)
    if seconds > 2:
      break
  return best * jax.device_count()
