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
"""nn.Dense `dot_general`s: the same product, its kernel gradient reshaped.

A Dense layer's kernel gradient x.T @ dy contracts the long batch axis of two
row-major activations, a form XLA:CPU hands to Eigen rather than to its faster
YNNPACK matmuls (which need the left operand contracted over its last axis).
Each function here computes the same forward product and the same input
gradient as lax, and that kernel gradient in a form XLA:CPU runs faster
(experiments/README.md has the measurements). The values are the same sums,
up to float rounding; parameters and checkpoints are untouched.
"""

import functools

import jax
import jax.numpy as jnp


def dense_dimension_numbers(ndim: int):
  """nn.Dense's `dot_general` dimension numbers: (..., k) @ (k, n)."""
  return (((ndim - 1,), (0,)), ((), ()))


def _check_dense_product(name, x, dimension_numbers, precision,
                         preferred_element_type, *, ndim=None):
  if ((ndim is not None and x.ndim != ndim) or
      dimension_numbers != dense_dimension_numbers(x.ndim) or
      precision is not None or preferred_element_type is not None):
    raise ValueError(f'{name} takes nn.Dense\'s product '
                     f'({"(batch, rows, k)" if ndim == 3 else "(..., k)"} '
                     f'inputs @ a (k, n) kernel) only, got {x.ndim}-D inputs '
                     f'and dimension numbers {dimension_numbers}.')


def _dense(x, kernel):
  return jax.lax.dot_general(x, kernel, dense_dimension_numbers(x.ndim))


def _input_grad(dy, kernel):
  return jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_per_example_grad(x, kernel, left):
  del left  # The backward's.
  return _dense(x, kernel)


def _matmul_per_example_grad_fwd(x, kernel, left):
  del left
  return _dense(x, kernel), (x, kernel)


def _matmul_per_example_grad_bwd(left, residuals, dy):
  x, kernel = residuals
  # One matmul per example, then their sum, in float32.
  per_example = lambda a, b: jax.lax.dot_general(
      a, b, (((1,), (1,)), ((0,), (0,))),
      preferred_element_type=jnp.float32).sum(0)
  dkernel = per_example(x, dy) if left == 'x' else per_example(dy, x).T
  return _input_grad(dy, kernel), dkernel.astype(kernel.dtype)


_matmul_per_example_grad.defvjp(_matmul_per_example_grad_fwd,
                                _matmul_per_example_grad_bwd)


def per_example_kernel_grad(x, kernel, dimension_numbers, precision=None,
                            preferred_element_type=None, *, left='x'):
  """(batch, rows, k) @ (k, n); the kernel gradient per example, then summed.

  For the token-mixing MLP, whose kernel gradient contracts batch x channels
  (16,384 for S/32 at batch 32) into a (tokens, D_S) matrix: a batch of
  per-example products runs on YNNPACK, the one long contraction on Eigen.
  `left`: the operand on the left of each product, 'x' (x_b.T @ dy_b) or
  'dy' ((dy_b.T @ x_b).T). YNNPACK takes the product when that operand is a
  transpose of a row-major array, as the token-mixing MLP's input is for its
  first layer and its output gradient for its second.
  """
  _check_dense_product('per_example_kernel_grad', x, dimension_numbers,
                       precision, preferred_element_type, ndim=3)
  if left not in ('x', 'dy'):
    raise ValueError(f"per_example_kernel_grad's left is 'x' or 'dy', got "
                     f'{left!r}.')
  return _matmul_per_example_grad(x, kernel, left)


@jax.custom_vjp
def _matmul_transposed_operand_grad(x, kernel):
  return _dense(x, kernel)


def _matmul_transposed_operand_grad_fwd(x, kernel):
  return _dense(x, kernel), (x, kernel)


def _matmul_transposed_operand_grad_bwd(residuals, dy):
  x, kernel = residuals
  k, n = kernel.shape
  rows, drows = x.reshape(-1, k), dy.reshape(-1, n)
  # The barriers keep XLA from folding the transposes back into the matmul.
  barrier = jax.lax.optimization_barrier
  if k <= n:
    dkernel = barrier(rows.T) @ drows
  else:
    dkernel = barrier(barrier(drows.T) @ rows).T
  return _input_grad(dy, kernel), dkernel


_matmul_transposed_operand_grad.defvjp(_matmul_transposed_operand_grad_fwd,
                                       _matmul_transposed_operand_grad_bwd)


def transposed_operand_kernel_grad(x, kernel, dimension_numbers,
                                   precision=None, preferred_element_type=None):
  """(..., k) @ (k, n); the kernel gradient with its smaller operand transposed.

  x.T @ dy becomes a row-major matmul: the smaller of x and dy (for the
  channel-mixing MLP the C-wide one, a quarter of the D_C-wide other) is
  transposed into a buffer of its own, and for k > n the (n, k) product is
  transposed back, a copy the kernel's size.
  """
  _check_dense_product('transposed_operand_kernel_grad', x, dimension_numbers,
                       precision, preferred_element_type)
  return _matmul_transposed_operand_grad(x, kernel)
