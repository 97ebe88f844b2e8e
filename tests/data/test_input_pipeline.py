"""Tests for mixer_jax.data.input_pipeline: sources, sharding, resume, errors."""

import collections
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax.data import input_pipeline
from mixer_jax.data import preflight
from mixer_jax.data import sources
from tests.conftest import ROOT
from tests.conftest import examples
from tests.conftest import synthetic_cifar10_manual_dir
from tests.conftest import upload
from tests.conftest import write_digits_folder

tfds.disable_progress_bar()


def make_config(**overrides):
  """digits at its own 8 px, unaugmented: images come back exactly."""
  config = recipes.get_config()
  config.update({
      'dataset': 'digits', 'image_size': 8, 'train_split': 'train',
      'eval_split': 'test', 'train_pp': 'resize', 'eval_pp': 'resize',
      'flip': False, 'batch_size': 16, 'eval_batch_size': 16,
      **overrides})
  return config


def to_uint8(images):
  return np.round((images + 1) * 127.5).astype(np.uint8)


def collect(batches, *, masked=True):
  """(multiset of the examples, or of those with mask 1, number of batches)."""
  seen, count = collections.Counter(), 0
  for batch in batches:
    keep = batch['mask'] > 0 if masked else slice(None)
    seen += examples(to_uint8(batch['image'][keep]), batch['label'][keep])
    count += 1
  return seen, count


def digits(split, start=0, end=None):
  images, labels = sources.digits_arrays()[split]
  return examples(images[start:end], labels[start:end])


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


# Digits.


def test_digits_sizes_and_fixed_split():
  info = input_pipeline.get_info(make_config())
  assert info == input_pipeline.DatasetInfo(10, 1437, 360,
                                            tuple('0123456789'))
  train_x, train_y = sources.digits_arrays()['train']
  test_x, test_y = sources.digits_arrays()['test']
  assert train_x.shape == (1437, 8, 8, 3) and train_x.dtype == np.uint8
  assert train_x.max() == 255 and (train_x[..., 0] == train_x[..., 2]).all()
  np.testing.assert_array_equal(  # Stratified: 36 +- 1 of each class.
      np.bincount(test_y), [36, 36, 35, 37, 36, 37, 36, 36, 35, 36])
  sources.digits_arrays.cache_clear()
  np.testing.assert_array_equal(sources.digits_arrays()['test'][0],
                                test_x)


@pytest.mark.parametrize('split,expected', [
    ('train[:98%]', 1408), ('train[98%:]', 29), ('test', 360),
    ('train[:10]+test[:5]', 15)])
def test_split_syntax(split, expected):
  info = input_pipeline.get_info(make_config(train_split=split))
  assert info.num_train_examples == expected


def test_train_batches_are_normalised_images():
  config = make_config(train_pp='inception_crop', flip=True,
                       randaugment_layers=2, image_size=16)
  batch = next(input_pipeline.train_iterator(config))
  assert batch['image'].shape == (16, 16, 16, 3)
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
  assert -1 <= batch['image'].min() < batch['image'].max() <= 1


def test_epochs_cover_the_split_in_new_orders():
  config = make_config(train_split='train[:40]', batch_size=8)
  batches = take(input_pipeline.train_iterator(config), 10)
  epochs = [collect(batches[i:i + 5], masked=False)[0] for i in (0, 5)]
  assert epochs[0] == epochs[1] == digits('train', 0, 40)
  orders = [np.concatenate([b['label'] for b in batches[i:i + 5]])
            for i in (0, 5)]
  assert not np.array_equal(*orders)


AUGMENTED = dict(train_split='train[:40]', train_pp='inception_crop',
                 flip=True, randaugment_layers=2, randaugment_magnitude=15)


@pytest.fixture(name='augmented_stream', scope='module')
def fixture_augmented_stream():
  """Batches 0..8 of an augmented stream whose epochs are 2.5 batches."""
  return take(input_pipeline.train_iterator(make_config(**AUGMENTED)), 9)


@pytest.mark.slow
@pytest.mark.parametrize('start_step', [1, 3, 6])  # Epochs 0, 1 and 2.
def test_resume_equals_the_stream_from_zero(augmented_stream, start_step):
  resumed = input_pipeline.train_iterator(make_config(**AUGMENTED),
                                          start_step=start_step)
  assert_same_batches(take(resumed, 3),
                      augmented_stream[start_step:start_step + 3])


@pytest.mark.slow
def test_same_config_same_stream_and_cache_changes_nothing(augmented_stream):
  config = make_config(**AUGMENTED)
  assert_same_batches(take(input_pipeline.train_iterator(config), 6),
                      augmented_stream[:6])
  config.cache = True
  assert_same_batches(take(input_pipeline.train_iterator(config), 6),
                      augmented_stream[:6])
  config.seed = 1
  other = next(input_pipeline.train_iterator(config))
  assert not np.array_equal(other['label'], augmented_stream[0]['label'])


@pytest.mark.parametrize('cache', [False, True])
def test_cache_decodes_each_record_once(monkeypatch, cache):
  decoded = []

  def decode(image):
    count = lambda x: decoded.append(1) or x
    return tf.ensure_shape(tf.numpy_function(count, [image], tf.uint8),
                           image.shape)

  source = dataclasses.replace(sources.digits_source(), decode=decode)
  monkeypatch.setattr(sources, 'get_source', lambda config: source)
  config = make_config(train_split='train[:40]', batch_size=8, cache=cache)
  take(input_pipeline.train_iterator(config), 20)  # 4 epochs.
  if cache:
    assert len(decoded) == 40
  else:  # Every epoch again (and a few prefetched).
    assert len(decoded) >= 160


# Multi-host.


@pytest.mark.parametrize('hosts', [2, 4])
def test_hosts_take_their_slices_of_the_same_global_batches(hosts):
  """Any number of hosts sees one global stream, and resumes it exactly on
  another number; an epoch (5 global batches of 8) has each example once."""
  config = make_config(train_split='train[:40]', batch_size=8,
                       train_pp='inception_crop', flip=True)
  one = take(input_pipeline.train_iterator(config), 12)
  labels = sorted(np.concatenate([b['label'] for b in one[:5]]).tolist())
  assert labels == sorted(sources.digits_arrays()['train'][1][:40].tolist())
  joined = lambda start: [
      {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
      for parts in zip(*(take(input_pipeline.train_iterator(
          config, start_step=start, process_index=i, process_count=hosts),
                              12 - start) for i in range(hosts)))]
  assert_same_batches(joined(0), one)
  assert_same_batches(joined(7), one[7:])


@pytest.mark.parametrize('split,parts,hosts,eval_batch,steps', [
    ('test', [('test', 0, 360)], 1, 64, 6),  # 360 = 5 * 64 + 40.
    ('test[:37]', [('test', 0, 37)], 2, 8, 5),  # Shards of 19 and 18 by 4.
    ('test[:3]', [('test', 0, 3)], 2, 8, 1),  # One batch each, both padded.
    ('test[:1]', [('test', 0, 1)], 2, 4, 1),  # The second host has none.
    ('train[:5]+test[:6]', [('train', 0, 5), ('test', 0, 6)], 3, 6, 2),
])
def test_eval_scores_every_example_once(split, parts, hosts, eval_batch,
                                        steps):
  config = make_config(eval_split=split, eval_batch_size=eval_batch)
  seen = collections.Counter()
  for i in range(hosts):
    batches = list(input_pipeline.eval_iterator(
        config, process_index=i, process_count=hosts))
    assert len(batches) == steps
    assert all(b['image'].shape == (eval_batch // hosts, 8, 8, 3)
               for b in batches)
    seen += collect(batches)[0]
  assert seen == sum((digits(*part) for part in parts), collections.Counter())


@pytest.mark.parametrize('split,hosts', [
    ('train', 2), ('train', 3), ('train[3:20]', 4), ('test[:5]', 5),
    ('test[10%:]', 7)])
def test_host_ranges_equal_tfds_split_for_jax_process(split, hosts):
  source = sources.digits_source()
  ranges = input_pipeline.split_ranges(source, split)
  for i in range(hosts):
    ours = input_pipeline.host_ranges(ranges, process_index=i,
                                      process_count=hosts)
    theirs = tfds.split_for_jax_process(split, process_index=i,
                                        process_count=hosts)
    assert ours == input_pipeline.split_ranges(source, theirs)


def test_host_ranges_of_several_ranges_are_contiguous_shares():
  ranges = [('train', 0, 10), ('test', 5, 8)]
  shares = [input_pipeline.host_ranges(ranges, process_index=i,
                                       process_count=3) for i in range(3)]
  assert shares == [[('train', 0, 5)], [('train', 5, 9)],
                    [('train', 9, 10), ('test', 5, 8)]]


# Folders.


@pytest.fixture(name='folder')
def fixture_folder(tmp_path):
  """DIR/{train,test}/{cat,dog}/: PNGs (exact) and one JPEG."""
  rng = np.random.RandomState(0)
  written = collections.Counter()
  for split, n in (('train', 6), ('test', 3)):
    for label, name in enumerate(('cat', 'dog')):
      (tmp_path / split / name).mkdir(parents=True)
      for i in range(n):
        image = rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)
        data = tf.io.encode_png(image).numpy()
        (tmp_path / split / name / f'{i}.png').write_bytes(data)
        written[split, image.tobytes(), label] += 1
  jpeg = tf.io.encode_jpeg(np.zeros((12, 10, 3), np.uint8)).numpy()
  (tmp_path / 'train' / 'dog' / 'x.jpg').write_bytes(jpeg)
  (tmp_path / 'train' / 'dog' / 'notes.txt').write_text('not an image')
  return tmp_path, written


def test_folder_dataset(folder):
  root, written = folder
  config = make_config(dataset=str(root), eval_batch_size=4,
                       train_split='train[:50%]', batch_size=2)
  info = input_pipeline.get_info(config)
  assert info == input_pipeline.DatasetInfo(  # 50% of 13.
      2, 6, 6, ('cat', 'dog'))
  seen, steps = collect(input_pipeline.eval_iterator(config))
  assert steps == 2
  assert seen == collections.Counter(
      {(im, la): n for (split, im, la), n in written.items()
       if split == 'test'})
  batch = next(input_pipeline.train_iterator(config))
  assert batch['image'].shape == (2, 8, 8, 3)


def test_cache_changes_nothing_on_images_of_several_sizes(folder):
  """The folder holds 8x8 PNGs and a 12x10 JPEG: the cache keeps each image
  as it is (digits and CIFAR, of one size, are one array)."""
  config = make_config(dataset=str(folder[0]), batch_size=4, train_pp='resize')
  plain = take(input_pipeline.train_iterator(config), 4)
  config.cache = True
  assert_same_batches(take(input_pipeline.train_iterator(config), 4), plain)


def test_folder_order_is_tfds_image_folders(folder):
  """So that split arithmetic ('train[:90%]') splits as it does in tfds."""
  root, _ = folder
  builder = tfds.folder_dataset.ImageFolder(str(root))
  source = sources.folder_source(str(root))
  assert source.class_names == tuple(builder.info.features['label'].names)
  for split in ('train', 'test'):
    theirs = [(ex['image'], ex['label']) for ex in tfds.as_numpy(
        builder.as_dataset(split=split, decoders={
            'image': tfds.decode.SkipDecoding()}))]
    n = source.splits[split].num_examples
    ours = [(ex['image'], ex['label'])
            for ex in source.read(split, 0, n).as_numpy_iterator()]
    assert ours == theirs


def test_a_folder_in_a_bucket_reads_as_on_disk(folder, fake_gcs):
  """The same images, classes, splits and batches from gs://BUCKET/DIR as
  from DIR (a bucket's files read through storage)."""
  root, _ = folder
  url = f'gs://{fake_gcs[0]}/images'
  upload(root, url)
  on_disk, in_bucket = (make_config(dataset=d, batch_size=4, eval_batch_size=4)
                        for d in (str(root), url))
  assert (input_pipeline.get_info(in_bucket) ==
          input_pipeline.get_info(on_disk))
  assert_same_batches(take(input_pipeline.train_iterator(in_bucket), 4),
                      take(input_pipeline.train_iterator(on_disk), 4))
  assert (collect(input_pipeline.eval_iterator(in_bucket)) ==
          collect(input_pipeline.eval_iterator(on_disk)))
  in_bucket.dataset = f'gs://{fake_gcs[0]}/nothing'
  with pytest.raises(errors.MissingError, match=(
      f'Dataset folder gs://{fake_gcs[0]}/nothing does not exist.')):
    input_pipeline.get_info(in_bucket)


@pytest.mark.parametrize('dataset', ['digits', 'folder'])
def test_lookup_reads_the_records_of_read(dataset, folder):
  """Position i of ranges laid end to end, by index, is record i of them
  read in order."""
  source = (sources.digits_source() if dataset == 'digits'
            else sources.folder_source(str(folder[0])))
  ranges = [('train', 2, 5), ('test', 1, 3)]
  read = [ex for name, start, end in ranges
          for ex in source.read(name, start, end).as_numpy_iterator()]
  lookup = source.lookup(ranges)
  by_index = [jax_free(lookup(tf.constant(i, tf.int64))) for i in range(5)]
  for a, b in zip(read, by_index, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    assert a['label'] == b['label']


def jax_free(ex):
  return {k: v.numpy() for k, v in ex.items()}


# Host i of N, for N = 1, 2 and 4, reads the train stream's first 10 epochs
# (50 global batches of 24 of train[:120]); prints the files each opened by
# then (what its prefetch had read ahead included), by N, as lists by i.
# Each host builds its own pipeline, so one process can build all of them;
# it keeps them to the end (no pipeline is torn down while its prefetch
# threads read) and exits at once.
_COUNT_READS = """
import json, os, sys
import tensorflow as tf
read_file, opened = tf.io.read_file, {}
def counting(path, log):
  logged = tf.numpy_function(lambda p: log.append(p.decode()) or p,
                             [path], tf.string, stateful=True)
  return read_file(tf.ensure_shape(logged, []))
from mixer_jax.data import input_pipeline
from tests.data.test_input_pipeline import make_config
config = make_config(dataset=sys.argv[1], train_split='train[:120]',
                     batch_size=24)
kept = []
for count in (1, 2, 4):
  opened[count] = []
  for index in range(count):
    log = []
    opened[count].append(log)
    tf.io.read_file = lambda path, log=log: counting(path, log)
    kept.append(input_pipeline.train_iterator(config, process_index=index,
                                              process_count=count))
    for _ in range(50):
      next(kept[-1])
    opened[count][-1] = log[:]  # Its prefetch reads on: not counted.
print(json.dumps(opened), flush=True)
os._exit(0)
"""


@pytest.mark.slow
def test_each_process_reads_its_share_of_the_files(tmp_path):
  """Host i of N hosts of one run reads about 1 / N of the files each
  epoch, and together they read every file; for 1, 2 and 4 hosts."""
  root = write_digits_folder(tmp_path, names=tuple(map(str, range(10))))
  train = set(sources.folder_tables(root)[0]['train'][0][:120])
  counted = subprocess.run(
      [sys.executable, '-c', _COUNT_READS, root], cwd=ROOT, text=True,
      capture_output=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert counted.returncode == 0, counted.stderr[-2000:]
  opened = json.loads(counted.stdout.splitlines()[-1])
  assert sorted(opened) == ['1', '2', '4']
  for count, hosts in opened.items():
    share = 120 // int(count)
    assert len(hosts) == int(count)
    for files in hosts:  # Each epoch its share, plus what its prefetch read
      # ahead (tf.data grows that buffer while it waits, more on a loaded
      # machine): with others, under half of their shares on top.
      assert len(files) >= 10 * share, (count, len(files))
      if count != '1':
        assert len(files) <= 10 * (share + (120 - share) / 2), (
            count, len(files))
    assert set().union(*hosts) >= train  # Together: every file.


# tfds: tfds.testing.mock_data and the real cifar10 builder, offline.


def test_tfds_mock_data(tmp_path):
  """The tfds path on mocked records, sizes from written metadata."""
  builder = tfds.builder('cifar10', data_dir=tmp_path,
                         file_format=tfds.core.FileFormat.ARRAY_RECORD)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=name, shard_lengths=[20], num_bytes=0)
      for name in ('train', 'test')]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)
  config = make_config(dataset='cifar10', tfds_data_dir=str(tmp_path),
                       image_size=32, batch_size=8, eval_batch_size=8)
  with tfds.testing.mock_data(num_examples=20, data_dir=str(tmp_path)):
    info = input_pipeline.get_info(config)
    assert info == input_pipeline.DatasetInfo(10, 20, 20,
                                              tuple('0123456789'))
    batches = take(input_pipeline.train_iterator(config), 4)
    evals = list(input_pipeline.eval_iterator(config))
  assert all(b['image'].shape == (8, 32, 32, 3) for b in batches + evals)
  assert all(-1 <= b['image'].min() < b['image'].max() <= 1 for b in batches)
  assert len(evals) == 3
  assert sum(b['mask'].sum() for b in evals) == 20


def test_a_tfds_lookup_opens_each_split_once_in_the_callers_thread():
  """Not lazily in tf.data's reader threads, where two of them could open
  one split at once (and race tfds.testing.mock_data's patching)."""
  opened = []

  def data_source(name):
    opened.append((name, threading.get_ident()))
    return [{'image': b'%d' % i, 'label': i} for i in range(10)]

  lookup = sources._ranges_lookup(  # pylint: disable=protected-access
      [('train', 0, 4), ('test', 2, 5)], data_source, label='label',
      num_classes=0)
  assert opened == [('train', threading.get_ident()),
                    ('test', threading.get_ident())]
  records = tf.data.Dataset.range(7).map(lookup, num_parallel_calls=4)
  assert [int(r['label']) for r in records.as_numpy_iterator()] == [
      0, 1, 2, 3, 2, 3, 4]
  assert len(opened) == 2


def test_real_cifar10_builder_prepares_from_the_manual_dir(tmp_path,
                                                          monkeypatch):
  manual_dir, written = synthetic_cifar10_manual_dir(tmp_path, monkeypatch)
  config = make_config(dataset='cifar10', tfds_data_dir=str(tmp_path / 'data'),
                       tfds_manual_dir=str(manual_dir), image_size=32,
                       eval_batch_size=4)
  info = input_pipeline.get_info(config)
  # The names are the synthetic archive's batches.meta.txt.
  assert info == input_pipeline.DatasetInfo(
      10, 10, 3, tuple(f'class{i}' for i in range(10)))
  for split in ('train', 'test'):
    config.eval_split = split
    assert collect(input_pipeline.eval_iterator(config))[0] == written[split]
  assert take(input_pipeline.train_iterator(config), 1)  # ArrayRecord.


def test_tfrecord_data_evaluates_and_training_says_how_to_prepare_it(
    tmp_path, monkeypatch):
  """A dataset prepared before as TFRecord (tfds's default format)."""
  manual_dir, written = synthetic_cifar10_manual_dir(tmp_path, monkeypatch)
  data_dir = tmp_path / 'data'
  tfds.builder('cifar10', data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  config = make_config(dataset='cifar10', tfds_data_dir=str(data_dir),
                       image_size=32, eval_batch_size=4, batch_size=2)
  assert collect(input_pipeline.eval_iterator(config))[0] == written['test']
  with pytest.raises(errors.UserError, match=(
      f'cifar10 is prepared at {data_dir}/cifar10/3.0.2 as tfrecord; training '
      'reads examples by index, from ArrayRecord. Prepare it again: move that '
      'directory away and rerun')):
    input_pipeline.train_iterator(config)
  # As it says: moved away, prepared again from the manual dir, it trains.
  (data_dir / 'cifar10').rename(tmp_path / 'old_cifar10')
  config.tfds_manual_dir = str(manual_dir)
  assert take(input_pipeline.train_iterator(config), 1)


# Errors.


@pytest.mark.parametrize('name', ['no_such_set', '/no/such/folder'])
def test_unknown_dataset_is_a_clear_error(name):
  with pytest.raises(ValueError, match=f"Unknown dataset '{name}'.*"
                     r"'digits'.*folder DIR/\{train,test\}/<class>"):
    input_pipeline.get_info(make_config(dataset=name))


@pytest.mark.parametrize('download,why', [
    (False, 'download is off'), (True, 'www.cs.toronto.edu unreachable')])
def test_missing_tfds_data_fails_at_once_naming_the_manual_dir(
    tmp_path, monkeypatch, download, why):
  monkeypatch.setattr(preflight, 'reachable', lambda url: False)
  config = make_config(dataset='cifar10', tfds_data_dir=str(tmp_path),
                       download=download)
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.train_iterator(config)
  assert str(error.value) == (
      f"Missing: tfds dataset 'cifar10' ({why}): put cifar-10-binary.tar.gz "
      f"in {tmp_path / 'downloads' / 'manual'}. Or point "
      '--config.tfds_data_dir (or $TFDS_DATA_DIR) at a data dir where it is '
      'prepared.')


@pytest.mark.parametrize('make_iterator,overrides,hosts,match', [
    (input_pipeline.train_iterator, {'batch_size': 10}, 3, 'batch_size 10'),
    (input_pipeline.eval_iterator, {'eval_batch_size': 10}, 3,
     'eval_batch_size 10'),
    (input_pipeline.train_iterator, {}, 0, 'process_index 0'),
    (input_pipeline.train_iterator, {'train_pp': 'crop'}, 1,
     'Unknown train_pp'),
    (input_pipeline.eval_iterator, {'eval_pp': 'crop'}, 1, 'Unknown eval_pp'),
    (input_pipeline.eval_iterator, {'eval_split': 'validation'}, 1,
     "Bad split 'validation'"),
])
def test_config_errors(make_iterator, overrides, hosts, match):
  with pytest.raises(ValueError, match=match):
    make_iterator(make_config(**overrides), process_index=0,
                  process_count=hosts)


def write_folder(root, classes):
  """root/<split>/<class>/<i>.png for {(split, class): count}."""
  for (split, name), count in classes.items():
    (root / split / name).mkdir(parents=True)
    for i in range(count):
      (root / split / name / f'{i}.png').write_bytes(
          tf.io.encode_png(np.full((8, 8, 3), i, np.uint8)).numpy())
  return root


@pytest.mark.parametrize('classes,message', [
    ({('train', 'cat'): 2, ('train', 'dog'): 0, ('test', 'cat'): 1,
      ('test', 'dog'): 1}, r'no .* image: \S*train/dog\. Add images'),
    ({('train', 'cat'): 2, ('train', 'dog'): 2, ('test', 'cat'): 1,
      ('test', 'cow'): 1},
     r'classes of \S*train and \S*test differ: only in train: dog; only in '
     r'test: cow\.'),
    ({('train', 'cat'): 2, ('test', 'cat'): 1},
     r"has 1 class\(es\) \(cat\); a classifier needs at least two"),
])
def test_folder_class_errors(tmp_path, classes, message):
  root = write_folder(tmp_path, classes)
  with pytest.raises(errors.UserError, match=message):
    input_pipeline.get_info(make_config(dataset=str(root)))


@pytest.mark.parametrize('split', ['train', 'test'])
def test_an_undecodable_image_is_named(tmp_path, split):
  root = write_folder(tmp_path, {(s, c): 2 for s in ('train', 'test')
                                 for c in ('cat', 'dog')})
  bad = root / split / 'dog' / 'broken.png'
  bad.write_bytes(b'\x89PNG not really')
  config = make_config(dataset=str(root), batch_size=2, eval_batch_size=2)
  iterator = (input_pipeline.train_iterator if split == 'train' else
              input_pipeline.eval_iterator)(config)
  with pytest.raises(errors.UserError,
                     match=f'split {split!r} of .* does not decode: {bad}\\. '):
    take(iterator, 5)
