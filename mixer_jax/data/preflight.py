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
"""Before a run starts: is a dataset here, or can it be fetched?

With download on (the default), a missing tfds dataset is fetched (so is a
published checkpoint: trainer/setup.py checks it); without network that
would fail only after minutes of tfds's retries, or after the dataset's
preparation. So a short connection to each host is tried first, and whatever
cannot be had is listed at once, each with where to put it by hand.
"""

import os
import socket
import urllib.parse

import tensorflow_datasets as tfds

from mixer_jax import errors


def tfds_manual_dir(config, builder: tfds.core.DatasetBuilder) -> str:
  """Where tfds looks for source archives a user downloads by hand."""
  return config.tfds_manual_dir or os.path.join(builder.data_dir_root,
                                                'downloads', 'manual')


def reachable(url: str, *, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to the URL's host opens within `timeout`."""
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == 'https' else 80)
  try:
    socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    return True
  except OSError:
    return False


def is_folder(dataset: str) -> bool:
  """Whether config.dataset names a folder of images: one on disk, or a
  URL (gs://...; no tfds name holds '://')."""
  return '://' in dataset or os.path.isdir(dataset)


def missing_dataset(config, dataset=None):
  """What is missing of a tfds dataset (default: config.dataset) that cannot
  be fetched, or None."""
  dataset = dataset or config.dataset
  if dataset == 'digits' or is_folder(dataset):
    return None
  try:
    builder = tfds.builder(dataset, data_dir=config.tfds_data_dir)
  except ValueError:
    return None  # get_info names the unknown dataset.
  if builder.is_prepared():
    return None
  manual_dir = tfds_manual_dir(config, builder)
  infos = builder.url_infos or {}
  archives = sorted(i.filename for i in infos.values() if i.filename)
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    if os.path.isdir(manual_dir) and os.listdir(manual_dir):
      return None
    instructions = ' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
    return (f'tfds dataset {builder.name!r}: put the files tfds asks for in '
            f'{manual_dir} ({instructions})')
  if archives and all(os.path.exists(os.path.join(manual_dir, a))
                      for a in archives):
    return None
  where = (f'put {", ".join(archives)} in {manual_dir}' if archives else
           f'prepare it in {builder.data_dir_root}')
  if not config.download:
    return f'tfds dataset {builder.name!r} (download is off): {where}'
  unreachable = [url for url in infos if not reachable(url)]
  if unreachable:
    return (f'tfds dataset {builder.name!r} ({_hosts(unreachable)} '
            f'unreachable): {where}')
  return None


def _hosts(urls) -> str:
  return ', '.join(sorted({urllib.parse.urlparse(u).hostname for u in urls}))
