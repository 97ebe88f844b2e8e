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
"""TPU generations and slices: what a device holds and how fast it runs.

Figures per chip, from the Cloud TPU system-architecture pages (v2's
bandwidth from Jouppi et al., "A Domain-Specific Supercomputer for Training
Deep Neural Networks", 2020): HBM in GiB, peak dense bf16 FLOP/s, HBM
bandwidth in bytes/s. A chip is one JAX device on v5e and v6e, two (one per
TensorCore) on v2 and v3, and for the compiler's v4 and v5p topologies as
many as it lists; a device gets its share of the chip.
"""

import dataclasses
import importlib.util
import math
import re

from mixer_jax import errors


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_gib: float  # Per chip.
  peak_flops: float  # bf16, per chip.
  hbm_bandwidth: float  # Bytes/s, per chip.

  @property
  def hbm_bytes(self) -> int:
    return int(self.hbm_gib * 2**30)


CHIPS = {
    'v2': Chip('TPU v2', 16, 45e12, 700e9),
    'v3': Chip('TPU v3', 32, 123e12, 900e9),
    'v4': Chip('TPU v4', 32, 275e12, 1200e9),
    'v5e': Chip('TPU v5e', 16, 197e12, 819e9),
    'v5p': Chip('TPU v5p', 95, 459e12, 2765e9),
    'v6e': Chip('TPU v6e', 32, 918e12, 1640e9),
}

# The share of a device's memory a plan may fill: the runtime keeps some
# for itself (a v5e chip's 16 GiB allow about 15.75 to a program).
USABLE_FRACTION = 0.95

# Chip grids of the slice shapes Cloud TPU sells, by chip count. In an
# accelerator type 'vX-N', N counts TensorCores for v2, v3, v4 and v5p
# (two per chip) and chips for v5e and v6e.
_GRIDS_2D = {1: '1x1', 4: '2x2', 8: '2x4', 16: '4x4', 32: '4x8', 64: '8x8',
             128: '8x16', 256: '16x16'}
_GRIDS_3D = {4: '2x2x1', 8: '2x2x2', 16: '2x2x4', 32: '2x4x4', 64: '4x4x4',
             128: '4x4x8', 256: '4x8x8', 512: '8x8x8'}
_CORES_IN_NAME = {'v2': True, 'v3': True, 'v4': True, 'v5p': True,
                  'v5e': False, 'v6e': False}
_ALIASES = {'v5litepod': 'v5e', 'v5lite': 'v5e', 'v6': 'v6e'}


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str  # As asked: 'v5e-8' or 'v5e:2x4'.
  chip: Chip
  topology: str  # For jax.experimental.topologies: 'v5e:2x4'.


def known_names() -> list[str]:
  """The accelerator types `parse` knows, smallest first per generation."""
  names = []
  for gen, by_cores in _CORES_IN_NAME.items():
    grids = _GRIDS_3D if gen in ('v4', 'v5p') else _GRIDS_2D
    names += [f'{gen}-{chips * (2 if by_cores else 1)}' for chips in grids
              if chips > 1 or gen in ('v5e', 'v6e')]
  return names


def parse(name: str) -> Slice:
  """'v5e-8', 'v3-8', 'v5litepod-16' or a topology 'v5e:2x4' -> Slice."""
  match = re.fullmatch(r'(v\d[a-z]*)([-:])([\dx]+)', name.strip().lower())
  if match:
    gen, sep, size = match.groups()
    gen = _ALIASES.get(gen, gen)
    if gen in CHIPS:
      if sep == ':':
        return Slice(name, CHIPS[gen], f'{gen}:{size}')
      if size.isdigit():
        chips = int(size) // (2 if _CORES_IN_NAME[gen] else 1)
        grids = _GRIDS_3D if gen in ('v4', 'v5p') else _GRIDS_2D
        if chips in grids and f'{gen}-{size}' in known_names():
          return Slice(name, CHIPS[gen], f'{gen}:{grids[chips]}')
  raise errors.UserError(
      f'Unknown TPU topology {name!r}: use an accelerator type '
      f'({", ".join(known_names())}) or a topology such as v5e:2x4.')


def _chips_per_host(tpu_slice: Slice) -> tuple[int, int, int]:
  """Hosts as Cloud TPU builds them: 4 chips each, except a single host of
  8 chips for v5e-8 and v6e-8, and a single chip alone."""
  gen, grid = tpu_slice.topology.split(':')
  chips = math.prod(int(n) for n in grid.split('x'))
  if chips == 1:
    return (1, 1, 1)
  if gen in ('v5e', 'v6e') and chips == 8:
    return (2, 4, 1)
  return (2, 2, 1)


def devices(tpu_slice: Slice):
  """The devices of `tpu_slice`, for compiling only (needs libtpu:
  pip install -e '.[tpu]'); no TPU is used."""
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    topology = topologies.get_topology_desc(
        topology_name=tpu_slice.topology, platform='tpu',
        chips_per_host_bounds=_chips_per_host(tpu_slice))
  except Exception as e:  # pylint: disable=broad-except
    hint = ('' if importlib.util.find_spec('libtpu') else
            "; compiling for a TPU needs libtpu: pip install -e '.[tpu]' "
            "(in a checkout; elsewhere pip install 'jax[tpu]')")
    raise errors.UserError(
        f'Cannot describe TPU topology {tpu_slice.topology} '
        f'({errors.describe(e)[:300]}){hint}.') from None
  return topology.devices


def devices_per_chip(devices) -> int:
  """JAX devices per chip in `devices` (TPU devices know their chip's
  coordinates; a GPU or CPU device is one chip of its own)."""
  if not all(hasattr(d, 'coords') for d in devices):
    return 1
  return len(devices) // len({tuple(d.coords) for d in devices})


def computes_bfloat16(device) -> bool:
  """Whether `device` (a jax Device) multiplies bfloat16 natively: TPUs and
  NVIDIA GPUs from Ampere (compute capability 8.0) on. Elsewhere (a T4's
  7.5, a CPU) bfloat16 is emulated, slower than float32: use float32."""
  if device.platform == 'tpu':
    return True
  if device.platform == 'gpu':
    capability = getattr(device, 'compute_capability', '0')
    return float(capability or 0) >= 8.0
  return False
