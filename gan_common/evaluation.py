"""Sample-quality evaluation with the shipped classifiers (MNIST's, Fashion-MNIST's), for either backend.

A backend supplies one function, `features_and_probs(images (N, 28, 28, 1) float32 in [-1, 1],
dataset) -> (feats (N, 128), probs (N, 10))` from that dataset's classifier (see
gan_common.classifier_spec); everything else (input checks, the real references, the metric maths
of gan_common.metrics, the evaluate CLI) is here, so both backends report the same numbers under
the same keys. The keys are the same for every dataset but the FID's, `fid_key(dataset)`:
fid_mnist, fid_fashion_mnist.
For a conditional generator, images come with the classes they were asked for (labels) and the
numbers gain CLASS_ACC_KEYS: per class k, the share the classifier calls k, and their mean.
A backend may also supply `c2st(real, generated, seed) -> dict` (gan_{jax,torch}.c2st.c2st, a
classifier two-sample test that trains its own small network, see gan_common.c2st); then the
numbers gain C2ST_KEYS, with the reference's real images as `real`.
FID falls with N, so compare it only at the same N (10000, the size of the reference).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from gan_common import metrics
from gan_common.c2st import C2ST_KEYS
from gan_common.classifier_spec import classifier_spec
from gan_common.datasets import load_dataset
from gan_common.errors import UserError

FeaturesAndProbs = Callable[[np.ndarray, str], tuple[np.ndarray, np.ndarray]]
C2st = Callable[..., dict[str, float | int]]  # c2st(real, generated, seed=0) -> C2ST_KEYS, any (N, H, W, C)

# Every key but the FID's, which names the dataset whose classifier and test set it uses (fid_key).
OTHER_METRIC_KEYS = (
    "kid",
    "kid_std",
    "classifier_score",
    "classes_covered",
    "class_kl",
    "precision",
    "recall",
    "num_samples",
)
# --conditional: accuracy of the generated images per requested class, and its mean over the ten.
CLASS_ACC_KEYS = tuple(f"class_acc_{k}" for k in range(10)) + ("class_acc_mean",)
REFERENCES = ("test", "train")
REFERENCE_SIZE = 10_000
MIN_SAMPLES = 10  # k-NN radii need > 3 points and covariances a few; below ~5000 the numbers are noisy anyway


def fid_key(dataset: str) -> str:
    """The FID's key for runs on `dataset`: fid_mnist, fid_fashion_mnist (a UserError for a dataset without a
    classifier). Named apart because FIDs through different classifiers are different quantities."""
    return f"fid_{classifier_spec(dataset).dataset}"


def metric_keys(dataset: str = "mnist", c2st: bool = True) -> tuple[str, ...]:
    """The keys of `Evaluator(..., dataset).evaluate_images(..., c2st=c2st)` and so of the evaluate CLI
    (--no-c2st: c2st=False), in order (without CLASS_ACC_KEYS)."""
    return (fid_key(dataset),) + OTHER_METRIC_KEYS + (C2ST_KEYS if c2st else ())


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """(N, 28, 28, 1) floats in [-1, 1] as float32, or a UserError saying what is wrong."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        hint = " (scale uint8 images with x / 127.5 - 1)" if images.dtype == np.uint8 else ""
        raise UserError(f"{what} have dtype {images.dtype}, expected float32 in [-1, 1]{hint}")
    if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        hint = " (add a channel axis: x[..., None])" if images.shape[1:] == (28, 28) else ""
        raise UserError(f"{what} have shape {images.shape}, expected (N, 28, 28, 1){hint}")
    if images.shape[0] < MIN_SAMPLES:
        raise UserError(f"{what} hold {images.shape[0]} images; the metrics need at least {MIN_SAMPLES}")
    if not np.all(np.isfinite(images)):
        raise UserError(f"{what} contain NaN or inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:  # 1e-3: float rounding of a tanh output, not a [0, 1] or [0, 255] image
        raise UserError(f"{what} range over [{lo:.3g}, {hi:.3g}], expected [-1, 1] (the GAN's tanh scale)")
    return images.astype(np.float32, copy=False)


def score(
    feats: np.ndarray, probs: np.ndarray, ref: dict[str, np.ndarray], kid_subset_size: int = 1000,
    kid_subsets: int = 100, seed: int = 0, dataset: str = "mnist",
) -> dict[str, float | int]:
    """All metrics of classifier outputs (N, 128) and (N, 10) against `Evaluator.reference_outputs(name)`
    of `dataset`'s evaluator, under metric_keys(dataset, c2st=False)."""
    kid, kid_std = metrics.kernel_inception_distance(feats, ref["feats"], kid_subset_size, kid_subsets, seed)
    coverage = metrics.mode_coverage(probs.argmax(1), ref["labels"])
    precision, recall = metrics.precision_recall(ref["feats"], feats, k=3)
    return {
        fid_key(dataset): metrics.frechet_distance_from_moments(
            *metrics.feature_moments(feats), ref["mu"], ref["sigma"]
        ),
        "kid": kid,
        "kid_std": kid_std,
        "classifier_score": metrics.classifier_score(probs),
        "classes_covered": coverage["classes_covered"],
        "class_kl": coverage["class_kl"],
        "precision": precision,
        "recall": recall,
        "num_samples": int(feats.shape[0]),
    }


def format_table(results: dict[str, float | int]) -> str:
    width = max(len(k) for k in results)
    return "\n".join(
        f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in results.items()
    )


def load_samples(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise UserError(f"no samples file at {path}; expected a .npy of (N, 28, 28, 1) float32 in [-1, 1]")
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npy array ({type(e).__name__}: {e})") from None
    return check_images(images, what=f"samples in {path}")


class Evaluator:
    """The metrics of one dataset as seen through one backend's classifier for it; the real
    references are computed once per instance, since 10k forward passes cost more than scoring a
    few thousand samples. `data_source` and `data_dir` (as in Config) say where that dataset's
    real images are read from; the defaults find them where training does. `c2st`, the backend's
    classifier two-sample test, adds C2ST_KEYS to what asks for them (c2st=True)."""

    def __init__(self, features_and_probs: FeaturesAndProbs, dataset: str = "mnist", data_source: str = "auto",
                 data_dir: str = "", c2st: C2st | None = None):
        self.fid_key = fid_key(dataset)  # a dataset without a classifier fails here, naming those with one
        self.dataset, self.data_source, self.data_dir = dataset, data_source, data_dir
        self.features_and_probs = lambda images: features_and_probs(images, dataset)
        self._c2st = c2st
        self._real: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (images, labels)
        self._references: dict[str, dict[str, np.ndarray]] = {}

    def _real_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in REFERENCES:
            raise UserError(f"unknown reference {name!r}; expected one of {', '.join(REFERENCES)}")
        if name not in self._real:
            data = load_dataset(self.dataset, name, self.data_source, self.data_dir)
            images = data.images[:REFERENCE_SIZE].astype(np.float32) / 127.5 - 1.0  # (10000, 28, 28, 1) in [-1, 1]
            self._real[name] = images, data.labels[:REFERENCE_SIZE]
        return self._real[name]

    def reference_images(self, name: str = "test") -> np.ndarray:
        """10k real images (10000, 28, 28, 1) float32 in [-1, 1]: the dataset's test set, or its first 10k
        training images."""
        return self._real_data(name)[0]

    def reference_outputs(self, name: str = "test") -> dict[str, np.ndarray]:
        """Classifier outputs on 10k real images: the dataset's test set, or its first 10k training images."""
        if name not in self._references:
            images, labels = self._real_data(name)
            feats, probs = self.features_and_probs(images)
            mu, sigma = metrics.feature_moments(feats)
            self._references[name] = {"feats": feats, "probs": probs, "labels": labels, "mu": mu, "sigma": sigma}
        return self._references[name]

    def c2st(self, images: np.ndarray, reference: str = "test", seed: int = 0) -> dict[str, float | int]:
        """C2ST_KEYS of (N, 28, 28, 1) images in [-1, 1] against the reference's real images (min(N, 10k) of each)."""
        if self._c2st is None:
            raise ValueError("this Evaluator was made without a c2st function (evaluators(..., c2st=...))")
        return self._c2st(self.reference_images(reference), check_images(images), seed=seed)

    def evaluate_images(self, images: np.ndarray, reference: str = "test", seed: int = 0,
                        labels: np.ndarray | None = None, c2st: bool = True) -> dict[str, float | int]:
        """All metrics of (N, 28, 28, 1) images in [-1, 1] against 10k real images of the dataset, as one flat dict
        (metric_keys(dataset, c2st)); with `labels` (N,), the classes a conditional G was asked for, also
        CLASS_ACC_KEYS. `seed` draws KID's subsets and the C2ST's split and initial weights."""
        feats, probs = self.features_and_probs(check_images(images))  # (N, 128), (N, 10)
        out = score(feats, probs, self.reference_outputs(reference), seed=seed, dataset=self.dataset)
        if c2st:
            out.update(self.c2st(images, reference, seed))
        return out if labels is None else {**out, **metrics.per_class_accuracy(probs.argmax(1), labels)}

    def fid_and_coverage(self, images: np.ndarray, labels: np.ndarray | None = None,
                         c2st: bool = False) -> dict[str, float | int]:
        """The cheap pair for logging during training: FID against the test set and classes covered
        (and with `labels`, the classes a conditional G was asked for, CLASS_ACC_KEYS; with c2st,
        C2ST_KEYS against the test set, seed 0).

        No k-NN or KID subsets, so a few thousand images cost a second or two on a CPU (the C2ST
        a few more). FID at a given N is comparable only with FID at the same N.
        """
        ref = self.reference_outputs("test")
        feats, probs = self.features_and_probs(check_images(images))
        out = {
            self.fid_key: metrics.frechet_distance_from_moments(
                *metrics.feature_moments(feats), ref["mu"], ref["sigma"]
            ),
            "classes_covered": metrics.mode_coverage(probs.argmax(1), ref["labels"])["classes_covered"],
        }
        if c2st:
            out.update(self.c2st(images))
        return out if labels is None else {**out, **metrics.per_class_accuracy(probs.argmax(1), labels)}

    def real_baselines(self, seed: int = 0, c2st: bool = True) -> dict[str, float | int]:
        """The floor: the first 10k training images scored against the 10k test images (with c2st, also
        the C2ST between the two), plus `classifier_score_real`, the classifier score of the test set itself."""
        train, test = self.reference_outputs("train"), self.reference_outputs("test")
        out = score(train["feats"], train["probs"], test, seed=seed, dataset=self.dataset)
        if c2st:
            out.update(self.c2st(self.reference_images("train"), "test", seed))
        out["classifier_score_real"] = metrics.classifier_score(test["probs"])
        return out


def evaluators(features_and_probs: FeaturesAndProbs, c2st: C2st | None = None) -> Callable[..., Evaluator]:
    """A backend's `evaluator(dataset="mnist", data_source="auto", data_dir="")`: one Evaluator per
    argument set, made on first use and kept, so that each reference is computed once per process.
    `c2st`: the backend's classifier two-sample test, which the Evaluators run where asked (c2st=True)."""
    made: dict[tuple[str, str, str], Evaluator] = {}

    def evaluator(dataset: str = "mnist", data_source: str = "auto", data_dir: str = "") -> Evaluator:
        key = (dataset, data_source, data_dir)
        if key not in made:
            made[key] = Evaluator(features_and_probs, *key, c2st=c2st)
        return made[key]

    return evaluator


