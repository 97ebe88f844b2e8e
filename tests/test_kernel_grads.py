"""Tests for mixer_jax.kernel_grads: lax's product and gradients, new forms."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer_jax import kernel_grads

DENSE_3D = (((2,), (0,)), ((), ()))
FORMS = {
    'per_example': kernel_grads.per_example_kernel_grad,
    'per_example_dy_left': functools.partial(
        kernel_grads.per_example_kernel_grad, left='dy'),
    'transposed_operand': kernel_grads.transposed_operand_kernel_grad,
}


def value_and_grads(dot_general, x, kernel):
  """The product, and the gradients of a weighted sum of it, lax's or ours."""
  weights = jax.random.normal(jax.random.PRNGKey(2),
                              x.shape[:-1] + kernel.shape[1:])
  loss = lambda x, k: jnp.sum(weights * dot_general(x, k, DENSE_3D))
  return (dot_general(x, kernel, DENSE_3D),
          *jax.grad(loss, argnums=(0, 1))(x, kernel))


# (k, n) both ways round: transposed_operand_kernel_grad transposes x for
# k <= n, dy (and the product) for k > n.
@pytest.mark.parametrize('k,n', [(16, 40), (40, 16)])
@pytest.mark.parametrize('form', FORMS)
def test_forms_match_lax(form, k, n):
  form = FORMS[form]
  x_key, k_key = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(x_key, (3, 7, k))
  kernel = jax.random.normal(k_key, (k, n))
  expected = value_and_grads(jax.lax.dot_general, x, kernel)
  actual = value_and_grads(form, x, kernel)
  np.testing.assert_array_equal(actual[0], expected[0])  # Same product.
  for name, got, want in zip(('product', 'dx', 'dkernel'), actual, expected):
    assert got.shape == want.shape and got.dtype == want.dtype, name
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize('k,n', [(16, 40), (40, 16)])
def test_transposed_operand_grad_has_no_dot_contracting_a_first_lhs_axis(k, n):
  """Every left operand (2-D or 3-D) is contracted over its last axis.

  XLA:CPU hands only such dots to YNNPACK; lax's kernel gradient, compiled,
  contracts its left operand over its first axis (the rows).
  """
  x, kernel = jnp.ones((3, 7, k)), jnp.ones((k, n))

  def lhs_contracting_dims(dot_general):
    grad = jax.grad(lambda x, k: jnp.sum(dot_general(x, k, DENSE_3D)**2),
                    argnums=(0, 1))
    hlo = jax.jit(grad).lower(x, kernel).compile().as_text()
    return re.findall(r' dot\(.*lhs_contracting_dims=\{([\d,]+)\}', hlo)

  stock = lhs_contracting_dims(jax.lax.dot_general)
  ours = lhs_contracting_dims(kernel_grads.transposed_operand_kernel_grad)
  assert len(stock) == len(ours) == 3  # Product, dx and dkernel.
  assert any('0' in dims.split(',') for dims in stock)
  assert not any('0' in dims.split(',') for dims in ours)


@pytest.mark.parametrize('form,x_shape,dimension_numbers', [
    # Not batched, though nn.Dense's own product.
    (kernel_grads.per_example_kernel_grad, (4, 3), (((1,), (0,)), ((), ()))),
    # Contracting the batch axis: not nn.Dense's product.
    (kernel_grads.transposed_operand_kernel_grad, (3, 4, 3),
     (((0,), (0,)), ((), ()))),
])
def test_forms_take_only_dense_products(form, x_shape, dimension_numbers):
  x, kernel = jnp.ones(x_shape), jnp.ones((3, 2))
  with pytest.raises(ValueError, match=form.__name__):
    form(x, kernel, dimension_numbers)
  with pytest.raises(ValueError, match=form.__name__):
    form(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
         preferred_element_type=jnp.float32)


def test_per_example_kernel_grad_takes_x_or_dy_on_the_left():
  with pytest.raises(ValueError, match="left is 'x' or 'dy', got 'kernel'"):
    kernel_grads.per_example_kernel_grad(
        jnp.ones((2, 4, 3)), jnp.ones((3, 2)), DENSE_3D, left='kernel')


@pytest.mark.parametrize('x_shape', [(4, 3), (2, 4, 3)])
def test_dense_dimension_numbers_are_those_nn_dense_passes(x_shape):
  seen = []

  def spy(x, kernel, dimension_numbers, **kwargs):
    seen.append(dimension_numbers)
    return jax.lax.dot_general(x, kernel, dimension_numbers, **kwargs)

  x = jnp.ones(x_shape)
  nn.Dense(2, dot_general=spy).init(jax.random.PRNGKey(0), x)
  assert seen and all(numbers == kernel_grads.dense_dimension_numbers(x.ndim)
                      for numbers in seen)
