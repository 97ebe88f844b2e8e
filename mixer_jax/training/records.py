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
"""A run's JSON files, read and written whole: metrics.jsonl, config.json,
final_metrics.json. No TensorFlow, no jax: plot, export and transfer read
and write them too."""

import json
import os


def read_jsonl(path: str) -> list[dict]:
  """The records of a metrics.jsonl; a line cut short by a kill is skipped."""
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except ValueError:
        continue
  return records


def drop_jsonl_after(path: str, step: int):
  """Rewrites metrics.jsonl without the records past `step` (atomically)."""
  if not os.path.exists(path):
    return
  records = read_jsonl(path)
  kept = [r for r in records if r.get('step', 0) <= step]
  if len(kept) == len(records) and _ends_with_newline(path):
    return
  _write_atomically(path, ''.join(json.dumps(r) + '\n' for r in kept))


def _ends_with_newline(path: str) -> bool:
  if not os.path.getsize(path):
    return True
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    return f.read() == b'\n'


def write_json(path: str, value):
  """Writes `value` as JSON; a kill leaves the old file or the new one."""
  _write_atomically(path, json.dumps(value, indent=2))


def _write_atomically(path: str, text: str):
  partial = path + '.partial'
  try:
    with open(partial, 'w') as f:
      f.write(text)
    os.replace(partial, path)
  except BaseException:
    if os.path.exists(partial):
      os.remove(partial)
    raise
