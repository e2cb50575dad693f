"""Generator and Discriminator of Goodfellow et al. (2014), as in the seed tutorial.

Layers are attributes fc1, fc2, ... (the same names as gan_jax.models), so the neutral
weight file maps one to one. nn.Linear keeps its default initialisation,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, which gan_jax copies.
Images are NHWC (B, 28, 28, 1) in and out, like gan_jax, so callers need no transposes.
With --conditional, each net also has `label_embed`, an nn.Embedding(10, 10) (default N(0, 1) init).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan_common.config import LABEL_EMBED_DIM, NUM_CLASSES, Config

IMAGE_SHAPE = (28, 28, 1)
IMAGE_SIZE = 28 * 28


def _label_embed(config: Config) -> nn.Embedding | None:
    """--conditional: the (NUM_CLASSES, LABEL_EMBED_DIM) table; else None."""
    return nn.Embedding(NUM_CLASSES, LABEL_EMBED_DIM) if config.conditional else None


class Generator(nn.Module):
    """z (B, latent_dim) ~ N(0, I) [and labels (B,) int, --conditional] -> images (B, 28, 28, 1) in [-1, 1]."""

    def __init__(self, config: Config):
        super().__init__()
        self.label_embed = _label_embed(config)
        in_width = config.latent_dim + (LABEL_EMBED_DIM if config.conditional else 0)
        widths = (in_width, *config.g_hidden_sizes, IMAGE_SIZE)
        self.num_layers = len(widths) - 1
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = z  # (B, latent_dim)
        if self.label_embed is not None:
            h = torch.cat([h, self.label_embed(labels)], dim=1)  # (B, latent_dim + 10)
        for i in range(1, self.num_layers):
            h = F.relu(getattr(self, f"fc{i}")(h))  # (B, 256) then (B, 512)
        h = torch.tanh(getattr(self, f"fc{self.num_layers}")(h))  # (B, 784) in [-1, 1]
        return h.reshape(-1, *IMAGE_SHAPE)


class Discriminator(nn.Module):
    """images (B, 28, 28, 1) [and labels (B,) int, --conditional] -> logits (B,): no sigmoid inside,
    the losses use log-sigmoid."""

    def __init__(self, config: Config):
        super().__init__()
        self.label_embed = _label_embed(config)
        widths = (IMAGE_SIZE + (LABEL_EMBED_DIM if config.conditional else 0), *config.d_hidden_sizes, 1)
        self.num_layers = len(widths) - 1
        self.leaky_slope = config.leaky_slope
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], IMAGE_SIZE)  # (B, 784)
        if self.label_embed is not None:
            h = torch.cat([h, self.label_embed(labels)], dim=1)  # (B, 784 + 10)
        for i in range(1, self.num_layers):
            h = F.leaky_relu(getattr(self, f"fc{i}")(h), self.leaky_slope)  # (B, 512) then (B, 256)
        return getattr(self, f"fc{self.num_layers}")(h)[:, 0]  # (B,) logits
