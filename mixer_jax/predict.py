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
r"""Predicts the classes of image files with a trained run or a checkpoint.

  python -m mixer_jax.predict --workdir=workdirs/digits IMAGE_OR_FOLDER...
  python -m mixer_jax.predict --pretrained=imagenet1k/Mixer-B_16 cat.jpg

Folders are searched recursively for jpg, png, webp, bmp and gif files (grey
and RGBA images are converted to RGB). A run gives its model, preprocessing
and class names; a published name, path or URL of a `.npz` gives its model
by its parameter shapes and, for 1,000 or 21,843 classes, ImageNet's names.
--output=FILE.jsonl writes one JSON object per image:
{"file": ..., "top": [{"class": int, "name": str, "prob": float}, ...]}.
"""

import json

from absl import app
from absl import flags

from mixer_jax import cli
from mixer_jax import errors

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (an import of this module defines none)."""
  flags.DEFINE_string('workdir', None, 'A trained run.')
  flags.DEFINE_string(
      'pretrained', None, 'A published name (imagenet21k/Mixer-B_16, ...), a '
      '.npz path or a URL.')
  flags.DEFINE_integer('top_k', 5, 'Classes shown per image.', lower_bound=1)
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass.',
                       lower_bound=1)
  flags.DEFINE_string('output', None, 'Also write JSON lines here.')


def format_table(results) -> str:
  lines = []
  for result in results:
    lines.append(result['file'])
    lines += [f'  {i}. {t["prob"]:6.1%}  {t["name"]} (class {t["class"]})'
              for i, t in enumerate(result['top'], 1)]
  return '\n'.join(lines)


def main(argv):
  # The library (jax, TensorFlow) loads once the flags are good.
  cli.quiet_libraries(tensorflow=True)
  from mixer_jax.data import sources  # pylint: disable=g-import-not-at-top
  from mixer_jax import storage  # pylint: disable=g-import-not-at-top
  from mixer_jax.evals import inference  # pylint: disable=g-import-not-at-top
  from mixer_jax.evals import loading  # pylint: disable=g-import-not-at-top
  cli.leave_out_an_absent_tpu()
  sources.keep_tensorflow_off_accelerators()
  try:
    files = inference.image_files(argv[1:])
    if not files:
      raise errors.UserError('No image given: pass image files or folders.')
    loaded = loading.from_run_or_pretrained(workdir=FLAGS.workdir,
                                            pretrained=FLAGS.pretrained)
    results = inference.predict(loaded, files, top_k=FLAGS.top_k,
                                batch_size=FLAGS.batch_size)
  except errors.UserError as e:
    cli.exit_with_error('mixer_jax.predict', e)
  print(format_table(results))
  if FLAGS.output:
    storage.write_whole(FLAGS.output,
                        ''.join(json.dumps(r) + '\n' for r in results))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags('mixer_jax.predict'))
