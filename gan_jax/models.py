"""Generator and Discriminator of Goodfellow et al. (2014), as in the seed tutorial.

Layers are attributes fc1, fc2, ... (the same names as gan_torch.models), so the neutral
weight file maps one to one. Initialisation copies PyTorch's nn.Linear distribution,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, so independently initialised
runs of the two backends play statistically the same game. With --conditional, each net
also has `label_embed`, a (10, 10) table initialised N(0, 1) like torch's nn.Embedding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from gan_common.config import LABEL_EMBED_DIM, NUM_CLASSES, Config

IMAGE_SHAPE = (28, 28, 1)
IMAGE_SIZE = 28 * 28


def torch_linear_init(fan_in: int):
    """nn.Linear's default for weights and biases alike: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def compute_dtype(config: Config):
    """The dtype of matmuls and activations (--precision); None: the parameters' own (float32, or float64 in tests)."""
    return jnp.bfloat16 if config.precision == "bf16" else None


class Linear(nnx.Linear):
    """nnx.Linear computing as torch.autocast's fused linear does: inputs, kernel and bias cast to
    the compute dtype, products accumulated and the bias added in float32, the sum rounded once.

    Rounding once matters in bfloat16: with a bf16 sum, D's last bias gradient (a sum over the
    batch of terms that nearly cancel) came out 40% off its float32 value (torch's: 0.06%).
    Without a compute dtype it is plain nnx.Linear.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        return y if self.dtype is None else y.astype(self.dtype)


def _linear(n_in: int, n_out: int, config: Config, rngs: nnx.Rngs) -> Linear:
    init = torch_linear_init(n_in)
    dtype = compute_dtype(config)
    return Linear(n_in, n_out, kernel_init=init, bias_init=init, dtype=dtype, param_dtype=jnp.float32,
                  preferred_element_type=None if dtype is None else jnp.float32, rngs=rngs)


class Embed(nnx.Embed):
    """A label's row of the table, in the table's own dtype (nnx.Embed casts to the dtype it was built
    with, float32, which would round the float64 parity runs); the first Linear casts for --precision bf16."""

    def __call__(self, labels: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], labels, axis=0)  # (B,) int -> (B, LABEL_EMBED_DIM)


def _label_embed(config: Config, rngs: nnx.Rngs) -> Embed | None:
    """--conditional: the (NUM_CLASSES, LABEL_EMBED_DIM) table, N(0, 1) as torch's nn.Embedding; else None."""
    if not config.conditional:
        return None
    return Embed(NUM_CLASSES, LABEL_EMBED_DIM, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)


class Generator(nnx.Module):
    """z (B, latent_dim) ~ N(0, I) [and labels (B,) int, --conditional] -> images (B, 28, 28, 1) in [-1, 1],
    in the compute dtype."""

    def __init__(self, config: Config, rngs: nnx.Rngs):
        self.label_embed = _label_embed(config, rngs)
        in_width = config.latent_dim + (LABEL_EMBED_DIM if config.conditional else 0)
        widths = (in_width, *config.g_hidden_sizes, IMAGE_SIZE)
        self.num_layers = len(widths) - 1
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", _linear(widths[i], widths[i + 1], config, rngs))

    def __call__(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        h = z  # (B, latent_dim)
        if self.label_embed is not None:
            h = jnp.concatenate([h, self.label_embed(labels)], axis=1)  # (B, latent_dim + 10)
        for i in range(1, self.num_layers):
            h = jax.nn.relu(getattr(self, f"fc{i}")(h))  # (B, 256) then (B, 512)
        h = jnp.tanh(getattr(self, f"fc{self.num_layers}")(h))  # (B, 784) in [-1, 1]
        return h.reshape(-1, *IMAGE_SHAPE)


class Discriminator(nnx.Module):
    """images (B, 28, 28, 1) [and labels (B,) int, --conditional] -> logits (B,) in the compute dtype:
    no sigmoid inside, the losses use log-sigmoid."""

    def __init__(self, config: Config, rngs: nnx.Rngs):
        self.label_embed = _label_embed(config, rngs)
        widths = (IMAGE_SIZE + (LABEL_EMBED_DIM if config.conditional else 0), *config.d_hidden_sizes, 1)
        self.num_layers = len(widths) - 1
        self.leaky_slope = config.leaky_slope
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", _linear(widths[i], widths[i + 1], config, rngs))

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        h = x.reshape(x.shape[0], IMAGE_SIZE)  # (B, 784)
        if self.label_embed is not None:
            h = jnp.concatenate([h, self.label_embed(labels)], axis=1)  # (B, 784 + 10)
        for i in range(1, self.num_layers):
            h = jax.nn.leaky_relu(getattr(self, f"fc{i}")(h), self.leaky_slope)  # (B, 512) then (B, 256)
        return getattr(self, f"fc{self.num_layers}")(h)[:, 0]  # (B,) logits
