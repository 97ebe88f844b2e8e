"""Tests for experiments/matmul_peak.py: the chains MFU is measured against.

No timing is asserted: only FLOP counts, results and well-formed figures.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import matmul_peak
from experiments import measure
from mixer_jax import models


@pytest.fixture(scope='module')
def mesh():
  return jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))


def test_matmul_peak_counts_every_product(mesh):
  """XLA keeps the chain as written: 2 dim^3 FLOPs per product and device."""
  replicated, rows = measure.data_parallel_shardings(mesh)
  x = jax.ShapeDtypeStruct((mesh.size * 64, 64), jnp.float32, sharding=rows)
  w = jax.ShapeDtypeStruct((64, 64), jnp.float32, sharding=replicated)
  chain = jax.jit(lambda x, w: matmul_peak.chained_matmul(x, w, chain=3),
                  out_shardings=rows)
  assert measure.xla_flops(chain, x, w) == 3 * 2 * 64**3


def test_chain_of_a_pair_counts_every_product(mesh):
  """An MLP's pair, chained k -> n -> k: XLA's count and chain_program's."""
  replicated, rows = measure.data_parallel_shardings(mesh)
  x = jax.ShapeDtypeStruct((mesh.size * 8, 16), jnp.float32, sharding=rows)
  a = jax.ShapeDtypeStruct((16, 48), jnp.float32, sharding=replicated)
  b = jax.ShapeDtypeStruct((48, 16), jnp.float32, sharding=replicated)
  chain = jax.jit(lambda x, a, b: matmul_peak.chained_matmul(x, a, b, chain=3),
                  out_shardings=rows)
  per_device = 3 * 2 * 8 * 16 * 48  # XLA counts one device's program.
  assert measure.xla_flops(chain, x, a, b) == per_device
  _, flops = matmul_peak.chain_program(mesh, jnp.float32, rows=8,
                                   dims=(16, 48, 16), chain=3)
  assert flops == per_device * mesh.size


@pytest.mark.parametrize('dims', [(16, 48, 16), (48, 16, 48)])
def test_a_long_chain_of_a_pair_stays_finite(mesh, dims):
  """Its kernels' product is a projection: no overflow, nothing vanishes."""
  call, _ = matmul_peak.chain_program(mesh, jnp.float32, rows=8, dims=dims,
                                      chain=400)
  out = np.asarray(call())
  assert np.isfinite(out).all() and 0.1 < np.abs(out).max() < 10


def test_long_chain_loops_over_blocks_of_the_same_products():
  """Past MAX_UNROLLED_PRODUCTS the chain is a loop, with the same result."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
  a = jax.random.orthogonal(jax.random.PRNGKey(1), 8)[:, :6] * 1.1
  b = jax.random.orthogonal(jax.random.PRNGKey(2), 8)[:6, :] * 1.05
  chain = 2 * matmul_peak.MAX_UNROLLED_PRODUCTS + 6  # Two blocks and a rest.
  expected = x
  for i in range(chain):
    expected = expected @ (a, b)[i % 2]
  looped = jax.jit(lambda x: matmul_peak.chained_matmul(x, a, b, chain=chain))
  assert 'while' in looped.lower(x).as_text()
  np.testing.assert_allclose(looped(x), expected, rtol=1e-4)


def test_chain_grows_by_whole_turns_of_its_weights(mesh):
  _, flops, chain, seconds = matmul_peak.chain_long_enough(
      mesh, jnp.float32, rows=8, dims=(16, 48, 16), min_seconds=0.002,
      repeats=1)
  assert chain % 2 == 0 and seconds >= 0.002
  assert flops == chain * 2 * 8 * 16 * 48 * mesh.size


# FLOPs: stem 2*10*5*1 = 100, each of the mlp's two layers 2*5*10*3 = 300.
# Training: 3 x 700 model FLOPs; the stem runs twice, the mlp's three times.
@pytest.mark.parametrize('ratios,train,expected', [
    ({}, False, 1.0),                                    # All at the peak.
    ({'mlp': 0.5}, False, 700 / (100 + 600 / 0.5)),      # Times add up.
    ({'stem': 2.0, 'mlp': 0.5}, False, 700 / (100 / 2.0 + 600 / 0.5)),
    ({}, True, 2100 / (200 + 1800)),                     # No image gradient.
    ({'mlp': 0.5}, True, 2100 / (200 + 1800 / 0.5)),
])
def test_matmul_ceiling_weighs_each_matmul_by_its_time(ratios, train,
                                                       expected):
  matmuls = [models.Matmul('stem', 10, 5, 1, 1),
             models.Matmul('mlp', 5, 10, 3, 1),
             models.Matmul('mlp', 5, 3, 10, 1)]
  assert matmul_peak.matmul_ceiling_fraction(
      matmuls, ratios, train=train) == pytest.approx(expected)


def mixing_dot_generals(name, on):
  return models.mixing_dot_generals(name, kernel_grad_form=on)


@pytest.mark.parametrize('name', ['token_mixing', 'channel_mixing'])
@pytest.mark.parametrize('on', [False, True])
def test_trained_pair_is_the_mlps_backward(name, on):
  """Whatever the kernel-gradient form: lax's gradients, the output as dy."""
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (3, 5, 7))
  first = jax.random.normal(keys[1], (7, 12)) / 7**0.5
  second = jax.random.normal(keys[2], (12, 7)) / 12**0.5
  y, backward = jax.vjp(lambda x, a, b: x @ a @ b, x, first, second)
  got = jax.jit(functools.partial(
      matmul_peak.trained_pair,
      dot_generals=mixing_dot_generals(name, on)))(x, first, second)
  for g, want in zip(got, backward(y)):
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


def test_trained_pair_counts_six_products():
  x = jax.ShapeDtypeStruct((4, 16, 32), jnp.float32)
  first = jax.ShapeDtypeStruct((32, 64), jnp.float32)
  second = jax.ShapeDtypeStruct((64, 32), jnp.float32)
  program = jax.jit(functools.partial(
      matmul_peak.trained_pair,
      dot_generals=mixing_dot_generals('channel_mixing', True)))
  assert measure.xla_flops(program, x, first, second) == pytest.approx(
      12 * 4 * 16 * 32 * 64, rel=0.03)  # The kernel gradients' sums, too.


@pytest.mark.parametrize('chain', [3, 2 * matmul_peak.MAX_UNROLLED_PRODUCTS // 6
                                   + 1])  # Unrolled; looped, with a rest.
def test_trained_pairs_chain_each_dx_into_the_next(chain):
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 6))
  rows = jax.random.orthogonal(jax.random.PRNGKey(2), 8)[:6, :]
  first, second = rows * 1.1, rows.T * 0.95  # Each pair scales x by 1.09.
  forms = mixing_dot_generals('token_mixing', True)
  want = x, jnp.zeros_like(first), jnp.zeros_like(second)
  for _ in range(chain):
    dx, df, ds = matmul_peak.trained_pair(want[0], first, second,
                                          dot_generals=forms)
    want = dx, want[1] + df, want[2] + ds
  got = jax.jit(functools.partial(matmul_peak.trained_pairs,
                                  dot_generals=forms, chain=chain))(
                                      x, first, second)
  np.testing.assert_allclose(got[0], x * (1.1 * 0.95)**(2 * chain),
                             rtol=1e-3)  # Rounding over 4 chain products.
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('dims', [(6, 8), (8, 6)])  # Widening, narrowing.
def test_train_chain_program_keeps_each_devices_gradients(mesh, dims):
  chain = 80  # Looped; random kernels would overflow float32 by now.
  call, flops = matmul_peak.train_chain_program(
      chain, mesh=mesh, dtype=jnp.float32, batch=2, rows=4, dims=dims,
      dot_generals=mixing_dot_generals('token_mixing', True))
  dx, dfirst, dsecond = call()
  k, n = dims
  assert dx.shape == (mesh.size * 2, 4, k)
  assert dfirst.shape == (mesh.size, k, n)
  assert dsecond.shape == (mesh.size, n, k)
  assert flops == chain * 12 * 2 * 4 * k * n * mesh.size
  assert np.isfinite(dx).all() and 0.1 < np.abs(dx).max() < 10
  # Each device's own sum: the blocks differ, and none is an all-reduce.
  assert not np.allclose(dfirst[0], dfirst[1])


def test_square_reference_stands_for_the_peak(mesh):
  """The largest size up to SQUARE_MAX_DIM, scaled to the sweep's best."""
  peak = {'flop_per_s': 10.0, 'by_dim': {'16': 6.0, '32': 5.0, '8192': 10.0}}
  square = matmul_peak.square_reference(mesh, jnp.float32, peak=peak,
                                        min_seconds=0.001)
  assert square['dim'] == 32 and square['peak_per_rate'] == 2.0
  chain = square['flops'] // (2 * 32**3 * mesh.size)
  assert chain >= 1 and square['flops'] == chain * 2 * 32**3 * mesh.size
  square['call']()  # Runs, and waits.
