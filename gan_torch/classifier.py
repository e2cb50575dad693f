"""The classifiers behind the sample-quality metrics (MNIST's and Fashion-MNIST's), in PyTorch.

The same network as gan_jax.classifier (specified in gan_common.classifier_spec), built from the
same pinned weight files: kernels are converted at load time (HWIO -> OIHW, (in, out) -> (out, in)),
and the (B, 64, 7, 7) map is flattened in NHWC order, so fc1 sees the vector the flax model sees.
Inputs are NHWC on the GAN's scale, uint8 / 127.5 - 1 in [-1, 1].
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_common.classifier_spec import FEATURE_DIM, LAYERS, NUM_CLASSES, classifier_spec, load_classifier_tensors


class MnistClassifier(nn.Module):
    """(B, 28, 28, 1) in [-1, 1] -> logits (B, 10); `features` is the 128-d penultimate layer.

    The MNIST-sized network of every dataset's classifier; `dataset` picks the input normalisation."""

    def __init__(self, dataset: str = "mnist"):
        super().__init__()
        spec = classifier_spec(dataset)
        self.pixel_mean, self.pixel_std = spec.pixel_mean, spec.pixel_std
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)  # flax padding="SAME" for a 3x3, stride 1
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(7 * 7 * 64, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = ((x - self.pixel_mean) / self.pixel_std).permute(0, 3, 1, 2)  # (B, 1, 28, 28), ~zero mean and unit variance
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)  # (B, 32, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 64, 7, 7)
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # (B, 3136) flattened (h, w, c) as flax does: fc1's row order
        return F.relu(self.fc1(h))  # (B, 128), what fc2 sees

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))  # (B, 10) logits


def load_classifier(dataset: str = "mnist", path: str | None = None, check_sha256: bool = True) -> MnistClassifier:
    """`dataset`'s shipped classifier (or the file at `path`) in eval mode, refused unless its SHA-256 is
    the one pinned."""
    tensors = load_classifier_tensors(dataset, path, check_sha256)
    state = {}
    for layer in LAYERS:
        kernel = torch.from_numpy(tensors[f"classifier.{layer}.kernel"])
        # conv HWIO -> OIHW; dense (in, out) -> (out, in)
        state[f"{layer}.weight"] = kernel.permute(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
        state[f"{layer}.bias"] = torch.from_numpy(tensors[f"classifier.{layer}.bias"])
    model = MnistClassifier(dataset)
    model.load_state_dict({k: v.contiguous() for k, v in state.items()})
    return model.eval()


@torch.no_grad()
def forward_numpy(model: MnistClassifier, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 28, 28, 1) in [-1, 1] -> (feats (N, 128), probs (N, 10)) float32, in batches."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise ValueError(f"expected images (N, 28, 28, 1), got {images.shape}")
    feats, probs = [], []
    for s in range(0, images.shape[0], batch_size):
        f = model.features(torch.from_numpy(images[s : s + batch_size]))  # (B, 128)
        feats.append(f.numpy())
        probs.append(torch.softmax(model.fc2(f), dim=1).numpy())  # (B, 10)
    return np.concatenate(feats), np.concatenate(probs)


@functools.cache
def _shipped(dataset: str) -> MnistClassifier:
    return load_classifier(dataset)


def features_and_probs(images: np.ndarray, dataset: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28, 1) float32 in [-1, 1] -> `dataset`'s shipped classifier's (feats (N, 128), probs (N, 10))."""
    return forward_numpy(_shipped(dataset), images)
