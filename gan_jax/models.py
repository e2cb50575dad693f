"""The nets: Goodfellow et al.'s (2014) MLP (--arch mlp) and a DCGAN (--arch dcgan).

Layers are attributes with the same names as in gan_torch.models (fc1, fc2, ...; fc, bn0,
deconv1, ...), so the neutral weight file maps one to one. The MLP's initialisation copies
PyTorch's nn.Linear distribution, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases;
the DCGAN's is the paper's, N(0, 0.02) for kernels and N(1, 0.02) for BatchNorm scales, in
both backends. So independently initialised runs of the two backends play statistically the
same game. With --conditional, each G has `label_embed`, a (10, 10) table initialised N(0, 1)
like torch's nn.Embedding, whose row joins z; the MLP's D has one too, joined to its flat input,
and the DCGAN's D is a projection discriminator (`projection`, a (10, features) table, N(0, 0.02)).
With --d-norm spectral every weight of the DCGAN's D is spectrally normalised (`SpectralNorm`).

Every net takes `train`: True normalises with the batch's statistics and updates the running
ones (BatchStat variables; spectral norm's u and v are BatchStats too), False uses the running
statistics and changes nothing (sampling, evaluation). The MLP has no statistics: its two modes
are the same function. Every net also takes `labels` (B,) int: conditional nets read them; the
others ignore them.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from gan_common.config import LABEL_EMBED_DIM, NUM_CLASSES, Config
from gan_jax.layers import (
    DCGAN_INIT,
    BatchNorm,
    Embed,
    Linear,
    dcgan_linear,
    leaky_relu,
    strided_conv,
    strided_deconv,
    torch_linear_init,
)


def compute_dtype(config: Config):
    """The dtype of matmuls and activations (--precision); None: the parameters' own (float32, or float64 in tests)."""
    return jnp.bfloat16 if config.precision == "bf16" else None



def _linear(n_in: int, n_out: int, config: Config, rngs: nnx.Rngs) -> Linear:
    init = torch_linear_init(n_in)
    dtype = compute_dtype(config)
    return Linear(n_in, n_out, kernel_init=init, bias_init=init, dtype=dtype, param_dtype=jnp.float32,
                  preferred_element_type=None if dtype is None else jnp.float32, rngs=rngs)



def _label_embed(config: Config, rngs: nnx.Rngs) -> Embed | None:
    """--conditional: the (NUM_CLASSES, LABEL_EMBED_DIM) table, N(0, 1) as torch's nn.Embedding; else None."""
    if not config.conditional:
        return None
    return Embed(NUM_CLASSES, LABEL_EMBED_DIM, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)


def _with_label(h: jax.Array, label_embed: Embed | None, labels: jax.Array | None) -> jax.Array:
    """(B, n) -> (B, n + 10): the labels' embedding joined to h (--conditional); h itself otherwise."""
    return h if label_embed is None else jnp.concatenate([h, label_embed(labels)], axis=1)



class Generator(nnx.Module):
    """z (B, latent_dim) ~ N(0, I) [and labels (B,) int, --conditional] -> images (B, H, W, C) in [-1, 1],
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
        h = _with_label(z, self.label_embed, labels)  # (B, latent_dim [+ 10])
        for i in range(1, self.num_layers):
            h = jax.nn.relu(getattr(self, f"fc{i}")(h))  # (B, 256) then (B, 512)
        h = jnp.tanh(getattr(self, f"fc{self.num_layers}")(h))  # (B, H W C) in [-1, 1]
        return h.reshape(-1, *self.image_shape)


class Discriminator(nnx.Module):
    """images (B, H, W, C) [and labels (B,) int, --conditional] -> logits (B,) in the compute dtype:
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
        h = _with_label(x.reshape(x.shape[0], -1), self.label_embed, labels)  # (B, H W C [+ 10])
        for i in range(1, self.num_layers):
            h = leaky_relu(getattr(self, f"fc{i}")(h), self.leaky_slope)  # (B, 512) then (B, 256)
        return getattr(self, f"fc{self.num_layers}")(h)[:, 0]  # (B,) logits



# ----------------------------------------------------------------------------- DCGAN
class DcganGenerator(nnx.Module):
    """z (B, latent_dim) [and labels (B,) int, --conditional] -> images (B, H, W, C) in [-1, 1]: project to
    (H/2^n, W/2^n, 2^(n-1) c), then n stride-2 transposed convolutions, each halving the channels (n =
    config.dcgan_stages: 2 for 28 and 32 pixels, 3 for 64).

    Layers before a BatchNorm have no bias: the normalisation subtracts it again (its gradient is 0).
    """

    def __init__(self, config: Config, rngs: nnx.Rngs):
        height, width, channels = config.image_shape
        n, c = config.dcgan_stages, config.g_channels
        widths = [c * 2 ** (n - 1 - i) for i in range(n)] + [channels]  # n = 2: 2c, c, C
        self.num_stages = n
        self.start = (height >> n, width >> n, widths[0])
        self.label_embed = _label_embed(config, rngs)
        in_width = config.latent_dim + (LABEL_EMBED_DIM if config.conditional else 0)
        dtype = compute_dtype(config)
        self.fc = dcgan_linear(in_width, math.prod(self.start), rngs, use_bias=False, dtype=dtype)
        self.bn0 = BatchNorm(widths[0], rngs)
        for i in range(1, n + 1):  # deconv1 .. deconvn; a BatchNorm after each but the last
            last = i == n
            setattr(self, f"deconv{i}", strided_deconv(widths[i - 1], widths[i], rngs, use_bias=last, dtype=dtype,
                                                       impl=config.conv_impl))
            if not last:
                setattr(self, f"bn{i}", BatchNorm(widths[i], rngs))

    def __call__(self, z: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array:
        h = _with_label(z, self.label_embed, labels)  # (B, latent_dim [+ 10])
        h = self.fc(h).reshape(-1, *self.start)  # (B, H/2^n, W/2^n, 2^(n-1) c): the flat index is NHWC's, (h, w, c)
        h = jax.nn.relu(self.bn0(h, train))
        for i in range(1, self.num_stages):
            h = jax.nn.relu(getattr(self, f"bn{i}")(getattr(self, f"deconv{i}")(h), train))  # twice the side
        return jnp.tanh(getattr(self, f"deconv{self.num_stages}")(h))  # (B, H, W, C) in [-1, 1]


class DcganDiscriminator(nnx.Module):
    """images (B, H, W, C) [and labels (B,) int, --conditional] -> logits (B,): n stride-2 convolutions with
    LeakyReLU (n = config.dcgan_stages; channels c, 2c[, 4c]), then one linear logit; with --conditional, plus the
    projection <embed(y), h> (Miyato & Koyama 2018) of D's flattened features h. --d-norm batch puts a BatchNorm
    after every convolution but the first; spectral normalises every weight, the projection's table too."""

    def __init__(self, config: Config, rngs: nnx.Rngs):
        height, width, channels = config.image_shape
        n, c = config.dcgan_stages, config.d_channels
        widths = [channels] + [c * 2**i for i in range(n)]  # n = 2: C, c, 2c
        spectral = config.d_norm == "spectral"
        features = (height >> n) * (width >> n) * widths[-1]
        self.num_stages = n
        self.leaky_slope = config.leaky_slope
        dtype = compute_dtype(config)
        # no normalisation on D's input layer (the paper's rule for BatchNorm; spectral norm has none)
        self.conv1 = strided_conv(channels, c, rngs, spectral=spectral, dtype=dtype, impl=config.conv_impl)
        for i in range(2, n + 1):  # conv2 .. convn, each followed by bn2 .. bnn under --d-norm batch
            setattr(self, f"conv{i}", strided_conv(widths[i - 1], widths[i], rngs, use_bias=not config.d_batch_norm,
                                                   spectral=spectral, dtype=dtype, impl=config.conv_impl))
            setattr(self, f"bn{i}", BatchNorm(widths[i], rngs) if config.d_batch_norm else None)
        self.fc = dcgan_linear(features, 1, rngs, spectral=spectral, dtype=dtype)
        # (10, features), N(0, 0.02) as the kernels: a per-class linear logit, added to fc's
        self.projection = (Embed(NUM_CLASSES, features, embedding_init=DCGAN_INIT, spectral=spectral, rngs=rngs)
                           if config.conditional else None)

    def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array:
        h = leaky_relu(self.conv1(x, train), self.leaky_slope)  # (B, H/2, W/2, c)
        for i in range(2, self.num_stages + 1):
            h = getattr(self, f"conv{i}")(h, train)  # (B, H/2^i, W/2^i, 2^(i-1) c)
            norm = getattr(self, f"bn{i}")
            h = leaky_relu(h if norm is None else norm(h, train), self.leaky_slope)
        h = h.reshape(h.shape[0], -1)  # (B, features), in (h, w, c) order
        logits = self.fc(h, train)[:, 0]  # (B,)
        if self.projection is not None:
            logits = logits + jnp.sum(self.projection(labels, train) * h, axis=1)  # + <embed(y), h>
        return logits



def build_generator(config: Config, rngs: nnx.Rngs) -> nnx.Module:
    return DcganGenerator(config, rngs) if config.arch == "dcgan" else Generator(config, rngs)


def build_discriminator(config: Config, rngs: nnx.Rngs) -> nnx.Module:
    return DcganDiscriminator(config, rngs) if config.arch == "dcgan" else Discriminator(config, rngs)
