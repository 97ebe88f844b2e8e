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
"""Mixer's kernel gradients in forms XLA:CPU runs faster: a train-step option.

A Dense layer's kernel gradient x.T @ dy contracts the long batch axis of two
row-major activations, a form XLA:CPU hands to Eigen rather than to its faster
YNNPACK matmuls (which want the left operand contracted over its last axis).
`forms()` makes every MixerBlock's Dense layers compute the same forward
product, the same input gradient and the same kernel gradient up to float
rounding, the latter reshaped: per example then summed in the token-mixing
MLP, with the smaller operand transposed in the channel-mixing MLP. The model
and its parameters are untouched; the train step turns it on when
`config.cpu_kernel_grads` is set (experiments/README.md has the speed it buys
on a CPU; accelerators gain nothing from it).
"""

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _dense(x, kernel):
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _input_grad(dy, kernel):
  return jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def per_example(x, kernel, left: str):
  """(batch, rows, k) @ (k, n), the kernel gradient summed over examples.

  `left`: the operand on the left of each example's product, 'x' (x_b.T @
  dy_b) or 'dy' ((dy_b.T @ x_b).T). YNNPACK takes the product when that
  operand is a transpose of a row-major array, as the token-mixing MLP's input
  is for its first layer and its output gradient for its second.
  """
  del left  # The backward's.
  return _dense(x, kernel)


def _per_example_fwd(x, kernel, left):
  del left
  return _dense(x, kernel), (x, kernel)


def _per_example_bwd(left, residuals, dy):
  x, kernel = residuals
  # One matmul per example, then their sum, in float32.
  product = lambda a, b: jax.lax.dot_general(
      a, b, (((1,), (1,)), ((0,), (0,))),
      preferred_element_type=jnp.float32).sum(0)
  dkernel = product(x, dy) if left == 'x' else product(dy, x).T
  return _input_grad(dy, kernel), dkernel.astype(kernel.dtype)


per_example.defvjp(_per_example_fwd, _per_example_bwd)


@jax.custom_vjp
def transposed_operand(x, kernel):
  """(..., k) @ (k, n), the kernel gradient a row-major matmul: the smaller
  of x and dy is transposed into a buffer of its own, and for k > n the
  (n, k) product is transposed back."""
  return _dense(x, kernel)


def _transposed_operand_fwd(x, kernel):
  return _dense(x, kernel), (x, kernel)


def _transposed_operand_bwd(residuals, dy):
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


transposed_operand.defvjp(_transposed_operand_fwd, _transposed_operand_bwd)

# (MLP name, Dense name) in a MixerBlock -> the product with its form.
FORMS = {
    ('token_mixing', 'Dense_0'): functools.partial(per_example, left='x'),
    ('token_mixing', 'Dense_1'): functools.partial(per_example, left='dy'),
    ('channel_mixing', 'Dense_0'): transposed_operand,
    ('channel_mixing', 'Dense_1'): transposed_operand,
}


def _form_of(context, args, kwargs):
  """The product for this call, or None to leave the call as it is."""
  dense = context.module
  if (type(dense) is not nn.Dense or context.method_name != '__call__' or
      len(args) != 1 or kwargs or dense.precision is not None or
      dense.dot_general is not None or dense.dot_general_cls is not None):
    return None
  path = tuple(dense.scope.path[-2:])
  if path[:1] == ('token_mixing',) and args[0].ndim != 3:
    return None
  return FORMS.get(path)


def _interceptor(next_fun, args, kwargs, context):
  form = _form_of(context, args, kwargs)
  if form is None:
    return next_fun(*args, **kwargs)
  # nn.Dense.__call__, with `form` as the product.
  dense, x = context.module, args[0]
  kernel = dense.param('kernel', dense.kernel_init,
                       (x.shape[-1], dense.features), dense.param_dtype)
  bias = (dense.param('bias', dense.bias_init, (dense.features,),
                      dense.param_dtype) if dense.use_bias else None)
  x, kernel, bias = dense.promote_dtype(x, kernel, bias, dtype=dense.dtype)
  y = form(x, kernel)
  return y if bias is None else y + bias


def forms(enabled: bool = True):
  """A context in which every Mixer block's Dense layers use the forms above
  (where `enabled`; otherwise one that changes nothing)."""
  if not enabled:
    return contextlib.nullcontext()
  return nn.intercept_methods(_interceptor)
