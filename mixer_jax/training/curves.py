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
"""Training curves of one or more runs, overlaid, from their metrics.jsonl:
what `python -m mixer_jax.plot` and the end of every training run draw."""

import io
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mixer_jax import errors
from mixer_jax import storage
from mixer_jax.training import records

PANELS = (('train_loss', 'train loss'), ('learning_rate', 'learning rate'),
          ('eval_loss', 'eval loss'), ('eval_accuracy', 'eval accuracy'))


def curves(workdir: str) -> dict[str, tuple[list, list]]:
  """{metric: (steps, values)} of a run's metrics.jsonl."""
  path = storage.join(workdir, 'metrics.jsonl')
  if not storage.exists(path):
    raise errors.MissingError(f'{workdir} has no metrics.jsonl.')
  found = {name: ([], []) for name, _ in PANELS}
  for record in records.read_jsonl(path):
    for name in found:
      if name in record:
        found[name][0].append(record['step'])
        found[name][1].append(record[name])
  return found


def draw(workdirs, path: str) -> str:
  """Draws the runs' curves into `path` (PNG); returns it."""
  runs = {w: curves(w) for w in workdirs}
  figure = Figure(figsize=(10, 7), layout='constrained')
  FigureCanvasAgg(figure)  # No pyplot: nothing global changes.
  for axes, (name, title) in zip(figure.subplots(2, 2).flat, PANELS):
    for workdir, found in runs.items():
      steps, values = found[name]
      if steps:
        axes.plot(steps, values, marker='.' if len(steps) < 30 else None,
                  label=os.path.normpath(workdir))
    axes.set_title(title)
    axes.set_xlabel('step')
    axes.grid(alpha=0.3)
    if name.endswith('loss') or name == 'learning_rate':
      if any(v > 0 for f in runs.values() for v in f[name][1]):
        axes.set_yscale('log')
    if axes.lines:
      axes.legend(fontsize='small')
  image = io.BytesIO()
  figure.savefig(image, format='png', dpi=100)
  storage.write_whole(path, image.getvalue())
  return path
