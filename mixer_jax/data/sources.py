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
"""The datasets: tfds, scikit-learn's digits and image folders, as `Source`s.

A `Source` is what the shared input pipeline needs of a dataset: its class
count and names, its splits' sizes, a reader of undecoded records by split
and range, a reader of one record by index, and a decoder.
"""

import bisect
import dataclasses
import functools
import random
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mixer_jax import errors
from mixer_jax import storage
from mixer_jax.data import preflight
from mixer_jax.multihost import leader

# The image files tfds's ImageFolder reads.
_FOLDER_IMAGE_TYPES = ('.jpg', '.jpeg', '.png')


@dataclasses.dataclass(frozen=True)
class Source:
  """A dataset as the shared pipeline sees it."""
  num_classes: int
  # Split name -> its size, as tfds split arithmetic reads it.
  splits: Mapping[str, tfds.core.SplitInfo]
  # (split name, start, end) -> records {'image': undecoded, 'label': int32}.
  read: Callable[[str, int, int], tf.data.Dataset]
  # [(split name, start, end)] -> a function of an int64 scalar tensor i that
  # reads the record {'image': undecoded, 'label': int32} at position i of
  # those ranges laid end to end, and that record only.
  lookup: Callable[[list[tuple[str, int, int]]],
                   Callable[[tf.Tensor], dict[str, tf.Tensor]]]
  # Undecoded image -> uint8 [H, W, 3].
  decode: Callable[[tf.Tensor], tf.Tensor]
  # The classes' names, in label order.
  class_names: tuple[str, ...] = ()
  # Split names -> the files among them that do not decode (folders only).
  bad_images: Optional[Callable[[list[str]], list[str]]] = None
  # Its records also hold 'real': the multi-hot [num_classes] float32 of a
  # set of correct labels (ImageNet ReaL's), all zero for an example without.
  multi_label: bool = False


def keep_tensorflow_off_accelerators():
  """TF only feeds the host: hides the GPUs from it, so that it takes no
  accelerator memory from JAX. A `main`'s call, before TF first runs."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised by the caller.
    pass


def _decode_image(data: tf.Tensor) -> tf.Tensor:
  return tf.io.decode_image(data, channels=3, expand_animations=False)


def _split_infos(sizes: Mapping[str, int]) -> dict[str, tfds.core.SplitInfo]:
  return {name: tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
          for name, n in sizes.items()}


def _records(ds: tf.data.Dataset, *, label: str = 'label',
             num_classes: int = 0) -> tf.data.Dataset:
  """{'image', 'label'} (+ 'real' from 'real_label' given num_classes)."""
  def record(ex):
    found = {'image': ex['image'], 'label': tf.cast(ex[label], tf.int32)}
    if num_classes:
      found['real'] = multi_hot(ex['real_label'], num_classes)
    return found
  return ds.map(record)


def multi_hot(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
  """A list of classes -> float32 [num_classes], 1 at each (none: zeros)."""
  return tf.minimum(tf.reduce_sum(
      tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0), 1.0)


def _label_feature(features) -> str:
  """The class label's feature: 'label', or ImageNet ReaL's
  'original_label'; KeyError for none."""
  for name in ('label', 'original_label'):
    if name in features:
      return name
  raise KeyError('label')


def prepared_tfds_builder(config) -> tfds.core.DatasetBuilder:
  """The tfds builder of config.dataset, prepared offline or failing at once.

  Prepared in the data dir: used as is. Else prepared (as ArrayRecord) from
  the source archives in the manual dir, else downloaded if config.download
  and its host answers;
  else an error saying how to provide the data (tfds would retry the network
  for minutes).
  """
  try:
    builder = tfds.builder(config.dataset, data_dir=config.tfds_data_dir)
  except ValueError:  # Not found, or not even a well-formed tfds name.
    raise errors.UserError(
        f'Unknown dataset {config.dataset!r}: not a tfds dataset name, not '
        "'digits' (offline, from scikit-learn) and not an existing folder "
        'DIR/{train,test}/<class>/*.jpg|png.') from None
  if builder.is_prepared():
    return builder
  missing = preflight.missing_dataset(config)
  if missing:
    raise errors.MissingError(
        f'Missing: {missing}. Or point --config.tfds_data_dir (or '
        '$TFDS_DATA_DIR) at a data dir where it is prepared.')

  def prepare():
    # ArrayRecord: the train stream reads examples by index.
    builder = tfds.builder(config.dataset, data_dir=config.tfds_data_dir,
                           file_format=tfds.core.FileFormat.ARRAY_RECORD)
    if not builder.is_prepared():  # Process 0 may have, in a shared dir.
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=preflight.tfds_manual_dir(config, builder)))
    return builder

  return leader.first(f'prepare {config.dataset} in {builder.data_dir}',
                      prepare, timeout_s=leader.PREPARE_TIMEOUT_S)


def tfds_source(config) -> Source:
  """A tfds dataset; images stay encoded until after shuffling (as vit_jax)."""
  builder = prepared_tfds_builder(config)
  features = builder.info.features
  try:
    label = _label_feature(features)
  except KeyError:
    label = None
  if 'image' not in features or not label:
    raise errors.UserError(
        f'tfds dataset {builder.name!r} has no image and label '
        f'features (it has {", ".join(features)}).')
  classes = features[label].num_classes
  multi_label = 'real_label' in features

  real_classes = classes if multi_label else 0
  data_source = functools.cache(lambda name: builder.as_data_source(
      split=name, decoders={'image': tfds.decode.SkipDecoding()}))

  def lookup(ranges):
    _check_random_access(builder)
    return _ranges_lookup(ranges, data_source, label=label,
                          num_classes=real_classes)

  def read(split, start, end):
    if _has_array_record(builder):  # tfds reads ArrayRecord by index only.
      return _read_by_index(lookup)(split, start, end)
    return _records(builder.as_dataset(
        split=f'{split}[{start}:{end}]', shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()}), label=label,
        num_classes=real_classes)

  return Source(classes, builder.info.splits, read, lookup, _decode_image,
                class_names=tuple(features[label].names),
                multi_label=multi_label)


def _has_array_record(builder: tfds.core.DatasetBuilder) -> bool:
  formats = builder.info.available_file_formats() or {builder.info.file_format}
  return tfds.core.FileFormat.ARRAY_RECORD in formats


def _check_random_access(builder: tfds.core.DatasetBuilder) -> None:
  """Raises a UserError saying how to get ArrayRecord, if it is not there."""
  if _has_array_record(builder):
    return
  # (tfds convert_format, tfds 4.9.10, writes the shards but not the
  # metadata that would make tfds read them.)
  raise errors.UserError(
      f'{builder.name} is prepared at {builder.data_dir} as '
      f'{builder.info.file_format.value}; training reads examples by index, '
      'from ArrayRecord. Prepare it again: move that directory away and rerun '
      '(this package prepares ArrayRecord, from the manual dir or a '
      'download), or point --config.tfds_data_dir at a data dir prepared as '
      'ArrayRecord.')


def _ranges_lookup(ranges, data_source: Callable[[str], Sequence[dict]], *,
                   label: str, num_classes: int):
  """A lookup over `ranges` of tfds random-access data sources (by split
  name), read in Python; num_classes > 0 adds 'real' (see _records)."""
  offsets = [0]
  for _, start, end in ranges:
    offsets.append(offsets[-1] + end - start)
  # Opened here, in the caller's thread, not by whichever of tf.data's
  # threads reads first: each split once, never two at a time.
  opened = {name: data_source(name) for name, _, _ in ranges}

  def fetch(i):
    r = bisect.bisect_right(offsets, int(i)) - 1
    name, start, _ = ranges[r]
    ex = opened[name][start + int(i) - offsets[r]]
    found = [np.asarray(ex['image'], object), np.int32(ex[label])]
    if num_classes:
      real = np.zeros([num_classes], np.float32)
      real[np.asarray(ex['real_label'], np.int64)] = 1
      found.append(real)
    return found

  def record(i):
    types = (tf.string, tf.int32) + ((tf.float32,) if num_classes else ())
    found = tf.numpy_function(fetch, [i], types, stateful=False)
    ex = {'image': tf.ensure_shape(found[0], []),
          'label': tf.ensure_shape(found[1], [])}
    if num_classes:
      ex['real'] = tf.ensure_shape(found[2], [num_classes])
    return ex
  return record


def _read_by_index(lookup):
  """A Source.read made of its lookup: the records of a range in order."""
  def read(split, start, end):
    return tf.data.Dataset.range(end - start).map(
        lookup([(split, start, end)]), num_parallel_calls=tf.data.AUTOTUNE)
  return read


def table_lookup(tables: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  read: Callable[[tf.Tensor], tf.Tensor]):
  """A lookup over in-memory tables {split: (items, labels)}; read(item) is
  the undecoded image (the item itself, or the file at a path)."""
  def lookup(ranges):
    items = tf.constant(np.concatenate(
        [tables[name][0][start:end] for name, start, end in ranges]))
    labels = tf.constant(np.concatenate(
        [tables[name][1][start:end] for name, start, end in ranges]), tf.int32)
    return lambda i: {'image': read(tf.gather(items, i)),
                      'label': tf.gather(labels, i)}
  return lookup


@functools.cache
def digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """scikit-learn's 8x8 digits as uint8 RGB: {'train': 1437, 'test': 360}."""
  # Imported here: only 'digits' needs scikit-learn.
  from sklearn import datasets, model_selection
  digits = datasets.load_digits()
  images = np.round(digits.images * 255 / 16).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=360, random_state=0, stratify=labels)
  return {'train': (train_x, train_y), 'test': (test_x, test_y)}


def digits_source() -> Source:
  """The offline 'digits' dataset, in memory."""
  arrays = digits_arrays()
  lookup = table_lookup(arrays, lambda image: image)
  return Source(10, _split_infos({k: len(v[1]) for k, v in arrays.items()}),
                _read_by_index(lookup), lookup, lambda image: image,
                class_names=tuple(str(i) for i in range(10)))


def _folder_images(root: str, split: str) -> dict[str, list[str]]:
  """{class: its image files} of DIR/<split>/<class>/, as ImageFolder sees."""
  split_dir = storage.join(root, split)
  classes = {}
  for name in storage.listdir(split_dir):
    class_dir = storage.join(split_dir, name)
    if storage.isdir(class_dir):
      classes[name] = [storage.join(class_dir, f)
                       for f in storage.listdir(class_dir)
                       if f.lower().endswith(_FOLDER_IMAGE_TYPES)]
  return classes


def file_reader(root: str) -> Callable[[tf.Tensor], tf.Tensor]:
  """A tf.data function from a file's path to its bytes: tf.io.read_file
  on disk; in a bucket, storage's client (etils.epath), file by file."""
  if not storage.is_url(root):
    return tf.io.read_file

  def read(path: tf.Tensor) -> tf.Tensor:
    data = tf.numpy_function(lambda p: storage.read_bytes(p.decode()),
                             [path], tf.string, stateful=False)
    return tf.ensure_shape(data, [])

  return read


def check_folder_classes(root: str, splits) -> None:
  """Raises errors.UserError for empty class folders or differing classes."""
  found = {split: _folder_images(root, split) for split in splits}
  empty = [storage.join(root, split, name) for split, classes in found.items()
           for name, files in classes.items() if not files]
  if empty:
    raise errors.UserError(
        f'Class folder(s) with no {"/".join(_FOLDER_IMAGE_TYPES)} image: '
        f'{", ".join(empty)}. Add images or remove the folder(s).')
  names = {split: set(classes) for split, classes in found.items()}
  first, *others = splits
  for other in others:
    if names[first] != names[other]:
      only = lambda a, b: ', '.join(sorted(names[a] - names[b])) or 'none'
      raise errors.UserError(
          f'The classes of {root}/{first} and {root}/{other} differ: only in '
          f'{first}: {only(first, other)}; only in {other}: '
          f'{only(other, first)}. Both need the same class folders.')


def undecodable_files(paths, read=tf.io.read_file) -> list[str]:
  """The files among `paths` that are no image tf.io.decode_image reads."""
  paths = list(paths)
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
  ds = ds.map(lambda path: (path, tf.shape(_decode_image(read(path)))),
              num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  good = {path.decode() for path, _ in ds.as_numpy_iterator()}
  return [path for path in paths if path not in good]


def folder_tables(root: str) -> tuple[dict[str, tuple[np.ndarray,
                                                      np.ndarray]],
                                       tuple[str, ...]]:
  """({split: (file paths, labels)}, class names) of DIR/<split>/<class>/,
  in tfds ImageFolder's order: classes sorted over all splits, each split's
  files listed class by class and shuffled by a Random seeded with the
  split's name, so that 'train[:90%]' holds every class."""
  storage.check_bucket(root, what='Dataset folder')
  if not storage.isdir(root):
    raise errors.MissingError(f'Dataset folder {root} does not exist.')
  found = {}
  for name in storage.listdir(root):
    if storage.isdir(storage.join(root, name)):
      found[name] = _folder_images(root, name)
  classes = sorted({c for images in found.values() for c in images})
  tables = {}
  for split, images in found.items():
    examples = [(path, classes.index(c)) for c in sorted(images)
                for path in images[c]]
    random.Random(split).shuffle(examples)
    if examples:
      paths, labels = zip(*examples)
      tables[split] = (np.array(paths), np.array(labels, np.int32))
  return tables, tuple(classes)


def folder_source(root: str) -> Source:
  """DIR/<split>/<class>/*.jpg|png, as tfds's ImageFolder reads it."""
  tables, class_names = folder_tables(root)
  if not tables:
    raise errors.UserError(
        f'No images in {root}: expected '
        f'{root}/<split>/<class>/*.jpg|png.')

  read = file_reader(root)

  def bad_images(splits):
    return undecodable_files((path for split in splits for files in
                              _folder_images(root, split).values()
                              for path in files), read)

  lookup = table_lookup(tables, read)
  return Source(len(class_names),
                _split_infos({k: len(v[1]) for k, v in tables.items()}),
                _read_by_index(lookup), lookup, _decode_image,
                class_names=class_names, bad_images=bad_images)


def num_classes(config) -> int:
  """config.dataset's class count, without reading or preparing its data
  (a tfds builder knows its features from its code)."""
  if config.dataset == 'digits' or preflight.is_folder(config.dataset):
    return get_source(config).num_classes
  try:
    features = tfds.builder(config.dataset,
                            data_dir=config.tfds_data_dir).info.features
    return features[_label_feature(features)].num_classes
  except (ValueError, KeyError):
    raise errors.UserError(
        f'Cannot tell the classes of dataset {config.dataset!r} (not a tfds '
        'image classification dataset, nor a folder or digits).') from None


def get_source(config) -> Source:
  if config.dataset == 'digits':
    return digits_source()
  if preflight.is_folder(config.dataset):
    return folder_source(config.dataset)
  return tfds_source(config)
