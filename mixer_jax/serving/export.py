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
"""A trained model in the formats other tools read (StableHLO, SavedModel,
ONNX, timm), written whole into one folder: what `python -m mixer_jax.export`
runs; its docstring says how each is called."""

import contextlib
import io
import logging as std_logging
import math
import os
import shutil
import tempfile

import jax
from jax import export as jax_export  # A submodule: jax 0.7 does not load it.
import jax.numpy as jnp

from mixer_jax import errors
from mixer_jax import serving
from mixer_jax import storage
from mixer_jax.evals import loading
from mixer_jax.model import published
from mixer_jax.training import records

FORMATS = serving.FORMATS
PLATFORMS = ('cpu', 'cuda', 'tpu')


def logits_fn(loaded: loading.Loaded):
  """images float32 [batch, S, S, 3] in [-1, 1] -> float32 logits."""
  def forward(images):
    logits = loaded.model.apply({'params': loaded.params}, images,
                                train=False)
    return logits.astype(jnp.float32)
  return forward


def to_stablehlo(loaded: loading.Loaded) -> jax_export.Exported:
  """The batch-polymorphic logits function, weights included."""
  batch, = jax_export.symbolic_shape('batch')
  size = loaded.image_size
  return jax_export.export(jax.jit(logits_fn(loaded)), platforms=PLATFORMS)(
      jax.ShapeDtypeStruct((batch, size, size, loaded.model.in_channels),
                           jnp.float32))


def metadata(loaded: loading.Loaded, *, format_name: str) -> dict:
  """What a user of the export needs beside it."""
  size, config = loaded.image_size, loaded.config
  return {
      'format': format_name,
      'input': {'shape': ['batch', size, size, loaded.model.in_channels],
                'dtype': 'float32', 'layout': 'NHWC', 'range': [-1.0, 1.0]},
      'output': {'shape': ['batch', loaded.model.num_classes],
                 'dtype': 'float32', 'meaning': 'logits'},
      # mixer_jax.data.preprocess's eval preprocessing of the image, then
      # (x - 127.5) / 127.5.
      'preprocessing': {'eval_pp': config.eval_pp if config else 'resize',
                        'image_size': size},
      'class_names': list(loaded.class_names),
      'jax_version': jax.__version__,
  }


def to_saved_model(loaded: loading.Loaded, path: str) -> None:
  """A TF SavedModel at `path`: signature 'serving_default', input 'images'
  [batch, S, S, 3] float32, output 'logits' (jax2tf, native serialization:
  the same StableHLO inside, run by TF's XLA)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  size = loaded.image_size
  channels = loaded.model.in_channels
  converted = jax2tf.convert(
      logits_fn(loaded), polymorphic_shapes=[f'(b, {size}, {size}, '
                                             f'{channels})'],
      native_serialization_platforms=PLATFORMS, with_gradient=False)
  module = tf.Module()
  module.serve = tf.function(
      lambda images: {'logits': converted(images)}, autograph=False,
      input_signature=[tf.TensorSpec([None, size, size, channels],
                                     tf.float32, name='images')])
  tf.saved_model.save(module, path,
                      signatures={'serving_default': module.serve})


@contextlib.contextmanager
def only_errors_from(*packages: str):
  """Within: the log handlers drop what the `packages` log below ERROR, and
  what is printed goes nowhere (jax2onnx logs the plugins it skips, with
  tracebacks, and prints debug lines); as they were after."""
  def keep(record):
    return record.levelno >= std_logging.ERROR or not any(
        f'/{name}/' in record.pathname for name in packages)

  handlers = list(std_logging.getLogger().handlers)
  for handler in handlers:
    handler.addFilter(keep)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    for handler in handlers:
      handler.removeFilter(keep)


def to_onnx(loaded: loading.Loaded, path: str) -> None:
  """An ONNX model at `path` (jax2onnx): input 'images' [B, S, S, 3],
  output 'logits' [B, classes]."""
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError('--format=onnx needs jax2onnx: pip install '
                           'jax2onnx (onnxruntime runs the export).') from None
  size = loaded.image_size
  with only_errors_from('jax2onnx', 'onnx_ir', 'onnx'):
    model = jax2onnx.to_onnx(
        logits_fn(loaded), [('B', size, size, loaded.model.in_channels)],
        model_name='mlp_mixer', input_names=['images'],
        output_names=['logits'])
  with open(path, 'wb') as f:
    f.write(model.SerializeToString())


# timm's registered Mixers by (patch, blocks, width).
TIMM_ARCHITECTURES = {
    (32, 8, 512): 'mixer_s32_224', (16, 8, 512): 'mixer_s16_224',
    (32, 12, 768): 'mixer_b32_224', (16, 12, 768): 'mixer_b16_224',
    (32, 24, 1024): 'mixer_l32_224', (16, 24, 1024): 'mixer_l16_224',
}
# Our eval_pp as timm's (crop_pct, crop_mode): 'squash' resizes both sides.
_TIMM_CROPS = {'resize': (1.0, 'squash'), 'resmall_crop': (0.875, 'center'),
               'resize_crop': (0.875, 'squash')}


def _timm_ratio(hidden: int, width: int) -> float:
  """The ratio r for which timm's int(r * width) is `hidden`."""
  ratio = hidden / width
  while int(ratio * width) < hidden:  # 61 / 7 * 7 < 61, for one.
    ratio = math.nextafter(ratio, math.inf)
  return ratio


def timm_config(loaded: loading.Loaded) -> dict:
  """timm's config.json for the model: architecture (when timm registers
  the geometry), model_args, and the pretrained_cfg of its preprocessing."""
  model, size = loaded.model, loaded.image_size
  width = model.hidden_dim
  mlp_ratio = [_timm_ratio(model.tokens_mlp_dim, width),
               _timm_ratio(model.channels_mlp_dim, width)]
  geometry = {'patch_size': model.patch_size, 'num_blocks': model.num_blocks,
              'embed_dim': width}
  architecture = TIMM_ARCHITECTURES.get(tuple(geometry.values()))
  num_classes = model.num_classes or 0
  model_args = {'img_size': size, 'in_chans': model.in_channels,
                'mlp_ratio': mlp_ratio, 'num_classes': num_classes}
  if architecture is None:
    model_args = {**geometry, **model_args}
  eval_pp = loaded.config.eval_pp if loaded.config else 'resize'
  crop_pct, crop_mode = _TIMM_CROPS[eval_pp]
  config = {'architecture': architecture} if architecture else {}
  config.update({
      'num_classes': num_classes,
      'num_features': width,
      'global_pool': 'avg',
      'model_args': model_args,
      'pretrained_cfg': {
          'input_size': [model.in_channels, size, size],
          'fixed_input_size': True, 'interpolation': 'bilinear',
          'crop_pct': crop_pct, 'crop_mode': crop_mode,
          'mean': [0.5] * model.in_channels,
          'std': [0.5] * model.in_channels, 'num_classes': num_classes,
          'first_conv': 'stem.proj', 'classifier': 'head'},
      'label_names': list(loaded.class_names),
      'mixer_jax': {'gelu': 'tanh approximation' if model.approximate_gelu
                    else 'exact (erf)'},
  })
  return config


def to_timm(loaded: loading.Loaded, output: str) -> list[str]:
  """DIR/model.safetensors and DIR/config.json."""
  try:
    from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError('--format=timm needs safetensors: pip install '
                           'safetensors.') from None
  config = timm_config(loaded)
  with open(os.path.join(output, 'model.safetensors'), 'wb') as f:
    f.write(safetensors_numpy.save(published.to_timm(loaded.params)))
  records.write_json(os.path.join(output, 'config.json'), config)
  return ['model.safetensors', 'config.json']


def write_format(loaded: loading.Loaded, format_name: str,
                 output: str) -> list[str]:
  """Writes one format into the empty directory `output`; returns the names
  written there."""
  if format_name == 'timm':
    return to_timm(loaded, output)
  info = metadata(loaded, format_name=format_name)
  if format_name == 'stablehlo':
    exported = to_stablehlo(loaded)
    info['calling_convention_version'] = exported.calling_convention_version
    name = 'model.bin'
    with open(os.path.join(output, name), 'wb') as f:
      f.write(exported.serialize())
  elif format_name == 'onnx':
    name = 'model.onnx'
    to_onnx(loaded, os.path.join(output, name))
  else:
    name = 'saved_model'
    to_saved_model(loaded, os.path.join(output, name))
  info['files'] = [name, 'metadata.json']
  records.write_json(os.path.join(output, 'metadata.json'), info)
  return info['files']


def previous_export(output: str) -> set[str]:
  """The names of the export already in `output` (its metadata.json lists
  them; a timm export is model.safetensors and config.json)."""
  try:
    return set(records.read_json(storage.join(output, 'metadata.json')).get(
        'files', [])) | {'metadata.json'}
  except (OSError, ValueError, AttributeError):
    pass
  if storage.exists(storage.join(output, 'model.safetensors')):
    return {'model.safetensors', 'config.json'}
  return set()


def check_output(format_name: str, output: str, *, overwrite: bool) -> None:
  """Raises errors.UserError where the export cannot go (before anything
  is loaded)."""
  if format_name not in FORMATS:
    raise errors.UserError(f'--format={format_name}: one of '
                           f'{", ".join(FORMATS)}.')
  storage.check_bucket(output, what='--output')
  if os.path.isfile(output):
    raise errors.UserError(f'--output={output} is a file: give a directory.')
  there = storage.listdir(output)
  if there and not overwrite:
    raise errors.UserError(
        f'--output={output} is not empty ({", ".join(there[:4])}'
        f'{", ..." if len(there) > 4 else ""}): give a new or empty '
        'directory, or --overwrite to replace the export there.')


def export(loaded: loading.Loaded, *, format_name: str, output: str,
           overwrite: bool = False) -> list[str]:
  """Writes the export into the directory `output`; returns what it wrote.

  A directory that holds anything is left as it is unless `overwrite`, which
  replaces the export there (each folder holds one export, so its
  metadata.json describes its files). Everything is written into a hidden
  folder first (inside `output`, or for a bucket on this host) and moved or
  uploaded into place at the end: a failed export (a full or read-only
  disk, a failed upload) leaves nothing behind."""
  check_output(format_name, output, overwrite=overwrite)
  in_bucket = storage.is_url(output)
  created = not in_bucket and not os.path.isdir(output)
  if not in_bucket:
    os.makedirs(output, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.export_',
                             dir=None if in_bucket else output)
  names, placed = [], []
  try:
    names = write_format(loaded, format_name, staging)
    for name in previous_export(output) | set(names):
      storage.remove(storage.join(output, name))
    for name in names:
      placed.append(name)
      _place(os.path.join(staging, name), storage.join(output, name))
  except BaseException:
    for name in placed:  # An upload that failed half-way goes too.
      storage.remove(storage.join(output, name))
    names = []
    raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if created and not names:  # Failed: the folder made here goes too.
      shutil.rmtree(output, ignore_errors=True)
  return [storage.join(output, name) for name in names]


def _place(source: str, target: str) -> None:
  """Moves a staged file or folder into place; into a bucket, uploads each
  file whole."""
  if not storage.is_url(target):
    os.replace(source, target)
    return
  if not os.path.isdir(source):
    with open(source, 'rb') as f:
      storage.write_whole(target, f.read())
    return
  for root, _, files in os.walk(source):
    for name in files:
      local = os.path.join(root, name)
      _place(local, storage.join(target, os.path.relpath(local, source)))
