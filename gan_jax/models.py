"""The nets: Goodfellow et al.'s (2014) MLP (--arch mlp) and a DCGAN (--arch dcgan).

Layers are attributes with the same names as in gan_torch.models (fc1, fc2, ...; fc, bn0,
deconv1, ...), so the neutral weight file maps one to one. The MLP's initialisation copies
PyTorch's nn.Linear distribution, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases;
the DCGAN's is the paper's, N(0, 0.02) for kernels and N(1, 0.02) for BatchNorm scales, in
both backends. So independently initialised runs of the two backends play statistically the
same game. With --conditional (MLP only), each net also has `label_embed`, a (10, 10) table
initialised N(0, 1) like torch's nn.Embedding.

Every net takes `train`: True normalises with the batch's statistics and updates the running
ones (BatchStat variables), False uses the running statistics and changes nothing (sampling,
evaluation). The MLP has no statistics: its two modes are the same function. Every net also
takes `labels` (B,) int: the conditional MLP reads them; the others ignore them.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from gan_common.config import LABEL_EMBED_DIM, NUM_CLASSES, Config

IMAGE_SHAPE = (28, 28, 1)  # the MLP's default; nets are built for config.image_shape
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
        self.image_shape = config.image_shape
        self.label_embed = _label_embed(config, rngs)
        in_width = config.latent_dim + (LABEL_EMBED_DIM if config.conditional else 0)
        widths = (in_width, *config.g_hidden_sizes, math.prod(self.image_shape))
        self.num_layers = len(widths) - 1
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", _linear(widths[i], widths[i + 1], config, rngs))

    def __call__(self, z: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array:
        # no statistics: train changes nothing
        h = z  # (B, latent_dim)
        if self.label_embed is not None:
            h = jnp.concatenate([h, self.label_embed(labels)], axis=1)  # (B, latent_dim + 10)
        for i in range(1, self.num_layers):
            h = jax.nn.relu(getattr(self, f"fc{i}")(h))  # (B, 256) then (B, 512)
        h = jnp.tanh(getattr(self, f"fc{self.num_layers}")(h))  # (B, 784) in [-1, 1]
        return h.reshape(-1, *self.image_shape)


class Discriminator(nnx.Module):
    """images (B, 28, 28, 1) [and labels (B,) int, --conditional] -> logits (B,) in the compute dtype:
    no sigmoid inside, the losses use log-sigmoid."""

    def __init__(self, config: Config, rngs: nnx.Rngs):
        self.label_embed = _label_embed(config, rngs)
        image_size = math.prod(config.image_shape)
        widths = (image_size + (LABEL_EMBED_DIM if config.conditional else 0), *config.d_hidden_sizes, 1)
        self.num_layers = len(widths) - 1
        self.leaky_slope = config.leaky_slope
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", _linear(widths[i], widths[i + 1], config, rngs))

    def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array:
        # no statistics: train changes nothing
        h = x.reshape(x.shape[0], -1)  # (B, 784)
        if self.label_embed is not None:
            h = jnp.concatenate([h, self.label_embed(labels)], axis=1)  # (B, 784 + 10)
        for i in range(1, self.num_layers):
            h = jax.nn.leaky_relu(getattr(self, f"fc{i}")(h), self.leaky_slope)  # (B, 512) then (B, 256)
        return getattr(self, f"fc{self.num_layers}")(h)[:, 0]  # (B,) logits


# ----------------------------------------------------------------------------- DCGAN
DCGAN_INIT = nnx.initializers.normal(0.02)  # Radford et al.: kernels ~ N(0, 0.02), biases 0
BN_MOMENTUM = 0.1  # torch's convention: running = (1 - 0.1) running + 0.1 batch (flax's momentum 0.9)
BN_EPS = 1e-5  # torch's and flax's default


class BatchNorm(nnx.Module):
    """torch.nn.BatchNorm2d's maths over the last (channel) axis, NHWC.

    train=True normalises with the batch's mean and biased variance and moves the running
    statistics by BN_MOMENTUM towards the batch mean and the *unbiased* variance (n / (n - 1)
    times the biased one, n = B H W), as torch does; flax's own nnx.BatchNorm would keep the
    biased one. train=False normalises with the running statistics. Statistics are float32
    (or wider) whatever the compute dtype.
    """

    def __init__(self, features: int, rngs: nnx.Rngs):
        self.scale = nnx.Param(1.0 + DCGAN_INIT(rngs.params(), (features,)))  # N(1, 0.02), as the paper
        self.bias = nnx.Param(jnp.zeros((features,)))
        self.mean = nnx.BatchStat(jnp.zeros((features,)))
        self.var = nnx.BatchStat(jnp.ones((features,)))

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if train:
            axes = tuple(range(x.ndim - 1))  # all but channels
            n = math.prod(x.shape[:-1])
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: what normalises the batch
            m = BN_MOMENTUM
            self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
            self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(var) * (n / (n - 1))
        else:
            mean, var = self.mean[...], self.var[...]
        return (x - mean) / jnp.sqrt(var + BN_EPS) * self.scale[...] + self.bias[...]


# The DCGAN's two resampling layers, torch Conv2d(k=4, s=2, p=1) and ConvTranspose2d(k=4, s=2, p=1),
# in lax terms. The transposed one is the transpose of the plain one, whose stride-dilated input is
# padded by k - 1 - p = 2 on each side.
#
# Both carry a hand-written kernel gradient. XLA:CPU computes autodiff's kernel gradients (convolutions
# with batch and feature dimensions swapped) on a slow path: inside the fused loop's while loop,
# D's second convolution's took 1,951 ms against 22 ms outside it, and the transposed one's 174 ms even
# outside (B = 64, 2-core Xeon). Written as 16 strided slices and one matmul, the kernel gradient is the
# same sum in another order, and runs at matmul speed in and out of loops.
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_CONV_PADDING = ((1, 1), (1, 1))
_DECONV_PADDING = ((2, 2), (2, 2))


def conv_kernel_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """d<g, conv(x, k)>/dk for conv(k=4, s=2, p=1): x (B, 2H, 2W, I), g (B, H, W, O) -> (4, 4, I, O).

    conv(x, k)[b, h, w, o] = sum_{i, j, c} x_pad[b, 2h + i, 2w + j, c] k[i, j, c, o], so the gradient
    of k[i, j] is the (I, O) product of x_pad's (i, j)-offset stride-2 slice with g over (b, h, w).
    """
    height, width = g.shape[1:3]
    x_pad = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, 2H + 2, 2W + 2, I)
    patches = jnp.stack([x_pad[:, i:i + 2 * height:2, j:j + 2 * width:2] for i in range(4) for j in range(4)],
                        axis=3)  # (B, H, W, 16, I)
    grad = jnp.einsum("bhwpi,bhwo->pio", patches, g, preferred_element_type=jnp.promote_types(x.dtype, g.dtype))
    return grad.reshape(4, 4, x.shape[-1], g.shape[-1]).astype(jnp.result_type(x, g))


@jax.custom_vjp
def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(B, 2H, 2W, I) -> (B, H, W, O), kernel (4, 4, I, O): lax's convolution, kernel gradient by hand."""
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), _CONV_PADDING, dimension_numbers=_DIMENSION_NUMBERS)


def _conv_fwd(x: jax.Array, kernel: jax.Array):
    return conv(x, kernel), (x, kernel)


def _conv_bwd(residuals, g: jax.Array):
    x, kernel = residuals
    return deconv(g, kernel), conv_kernel_grad(x, g)  # conv's transpose is deconv with the same kernel


conv.defvjp(_conv_fwd, _conv_bwd)


@jax.custom_vjp
def deconv(h: jax.Array, kernel: jax.Array) -> jax.Array:
    """(B, H, W, I) -> (B, 2H, 2W, O), kernel (4, 4, O, I), HWIO of the `conv` it transposes:
    lax.conv_transpose(transpose_kernel=True). By adjointness, <g, deconv(h, k)> = <conv(g, k), h>,
    so its kernel gradient is conv's at input g with cotangent h."""
    return jax.lax.conv_transpose(h, kernel, (2, 2), _DECONV_PADDING, dimension_numbers=_DIMENSION_NUMBERS,
                                  transpose_kernel=True)


def _deconv_fwd(h: jax.Array, kernel: jax.Array):
    return deconv(h, kernel), (h, kernel)


def _deconv_bwd(residuals, g: jax.Array):
    h, kernel = residuals
    return conv(g, kernel), conv_kernel_grad(g, h)


deconv.defvjp(_deconv_fwd, _deconv_bwd)


def _apply(layer: nnx.Conv | nnx.ConvTranspose, x: jax.Array, op: Callable) -> jax.Array:
    """What flax's layer computes, with `op` (conv or deconv) in place of its lax call."""
    bias = layer.bias[...] if layer.bias is not None else None
    x, kernel, bias = layer.promote_dtype((x, layer.kernel[...], bias), dtype=layer.dtype)
    y = op(x, kernel)
    return y if bias is None else y + bias


class Conv(nnx.Conv):
    """nnx.Conv (its parameters, initialisation and layout) computing `conv`: 4x4, stride 2, padding 1."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return _apply(self, x, conv)


class ConvTranspose(nnx.ConvTranspose):
    """nnx.ConvTranspose (its parameters, initialisation and layout) computing `deconv`."""

    def __call__(self, h: jax.Array) -> jax.Array:
        return _apply(self, h, deconv)


def _conv(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True) -> Conv:
    """torch Conv2d(k=4, s=2, p=1): halves H and W. Kernel (4, 4, in, out), HWIO as the neutral file."""
    return Conv(n_in, n_out, (4, 4), strides=(2, 2), padding=_CONV_PADDING, use_bias=use_bias,
                    kernel_init=DCGAN_INIT, rngs=rngs)


def _deconv(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True) -> ConvTranspose:
    """torch ConvTranspose2d(k=4, s=2, p=1): doubles H and W.

    The transpose (gradient) of a stride-2 convolution whose kernel is this layer's, HWIO of
    *that* convolution: (4, 4, n_out, n_in), flax's layout with transpose_kernel=True and the
    neutral file's.
    """
    return ConvTranspose(n_in, n_out, (4, 4), strides=(2, 2), padding=_DECONV_PADDING, transpose_kernel=True,
                         use_bias=use_bias, kernel_init=DCGAN_INIT, rngs=rngs)


def _dcgan_linear(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True) -> Linear:
    return Linear(n_in, n_out, use_bias=use_bias, kernel_init=DCGAN_INIT, param_dtype=jnp.float32, rngs=rngs)


class DcganGenerator(nnx.Module):
    """z (B, latent_dim) -> images (B, H, W, C) in [-1, 1]: project to (H/4, W/4, 2c), upsample twice.

    Layers before a BatchNorm have no bias: the normalisation subtracts it again (its gradient is 0).
    """

    def __init__(self, config: Config, rngs: nnx.Rngs):
        height, width, channels = config.image_shape
        c = config.g_channels
        self.start = (height // 4, width // 4, 2 * c)
        self.fc = _dcgan_linear(config.latent_dim, math.prod(self.start), rngs, use_bias=False)
        self.bn0 = BatchNorm(2 * c, rngs)
        self.deconv1 = _deconv(2 * c, c, rngs, use_bias=False)
        self.bn1 = BatchNorm(c, rngs)
        self.deconv2 = _deconv(c, channels, rngs)

    def __call__(self, z: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array:
        del labels  # unconditional: validate refuses --conditional with --arch dcgan
        h = self.fc(z).reshape(-1, *self.start)  # (B, 7, 7, 2c): the flat index is NHWC's, (h, w, c)
        h = jax.nn.relu(self.bn0(h, train))
        h = jax.nn.relu(self.bn1(self.deconv1(h), train))  # (B, 14, 14, c)
        return jnp.tanh(self.deconv2(h))  # (B, 28, 28, C) in [-1, 1]


class DcganDiscriminator(nnx.Module):
    """images (B, H, W, C) -> logits (B,): two stride-2 convolutions with LeakyReLU, then one linear logit."""

    def __init__(self, config: Config, rngs: nnx.Rngs):
        height, width, channels = config.image_shape
        c = config.d_channels
        self.leaky_slope = config.leaky_slope
        self.conv1 = _conv(channels, c, rngs)  # no normalisation on D's input layer (the paper's rule)
        self.conv2 = _conv(c, 2 * c, rngs, use_bias=not config.d_batch_norm)
        self.bn2 = BatchNorm(2 * c, rngs) if config.d_batch_norm else None
        self.fc = _dcgan_linear((height // 4) * (width // 4) * 2 * c, 1, rngs)

    def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array:
        del labels  # unconditional: validate refuses --conditional with --arch dcgan
        h = jax.nn.leaky_relu(self.conv1(x), self.leaky_slope)  # (B, 14, 14, c)
        h = self.conv2(h)  # (B, 7, 7, 2c)
        if self.bn2 is not None:
            h = self.bn2(h, train)
        h = jax.nn.leaky_relu(h, self.leaky_slope)
        return self.fc(h.reshape(h.shape[0], -1))[:, 0]  # (B,) logits; flattened in (h, w, c) order


def build_generator(config: Config, rngs: nnx.Rngs) -> nnx.Module:
    return DcganGenerator(config, rngs) if config.arch == "dcgan" else Generator(config, rngs)


def build_discriminator(config: Config, rngs: nnx.Rngs) -> nnx.Module:
    return DcganDiscriminator(config, rngs) if config.arch == "dcgan" else Discriminator(config, rngs)
