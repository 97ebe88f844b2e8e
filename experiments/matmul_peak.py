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
"""The matmul references of MFU: the peak, its ceiling at the model's shapes."""

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from experiments import measure
from mixer_jax import models


# Products written out in one program at most; a longer chain loops over
# blocks of them, so that its compile time stays bounded (an accelerator needs
# thousands of small products to fill a timed call).
MAX_UNROLLED_PRODUCTS = 64


def chained_matmul(x, *weights, chain: int):
  """x @ w1 @ w2 @ w1 ... (`chain` products, by the weights in turn)."""
  cycle = len(weights)
  block = cycle * max(1, MAX_UNROLLED_PRODUCTS // cycle)
  if chain > block:
    blocks, chain = divmod(chain, block)
    x = jax.lax.fori_loop(
        0, blocks, lambda _, x: chained_matmul(x, *weights, chain=block), x)
  for i in range(chain):
    x = x @ weights[i % cycle]
  return x


def chain_program(mesh, dtype, *, rows: int, dims: Sequence[int],
                  chain: int):
  """A call of `chain` dependent products and its FLOPs, ready on the mesh.

  Each device multiplies its (rows, dims[0]) block of a batch-sharded matrix
  by replicated (dims[0], dims[1]), (dims[1], dims[2]), ... matrices in turn;
  dims[-1] == dims[0], so that the chain can go round.
  """
  replicated, sharded = measure.data_parallel_shardings(mesh)
  shapes = list(itertools.pairwise(dims))

  def make(key):
    x_key, *w_keys = jax.random.split(key, 1 + len(shapes))
    return (jax.random.normal(x_key, (mesh.size * rows, dims[0]), dtype),
            [jax.random.normal(k, shape, dtype) / math.sqrt(shape[0])
             for k, shape in zip(w_keys, shapes)])

  x, weights = jax.jit(make, out_shardings=(sharded, replicated))(
      jax.random.PRNGKey(0))
  product = jax.jit(lambda x, ws: chained_matmul(x, *ws, chain=chain),
                    out_shardings=sharded).lower(x, weights).compile()
  flops = sum(2 * rows * k * n * mesh.size
              for k, n in (shapes[i % len(shapes)] for i in range(chain)))
  return (lambda: product(x, weights).block_until_ready()), flops


def chain_long_enough(mesh, dtype, *, rows: int, dims: Sequence[int],
                      min_seconds: float, repeats: int):
  """chain_program's call with `chain` grown until one call takes min_seconds.

  The chain stays a whole number of rounds of the weights. Returns the call,
  its FLOPs, its chain and its best time of `repeats`.
  """
  cycle = len(dims) - 1
  chain = cycle
  while True:
    call, flops = chain_program(mesh, dtype, rows=rows, dims=dims,
                                chain=chain)
    seconds = min(measure.time_calls(call, steps=repeats, warmup=1))
    if seconds >= min_seconds:  # A product alone may time slower than chained.
      return call, flops, chain, seconds
    chain = cycle * math.ceil(chain * min_seconds / seconds / cycle)


def measure_matmul_peak(mesh, dtype, *, min_seconds: float = 0.05,
                        max_dim: int = 8192, repeats: int = 5) -> dict:
  """The best matmul FLOP/s the mesh's devices reach: the reference for MFU.

  Each device multiplies its [dim, dim] block of a batch-sharded
  [devices x dim, dim] matrix by a replicated [dim, dim] one, `chain` times in
  one program, at the default matmul precision (as the model); `chain` grows
  until a call takes min_seconds, which hides launch overheads. Square sizes
  from 512 double up to max_dim (or until one product takes over a second)
  and the fastest wins: the smallest size that runs long enough is often not
  the fastest (on a 2-core CPU 1024 reaches ~80 % of what 2048 does). The
  sizes are timed in `repeats` turns, one call of each per turn, and each
  counts its best call: so that the sizes see the same moments of a shared
  machine, and `by_dim`, every size's FLOP/s, compares them fairly (MFU
  against another peak definition, one fixed size say, and the square chains
  that stand for the peak, rely on it).
  """
  calls, dim = {}, 512
  while dim <= max_dim:
    call, flops, chain, seconds = chain_long_enough(
        mesh, dtype, rows=dim, dims=(dim, dim), min_seconds=min_seconds,
        repeats=1)
    calls[dim] = (call, flops, chain)
    if seconds / chain > 1.0:
      break
    dim *= 2
  seconds = dict(zip(calls, measure.time_in_turns(
      [call for call, _, _ in calls.values()], turns=repeats)))
  by_dim = {dim: flops / min(seconds[dim])
            for dim, (_, flops, _) in calls.items()}
  best = max(by_dim, key=by_dim.get)
  return {'flop_per_s': by_dim[best], 'call_seconds': min(seconds[best]),
          'dim': best, 'chain': calls[best][2], 'turns': repeats,
          'by_dim': {str(dim): rate for dim, rate in by_dim.items()},
          'dtype': jnp.dtype(dtype).name, 'devices': mesh.size}


def matmul_ceiling_fraction(matmuls, ratio_to_peak: dict) -> float:
  """The forward's matmul FLOP/s over the peak's, each matmul at its own rate.

  ratio_to_peak: a matmul name's FLOP/s / the peak's (1 where absent); the
  result weighs each by its FLOPs, as its time adds up.
  """
  flops = sum(m.flops for m in matmuls)
  return flops / sum(m.flops / ratio_to_peak.get(m.name, 1.0)
                     for m in matmuls)


# The largest size of the square chain timed beside something else: one
# product of 4096 takes about a second on a 2-core CPU, and a small size's
# figure is the least steady.
SQUARE_MAX_DIM = 2048


def square_reference(mesh, dtype, *, peak: dict, min_seconds: float) -> dict:
  """A square chain to time beside something else, and the peak it stands for.

  The largest size of the peak's sweep up to SQUARE_MAX_DIM, grown to
  min_seconds a call. `peak_per_rate`: the peak over that size's figure in
  the sweep, so that the chain's best FLOP/s at other moments, times it, is
  the peak as the sweep would have measured it then.
  """
  by_dim = {int(dim): flop_per_s for dim, flop_per_s in peak['by_dim'].items()
            if int(dim) <= SQUARE_MAX_DIM}
  dim = max(by_dim)
  call, flops, _, _ = chain_long_enough(
      mesh, dtype, rows=dim, dims=(dim, dim), min_seconds=min_seconds,
      repeats=1)
  return {'call': call, 'flops': flops, 'dim': dim,
          'peak_per_rate': peak['flop_per_s'] / by_dim[dim]}


def peak_at(square: dict, seconds: Sequence[float]) -> float:
  """The peak FLOP/s that square_reference's best of `seconds` stands for."""
  return square['flops'] / min(seconds) * square['peak_per_rate']


def measure_matmul_ceiling(model, mesh, dtype, *, image_size: int,
                           batch_size: int, square: dict, min_seconds: float,
                           rounds: int = 9) -> dict:
  """The forward's matmuls alone, at their own shapes: inference MFU's ceiling.

  Each mixing MLP's two products are chained (k -> n -> k) on the rows one
  device holds at `batch_size` and timed in `rounds` turns with the `square`
  reference (square_reference), one call of each per turn. A chain's rate is
  its best call over the peak that the square's best stands for.
  `fraction` is the forward's matmul FLOPs over their time at those rates,
  the stem and the head counted at the peak, divided by the peak: the MFU
  inference would reach if nothing but its matmuls took time, and at their
  best; an upper bound.
  """
  per_device = batch_size // mesh.size
  matmuls = models.forward_matmuls(model, image_size=image_size)
  groups = {}
  for matmul in matmuls:
    groups.setdefault(matmul.name, []).append(matmul)
  chains = {name: chain_long_enough(
      mesh, dtype, rows=group[0].rows * per_device,
      dims=(group[0].k, *(m.n for m in group)), min_seconds=min_seconds,
      repeats=1)[:2] for name, group in groups.items() if len(group) > 1}
  seconds = measure.time_in_turns(
      [square['call']] + [call for call, _ in chains.values()], turns=rounds)
  peak = peak_at(square, seconds[0])
  ratio_to_peak = {name: flops / min(times) / peak
                   for (name, (_, flops)), times in zip(chains.items(),
                                                        seconds[1:])}
  return {'fraction': matmul_ceiling_fraction(matmuls, ratio_to_peak),
          'ratio_to_peak': ratio_to_peak, 'square_dim': square['dim'],
          'rounds': rounds}
