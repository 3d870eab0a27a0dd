"""Per-image and per-batch TF ops of the input pipeline (training and evaluation).

Everything random is a stateless op of an explicit seed, so that an image's crop, flip and jitter
depend only on (config.seed, its position in the stream): the pipeline is reproducible and can
resume mid-epoch bit-exactly.
"""

import math

import tensorflow as tf

from mutualnet_jax.data import image_key
from mutualnet_jax.models import pixels

# The normalisations (models/pixels.py, where the kernels read them).
MEAN_RGB, STDDEV_RGB = pixels.IMAGENET
CIFAR_MEAN_RGB, CIFAR_STDDEV_RGB = pixels.CIFAR
CIFAR_PAD = 4
# config.augment: the training/evaluation recipe; each names its normalisation.
AUGMENTS = pixels.STATS
_GRAY = (0.299, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_ATTEMPTS = 10


def sample_crop_window(shape, seed, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)):
  """torchvision RandomResizedCrop.get_params: 10 attempts, then a center crop; [y, x, h, w]."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  h = tf.cast(shape[0], tf.float32)
  w = tf.cast(shape[1], tf.float32)
  area = h * w * tf.random.stateless_uniform([_ATTEMPTS], seeds[0], scale[0], scale[1])
  log_r = tf.random.stateless_uniform(
      [_ATTEMPTS], seeds[1], math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_r)
  cw = tf.round(tf.sqrt(area * aspect))
  ch = tf.round(tf.sqrt(area / aspect))
  ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
  first = tf.argmax(tf.cast(ok, tf.int32))
  # Fallback: the whole image, clamped to the aspect-ratio range, centered.
  in_ratio = w / h
  fw = tf.where(in_ratio < ratio[0], w, tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w))
  fh = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
  any_ok = tf.reduce_any(ok)
  ch = tf.where(any_ok, tf.gather(ch, first), fh)
  cw = tf.where(any_ok, tf.gather(cw, first), fw)
  u = tf.random.stateless_uniform([2], seeds[2])
  y = tf.where(any_ok, tf.floor(u[0] * (h - ch + 1)), tf.floor((h - ch) / 2))
  x = tf.where(any_ok, tf.floor(u[1] * (w - cw + 1)), tf.floor((w - cw) / 2))
  y = tf.minimum(y, h - ch)  # u < 1, but guard against float rounding
  x = tf.minimum(x, w - cw)
  return tf.cast(tf.stack([y, x, ch, cw]), tf.int32)


def decode_and_crop(data, window_fn):
  """Decodes only window_fn(shape) of an encoded image: JPEG crop-decoding, else full decode."""

  def jpeg():
    window = window_fn(tf.image.extract_jpeg_shape(data))
    return tf.image.decode_and_crop_jpeg(data, window, channels=3)

  def other():  # PNG, GIF, BMP: no partial decoding
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    window = window_fn(tf.shape(image))
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

  image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
  image.set_shape([None, None, 3])
  return image


def _blend(image, other, factor):
  return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def _grayscale(image):
  return tf.reduce_sum(image * tf.constant(_GRAY, image.dtype), axis=-1, keepdims=True)


def jitter_factors(seed, strength):
  """torchvision ColorJitter(s, s, s) factors: brightness, contrast, saturation ~ U[1-s, 1+s]."""
  return tf.random.stateless_uniform([3], seed, max(0.0, 1 - strength), 1 + strength)


def color_jitter(images, factors):
  """ColorJitter on [B, H, W, 3] pixels in [0, 1] with per-image factors [B, 3].

  Batched (vectorized) for speed; the order is fixed: brightness, contrast, saturation.
  """
  f = factors[:, None, None, :]
  x = tf.clip_by_value(images * f[..., 0:1], 0.0, 1.0)
  x = _blend(x, tf.reduce_mean(_grayscale(x), axis=[1, 2, 3], keepdims=True), f[..., 1:2])
  return _blend(x, _grayscale(x), f[..., 2:3])


def normalize(image, mean=MEAN_RGB, std=STDDEV_RGB):
  """[0, 1] RGB -> (image - mean) / std (ImageNet's by default)."""
  return (image - tf.constant(mean, image.dtype)) / tf.constant(std, image.dtype)


def augment_batch(images, flips, factors, jitter=True, mean=MEAN_RGB, std=STDDEV_RGB,
                  normalized=True):
  """Pixels in [0, 255] [B, H, W, 3] -> flipped where flips, color-jittered, normalized (with
  ``normalized=False``: in [0, 1], for :func:`quantize`; the kernels normalise).

  XLA fuses the ~20 elementwise passes into about one: ~6x faster than separate TF ops.
  """
  x = images * (1.0 / 255.0)
  x = tf.where(flips[:, None, None, None], tf.reverse(x, axis=[2]), x)
  if jitter:
    x = color_jitter(x, factors)
  return normalize(x, mean, std) if normalized else x


def quantize(images):
  """[0, 1] RGB -> uint8 pixels, rounded to the nearest level (what ``config.image_dtype='uint8'``
  sends; :func:`mutualnet_jax.models.pixels.to_inputs` normalises them in the kernels)."""
  return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


augment_batch_xla = tf.function(augment_batch, jit_compile=True)
# One fused pass instead of TensorFlow's four (clip, scale, round, cast), the same bits: the
# uint8 pipeline's CPU time per image fell ~14% with it (issue 43 part 3).
quantize_xla = tf.function(quantize, jit_compile=True)


def train_image(data, seed, size, crop_scale=(0.25, 1.0)):
  """Encoded image -> float32 [size, size, 3] in [0, 255]: random resized crop.

  Flip, color jitter and normalization follow on the batch (augment_batch).
  """
  image = decode_and_crop(data, lambda shape: sample_crop_window(shape, seed, crop_scale))
  image = tf.image.resize(image, (size, size), method='bilinear')
  image.set_shape([size, size, 3])
  return image


def eval_image(data, size, resize_ratio=0.875, normalized=True):
  """Encoded image -> normalized [size, size, 3]: shorter side to size/ratio, center crop
  (``normalized=False``: in [0, 1])."""
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  short = round(size / resize_ratio)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = short / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
  image = tf.image.resize(image, new, method='bilinear', antialias=True)
  top = (new[0] - size) // 2
  left = (new[1] - size) // 2
  image = tf.slice(image, [top, left, 0], [size, size, 3])
  image = tf.clip_by_value(image, 0.0, 255.0) / 255.0
  image = normalize(image) if normalized else image
  image.set_shape([size, size, 3])
  return image


def _whole_image(data, size):
  """Encoded image -> float32 [size, size, 3] in [0, 255], not cropped.

  CIFAR images are already ``size`` pixels (the reference asserts it); an image of another size
  is resized to it (bilinear, antialiased) rather than dropped as undecodable.
  """
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  image = tf.cast(image, tf.float32)
  same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
  image = tf.cond(same, lambda: image,
                  lambda: tf.image.resize(image, (size, size), 'bilinear', antialias=True))
  image.set_shape([size, size, 3])
  return image


def cifar_train_image(data, seed, size, pad=CIFAR_PAD):
  """Encoded image -> float32 [size, size, 3] in [0, 255]: the published CIFAR crop.

  Reflect-pad by ``pad`` (mirroring without repeating the edge, like PyTorch's
  ``F.pad(mode='reflect')``), then a uniformly placed ``size`` x ``size`` crop, as
  ``RandomCrop(32)``; the flip and the CIFAR normalisation follow on the batch.
  """
  image = tf.pad(_whole_image(data, size), [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  yx = tf.random.stateless_uniform([2], seed, 0, 2 * pad + 1, dtype=tf.int32)
  image = tf.slice(image, [yx[0], yx[1], 0], [size, size, 3])
  image.set_shape([size, size, 3])
  return image


def cifar_eval_image(data, size, normalized=True):
  """Encoded image -> the whole ``size``-pixel image, CIFAR-normalized (no crop, no resize;
  ``normalized=False``: in [0, 1])."""
  image = _whole_image(data, size) / 255.0
  return normalize(image, CIFAR_MEAN_RGB, CIFAR_STDDEV_RGB) if normalized else image


def multi_resolution(images, resolutions, used=None, finish=None):
  """Batch [B, R, R, 3] at R = resolutions[0] -> {image_key(r): align-corners bilinear resize},
  each passed through ``finish`` (e.g. :func:`quantize`).

  ``used``: a bool tensor, one per resolution; where it is False nothing is resized and the
  entry has no rows ([0, r, r, 3]): a resolution no subnet of the step draws.
  """
  finish = finish or (lambda x: x)
  out = {}
  top = resolutions[0]
  for i, r in enumerate(resolutions):
    def make(r=r):
      if r == top:
        return finish(images)
      return finish(tf.raw_ops.ResizeBilinear(  # = tf.compat.v1 resize_bilinear
          images=images, size=(r, r), align_corners=True, half_pixel_centers=False))
    if used is None:
      out[image_key(r)] = make()
    else:
      empty = lambda r=r: finish(tf.zeros([0, r, r, 3], images.dtype))
      out[image_key(r)] = tf.cond(used[i], make, empty)
  return out
