"""The nets: Goodfellow et al.'s (2014) MLP (--arch mlp) and a DCGAN (--arch dcgan).

Layers are attributes with the same names as in gan_jax.models (fc1, fc2, ...; fc, bn0,
deconv1, ...), so the neutral weight file maps one to one. The MLP's nn.Linear keeps its
default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which gan_jax copies; the
DCGAN's is the paper's, N(0, 0.02) kernels and N(1, 0.02) BatchNorm scales, in both backends.
Images are NHWC (B, H, W, C) in and out, like gan_jax, so callers need no transposes; the
DCGAN converts to torch's NCHW inside. Train vs eval mode is torch's own: .train() (the
default, what a training step uses) normalises with batch statistics and updates the running
ones; .eval() (sampling, evaluation) uses the running ones. With --conditional, each G has
`label_embed`, an nn.Embedding(10, 10) (default N(0, 1) init) whose row joins z; the MLP's D
has one too, joined to its flat input, and the DCGAN's D is a projection discriminator
(`projection`, an nn.Embedding(10, features), N(0, 0.02)). With --d-norm spectral every weight
of the DCGAN's D carries torch's own spectral_norm parametrization (`_spectral_norm`). Every net
takes optional `labels` (B,) int: conditional nets read them; the others ignore them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from gan_common.config import LABEL_EMBED_DIM, NUM_CLASSES, Config


def _label_embed(config: Config) -> nn.Embedding | None:
    """--conditional: the (NUM_CLASSES, LABEL_EMBED_DIM) table; else None."""
    return nn.Embedding(NUM_CLASSES, LABEL_EMBED_DIM) if config.conditional else None


def _with_label(h: torch.Tensor, label_embed: nn.Embedding | None, labels: torch.Tensor | None) -> torch.Tensor:
    """(B, n) -> (B, n + 10): the labels' embedding joined to h (--conditional); h itself otherwise."""
    return h if label_embed is None else torch.cat([h, label_embed(labels)], dim=1)


class Generator(nn.Module):
    """z (B, latent_dim) ~ N(0, I) [and labels (B,) int, --conditional] -> images (B, H, W, C) in [-1, 1]
    (config.image_shape); hidden widths config.g_hidden_sizes."""

    def __init__(self, config: Config):
        super().__init__()
        self.image_shape = config.image_shape
        self.label_embed = _label_embed(config)
        in_width = config.latent_dim + (LABEL_EMBED_DIM if config.conditional else 0)
        widths = (in_width, *config.g_hidden_sizes, math.prod(self.image_shape))
        self.num_layers = len(widths) - 1
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = _with_label(z, self.label_embed, labels)  # (B, latent_dim [+ 10])
        for i in range(1, self.num_layers):
            h = F.relu(getattr(self, f"fc{i}")(h))  # (B, g_hidden_sizes[i - 1]): (B, 256) then (B, 512) by default
        h = torch.tanh(getattr(self, f"fc{self.num_layers}")(h))  # (B, H*W*C) in [-1, 1]
        return h.reshape(-1, *self.image_shape)  # (B, H, W, C)


class Discriminator(nn.Module):
    """images (B, H, W, C) [and labels (B,) int, --conditional] -> logits (B,): no sigmoid inside,
    the losses use log-sigmoid."""

    def __init__(self, config: Config):
        super().__init__()
        self.label_embed = _label_embed(config)
        image_size = math.prod(config.image_shape)
        widths = (image_size + (LABEL_EMBED_DIM if config.conditional else 0), *config.d_hidden_sizes, 1)
        self.num_layers = len(widths) - 1
        self.leaky_slope = config.leaky_slope
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = _with_label(x.reshape(x.shape[0], -1), self.label_embed, labels)  # (B, H*W*C [+ 10])
        for i in range(1, self.num_layers):
            # (B, d_hidden_sizes[i - 1]): (B, 512) then (B, 256) by default
            h = F.leaky_relu(getattr(self, f"fc{i}")(h), self.leaky_slope)
        return getattr(self, f"fc{self.num_layers}")(h)[:, 0]  # (B,) logits


# ----------------------------------------------------------------------------- DCGAN
def _dcgan_init(module: nn.Module) -> None:
    """Radford et al.: kernels ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), biases 0 (gan_jax draws the same laws)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _spectral_norm(module: nn.Module) -> nn.Module:
    """--d-norm spectral: torch's own parametrization, the spec gan_jax.layers.SpectralNorm follows. The weight
    becomes W / (u^T W v) with W reshaped to (out, -1); each train-mode forward first moves the buffers u, v by
    one power iteration (eval mode does not); the raw W is `parametrizations.weight.original`."""
    return parametrizations.spectral_norm(module, n_power_iterations=1, eps=1e-12, dim=0)


class DcganGenerator(nn.Module):
    """z (B, latent_dim) [and labels (B,) int, --conditional] -> images (B, H, W, C) in [-1, 1]: project to
    (H/2^n, W/2^n, 2^(n-1) c), then n stride-2 transposed convolutions, each halving the channels (n =
    config.dcgan_stages: 2 for 28 and 32 pixels, 3 for 64).

    Layers before a BatchNorm have no bias: the normalisation subtracts it again (its gradient is 0).
    BatchNorm2d's defaults (momentum 0.1, eps 1e-5, unbiased running variance) are the spec.
    """

    def __init__(self, config: Config):
        super().__init__()
        height, width, channels = config.image_shape
        n, c = config.dcgan_stages, config.g_channels
        widths = [c * 2 ** (n - 1 - i) for i in range(n)] + [channels]  # n = 2: 2c, c, C
        self.num_stages = n
        self.start = (height >> n, width >> n, widths[0])
        self.label_embed = _label_embed(config)
        in_width = config.latent_dim + (LABEL_EMBED_DIM if config.conditional else 0)
        self.fc = nn.Linear(in_width, math.prod(self.start), bias=False)
        self.bn0 = nn.BatchNorm2d(widths[0])
        for i in range(1, n + 1):  # deconv1 .. deconvn; a BatchNorm after each but the last
            last = i == n
            setattr(self, f"deconv{i}", nn.ConvTranspose2d(widths[i - 1], widths[i], 4, stride=2, padding=1, bias=last))
            if not last:
                setattr(self, f"bn{i}", nn.BatchNorm2d(widths[i]))
        self.apply(_dcgan_init)  # the label embedding keeps nn.Embedding's N(0, 1), as the MLP's

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = _with_label(z, self.label_embed, labels)  # (B, latent_dim [+ 10])
        # fc's outputs are indexed (h, w, c), NHWC's order (the neutral layout): reshape, then to NCHW.
        h = self.fc(h).reshape(-1, *self.start).permute(0, 3, 1, 2)  # (B, 2^(n-1) c, H/2^n, W/2^n)
        h = F.relu(self.bn0(h))
        for i in range(1, self.num_stages):
            h = F.relu(getattr(self, f"bn{i}")(getattr(self, f"deconv{i}")(h)))  # twice the side, half the channels
        h = torch.tanh(getattr(self, f"deconv{self.num_stages}")(h))  # (B, C, H, W) in [-1, 1]
        return h.permute(0, 2, 3, 1)  # (B, H, W, C)


class DcganDiscriminator(nn.Module):
    """images (B, H, W, C) [and labels (B,) int, --conditional] -> logits (B,): n stride-2 convolutions with
    LeakyReLU (n = config.dcgan_stages; channels c, 2c[, 4c]), then one linear logit; with --conditional, plus the
    projection <embed(y), h> (Miyato & Koyama 2018) of D's flattened features h. --d-norm batch puts a BatchNorm
    after every convolution but the first; spectral normalises every weight, the projection's table too."""

    def __init__(self, config: Config):
        super().__init__()
        height, width, channels = config.image_shape
        n, c = config.dcgan_stages, config.d_channels
        widths = [channels] + [c * 2**i for i in range(n)]  # n = 2: C, c, 2c
        features = (height >> n) * (width >> n) * widths[-1]
        self.num_stages = n
        self.leaky_slope = config.leaky_slope
        self.conv1 = nn.Conv2d(channels, c, 4, stride=2, padding=1)  # no normalisation on D's input layer
        for i in range(2, n + 1):  # conv2 .. convn, each followed by bn2 .. bnn under --d-norm batch
            setattr(self, f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], 4, stride=2, padding=1,
                                                bias=not config.d_batch_norm))
            setattr(self, f"bn{i}", nn.BatchNorm2d(widths[i]) if config.d_batch_norm else None)
        self.fc = nn.Linear(features, 1)
        self.projection = nn.Embedding(NUM_CLASSES, features) if config.conditional else None
        self.apply(_dcgan_init)
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, 0.0, 0.02)  # a per-class linear logit: N(0, 0.02) as the kernels
        if config.d_norm == "spectral":  # after the initialisation: torch starts u, v from the initial weights
            convs = [getattr(self, f"conv{i}") for i in range(1, n + 1)]
            for layer in (*convs, self.fc, self.projection):
                if layer is not None:
                    _spectral_norm(layer)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x.permute(0, 3, 1, 2)), self.leaky_slope)  # (B, c, H/2, W/2)
        for i in range(2, self.num_stages + 1):
            h = getattr(self, f"conv{i}")(h)  # (B, 2^(i-1) c, H/2^i, W/2^i)
            norm = getattr(self, f"bn{i}")
            h = F.leaky_relu(h if norm is None else norm(h), self.leaky_slope)
        # Flattened in (h, w, c) order, as gan_jax's NHWC, so fc's kernel is the same matrix in both.
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # (B, features)
        logits = self.fc(h)[:, 0]  # (B,)
        if self.projection is not None:
            logits = logits + (self.projection(labels) * h).sum(dim=1)  # + <embed(y), h>
        return logits


def build_generator(config: Config) -> nn.Module:
    """G for `config` (--arch), in train mode, drawn from torch's global RNG (gan_torch.step.create seeds it)."""
    return DcganGenerator(config) if config.arch == "dcgan" else Generator(config)


def build_discriminator(config: Config) -> nn.Module:
    """D for `config` (--arch, --d-norm, --conditional), in train mode, from torch's global RNG."""
    return DcganDiscriminator(config) if config.arch == "dcgan" else Discriminator(config)
