"""The classifier two-sample test in JAX: the convnet of gan_common.c2st, trained with optax's Adam
in one jitted `lax.scan` over the planned minibatches (the training half on the device once), then
evaluated on the test half. gan_torch.c2st is the same network from the same initial weights."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_common.c2st import C2stPlan, plan, result
from gan_jax.layers import leaky_relu

Params = dict[str, jax.Array]


def conv3x3_stride2(h: jax.Array, kernel: jax.Array) -> jax.Array:
    """(B, H, W, C) * (3, 3, C, O) HWIO, stride 2, padding 1 (torch's Conv2d(C, O, 3, 2, 1)) -> (B, ceil(H/2),
    ceil(W/2), O), as nine strided slices and one matmul: XLA:CPU's own strided convolution is ~20x slower to
    differentiate here (measured 100 ms against 5 ms per Adam step at batch 128 on 28x28)."""
    _, height, width, c = h.shape
    ho, wo = -(-height // 2), -(-width // 2)
    padded = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H + 2, W + 2, C)
    taps = [padded[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(taps, axis=-1) @ kernel.reshape(9 * c, -1)  # (B, Ho, Wo, 9C) in HWI order @ (9C, O)


def logits(params: Params, x: jax.Array, negative_slope: float) -> jax.Array:
    """(B, H, W, C) -> (B,) logits of "generated"."""
    h = x
    for name in ("conv1", "conv2"):
        h = conv3x3_stride2(h, params[f"{name}.kernel"])
        h = leaky_relu(h + params[f"{name}.bias"], negative_slope)  # (B, H/2, W/2, 16), then (B, H/4, W/4, 32)
    h = h.reshape(h.shape[0], -1)  # (B, H/4 * W/4 * 32), flattened (h, w, c)
    return (h @ params["head.kernel"] + params["head.bias"])[:, 0]


@functools.partial(jax.jit, static_argnames=("lr", "negative_slope"))
def train(params: Params, x: jax.Array, y: jax.Array, order: jax.Array, lr: float, negative_slope: float) -> Params:
    """Adam on the mean logistic loss, one step per row of `order` (steps, B); returns the trained weights."""
    tx = optax.adam(lr)

    def loss_fn(p, xb, yb):
        return optax.sigmoid_binary_cross_entropy(logits(p, xb, negative_slope), yb).mean()  # logits: stable

    def step(carry, rows):
        p, opt_state = carry
        grads = jax.grad(loss_fn)(p, x[rows], y[rows])  # (B, H, W, C) gathered on the device
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), order)
    return params


@functools.partial(jax.jit, static_argnames="negative_slope")
def predict(params: Params, x: jax.Array, negative_slope: float) -> jax.Array:
    """(N, H, W, C) -> (N,) 0/1 predictions, 1 = generated (a logit of exactly 0 counts as real)."""
    per_image = jax.lax.map(lambda xi: logits(params, xi[None], negative_slope)[0], x, batch_size=1000)  # (N,)
    return (per_image > 0).astype(jnp.float32)


def train_and_predict(p: C2stPlan) -> np.ndarray:
    """A gan_common.c2st.C2stPlan's test-half predictions (2t,) after training on its training half."""
    spec = p.spec
    params = train({k: jnp.asarray(v) for k, v in p.params.items()}, jnp.asarray(p.x_train), jnp.asarray(p.y_train),
                   jnp.asarray(p.order), spec.lr, spec.negative_slope)
    return np.asarray(predict(params, jnp.asarray(p.x_test), spec.negative_slope))


def c2st(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict[str, float | int]:
    """C2ST of (N, H, W, C) real against (M, H, W, C) generated float images: accuracy on the held-out
    half, its 95% interval, the p-value of "indistinguishable" and the test-half size (gan_common.c2st)."""
    p = plan(real, fake, seed)
    return result(train_and_predict(p), p.y_test)
