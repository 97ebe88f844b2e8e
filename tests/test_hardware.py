"""mixer_jax.hardware's device facts (the TPU slices are test_plan's)."""

import types

import jax
import pytest

from mixer_jax import hardware


@pytest.mark.parametrize('platform, capability, native', [
    ('tpu', None, True),
    ('gpu', '7.5', False),  # T4, Colab's free GPU.
    ('gpu', '8.0', True),  # A100.
    ('gpu', '8.9', True),  # L4.
    ('gpu', '9.0', True),  # H100.
    ('gpu', '', False),  # A GPU that does not say (ROCm's devices).
    ('cpu', None, False),
])
def test_computes_bfloat16(platform, capability, native):
  device = types.SimpleNamespace(platform=platform)
  if capability is not None:
    device.compute_capability = capability
  assert hardware.computes_bfloat16(device) is native


def test_this_cpu_computes_float32():
  assert not hardware.computes_bfloat16(jax.devices()[0])


@pytest.mark.parametrize('coords, per_chip', [
    ([(0, 0, 0), (0, 0, 0), (1, 0, 0), (1, 0, 0)], 2),  # v3: 2 cores a chip.
    ([(0, 0, 0), (1, 0, 0)], 1),  # v5e.
    (None, 1)])  # GPUs and CPUs have no coordinates.
def test_devices_per_chip(coords, per_chip):
  devices = [types.SimpleNamespace(**({} if coords is None else {'coords': c}))
             for c in (coords or [0, 1, 2])]
  assert hardware.devices_per_chip(devices) == per_chip
