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
"""Per-image preprocessing: crops, resizes, flips and RandAugment.

Images come in as uint8 [H, W, 3] and leave as float32 [S, S, 3] in [-1, 1]
(`x / 127.5 - 1`, as the official code). All randomness is stateless: every
random function takes a [2] `seed` tensor, so an example's augmentation is a
function of its seed alone and a resumed run replays it exactly.
"""

import math
from typing import Callable

import tensorflow as tf

from mixer_jax import errors

# Gray that geometric RandAugment ops and Cutout leave in emptied pixels.
_FILL = 128


def value_range(image: tf.Tensor) -> tf.Tensor:
  """[0, 255] -> float32 [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """Rounds a [0, 255] float image to uint8."""
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear resize to size x size (float32), as the official code."""
  return tf.image.resize(image, [size, size])


def resize_small(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear resize keeping the aspect ratio, the short side to `size`."""
  hw = tf.cast(tf.shape(image)[:2], tf.float64)
  scale = size / tf.reduce_min(hw)
  return tf.image.resize(image, tf.cast(tf.round(hw * scale), tf.int32))


def resmall_size(size: int) -> int:
  """The side resized to before a `size` crop: 256 for 224, as ImageNet."""
  return round(size * 256 / 224)


def central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """The central size x size window."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  return tf.image.crop_to_bounding_box(
      image, (height - size) // 2, (width - size) // 2, size, size)


def random_crop(image: tf.Tensor, size: int, *, seed) -> tf.Tensor:
  """A size x size window at a random position."""
  return tf.image.stateless_random_crop(image, [size, size, 3], seed=seed)


def inception_crop(image: tf.Tensor, size: int, *, seed) -> tf.Tensor:
  """The official code's crop (5% to 100% of the area), resized to `size`."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seed,
      area_range=(0.05, 1.0), min_object_covered=0,
      use_image_if_no_bounding_boxes=True)
  return resize(tf.slice(image, begin, crop_size), size)


def pad_crop(image: tf.Tensor, size: int, *, padding: int, seed) -> tf.Tensor:
  """CIFAR's augmentation: resize, zero-pad `padding` per side, random crop."""
  image = resize(image, size)
  image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  return random_crop(image, size, seed=seed)


def make_train_fn(config) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """(uint8 image, [2] seed) -> float32 [S, S, 3] per config's train fields."""
  size, padding = config.image_size, config.crop_padding
  crops = {
      'inception_crop': lambda im, s: inception_crop(im, size, seed=s),
      'resize': lambda im, s: resize(im, size),
      'resmall_crop': lambda im, s: random_crop(
          resize_small(im, resmall_size(size)), size, seed=s),
      'pad_crop': lambda im, s: pad_crop(im, size, padding=padding, seed=s),
  }
  crop = _lookup(crops, config.train_pp, 'train_pp')
  flip = config.flip
  layers, magnitude = config.randaugment_layers, config.randaugment_magnitude

  def train_fn(image, seed):
    crop_seed, flip_seed, randaug_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    image = crop(image, crop_seed)
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if layers:
      image = randaugment(to_uint8(image), layers=layers, magnitude=magnitude,
                          seed=randaug_seed)
    return tf.ensure_shape(value_range(image), [size, size, 3])

  return train_fn


def make_eval_fn(config) -> Callable[[tf.Tensor], tf.Tensor]:
  """uint8 image -> float32 [S, S, 3] per config.eval_pp."""
  size = config.image_size
  crops = {
      'resize': lambda im: resize(im, size),
      'resmall_crop': lambda im: central_crop(
          resize_small(im, resmall_size(size)), size),
      'resize_crop': lambda im: central_crop(
          resize(im, resmall_size(size)), size),
  }
  crop = _lookup(crops, config.eval_pp, 'eval_pp')
  return lambda image: tf.ensure_shape(value_range(crop(image)),
                                       [size, size, 3])


def _lookup(table: dict, name: str, field: str):
  if name not in table:
    raise errors.UserError(
        f'Unknown {field} {name!r}; valid: '
        f'{", ".join(map(repr, table))}.')
  return table[name]


# RandAugment: a stateless port of TF's / big_vision's `randaug` ops.


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance: degenerate + factor * (image - degenerate), uint8."""
  degenerate = tf.cast(degenerate, tf.float32)
  blended = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(blended, 0, 255), tf.uint8)


def _transform(image: tf.Tensor, matrix) -> tf.Tensor:
  """Projective transform (output -> input pixel map), nearest, gray fill."""
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast([matrix], tf.float32),
      output_shape=tf.shape(image)[:2], fill_value=float(_FILL),
      interpolation='NEAREST', fill_mode='CONSTANT')[0]


def rotate(image: tf.Tensor, degrees) -> tf.Tensor:
  """Rotates about the centre, as tfa.image.rotate."""
  radians = degrees * math.pi / 180
  cos, sin = tf.cos(radians), tf.sin(radians)
  h, w = (tf.cast(d, tf.float32) - 1 for d in tf.unstack(tf.shape(image)[:2]))
  return _transform(image, [cos, -sin, (w - cos * w + sin * h) / 2,
                            sin, cos, (h - sin * w - cos * h) / 2, 0., 0.])


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel to the full [0, 255] range."""
  image = tf.cast(image, tf.float32)
  lo = tf.reduce_min(image, axis=[0, 1])
  hi = tf.reduce_max(image, axis=[0, 1])
  scaled = (image - lo) * 255 / tf.maximum(hi - lo, 1)
  return tf.cast(tf.where(hi > lo, scaled, image), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL's per-channel histogram equalisation (TF's reference port)."""

  def channel(im):
    im = tf.cast(im, tf.int32)
    histo = tf.histogram_fixed_width(im, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histo, histo > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(histo) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.cast(tf.where(step > 0, tf.gather(lut, im), im), tf.uint8)

  return tf.stack([channel(image[..., c]) for c in range(3)], axis=-1)


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the top `bits` (1..8) bits of every value."""
  shift = 8 - min(max(bits, 1), 8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
  """Inverts the values at or above `threshold`."""
  values = tf.cast(image, tf.int32)
  return tf.cast(tf.where(values < threshold, values, 255 - values), tf.uint8)


def solarize_add(image: tf.Tensor, addition: int) -> tf.Tensor:
  """Adds `addition` to the values below 128 (clipped)."""
  values = tf.cast(image, tf.int32)
  added = tf.clip_by_value(values + addition, 0, 255)
  return tf.cast(tf.where(values < 128, added, values), tf.uint8)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's Contrast: blends with the mean gray level.

  TF's reference blends with `sum(histogram) / 256` (the pixel count / 256, a
  slip); this is the mean gray level, as PIL, which it meant to copy.
  """
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32)))
  return _blend(tf.fill(tf.shape(image), tf.round(mean)), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's Sharpness: blends with a 3x3 smoothed image (borders kept)."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel,
                                  [1, 1, 1, 1], padding='VALID')[0]
  smooth = tf.cast(tf.clip_by_value(smooth, 0, 255), tf.uint8)
  inner = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  smooth = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
  return _blend(smooth, image, factor)


def cutout(image: tf.Tensor, half_size, *, seed) -> tf.Tensor:
  """Grays a (2*half_size)^2 square centred at a random pixel."""
  shape = tf.shape(image)
  centre = tf.cast(tf.random.stateless_uniform([2], seed) *
                   tf.cast(shape[:2], tf.float32), tf.int32)
  rows = (tf.range(shape[0]) - centre[0])[:, None, None]
  cols = (tf.range(shape[1]) - centre[1])[None, :, None]
  inside = ((rows >= -half_size) & (rows < half_size) &
            (cols >= -half_size) & (cols < half_size))
  return tf.where(inside, tf.constant(_FILL, image.dtype), image)


def randaugment_ops(image: tf.Tensor, *, magnitude: float, sign, seed):
  """The 16 ops of TF's RandAugment in its order, each a thunk on `image`.

  `magnitude` is on TF's scale (10: the reference maximum level); `sign` (+-1)
  is the random direction of Rotate, Shear and Translate; `seed` places
  Cutout. Pixel sizes (Translate 100, Cutout 40 at magnitude 10) are the
  reference's at 224 px and scale with the image side.
  """
  level = magnitude / 10
  enhance = level * 1.8 + 0.1
  scale = tf.cast(tf.shape(image)[1], tf.float32) / 224
  shear, shift = sign * level * 0.3, sign * level * 100 * scale
  return [
      lambda: autocontrast(image),
      lambda: equalize(image),
      lambda: 255 - image,  # Invert.
      lambda: rotate(image, sign * level * 30),
      lambda: posterize(image, int(level * 4)),
      lambda: solarize(image, int(level * 256)),
      lambda: _blend(tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(
          image)), image, enhance),  # Color.
      lambda: contrast(image, enhance),
      lambda: _blend(tf.zeros_like(image), image, enhance),  # Brightness.
      lambda: sharpness(image, enhance),
      lambda: _transform(image, [1., shear, 0., 0., 1., 0., 0., 0.]),
      lambda: _transform(image, [1., 0., 0., shear, 1., 0., 0., 0.]),
      lambda: _transform(image, [1., 0., shift, 0., 1., 0., 0., 0.]),
      lambda: _transform(image, [1., 0., 0., 0., 1., shift, 0., 0.]),
      lambda: cutout(image, tf.cast(tf.round(level * 40 * scale), tf.int32),
                     seed=seed),
      lambda: solarize_add(image, int(level * 110)),
  ]


def randaugment(image: tf.Tensor, *, layers: int, magnitude: float,
                seed) -> tf.Tensor:
  """RandAugment (Cubuk et al.): `layers` ops of the 16, each at `magnitude`.

  As TF's reference (`distort_image_with_randaugment`, big_vision's `randaug`)
  on uint8 images, with every draw stateless from `seed`. Keras 3's
  `keras.layers.RandAugment` cannot be used: its `get_random_transformation`
  ignores the `seed` argument and draws from the layer's stateful
  SeedGenerator (the same seed gives different ops), so a resumed run would
  not replay the augmentation; it also has another op set and random rather
  than fixed magnitudes.
  """
  for layer_seed in tf.unstack(
      tf.random.experimental.stateless_split(seed, layers)):
    op_seed, sign_seed, cutout_seed = tf.unstack(
        tf.random.experimental.stateless_split(layer_seed, 3))
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1., 1.)
    ops = randaugment_ops(image, magnitude=magnitude, sign=sign,
                          seed=cutout_seed)
    index = tf.random.stateless_uniform([], op_seed, maxval=len(ops),
                                        dtype=tf.int32)
    image = tf.ensure_shape(tf.switch_case(index, ops), image.shape)
  return image
