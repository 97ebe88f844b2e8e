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

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from experiments import measure
from mixer_jax import kernel_grads
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


def projection_pair(key, k: int, n: int, *, dtype):
  """(k, n) and (n, k) kernels whose product is an orthogonal projection.

  A chain through them neither grows nor vanishes, however long it runs (an
  accelerator's runs to thousands of pairs): random kernels' grows about 4x
  a pair, past float32's range within 100 pairs.
  """
  first = jax.random.orthogonal(key, max(k, n))[:k, :n]
  return first.astype(dtype), first.T.astype(dtype)


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
    x_key, w_key = jax.random.split(key)
    x = jax.random.normal(x_key, (mesh.size * rows, dims[0]), dtype)
    if len(shapes) == 2:  # An MLP's pair, k -> n -> k.
      return x, list(projection_pair(w_key, *shapes[0], dtype=dtype))
    return x, [jax.random.normal(k, shape, dtype) / math.sqrt(shape[0])
               for k, shape in zip(jax.random.split(w_key, len(shapes)),
                                   shapes)]

  x, weights = jax.jit(make, out_shardings=(sharded, replicated))(
      jax.random.PRNGKey(0))
  product = jax.jit(lambda x, ws: chained_matmul(x, *ws, chain=chain),
                    out_shardings=sharded).lower(x, weights).compile()
  flops = sum(2 * rows * k * n * mesh.size
              for k, n in (shapes[i % len(shapes)] for i in range(chain)))
  return (lambda: product(x, weights).block_until_ready()), flops


def grown_until(program, *, cycle: int, min_seconds: float, repeats: int):
  """program(chain)'s call with `chain` grown until one call takes min_seconds.

  program: chain -> (call, FLOPs). The chain stays a multiple of `cycle`.
  Returns the call, its FLOPs, its chain and its best time of `repeats`.
  """
  chain = cycle
  while True:
    call, flops = program(chain)
    seconds = min(measure.time_calls(call, steps=repeats, warmup=1))
    if seconds >= min_seconds:  # A product alone may time slower than chained.
      return call, flops, chain, seconds
    chain = cycle * math.ceil(chain * min_seconds / seconds / cycle)


def chain_long_enough(mesh, dtype, *, rows: int, dims: Sequence[int],
                      min_seconds: float, repeats: int):
  """chain_program's call, grown to min_seconds by whole rounds of weights."""
  return grown_until(
      lambda chain: chain_program(mesh, dtype, rows=rows, dims=dims,
                                  chain=chain),
      cycle=len(dims) - 1, min_seconds=min_seconds, repeats=repeats)


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


def trained_pair(x, first, second, *, dot_generals):
  """An MLP's two products, then their backward: (dx, dfirst, dsecond).

  The forward's own output is the backward's cotangent, so that dx, unlike
  a fixed cotangent's, depends on x: a chain of these cannot be folded.
  dot_generals: the two nn.Dense ones (models.mixing_dot_generals).
  """
  def pair(x, first, second):
    for kernel, dot_general in zip((first, second), dot_generals):
      x = (dot_general or jax.lax.dot_general)(
          x, kernel, kernel_grads.dense_dimension_numbers(x.ndim))
    return x
  y, backward = jax.vjp(pair, x, first, second)
  return backward(y)


def trained_pairs(x, first, second, *, dot_generals, chain: int):
  """`chain` trained_pairs in a row, each on the last one's dx.

  Returns the last dx and the kernel gradients' sums. Past
  MAX_UNROLLED_PRODUCTS products (six a pair) it loops over blocks of pairs.
  """
  def pairs(carry, count):
    for _ in range(count):
      x, dfirst, dsecond = carry
      dx, df, ds = trained_pair(x, first, second, dot_generals=dot_generals)
      carry = dx, dfirst + df, dsecond + ds
    return carry
  carry = x, jnp.zeros_like(first), jnp.zeros_like(second)
  block = max(1, MAX_UNROLLED_PRODUCTS // 6)
  blocks, rest = divmod(chain, block) if chain > block else (0, chain)
  if blocks:
    carry = jax.lax.fori_loop(0, blocks, lambda _, c: pairs(c, block), carry)
  return pairs(carry, rest)


def train_chain_program(chain: int, *, mesh, dtype, batch: int, rows: int,
                        dims: tuple[int, int], dot_generals):
  """A call of trained_pairs on each device, ready on the mesh, and its FLOPs.

  Each device runs its (batch, rows, k) block of a batch-sharded array
  through replicated (k, n) and (n, k) kernels and back, and keeps its own
  kernel gradients (no all-reduce: the matmuls alone). 12 batch rows k n
  FLOPs a pair and device: the forward's two products, then both gradients
  of each.
  """
  replicated, sharded = measure.data_parallel_shardings(mesh)
  k, n = dims

  def per_device(x, first, second):
    x, dfirst, dsecond = trained_pairs(x, first, second, chain=chain,
                                       dot_generals=dot_generals)
    return x, dfirst[None], dsecond[None]

  program = jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(sharded.spec, replicated.spec, replicated.spec),
      out_specs=(sharded.spec,) * 3, check_vma=False)  # Per device, by hand.

  def make(key):
    x_key, kernel_key = jax.random.split(key)
    return (jax.random.normal(x_key, (mesh.size * batch, rows, k), dtype),
            *projection_pair(kernel_key, k, n, dtype=dtype))

  x, first, second = jax.jit(
      make, out_shardings=(sharded, replicated, replicated))(
          jax.random.PRNGKey(0))
  compiled = jax.jit(program).lower(x, first, second).compile()
  flops = chain * 12 * batch * rows * k * n * mesh.size
  return (lambda: jax.block_until_ready(compiled(x, first, second))), flops


def matmul_ceiling_fraction(matmuls, ratio_to_peak: dict, *,
                            train: bool = False) -> float:
  """Model FLOP/s over the peak's were nothing but matmuls, each at its rate.

  ratio_to_peak: a matmul name's FLOP/s / the peak's (1 where absent); each
  matmul's time adds up. train: model FLOPs are 3x the forward's (as MFU's),
  and each matmul runs 3x (forward, input and kernel gradients), the stem 2x
  (no gradient flows into the images).
  """
  runs = lambda m: (2 if m.name == 'stem' else 3) if train else 1
  model_flops = (3 if train else 1) * sum(m.flops for m in matmuls)
  return model_flops / sum(runs(m) * m.flops / ratio_to_peak.get(m.name, 1.0)
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
  """The model's matmuls alone, at their own shapes: MFU's ceilings.

  Each mixing MLP's two products are chained (k -> n -> k) on the rows one
  device holds at `batch_size`, and, for training, run forward and backward
  (train_chain_program, with the model's kernel-gradient forms). All are timed
  in `rounds` turns with the `square` reference (square_reference), one call
  of each per turn; a chain's rate is its best call over the peak that the
  square's best stands for. `fraction` and `train_fraction`: the MFU
  inference and training would reach if nothing but their matmuls took time,
  at those rates, the stem and the head at the peak (matmul_ceiling_fraction);
  upper bounds.
  """
  per_device = batch_size // mesh.size
  matmuls = models.forward_matmuls(model, image_size=image_size)
  groups = {}
  for matmul in matmuls:
    groups.setdefault(matmul.name, []).append(matmul)
  chains, train_chains = {}, {}
  for name, group in groups.items():
    if len(group) == 1:  # The stem, the head: no chain of their own.
      continue
    first, second = group  # (rows, k) @ (k, n), then (rows, n) @ (n, k).
    chains[name] = chain_long_enough(
        mesh, dtype, rows=first.rows * per_device,
        dims=(first.k, first.n, second.n), min_seconds=min_seconds,
        repeats=1)[:2]
    trained = functools.partial(
        train_chain_program, mesh=mesh, dtype=dtype, batch=per_device,
        rows=first.rows, dims=(first.k, first.n),
        dot_generals=model.mixing_dot_generals(name))
    train_chains[name] = grown_until(trained, cycle=1, min_seconds=min_seconds,
                                     repeats=1)[:2]
  timed = [*chains.values(), *train_chains.values()]
  seconds = measure.time_in_turns(
      [square['call']] + [call for call, _ in timed], turns=rounds)
  peak = peak_at(square, seconds[0])
  rates = [flops / min(times) / peak
           for (_, flops), times in zip(timed, seconds[1:])]
  ratio_to_peak = dict(zip(chains, rates[:len(chains)]))
  train_ratio_to_peak = dict(zip(train_chains, rates[len(chains):]))
  return {'fraction': matmul_ceiling_fraction(matmuls, ratio_to_peak),
          'ratio_to_peak': ratio_to_peak,
          'train_fraction': matmul_ceiling_fraction(
              matmuls, train_ratio_to_peak, train=True),
          'train_ratio_to_peak': train_ratio_to_peak,
          'square_dim': square['dim'], 'rounds': rounds}
