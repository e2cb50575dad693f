"""The classifiers behind the sample-quality metrics, as both backends must build them.

Inception features mean little on 28x28 grey images, so for each dataset we evaluate on, a small
convnet is trained on that dataset itself and its weights ship in gan_common/assets (~1.7 MB
each; CLASSIFIERS below). Each file's SHA-256 is pinned here: a metric is only comparable across
runs if it comes from the same network, and the pin is what makes gan_jax and gan_torch score
with the same one.

The network, the same for every dataset, on inputs in [-1, 1] (uint8 / 127.5 - 1), NHWC:
    normalise (x - spec.pixel_mean) / spec.pixel_std
    conv1 3x3, 1 -> 32, SAME, ReLU, max-pool 2   # (B, 14, 14, 32)
    conv2 3x3, 32 -> 64, SAME, ReLU, max-pool 2  # (B, 7, 7, 64)
    flatten in NHWC order                        # (B, 3136)
    fc1 3136 -> 128, ReLU                        # (B, 128): the features
    fc2 128 -> 10                                # (B, 10): logits
Kernels are stored as in the neutral weight file: convolutions HWIO, dense (in, out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
from safetensors.numpy import load_file

from gan_common.errors import UserError

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
FORMAT = "gan-mnist-classifier-v1"  # the layout below (the MNIST-sized network), whatever the dataset
LAYERS = ("conv1", "conv2", "fc1", "fc2")
FEATURE_DIM = 128
NUM_CLASSES = 10
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


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """One dataset's classifier: the network above with its own weights and input normalisation."""

    dataset: str  # the gan_common.datasets name it was trained on and whose test set is the reference
    filename: str  # under gan_common/assets
    sha256: str  # of the shipped file; retraining changes it, and with it every reported metric
    # The training set's pixel mean and std, moved from [0, 1] to the [-1, 1] scale (2m - 1, 2s): centring
    # the mostly -1 background speeds training and keeps fewer ReLUs dead.
    pixel_mean: float
    pixel_std: float
    min_accuracy: float  # test accuracy train_classifier demands before writing, and the tests of the shipped file
    epochs: int  # train_classifier's default: passes over the 60k training images

    @property
    def path(self) -> str:
        return os.path.join(ASSETS, self.filename)

    @property
    def retrain(self) -> str:
        return f"python -m gan_jax.train_classifier --dataset {self.dataset} --out gan_common/assets/{self.filename}"


CLASSIFIERS = {
    # 99.20% test accuracy after 3 epochs; >= 99% catches a wrong file, layout or scaling.
    "mnist": ClassifierSpec(
        "mnist", "mnist_classifier.safetensors", "37c29921259821cc0bca5140c9ac5dfa57fd08a1a96c10fb8fff20a1f7c754a1",
        pixel_mean=2 * 0.1307 - 1, pixel_std=2 * 0.3081, min_accuracy=0.99, epochs=3),
    # Clothes are harder: 90.94% after 5 epochs (90.21% after 3; shirts, 71%, confused with T-shirts,
    # pullovers and coats, cost most of the rest). >= 90% still catches a wrong file (MNIST's scores
    # 12%) or MNIST's normalisation with these weights (87.5%).
    "fashion_mnist": ClassifierSpec(
        "fashion_mnist", "fashion_mnist_classifier.safetensors",
        "b258ede6dba285c8b55ec6cea191af9f9f9abcfd574e02623c49d0c7f1251c2d",
        pixel_mean=2 * 0.2860 - 1, pixel_std=2 * 0.3530, min_accuracy=0.90, epochs=5),
}
EVAL_DATASETS = tuple(CLASSIFIERS)  # the datasets the metrics (and --eval-every) can score


def classifier_spec(dataset: str) -> ClassifierSpec:
    """The spec of `dataset`'s classifier, or a UserError naming the datasets that have one."""
    if dataset not in CLASSIFIERS:
        raise UserError(f"no metrics classifier for --dataset {dataset}; evaluation scores only "
                        f"{' or '.join(EVAL_DATASETS)}")
    return CLASSIFIERS[dataset]


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_classifier_tensors(dataset: str = "mnist", path: str | None = None, check_sha256: bool = True
                            ) -> dict[str, np.ndarray]:
    """`dataset`'s classifier weights as float32 tensors keyed as SHAPES: the shipped file, or the one at
    `path`; refused unless its SHA-256 is the one pinned for `dataset` (check_sha256=False skips
    that) and every tensor has its shape."""
    spec = classifier_spec(dataset)
    path = spec.path if path is None else path
    if not os.path.isfile(path):
        raise UserError(f"no classifier weights at {path}; reinstall the package or retrain with: {spec.retrain}")
    digest = file_sha256(path)
    if check_sha256 and digest != spec.sha256:
        raise UserError(
            f"classifier weights {path} have sha256 {digest[:16]}..., expected {spec.sha256[:16]}... for {dataset}; "
            f"the file is corrupt or from another training run, so its metrics would not be comparable. "
            f"Reinstall the package (or retrain with {spec.retrain} and update its sha256 in "
            f"gan_common/classifier_spec.py)"
        )
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    for key, want in SHAPES.items():
        if key not in tensors or tensors[key].shape != want:
            got = tensors[key].shape if key in tensors else "missing"
            raise UserError(f"{path}: {key} is {got}, expected {want}; not a metrics classifier file")
    return {key: np.asarray(tensors[key], np.float32) for key in SHAPES}
