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
"""Train and eval input pipelines over tfds, scikit-learn's digits or a folder.

Each dataset is a `sources.Source` (its splits' sizes and a reader of
undecoded records); everything else is shared: tfds split syntax, per-host
sharding, seeded shuffling, stateless augmentation, batching and eval padding.

The global train stream is a pure function of the config alone: epoch `e` is
a permutation of the whole split seeded with (seed, e), and the example at
position `i` of the stream is augmented with a seed of (seed, i). Global batch
`k` is positions k * batch_size, ...; each host works out by arithmetic which
positions are its slice of each global batch and reads those records only, by
index (tfds as ArrayRecord, folders by file, digits from memory). So a run
sees the same batches on any number of hosts, resumes exactly on another
number, and `start_step=k` starts at batch k reading nothing before it. Each
host reads 1 / (number of hosts) of the split per epoch.
"""

import collections
import dataclasses
import functools
import math
from typing import Iterator

import jax
from ml_collections import config_dict
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mixer_jax import errors
from mixer_jax.data import preflight
from mixer_jax.data import preprocess
from mixer_jax.data import sources

Batch = dict[str, np.ndarray]
# Stream ids folded into the seed: shuffling and augmentation draw apart.
_SHUFFLE, _AUGMENT = 0, 1


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the train loop needs to know of the data before it starts."""
  num_classes: int
  num_train_examples: int  # Examples in config.train_split, all hosts.
  num_eval_examples: int  # Examples in config.eval_split, all hosts.
  class_names: tuple[str, ...] = ()  # In label order.


def split_ranges(source: sources.Source, split) -> list[tuple[str, int, int]]:
  """tfds split syntax ('train[:98%]', 'test') -> [(name, start, end)]."""
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(
        source.splits)
  except (ValueError, AssertionError) as e:
    raise errors.UserError(
        f'Bad split {split!r} (splits: '
        f'{", ".join(source.splits)}): {e}') from None
  ranges = [(i.splitname, i.from_ or 0,
             source.splits[i.splitname].num_examples if i.to is None else i.to)
            for i in instructions]
  if not any(end > start for _, start, end in ranges):
    raise errors.UserError(
        f'Split {split!r} is empty.')
  return ranges


def host_ranges(ranges, *, process_index: int, process_count: int):
  """This host's contiguous share of `ranges`, sized as tfds.even_splits.

  Hosts get len // count examples, the first len % count hosts one more, so
  the largest share is ceil(len / count) for any split (even 'a+b').
  """
  total = sum(end - start for _, start, end in ranges)
  per_host, extra = divmod(total, process_count)
  lo = process_index * per_host + min(process_index, extra)
  hi = lo + per_host + (process_index < extra)
  shares, offset = [], 0
  for name, start, end in ranges:
    a, b = max(lo - offset, 0), min(hi - offset, end - start)
    if a < b:
      shares.append((name, start + a, start + b))
    offset += end - start
  return shares


def _num_examples(ranges) -> int:
  return sum(end - start for _, start, end in ranges)


def _read(source: sources.Source, shard, ranges) -> tf.data.Dataset:
  """Records of this host's `shard` of `ranges`, in order."""
  if not shard:  # Fewer examples than hosts: no records, the same structure.
    name, start, _ = next(r for r in ranges if r[2] > r[1])
    return source.read(name, start, start + 1).take(0)
  datasets = [source.read(*r) for r in shard]
  return functools.reduce(tf.data.Dataset.concatenate, datasets)


def _processes(process_index, process_count) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise errors.UserError(
        f'process_index {index} is not in [0, {count}).')
  return index, count


def local_batch_size(batch_size: int, process_count: int, name: str) -> int:
  if batch_size % process_count:
    raise errors.UserError(
        f'{name} {batch_size} is not divisible by the '
        f'{process_count} processes.')
  return batch_size // process_count


def get_info(config) -> DatasetInfo:
  """Classes and split sizes; raises config and data errors before training.

  Cheap, except that a tfds dataset found only as source archives in the
  manual dir is prepared here, once.
  """
  preprocess.make_train_fn(config)
  preprocess.make_eval_fn(config)
  source = sources.get_source(config)
  if source.num_classes < 2:
    raise errors.UserError(
        f'Dataset {config.dataset!r} has {source.num_classes} class(es) '
        f'({", ".join(source.class_names) or "none"}); a classifier needs at '
        'least two.')
  train_ranges = split_ranges(source, config.train_split)
  eval_ranges = split_ranges(source, config.eval_split)
  if preflight.is_folder(config.dataset):
    sources.check_folder_classes(config.dataset, list(dict.fromkeys(
        name for name, _, _ in train_ranges + eval_ranges)))
  return DatasetInfo(source.num_classes, _num_examples(train_ranges),
                     _num_examples(eval_ranges), source.class_names)


def _key(config, stream: int) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(
      tf.constant([config.seed, 0], tf.int64), stream)


def host_positions(epoch: tf.Tensor, *, size: int, batch_size: int,
                   first: int, local_batch: int, start: int, key: tf.Tensor):
  """(stream positions, split indices) of this host in epoch `epoch`, in
  order: the positions p of the epoch with first <= p % batch_size <
  first + local_batch and p >= start, and the example each one reads."""
  positions = epoch * size + tf.range(size, dtype=tf.int64)
  offsets = positions % batch_size
  mine = (offsets >= first) & (offsets < first + local_batch) & (
      positions >= start)
  return positions[mine], epoch_order(epoch, size, key=key)[mine]


def epoch_order(epoch: tf.Tensor, size: int, *, key: tf.Tensor) -> tf.Tensor:
  """The permutation of range(size) that is epoch `epoch`'s order."""
  seed = tf.random.experimental.stateless_fold_in(key, epoch)
  return tf.random.experimental.stateless_shuffle(
      tf.range(size, dtype=tf.int64), seed)


def _cached_lookup(source: sources.Source, ranges):
  """A lookup of decoded images that every host holds in memory whole (for
  small datasets, config.cache): the split is read and decoded once."""
  decode = tf.autograph.experimental.do_not_convert(
      lambda ex: (source.decode(ex['image']), ex['label']))
  records = _read(source, ranges, ranges).map(
      decode, num_parallel_calls=tf.data.AUTOTUNE)
  images, labels = [], []
  for image, label in records.as_numpy_iterator():
    images.append(image)
    labels.append(label)
  labels = np.array(labels, np.int32)
  if len({image.shape for image in images}) == 1:  # CIFAR: one array, read
    # in the graph (no Python, no GIL, per example).
    return sources.table_lookup({'': (np.stack(images), labels)},
                                lambda image: image)([('', 0, len(labels))])

  def get(i):
    return images[i]

  def lookup(i):
    image = tf.numpy_function(get, [i], tf.uint8, stateful=False)
    return {'image': tf.ensure_shape(image, [None, None, 3]),
            'label': tf.gather(labels, i)}
  return lookup


def train_iterator(config, *, start_step: int = 0,
                   process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[Batch]:
  """Infinite: {'image': [local_batch, S, S, 3] in [-1, 1], 'label'}.

  Yields this host's slices of global batches start_step, start_step + 1, ...
  (see the module docstring); local_batch = batch_size // process_count.
  """
  process_index, process_count = _processes(process_index, process_count)
  batch = local_batch_size(config.batch_size, process_count, 'batch_size')
  train_fn = preprocess.make_train_fn(config)
  source = sources.get_source(config)
  ranges = split_ranges(source, config.train_split)
  size = _num_examples(ranges)
  if config.cache:
    lookup, decode = _cached_lookup(source, ranges), lambda image: image
  else:
    lookup, decode = source.lookup(ranges), source.decode
  shuffle_key = _key(config, _SHUFFLE)
  augment_key = _key(config, _AUGMENT)
  start = start_step * config.batch_size

  @tf.autograph.experimental.do_not_convert
  def epoch(e):
    return tf.data.Dataset.from_tensor_slices(host_positions(
        e, size=size, batch_size=config.batch_size, first=process_index * batch,
        local_batch=batch, start=start, key=shuffle_key))

  @tf.autograph.experimental.do_not_convert  # Plain graph code: trace fast.
  def prepare(position, index):
    ex = lookup(index)
    seed = tf.random.experimental.stateless_fold_in(augment_key, position)
    return {'image': train_fn(decode(ex['image']), seed), 'label': ex['label']}

  ds = tf.data.Dataset.range(start // size, np.iinfo(np.int64).max)
  ds = ds.flat_map(epoch).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  return _naming_bad_images(
      _with_options(ds.batch(batch, drop_remainder=True)).as_numpy_iterator(),
      source, ranges, config.train_split, config.dataset)


def _eval_steps(num_examples: int, process_count: int, batch: int) -> int:
  """Batches for the largest host share (ceil(num / count) examples)."""
  return math.ceil(math.ceil(num_examples / process_count) / batch)


def eval_iterator(config, *, process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[Batch]:
  """One pass: {'image', 'label', 'mask'} (and 'real' for a dataset with
  ReaL labels); padding (mask 0) ends every host.

  Every host yields the same number of batches (_eval_steps), so a jitted
  eval step runs as often everywhere; across hosts each example has mask 1
  exactly once.
  """
  process_index, process_count = _processes(process_index, process_count)
  batch = local_batch_size(config.eval_batch_size, process_count,
                           'eval_batch_size')
  eval_fn = preprocess.make_eval_fn(config)
  source = sources.get_source(config)
  ranges = split_ranges(source, config.eval_split)
  shard = host_ranges(ranges, process_index=process_index,
                      process_count=process_count)
  padded = _eval_steps(_num_examples(ranges), process_count, batch) * batch
  size = config.image_size
  padding = {'image': tf.zeros([size, size, 3]), 'label': tf.constant(0),
             'mask': tf.constant(0.)}
  if source.multi_label:
    padding['real'] = tf.zeros([source.num_classes])
  pad = tf.data.Dataset.from_tensors(padding).repeat(
      padded - _num_examples(shard))
  prepare = tf.autograph.experimental.do_not_convert(
      lambda ex: {**ex, 'image': eval_fn(source.decode(ex['image'])),
                  'mask': tf.constant(1.)})
  ds = _read(source, shard, ranges).map(prepare,
                                        num_parallel_calls=tf.data.AUTOTUNE)
  return _naming_bad_images(
      _with_options(ds.concatenate(pad).batch(batch)).as_numpy_iterator(),
      source, ranges, config.eval_split, config.dataset)


def _naming_bad_images(batches, source: sources.Source, ranges, split,
                       dataset):
  """`batches`, with an image that does not decode named in the error."""
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      return
    except tf.errors.InvalidArgumentError as e:
      names = list(dict.fromkeys(name for name, _, _ in ranges))
      bad = source.bad_images(names) if source.bad_images else []
      where = (f': {", ".join(bad[:10])}' + (f' and {len(bad) - 10} more'
                                            if len(bad) > 10 else '')
               if bad else f' ({errors.describe(e)[:300]})')
      raise errors.UserError(
          f'An image of split {split!r} of {dataset} does not '
          f'decode{where}. Remove or replace it.') from None
    yield batch


def _with_options(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Prefetches; parallel maps keep their order (determinism).

  Autotuning is off: deleting an iterator waited for its tuning thread's
  next round, which paused the end of a run for up to tens of seconds.
  AUTOTUNE then takes tf.data's fixed defaults, which fed the benchmark's
  224 px digits stream as fast (3.9-4.1k against 3.8-3.9k img/s, 2 cores).
  """
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = False
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def prefetch_to_mesh(iterator, sharding, size: int):
  """Host batches -> global arrays on the mesh, `size` batches ahead."""
  queue = collections.deque()

  def enqueue():
    batch = next(iterator, None)
    if batch is not None:
      queue.append(jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, x),
          batch))

  for _ in range(max(size, 1)):
    enqueue()
  while queue:
    batch = queue.popleft()
    enqueue()
    yield batch


def real_labels_config(config):
  """The config of config.real_dataset's validation split (ImageNet ReaL),
  the same model's second eval set in training."""
  real = config_dict.ConfigDict(config.to_dict())
  real.dataset = config.real_dataset
  real.train_split = real.eval_split = 'validation'
  return real
