"""Tests for mixer_jax.data.preprocess: crops, resizes, flips, RandAugment."""

import numpy as np
import pytest
import tensorflow as tf

from mixer_jax import recipes
from mixer_jax.data import preprocess

RNG = np.random.RandomState(0)
IMAGE = RNG.randint(0, 256, (20, 30, 3)).astype(np.uint8)
SEED = tf.constant([1, 2], tf.int64)


def make_config(**overrides):
  cfg = recipes.get_config()
  cfg.update({'image_size': 16, 'flip': False, 'randaugment_layers': 0,
              **overrides})
  return cfg


def to_uint8(x):
  return np.round((np.asarray(x) + 1) * 127.5).astype(np.uint8)


def test_value_range_maps_0_255_to_minus_1_1():
  out = preprocess.value_range(tf.constant([0, 255, 127], tf.uint8))
  np.testing.assert_allclose(out, [-1, 1, 127 / 127.5 - 1], atol=1e-7)
  assert out.dtype == tf.float32


@pytest.mark.parametrize('size,expected', [(224, 256), (384, 439), (32, 37)])
def test_resmall_size_is_256_over_224(size, expected):
  assert preprocess.resmall_size(size) == expected


@pytest.mark.parametrize('shape,expected', [
    ((20, 30, 3), (16, 24, 3)), ((30, 20, 3), (24, 16, 3)),
    ((16, 16, 3), (16, 16, 3))])
def test_resize_small_sets_the_short_side(shape, expected):
  out = preprocess.resize_small(tf.zeros(shape, tf.uint8), 16)
  assert tuple(out.shape) == expected


def test_resize_to_the_same_size_is_exact():
  square = IMAGE[:, :20]
  np.testing.assert_array_equal(preprocess.resize(square, 20), square)


def test_central_crop_is_centred():
  out = preprocess.central_crop(IMAGE, 10)
  np.testing.assert_array_equal(out, IMAGE[5:15, 10:20])


@pytest.mark.parametrize('pp', recipes.EVAL_PP)
@pytest.mark.parametrize('shape', [(20, 30, 3), (40, 17, 3)])
def test_eval_pp_shape_dtype_range(pp, shape):
  out = preprocess.make_eval_fn(make_config(eval_pp=pp))(
      RNG.randint(0, 256, shape).astype(np.uint8))
  assert out.shape == (16, 16, 3) and out.dtype == tf.float32
  assert -1 <= np.min(out) < np.max(out) <= 1


@pytest.mark.parametrize('pp', recipes.TRAIN_PP)
def test_train_pp_is_a_function_of_the_seed(pp):
  fn = preprocess.make_train_fn(make_config(train_pp=pp, flip=True))
  first, again = fn(IMAGE, SEED), fn(IMAGE, SEED)
  assert first.shape == (16, 16, 3) and first.dtype == tf.float32
  assert -1 <= np.min(first) and np.max(first) <= 1
  np.testing.assert_array_equal(first, again)
  others = [fn(IMAGE, tf.constant([1, s], tf.int64)) for s in range(3, 8)]
  if pp != 'resize':  # Crops move with the seed; 'resize' only flips.
    assert any(not np.array_equal(first, o) for o in others)


def test_pad_crop_is_a_window_of_the_padded_image():
  image = RNG.randint(0, 256, (16, 16, 3)).astype(np.uint8)
  padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
  fn = preprocess.make_train_fn(make_config(train_pp='pad_crop',
                                            crop_padding=4))
  offsets = set()
  for s in range(20):
    out = to_uint8(fn(image, tf.constant([0, s], tf.int64)))
    found = [(y, x) for y in range(9) for x in range(9)
             if np.array_equal(out, padded[y:y + 16, x:x + 16])]
    assert found
    offsets.add(found[0])
  assert len(offsets) > 1


def test_flip_mirrors_about_half_the_seeds():
  image = RNG.randint(0, 256, (16, 16, 3)).astype(np.uint8)
  fn = preprocess.make_train_fn(make_config(train_pp='resize', flip=True))
  flips = []
  for s in range(16):
    out = to_uint8(fn(image, tf.constant([0, s], tf.int64)))
    assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    flips.append(np.array_equal(out, image[:, ::-1]))
  assert 0 < sum(flips) < 16


@pytest.mark.parametrize('field,name,valid', [
    ('train_pp', 'random_crop', 'inception_crop'),
    ('eval_pp', 'inception_crop', 'resize_crop')])
def test_unknown_pp_is_a_clear_error(field, name, valid):
  make = (preprocess.make_train_fn if field == 'train_pp'
          else preprocess.make_eval_fn)
  with pytest.raises(ValueError, match=f'Unknown {field}.*{valid}'):
    make(make_config(**{field: name}))


# RandAugment.
GRADIENT = np.broadcast_to(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None],
                           (8, 64, 3)).copy()


@pytest.mark.parametrize('op,expected', [
    (lambda im: preprocess.posterize(im, 4), GRADIENT & 0xF0),
    (lambda im: preprocess.solarize(im, 128),
     np.where(GRADIENT < 128, GRADIENT, 255 - GRADIENT)),
    (lambda im: preprocess.solarize_add(im, 100),
     np.where(GRADIENT < 128, np.minimum(GRADIENT.astype(int) + 100, 255),
              GRADIENT)),
    (lambda im: preprocess._blend(tf.zeros_like(im), im, 0.5), GRADIENT // 2),
    (lambda im: preprocess.contrast(im, 1.0), GRADIENT),
    (lambda im: preprocess.sharpness(im, 1.0), GRADIENT),
    (lambda im: preprocess.rotate(im, 0.0), GRADIENT),
])
def test_randaugment_op_known_answers(op, expected):
  np.testing.assert_array_equal(op(tf.constant(GRADIENT)), expected)


def test_autocontrast_and_equalize_stretch_to_the_full_range():
  dull = (GRADIENT // 4 + 60).astype(np.uint8)
  for op in (preprocess.autocontrast, preprocess.equalize):
    out = op(tf.constant(dull)).numpy()
    assert out.min() == 0 and out.max() >= 250, op
    assert (np.diff(out[0, :, 0].astype(int)) >= 0).all()  # Keeps the order.


def test_rotate_90_degrees_is_rot90():
  image = RNG.randint(0, 256, (9, 9, 3)).astype(np.uint8)
  np.testing.assert_array_equal(preprocess.rotate(image, 90.), np.rot90(image))


def test_translate_shifts_and_fills_gray():
  ops = preprocess.randaugment_ops(
      tf.constant(GRADIENT), magnitude=10, sign=1., seed=SEED)
  out = ops[12]().numpy()  # TranslateX by 100 * 64 / 224 = 28.57 px.
  np.testing.assert_array_equal(out[:, :35], GRADIENT[:, 29:])
  assert (out[:, 36:] == 128).all()


def test_cutout_grays_one_square():
  image = np.zeros((32, 32, 3), np.uint8)
  out = preprocess.cutout(tf.constant(image), 3, seed=SEED).numpy()
  rows, cols = np.nonzero(out[..., 0] == 128)
  assert 0 < rows.size <= 36 and np.ptp(rows) < 6 and np.ptp(cols) < 6


def test_every_randaugment_op_keeps_shape_and_dtype():
  image = tf.constant(IMAGE)
  ops = preprocess.randaugment_ops(image, magnitude=15, sign=-1., seed=SEED)
  assert len(ops) == 16
  changed = 0
  for op in ops:
    out = op()
    assert out.shape == IMAGE.shape and out.dtype == tf.uint8
    changed += not np.array_equal(out, IMAGE)
  assert changed >= 15  # Solarize at magnitude >= 10 is the identity (TF's).


def test_randaugment_is_stateless_in_tf_data():
  fn = lambda i: preprocess.randaugment(  # pylint: disable=g-long-lambda
      tf.constant(IMAGE), layers=2, magnitude=15,
      seed=tf.stack([tf.constant(0, tf.int64), i]))
  ds = tf.data.Dataset.range(6).map(fn, num_parallel_calls=4)
  first, again = list(ds.as_numpy_iterator()), list(ds.as_numpy_iterator())
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert len({a.tobytes() for a in first}) > 1
