"""The MNIST classifier behind the sample-quality metrics, as both backends must build it.

Inception features mean little on 28x28 digits, so we train a small convnet on MNIST itself
and ship its weights (gan_common/assets/mnist_classifier.safetensors, ~1.7 MB). Its SHA-256 is
pinned below: a metric is only comparable across runs if it comes from the same network, and
the pin is what makes gan_jax and gan_torch score with the same one.

The network, on inputs in [-1, 1] (uint8 / 127.5 - 1), NHWC:
    normalise (x - PIXEL_MEAN) / PIXEL_STD
    conv1 3x3, 1 -> 32, SAME, ReLU, max-pool 2   # (B, 14, 14, 32)
    conv2 3x3, 32 -> 64, SAME, ReLU, max-pool 2  # (B, 7, 7, 64)
    flatten in NHWC order                        # (B, 3136)
    fc1 3136 -> 128, ReLU                        # (B, 128): the features
    fc2 128 -> 10                                # (B, 10): logits
Kernels are stored as in the neutral weight file: convolutions HWIO, dense (in, out).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from gan_common.errors import UserError

CLASSIFIER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "mnist_classifier.safetensors")
# SHA-256 of the shipped file; retraining changes it, and with it every reported metric.
CLASSIFIER_SHA256 = "37c29921259821cc0bca5140c9ac5dfa57fd08a1a96c10fb8fff20a1f7c754a1"
FORMAT = "gan-mnist-classifier-v1"
LAYERS = ("conv1", "conv2", "fc1", "fc2")
FEATURE_DIM = 128
NUM_CLASSES = 10
# MNIST's training pixel mean and std (0.1307, 0.3081 on [0, 1]) moved to the [-1, 1] scale:
# centring the mostly -1 background speeds training and keeps fewer ReLUs dead.
PIXEL_MEAN, PIXEL_STD = 2 * 0.1307 - 1, 2 * 0.3081
RETRAIN = "python -m gan_jax.train_classifier --out gan_common/assets/mnist_classifier.safetensors"

SHAPES = {
    "classifier.conv1.kernel": (3, 3, 1, 32),  # HWIO
    "classifier.conv1.bias": (32,),
    "classifier.conv2.kernel": (3, 3, 32, 64),
    "classifier.conv2.bias": (64,),
    "classifier.fc1.kernel": (7 * 7 * 64, FEATURE_DIM),  # (in, out); rows in NHWC flatten order
    "classifier.fc1.bias": (FEATURE_DIM,),
    "classifier.fc2.kernel": (FEATURE_DIM, NUM_CLASSES),
    "classifier.fc2.bias": (NUM_CLASSES,),
}


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_classifier_tensors(path: str = CLASSIFIER_PATH, expected_sha256: str | None = CLASSIFIER_SHA256) -> dict[str, np.ndarray]:
    """The weight file's float32 tensors keyed as SHAPES, refused unless its SHA-256 is the pinned
    one (None skips the check) and every tensor has its shape."""
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise UserError(f"no classifier weights at {path}; reinstall the package or retrain with: {RETRAIN}")
    digest = file_sha256(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise UserError(
            f"classifier weights {path} have sha256 {digest[:16]}..., expected {expected_sha256[:16]}...; "
            f"the file is corrupt or from another training run, so its metrics would not be comparable. "
            f"Reinstall the package (or retrain with {RETRAIN} and update CLASSIFIER_SHA256)"
        )
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})")
    for key, want in SHAPES.items():
        if key not in tensors or tensors[key].shape != want:
            got = tensors[key].shape if key in tensors else "missing"
            raise UserError(f"{path}: {key} is {got}, expected {want}; not an MNIST classifier file")
    return {key: np.asarray(tensors[key], np.float32) for key in SHAPES}
