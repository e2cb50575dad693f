"""Image features for KID on data without a shipped classifier: a fixed random convnet, run in NumPy.

Why a random network. A pretrained one (Inception, our MNIST classifier) exists only for some data,
and Kynkäänniemi et al. (ICLR 2023, "The role of ImageNet classes in Fréchet Inception Distance")
show that ImageNet features make FID partly a test of ImageNet classes. Naeem et al. (ICML 2020,
"Reliable fidelity and diversity metrics", section 5) found the features of a randomly initialised
convnet usable for sample metrics on data far from ImageNet, and random shallow convnets already
capture image statistics well enough to synthesise textures (Ustyuzhaninov et al., ICLR 2017). What
such features see: local statistics at three scales (edges, colours, strokes, textures over 3, 7
and 15 pixels). What they miss: meaning, and where things are (each feature is a mean over all
positions; the C2ST, which trains its own net, sees layout). So `kid_random` is a check of
low-level statistics, not of content, and its scale is its own: never compare it with the
classifier KID (`kid`) or across RandomFeatureSpecs.

Why NumPy: one code path, so gan_jax and gan_torch report the same numbers with no parity to keep;
2,000 images of 32x32x3 cost ~0.2 s on a 2-core CPU (docs/evaluation.md has the measurements).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class RandomFeatureSpec:
    """The network: 3x3 stride-2 padding-1 convolutions without bias, each followed by ReLU."""

    channels: tuple[int, ...] = (16, 32, 64)  # (H, W) -> ceil(H/2) -> ceil(H/4) -> ceil(H/8); 112 features in all
    seed: int = 0  # the weights: N(0, 2 / fan_in) (He), drawn from this seed; changing it changes every kid_random
    chunk: int = 256  # images per forward pass: bounds the im2col buffer (256 x 32 x 32 x 27 floats = 28 MB at 64x64)


SPEC = RandomFeatureSpec()


def weights(in_channels: int, spec: RandomFeatureSpec = SPEC) -> list[np.ndarray]:
    """The kernels, HWIO float32: (3, 3, C, c1), (3, 3, c1, c2), ... The same for a given C and spec everywhere."""
    rng = np.random.default_rng([spec.seed, in_channels])
    widths = (in_channels,) + tuple(spec.channels)
    return [(rng.standard_normal((3, 3, i, o)) * math.sqrt(2.0 / (9 * i))).astype(np.float32)
            for i, o in zip(widths[:-1], widths[1:], strict=False)]


def conv3x3_stride2(h: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(B, H, W, C) * (3, 3, C, O) -> (B, ceil(H/2), ceil(W/2), O), padding 1, as nine strided slices and one matmul."""
    b, height, width, c = h.shape
    ho, wo = -(-height // 2), -(-width // 2)
    padded = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H + 2, W + 2, C)
    taps = [padded[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2, :] for i in range(3) for j in range(3)]
    cols = np.concatenate(taps, axis=-1).reshape(b * ho * wo, 9 * c)  # (B Ho Wo, 9C) in HWI order
    return (cols @ kernel.reshape(9 * c, -1)).reshape(b, ho, wo, -1)


def random_features(images: np.ndarray, spec: RandomFeatureSpec = SPEC) -> np.ndarray:
    """(N, H, W, C) float images in [-1, 1] -> (N, sum(spec.channels)) float32: per layer, the mean of its
    ReLU map over all positions, layers concatenated."""
    images = np.asarray(images, np.float32)
    kernels = weights(images.shape[-1], spec)
    out = []
    for s in range(0, images.shape[0], spec.chunk):
        h, feats = images[s : s + spec.chunk], []
        for kernel in kernels:
            h = np.maximum(conv3x3_stride2(h, kernel), 0.0)  # (B, H/2^k, W/2^k, c_k)
            feats.append(h.mean(axis=(1, 2)))  # (B, c_k)
        out.append(np.concatenate(feats, axis=1))
    return np.concatenate(out).astype(np.float32, copy=False)  # (N, 112)
