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

from mixer_jax import storage


def read_jsonl(path: str) -> list[dict]:
  """The records of a metrics.jsonl; a line cut short by a kill is skipped."""
  records = []
  for line in storage.read_text(path).splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:
      continue
  return records


def jsonl_text(records) -> str:
  return ''.join(json.dumps(r) + '\n' for r in records)


def write_json(path: str, value):
  """Writes `value` as JSON, whole: a kill leaves the old file or the new."""
  storage.write_whole(path, json.dumps(value, indent=2))


def read_json(path: str):
  return json.loads(storage.read_text(path))
