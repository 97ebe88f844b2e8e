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
"""Model weights in the published Mixer `.npz` layout, timm's, and fetching.

The published layout is one float32 array per parameter, its tree path joined
with '/' (`MixerBlock_0/token_mixing/Dense_0/kernel`), Flax shapes. The name
and API (`load`, `save`, `load_pretrained`) are vit_jax's `checkpoint`; a run's
own orbax checkpoints (params, optimizer state, step), from which it resumes,
are `train_state.py`'s. This module is about weights meant to be shared.
"""

import contextlib
import io
import math
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from typing import Any, Union

from etils import epath
from flax import traverse_util
import numpy as np
import tqdm

from mixer_jax import errors
from mixer_jax import storage
from mixer_jax.model import resolution
from mixer_jax.multihost import leader

PUBLISHED_ROOT = 'https://storage.googleapis.com/mixer_models/'

# The 11 published Mixer checkpoints: name -> (variant, head size, what).
# No JFT-300M Mixer weights were ever published.
PUBLISHED = {
    'imagenet21k/Mixer-B_16': ('B/16', 21843, 'ImageNet-21k pre-trained'),
    'imagenet21k/Mixer-L_16': ('L/16', 21843, 'ImageNet-21k pre-trained'),
    'imagenet1k/Mixer-B_16': ('B/16', 1000, 'ImageNet-1k from scratch'),
    'imagenet1k/Mixer-L_16': ('L/16', 1000, 'ImageNet-1k from scratch'),
    'sam/Mixer-B_16': ('B/16', 1000, 'ImageNet-1k with SAM'),
    'sam/Mixer-B_32': ('B/32', 1000, 'ImageNet-1k with SAM'),
    'gsam/Mixer-S_8': ('S/8', 1000, 'ImageNet-1k with GSAM'),
    'gsam/Mixer-S_16': ('S/16', 1000, 'ImageNet-1k with GSAM'),
    'gsam/Mixer-S_32': ('S/32', 1000, 'ImageNet-1k with GSAM'),
    'gsam/Mixer-B_16': ('B/16', 1000, 'ImageNet-1k with GSAM'),
    'gsam/Mixer-B_32': ('B/32', 1000, 'ImageNet-1k with GSAM'),
}

Params = Mapping[str, Any]


class CheckpointError(errors.UserError):
  """A checkpoint that cannot be read, or that does not fit the model."""


def published_url(name: str) -> str:
  return f'{PUBLISHED_ROOT}{name}.npz'


################################################################################
# The .npz layout.
################################################################################


def load(path: Union[str, os.PathLike]) -> dict:
  """Reads a published-layout `.npz` (local or e.g. gs://) into a param tree."""
  path = epath.Path(path)
  if not path.exists():
    raise errors.MissingError(f'Checkpoint file not found: {path}')
  try:
    with path.open('rb') as f:
      with np.load(f, allow_pickle=False) as npz:
        flat = {key: npz[key] for key in npz.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise CheckpointError(
        f'{path} is not a readable .npz checkpoint (truncated, or not an npz '
        f'file): {e}') from e
  if not flat:
    raise CheckpointError(f'{path} holds no arrays.')
  return traverse_util.unflatten_dict(flat, sep='/')


def save(path: Union[str, os.PathLike], params: Params, *,
         overwrite: bool = False) -> None:
  """Writes `params` in the published layout; never leaves a partial file."""
  path = epath.Path(path)
  if path.exists() and not overwrite:
    raise FileExistsError(f'{path} exists; pass overwrite=True to replace it.')
  flat = traverse_util.flatten_dict(_to_numpy(params), sep='/')
  buffer = io.BytesIO()
  np.savez(buffer, **flat)
  storage.write_whole(path, buffer.getvalue())


def _to_numpy(params: Params) -> dict:
  return {k: _to_numpy(v) if isinstance(v, Mapping) else np.asarray(v)
          for k, v in params.items()}


################################################################################
# timm.
################################################################################

# timm `MlpMixer` state-dict names <-> our paths (inside MixerBlock_{i}).
_TIMM_BLOCK = {
    'norm1': 'LayerNorm_0', 'norm2': 'LayerNorm_1',
    'mlp_tokens.fc1': 'token_mixing/Dense_0',
    'mlp_tokens.fc2': 'token_mixing/Dense_1',
    'mlp_channels.fc1': 'channel_mixing/Dense_0',
    'mlp_channels.fc2': 'channel_mixing/Dense_1',
}
_TIMM_TOP = {'stem.proj': 'stem', 'norm': 'pre_head_layer_norm',
             'head': 'head'}
_TIMM_BLOCK_RE = re.compile(r'^blocks\.(\d+)\.(.+)$')


def convert_timm(state_dict: Mapping[str, Any]) -> dict:
  """Maps a timm `MlpMixer` state dict (PyTorch layouts) to our param tree."""
  flat = {}
  for name, value in state_dict.items():
    value = np.asarray(value.detach().cpu() if hasattr(value, 'detach')
                       else value, dtype=np.float32)
    module, _, leaf = name.rpartition('.')
    match = _TIMM_BLOCK_RE.match(module)
    if match and match.group(2) in _TIMM_BLOCK:
      path = f'MixerBlock_{match.group(1)}/{_TIMM_BLOCK[match.group(2)]}'
    elif module in _TIMM_TOP:
      path = _TIMM_TOP[module]
    else:
      raise CheckpointError(f'Unknown timm MlpMixer parameter {name!r}.')
    if leaf == 'weight' and value.ndim == 1:  # LayerNorm.
      leaf = 'scale'
    elif leaf == 'weight':
      leaf = 'kernel'
      # Conv OIHW -> HWIO; Linear (out, in) -> (in, out).
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    flat[f'{path}/{leaf}'] = value
  return traverse_util.unflatten_dict(flat, sep='/')


def to_timm(params: Params) -> dict:
  """Our param tree -> a timm `MlpMixer` state dict of numpy arrays."""
  ours_to_timm = {v: k for k, v in _TIMM_BLOCK.items()}
  state_dict = {}
  for path, value in traverse_util.flatten_dict(
      _to_numpy(params), sep='/').items():
    module, _, leaf = path.rpartition('/')
    block, _, inner = module.partition('/')
    if block.startswith('MixerBlock_'):
      name = f'blocks.{block.split("_")[1]}.{ours_to_timm[inner]}'
    else:
      name = {v: k for k, v in _TIMM_TOP.items()}[module]
    if leaf == 'kernel':
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    state_dict[f'{name}.{"bias" if leaf == "bias" else "weight"}'] = (
        np.ascontiguousarray(value))
  return state_dict


################################################################################
# Checking a checkpoint against a model.
################################################################################


def check_fits(expected: Params, found: Params, *, source: str = 'checkpoint'):
  """Raises CheckpointError naming every missing, extra or misshaped array.

  The problems that explain the others (another patch size, width or image
  size) are listed first.
  """
  want = traverse_util.flatten_dict(expected, sep='/')
  got = traverse_util.flatten_dict(found, sep='/')
  problems = []  # (rank: the patch first, then hints, then the rest, key,
  # text)
  for k in want.keys() - got.keys():
    problems.append((2, k, f'missing parameter {k!r} '
                     f'(expected shape {want[k].shape})'))
  for k in got.keys() - want.keys():
    problems.append((2, k, f'unexpected parameter {k!r} '
                     f'(shape {np.shape(got[k])})'))
  for k in want.keys() & got.keys():
    if tuple(want[k].shape) != tuple(np.shape(got[k])):
      hint = _hint(k, want, got)
      rank = 0 if k == 'stem/kernel' else 1 if hint else 2
      problems.append((rank, k, f'parameter {k!r}: the model expects shape '
                       f'{want[k].shape}, the checkpoint has '
                       f'{np.shape(got[k])}{hint}'))
  if problems:
    problems.sort(key=lambda p: (p[0], _natural_key(p[1])))
    listed = '\n  '.join(text for _, _, text in problems[:6])
    more = f'\n  ... and {len(problems) - 6} more' if len(problems) > 6 else ''
    raise CheckpointError(
        f'{source} does not fit the model:\n  {listed}{more}')


def _natural_key(key):
  """'MixerBlock_10/...' after 'MixerBlock_2/...'."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', key)]


def _hint(key, want, got):
  if key == 'stem/kernel':
    return (f' (patch {want[key].shape[0]} in the model, '
            f'{np.shape(got[key])[0]} in the checkpoint: another variant?)')
  if key.endswith('token_mixing/Dense_0/kernel'):
    tokens, ckpt_tokens = want[key].shape[0], np.shape(got[key])[0]
    stem = 'stem/kernel'
    if stem in got and np.shape(got[stem])[:1] != want[stem].shape[:1]:
      return ' (the number of tokens follows from the other patch size)'
    if tokens == ckpt_tokens:
      return ' (another token-mixing width: another variant or resolution_factor?)'
    if tokens % ckpt_tokens == 0 and _is_square(tokens // ckpt_tokens):
      factor = math.isqrt(tokens // ckpt_tokens)
      return (f' ({ckpt_tokens} tokens in the checkpoint, {tokens} in the '
              f'model: to fine-tune at {factor}x the pre-training resolution '
              f'set resolution_factor={factor})')
    return (f' ({ckpt_tokens} tokens in the checkpoint, {tokens} in the '
            'model: made for another image size)')
  return ''


def _is_square(n):
  return math.isqrt(n) ** 2 == n


def load_pretrained(*, init_params: Params, pretrained: Union[str, Params],
                    keep_head: bool = False, resolution_factor: int = 1,
                    cache_dir=None) -> dict:
  """Pre-trained weights shaped as `init_params`, ready to fine-tune.

  Like the official code, the head is taken from `init_params` (a fresh,
  zero-initialised head) unless `keep_head`: a pre-trained head only fits when
  the class count matches, and zero-init makes fine-tuning start from the
  pre-trained features with zero logits. A model without a head drops it.

  Args:
    init_params: the initialised params of the target model.
    pretrained: a published name (see PUBLISHED), a local or gs:// path, an
      http(s) URL (cached, see `fetch`), or a param tree.
    keep_head: keep the pre-trained head (its class count must match).
    resolution_factor: the model sees images this many times larger per side
      than the checkpoint did; token-mixing MLPs are widened block-diagonally.
    cache_dir: where downloaded checkpoints go (default: see `cache_root`).
  Returns:
    The parameter tree, float32 numpy arrays.
  """
  if isinstance(pretrained, Mapping):
    source, params = 'the given parameters', _to_numpy(pretrained)
  else:
    source = str(pretrained)
    params = load(fetch(pretrained, cache_dir=cache_dir))
  params = resolution.widen_token_mixing(params, factor=resolution_factor)
  if 'head' not in init_params:
    params.pop('head', None)
  elif not keep_head or 'head' not in params:
    params['head'] = _to_numpy(init_params['head'])
  check_fits(init_params, params, source=source)
  return _cast_like(params, init_params)


def _cast_like(params: dict, like: Params) -> dict:
  return {k: _cast_like(v, like[k]) if isinstance(v, Mapping)
          else np.asarray(v, dtype=like[k].dtype) for k, v in params.items()}


################################################################################
# Published names, URLs and the download cache.
################################################################################


def cache_root() -> epath.Path:
  """$MIXER_JAX_CACHE, else $XDG_CACHE_HOME/mixer_jax, else ~/.cache/mixer_jax."""
  if os.environ.get('MIXER_JAX_CACHE'):
    return epath.Path(os.environ['MIXER_JAX_CACHE'])
  xdg = os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache'))
  return epath.Path(xdg) / 'mixer_jax'


def remote(pretrained: str, *, cache_dir=None):
  """(url, cache path) of a published name or an http(s) URL, else None."""
  pretrained = str(pretrained)
  name = pretrained[:-len('.npz')] if pretrained.endswith('.npz') else pretrained
  if name in PUBLISHED:
    pretrained = published_url(name)
  if not re.match(r'^https?://', pretrained):
    return None
  url = urllib.parse.urlparse(pretrained)
  return pretrained, (epath.Path(cache_dir or cache_root()) / url.netloc /
                      url.path.lstrip('/'))


def fetch(pretrained: str, *, cache_dir=None) -> epath.Path:
  """A readable path for a published name, a path or a URL.

  http(s) URLs (published names resolve to one) are downloaded once into the
  cache, `<cache>/<host>/<path>`, with a progress bar; later calls reuse the
  file. Local and gs:// paths are returned as they are.
  """
  found = remote(pretrained, cache_dir=cache_dir)
  if found is None:
    path = epath.Path(pretrained)
    if '://' not in str(pretrained) and not path.exists():
      raise errors.MissingError(
          f'Pretrained checkpoint {pretrained!r} is neither a published name '
          f'nor an existing file. Published names: {", ".join(PUBLISHED)}.')
    return path
  url, cached = found
  # On several processes, process 0 downloads first; the others then find
  # the file in a shared cache (or download their own into a local one).
  leader.first(f'download {url}',
               lambda: cached.exists() or _download(url, cached),
               timeout_s=leader.DOWNLOAD_TIMEOUT_S)
  return cached


def _download(url: str, destination: epath.Path) -> None:
  """Downloads `url` to `destination` whole: into a partial file beside it,
  renamed into place; for a bucket (no renames), in a local temporary
  folder, then uploaded in one piece."""
  in_bucket = storage.is_url(destination)
  if not in_bucket:
    destination.parent.mkdir(parents=True, exist_ok=True)
  with (tempfile.TemporaryDirectory() if in_bucket else
        contextlib.nullcontext(destination.parent)) as folder:
    partial = epath.Path(folder) / f'.{destination.name}.partial'
    try:
      with urllib.request.urlopen(url, timeout=60) as response, \
          partial.open('wb') as out, tqdm.tqdm(
              total=int(response.headers.get('Content-Length') or 0) or None,
              unit='B', unit_scale=True,
              desc=f'Downloading {destination.name}') as bar:
        for chunk in iter(lambda: response.read(1 << 20), b''):
          out.write(chunk)
          bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
      partial.unlink(missing_ok=True)
      raise errors.MissingError(
          f'Could not download {url} ({e}). Without network, download it '
          f'elsewhere and put it at {destination}') from e
    if in_bucket:
      storage.write_whole(destination, partial.read_bytes())
    else:
      partial.replace(destination)
