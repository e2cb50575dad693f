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

Any other dataset (kmnist, cifar10, a folder or npz of images: no shipped classifier) gets a
RandomFeatureEvaluator instead, with the same methods: no FID (its results carry no fid_* key and
`fid_unavailable` says so in one line), but KID and precision/recall on the features of a fixed
random convnet (gan_common.random_features; keys *_random, a scale of their own) and the C2ST, all of
which need no pretrained network.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from gan_common import metrics
from gan_common.c2st import C2ST_KEYS
from gan_common.classifier_spec import CLASSIFIERS, classifier_spec
from gan_common.datasets import load_dataset
from gan_common.errors import UserError
from gan_common.random_features import random_features

FeaturesAndProbs = Callable[[np.ndarray, str], tuple[np.ndarray, np.ndarray]]
C2st = Callable[..., dict[str, float | int]]  # c2st(real, generated, seed=0) -> C2ST_KEYS, any (N, H, W, C)
LoadDataset = Callable[..., "object"]  # as gan_common.datasets.load_dataset(name, split, source, data_dir, ...)

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
# A dataset without a shipped classifier: KID and improved precision/recall on random-convnet features
# (gan_common.random_features; not comparable with the classifier's kid, precision, recall), no FID.
RANDOM_METRIC_KEYS = ("kid_random", "kid_random_std", "precision_random", "recall_random", "num_samples")
# --eval-every on such a dataset logs only the KID, from EVERY_KID_SUBSETS subsets: 100 cost ~5 s on a
# 2-core CPU, 10 about 0.5 s; the estimate stays unbiased, only its mean gets noisier.
EVERY_KID_SUBSETS = 10
REFERENCES = ("test", "train")
REFERENCE_SIZE = 10_000
MIN_SAMPLES = 10  # k-NN radii need > 3 points and covariances a few; below ~5000 the numbers are noisy anyway


def fid_key(dataset: str) -> str:
    """The FID's key for runs on `dataset`: fid_mnist, fid_fashion_mnist (a UserError for a dataset without a
    classifier). Named apart because FIDs through different classifiers are different quantities."""
    return f"fid_{classifier_spec(dataset).dataset}"


def has_classifier(dataset: str) -> bool:
    """Whether `dataset` has a shipped classifier, and so FID, KID and the rest on its features."""
    return dataset in CLASSIFIERS


def fid_unavailable(dataset: str) -> str:
    """The line the evaluate CLI prints (and docs/evaluation.md quotes) for a dataset without a classifier."""
    return (f"FID-{dataset} unavailable: no shipped classifier for this dataset; "
            f"reporting C2ST and KID on random features")


def metric_keys(dataset: str = "mnist", c2st: bool = True) -> tuple[str, ...]:
    """The keys of `evaluators(...)(dataset).evaluate_images(..., c2st=c2st)` and so of the evaluate CLI
    (--no-c2st: c2st=False), in order (without CLASS_ACC_KEYS)."""
    first = (fid_key(dataset),) + OTHER_METRIC_KEYS if has_classifier(dataset) else RANDOM_METRIC_KEYS
    return first + (C2ST_KEYS if c2st else ())


def check_images(images: np.ndarray, what: str = "images", shape: tuple[int, int, int] = (28, 28, 1)) -> np.ndarray:
    """(N, *shape) floats in [-1, 1] as float32 (shape: (H, W, C), the evaluator's), or a UserError saying what
    is wrong."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        hint = " (scale uint8 images with x / 127.5 - 1)" if images.dtype == np.uint8 else ""
        raise UserError(f"{what} have dtype {images.dtype}, expected float32 in [-1, 1]{hint}")
    if images.ndim != 4 or images.shape[1:] != tuple(shape):
        hint = " (add a channel axis: x[..., None])" if images.shape[1:] == tuple(shape[:2]) else ""
        raise UserError(f"{what} have shape {images.shape}, expected (N, {', '.join(map(str, shape))}){hint}")
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
    precision, recall = metrics.precision_recall(ref["feats"], feats, k=3, real_radii=ref.get("radii"))
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


def load_samples(path: str, shape: tuple[int, int, int] = (28, 28, 1)) -> np.ndarray:
    """A .npy of (N, *shape) float32 in [-1, 1], shape (H, W, C) the evaluator's."""
    if not os.path.isfile(path):
        raise UserError(f"no samples file at {path}; expected a .npy of (N, {', '.join(map(str, shape))}) "
                        f"float32 in [-1, 1]")
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npy array ({type(e).__name__}: {e})") from None
    return check_images(images, what=f"samples in {path}", shape=shape)


class RealImages:
    """What every evaluator shares: up to 10k real images of a dataset per reference, read once, and the
    backend's C2ST against them. `data_source` and `data_dir` (as in Config) say where the images are read
    from; the defaults find them where training does; `image_size` and `channels` (as in Config) what a
    folder:/npz: dataset is decoded to, that of the run. `load`: gan_common.datasets.load_dataset (tests
    pass one that returns arrays of their own)."""

    def __init__(self, dataset: str, data_source: str = "auto", data_dir: str = "", c2st: C2st | None = None,
                 load: LoadDataset = load_dataset, image_size: int = 0, channels: int = 0):
        self.dataset, self.data_source, self.data_dir = dataset, data_source, data_dir
        self.image_size, self.channels = image_size, channels
        self._c2st, self._load = c2st, load
        self._real: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (images, labels)

    def _real_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in REFERENCES:
            raise UserError(f"unknown reference {name!r}; expected one of {', '.join(REFERENCES)}")
        if name not in self._real:
            data = self._load(self.dataset, name, self.data_source, self.data_dir, image_size=self.image_size,
                              channels=self.channels)
            images = data.images[:REFERENCE_SIZE].astype(np.float32) / 127.5 - 1.0  # (10000, H, W, C) in [-1, 1]
            self._real[name] = images, data.labels[:REFERENCE_SIZE]
        return self._real[name]

    def reference_images(self, name: str = "test") -> np.ndarray:
        """Up to 10k real images (N, H, W, C) float32 in [-1, 1]: the dataset's test set, or its first 10k
        training images."""
        return self._real_data(name)[0]

    def image_shape(self, reference: str = "test") -> tuple[int, int, int]:
        """(H, W, C) of the images this evaluator scores: its real images'."""
        return self.reference_images(reference).shape[1:]

    def check(self, images: np.ndarray, what: str = "images", reference: str = "test") -> np.ndarray:
        """check_images against image_shape(reference)."""
        return check_images(images, what, self.image_shape(reference))

    def c2st(self, images: np.ndarray, reference: str = "test", seed: int = 0) -> dict[str, float | int]:
        """C2ST_KEYS of (N, H, W, C) images in [-1, 1] against the reference's real images (min(N, 10k) of each)."""
        if self._c2st is None:
            raise ValueError("this Evaluator was made without a c2st function (evaluators(..., c2st=...))")
        return self._c2st(self.reference_images(reference), self.check(images, reference=reference), seed=seed)


class Evaluator(RealImages):
    """The metrics of one dataset as seen through one backend's classifier for it; the real
    references are computed once per instance, since 10k forward passes cost more than scoring a
    few thousand samples. `c2st`, the backend's classifier two-sample test, adds C2ST_KEYS to what
    asks for them (c2st=True)."""

    fid_unavailable = None  # FID is what this one reports

    def __init__(self, features_and_probs: FeaturesAndProbs, dataset: str = "mnist", data_source: str = "auto",
                 data_dir: str = "", c2st: C2st | None = None, load: LoadDataset = load_dataset):
        self.fid_key = fid_key(dataset)  # a dataset without a classifier fails here, naming those with one
        super().__init__(dataset, data_source, data_dir, c2st, load)
        self.features_and_probs = lambda images: features_and_probs(images, dataset)
        self._references: dict[str, dict[str, np.ndarray]] = {}

    def image_shape(self, reference: str = "test") -> tuple[int, int, int]:
        return 28, 28, 1  # the classifier's input, known without reading the data

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
        ref = self.reference_outputs(reference)
        if "radii" not in ref:  # the reference's k-NN radii for precision/recall, once (--eval-every never needs them)
            ref["radii"] = metrics.knn_radii(ref["feats"], k=3)
        out = score(feats, probs, ref, seed=seed, dataset=self.dataset)
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


class RandomFeatureEvaluator(RealImages):
    """The metrics of a dataset without a shipped classifier (kmnist, cifar10, a folder or npz of images, any
    (H, W, C) with C 1 or 3): KID and precision/recall on gan_common.random_features' features (the
    RANDOM_METRIC_KEYS) and, where asked, the C2ST; no FID, as `fid_unavailable` says. The same methods
    as Evaluator, so the evaluate CLI and --eval-every take either. There is no classifier to tell what a
    conditional G drew, so `labels` add nothing here."""

    fid_key = None

    def __init__(self, dataset: str, data_source: str = "auto", data_dir: str = "", c2st: C2st | None = None,
                 load: LoadDataset = load_dataset, image_size: int = 0, channels: int = 0):
        super().__init__(dataset, data_source, data_dir, c2st, load, image_size, channels)
        self.fid_unavailable = fid_unavailable(dataset)
        self._references: dict[str, dict[str, np.ndarray]] = {}

    def reference_outputs(self, name: str = "test") -> dict[str, np.ndarray]:
        """{"feats": (N, 112)}: the random features of the reference's real images, computed once."""
        if name not in self._references:
            self._references[name] = {"feats": random_features(self.reference_images(name))}
        return self._references[name]

    def _score(self, feats: np.ndarray, ref: dict[str, np.ndarray], seed: int,
               kid_subsets: int = 100) -> dict[str, float | int]:
        """RANDOM_METRIC_KEYS of features (N, 112) against a reference's."""
        kid, kid_std = metrics.kernel_inception_distance(feats, ref["feats"], n_subsets=kid_subsets, seed=seed)
        if "radii" not in ref:  # k-NN radii of the 10k reference points, once (~2.5 s on a 2-core CPU)
            ref["radii"] = metrics.knn_radii(ref["feats"], k=3)
        precision, recall = metrics.precision_recall(ref["feats"], feats, k=3, real_radii=ref["radii"])
        return {"kid_random": kid, "kid_random_std": kid_std, "precision_random": precision,
                "recall_random": recall, "num_samples": int(feats.shape[0])}

    def evaluate_images(self, images: np.ndarray, reference: str = "test", seed: int = 0,
                        labels: np.ndarray | None = None, c2st: bool = True,
                        kid_subsets: int = 100) -> dict[str, float | int]:
        """metric_keys(dataset, c2st) of (N, H, W, C) images in [-1, 1] against up to 10k real images; KID averages
        `kid_subsets` subsets of 1000 (100: ~5 s on a 2-core CPU)."""
        feats = random_features(self.check(images, reference=reference))  # (N, 112)
        out = self._score(feats, self.reference_outputs(reference), seed, kid_subsets)
        if c2st:
            out.update(self.c2st(images, reference, seed))
        return out

    def fid_and_coverage(self, images: np.ndarray, labels: np.ndarray | None = None,
                         c2st: bool = False) -> dict[str, float | int]:
        """What --eval-every logs here (the name is the loop's): kid_random and kid_random_std against the
        test set from EVERY_KID_SUBSETS subsets, and with c2st, C2ST_KEYS (seed 0)."""
        feats = random_features(self.check(images))
        kid, kid_std = metrics.kernel_inception_distance(feats, self.reference_outputs("test")["feats"],
                                                         n_subsets=EVERY_KID_SUBSETS)
        out = {"kid_random": kid, "kid_random_std": kid_std}
        if c2st:
            out.update(self.c2st(images))
        return out

    def real_baselines(self, seed: int = 0, c2st: bool = True) -> dict[str, float | int]:
        """The floor: up to 10k training images against up to 10k test images. A folder or npz dataset has one
        set of images (its "test" is its "train"), so there two random disjoint halves of it stand in."""
        train, test = self.reference_images("train"), self.reference_images("test")
        if train.shape == test.shape and np.array_equal(train, test):
            rows = np.random.default_rng(seed).permutation(test.shape[0])
            train, test = test[rows[: len(rows) // 2]], test[rows[len(rows) // 2 :]]
        out = self._score(random_features(train), {"feats": random_features(test)}, seed)
        if c2st:
            if self._c2st is None:
                raise ValueError("this Evaluator was made without a c2st function (evaluators(..., c2st=...))")
            out.update(self._c2st(test, train, seed=seed))
        return out


AnyEvaluator = Evaluator | RandomFeatureEvaluator


def evaluators(features_and_probs: FeaturesAndProbs, c2st: C2st | None = None,
               load: LoadDataset = load_dataset) -> Callable[..., AnyEvaluator]:
    """A backend's `evaluator(dataset="mnist", data_source="auto", data_dir="", image_size=0, channels=0)`: one
    evaluator per argument set, made on first use and kept, so that each reference is computed once per
    process: an Evaluator for a dataset with a shipped classifier, a RandomFeatureEvaluator for any other
    (image_size, channels: a folder:/npz: run's, so its real images are decoded as it trained on them).
    `c2st`: the backend's classifier two-sample test, which the evaluators run where asked (c2st=True).
    `load`: how they read real images (gan_common.datasets.load_dataset; tests pass their own)."""
    made: dict[tuple[str, str, str, int, int], AnyEvaluator] = {}

    def evaluator(dataset: str = "mnist", data_source: str = "auto", data_dir: str = "", image_size: int = 0,
                  channels: int = 0) -> AnyEvaluator:
        key = (dataset, data_source, data_dir, image_size, channels)
        if key not in made:
            made[key] = (Evaluator(features_and_probs, *key[:3], c2st=c2st, load=load) if has_classifier(dataset)
                         else RandomFeatureEvaluator(*key[:3], c2st=c2st, load=load, image_size=image_size,
                                                     channels=channels))
        return made[key]

    return evaluator
