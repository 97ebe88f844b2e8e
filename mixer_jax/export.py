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
r"""Exports a trained run or a checkpoint for use outside this package.

  python -m mixer_jax.export --workdir=W | --pretrained=NAME \
      --format=stablehlo|savedmodel|onnx|timm --output=DIR

The calling convention: the exported function takes float32 images
[batch, S, S, 3] (NHWC), already preprocessed as DIR/metadata.json says
(resized to the model's size S, values in [-1, 1]), and returns float32
logits [batch, classes]; the batch size is symbolic. metadata.json also
holds the class names.

stablehlo: DIR/model.bin is a serialized `jax.export.Exported` (StableHLO,
lowered for cpu, cuda and tpu, the weights inside), which any jax reads
without this package:

  from jax import export
  exported = export.deserialize(open('DIR/model.bin', 'rb').read())
  logits = exported.call(images)

jax.export's compatibility window: a jax up to 6 months newer than the one
that wrote it reads it (3 weeks older).

savedmodel: DIR/saved_model, a TF SavedModel (jax2tf, the same StableHLO
inside) whose 'serving_default' signature takes 'images' and returns
'logits':

  serve = tf.saved_model.load('DIR/saved_model').signatures['serving_default']
  logits = serve(images=images)['logits']

onnx: DIR/model.onnx (jax2onnx; opset 23), input 'images', output 'logits':

  session = onnxruntime.InferenceSession('DIR/model.onnx')
  logits = session.run(['logits'], {'images': images})[0]

timm: timm's hub layout, DIR/model.safetensors (a timm `MlpMixer` state
dict) and DIR/config.json. timm's convention is NCHW: images
[batch, 3, S, S], the same values. A model of one of timm's geometries
(mixer_{s,b,l}{32,16}_224 at any image size, width ratio or class count)
loads by name:

  cfg = json.load(open('DIR/config.json'))
  model = timm.create_model(
      cfg['architecture'], pretrained=True, **cfg['model_args'],
      pretrained_cfg_overlay=dict(cfg['pretrained_cfg'],
                                  file='DIR/model.safetensors'))

any other geometry (timm registers no name for it) by its arguments:

  model = timm.models.MlpMixer(**cfg['model_args'])
  model.load_state_dict(safetensors.torch.load_file('DIR/model.safetensors'))

timm computes the exact (erf) GELU. A model with the tanh approximation
(the published weights and our default, `approximate_gelu`) gives logits in
timm that differ slightly from ours, as timm's own ports of the published
weights do; config.json's 'mixer_jax' entry says which one was trained.
"""

from absl import app
from absl import flags

from mixer_jax import cli
from mixer_jax import errors
from mixer_jax import serving

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (an import of this module defines none)."""
  flags.DEFINE_string('workdir', None, 'A trained run.')
  flags.DEFINE_string('pretrained', None, 'A published name, .npz or URL.')
  flags.DEFINE_enum('format', 'stablehlo', serving.FORMATS, 'What to write.')
  flags.DEFINE_string('output', None, 'The directory to write into (new or '
                      'empty, unless --overwrite).')
  flags.DEFINE_bool('overwrite', False, 'Replace the export already in '
                    '--output.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The library (jax; TensorFlow for savedmodel) loads once the flags are good.
  cli.quiet_libraries(tensorflow=FLAGS.format == 'savedmodel')
  from mixer_jax.evals import loading  # pylint: disable=g-import-not-at-top
  from mixer_jax.serving import export  # pylint: disable=g-import-not-at-top
  cli.leave_out_an_absent_tpu()
  if FLAGS.format == 'savedmodel':
    from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
    sources.keep_tensorflow_off_accelerators()
  try:
    if not FLAGS.output:
      raise errors.UserError('Give --output=DIR.')
    export.check_output(FLAGS.format, FLAGS.output, overwrite=FLAGS.overwrite)
    loaded = loading.from_run_or_pretrained(workdir=FLAGS.workdir,
                                            pretrained=FLAGS.pretrained)
    written = export.export(loaded, format_name=FLAGS.format,
                            output=FLAGS.output, overwrite=FLAGS.overwrite)
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.export', e)
  except OSError as e:  # A full or read-only disk, no permission.
    cli.exit_with_error('mixer_jax.export', errors.DiskFullError(
        f'no space left on device writing into {FLAGS.output}: '
        f'{errors.describe(e)[:200]}') if errors.is_disk_full(e) else
                        f'cannot write into --output={FLAGS.output}: '
                        f'{errors.describe(e)[:200]}; nothing was written.')
  print('Written: ' + ', '.join(written))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags('mixer_jax.export'))
