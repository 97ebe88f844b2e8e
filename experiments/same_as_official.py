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
r"""Is our model the official computation? Compared program to program.

For each variant, image size and mode (inference; an SGD-momentum train step
with gradient clipping), lowers ours and vit_jax's models_mixer.MlpMixer
(float32, the only dtype it has) to StableHLO and compares the two programs'
text without source locations. Identical programs compile to identical
executables on every backend and topology, so the TPU compiler's HBM bytes
and temporaries are equal too; `--topology=v5e-8` also compiles both for that
slice (libtpu) and prints them.

  PYTHONPATH=/path/to/vision_transformer python experiments/same_as_official.py \
      [--variants S/32,B/16] [--image_sizes 224,448] [--modes infer,train]
      [--topology v5e-8]
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import official
from mixer_jax import cli
from mixer_jax import hardware
from mixer_jax.model import models

_VARIANTS = flags.DEFINE_list(
    'variants', ['S/32', 'S/16', 'B/32', 'B/16', 'L/32', 'L/16', 'H/14'],
    'Mixer variants.')
_IMAGE_SIZES = flags.DEFINE_list('image_sizes', ['224', '448'], 'Image sides.')
_MODES = flags.DEFINE_list('modes', ['infer', 'train'], 'infer, train.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Global batch.')
_TOPOLOGY = flags.DEFINE_string(
    'topology', None, 'Also compile both for this TPU slice (e.g. v5e-8).')


def lowered(module, *, mode: str, image_size: int, batch: int, devices):
  """`module`'s inference or train step, lowered with abstract arguments."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ('data',))
  same = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  place = lambda tree, s: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree)
  params = place(jax.eval_shape(lambda: module.init(
      jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3)),
      train=False)['params']), same)
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3),
                                jnp.float32, sharding=split)
  if mode == 'infer':
    return jax.jit(lambda p, x: module.apply({'params': p}, x, train=False)
                   ).lower(params, images)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.sgd(0.01, momentum=0.9))

  def step(p, o, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        module.apply({'params': p}, x, train=True), y).mean()
    updates, o = tx.update(jax.grad(loss)(p), o, p)
    return optax.apply_updates(p, updates), o

  labels = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=split)
  return jax.jit(step, donate_argnums=(0, 1), out_shardings=(same, same)
                 ).lower(params, place(jax.eval_shape(tx.init, params), same),
                         images, labels)


def main(argv):
  del argv
  cli.compile_only_for_tpu()
  tpu = (hardware.devices(hardware.parse(_TOPOLOGY.value))
         if _TOPOLOGY.value else None)
  columns = ['variant', 'px', 'mode', 'identical StableHLO']
  if tpu:
    columns += [f'{_TOPOLOGY.value} GB accessed (ours / official)',
                'temporaries MiB (ours / official)']
  print('| ' + ' | '.join(columns) + ' |\n|' + '---|' * len(columns))
  for variant in _VARIANTS.value:
    ours = models.create_model(variant, num_classes=1000)
    theirs = official.mixer(variant, num_classes=1000)
    for image_size in map(int, _IMAGE_SIZES.value):
      for mode in _MODES.value:
        text = [lowered(m, mode=mode, image_size=image_size,
                        batch=_BATCH.value, devices=jax.devices()[:1]
                        ).as_text(debug_info=False) for m in (ours, theirs)]
        row = [variant, str(image_size), mode,
               'yes' if text[0] == text[1] else 'NO']
        if tpu:
          costs = []
          for m in (ours, theirs):
            compiled = lowered(m, mode=mode, image_size=image_size,
                               batch=_BATCH.value, devices=tpu).compile()
            costs.append((compiled.cost_analysis()['bytes accessed'] / 1e9,
                          compiled.memory_analysis().temp_size_in_bytes /
                          2**20))
          row += [f'{costs[0][0]:.2f} / {costs[1][0]:.2f}',
                  f'{costs[0][1]:.1f} / {costs[1][1]:.1f}']
        print('| ' + ' | '.join(row) + ' |', flush=True)


if __name__ == '__main__':
  app.run(main)
