"""The classifier two-sample test (C2ST; Lopez-Paz & Oquab, ICLR 2017), the framework-free half.

Train a fresh small convnet to tell real images (label 0) from generated ones (label 1) on one
half of each set, then count its right answers on the other half. Accuracy 0.5: it cannot tell
them apart; 1.0: it spots every generated image. Under H0 (one distribution) each test answer is
right with probability 1/2, so the count is Binomial(n, 1/2): the p-value is one-sided (a
classifier does no better than chance by accident, not worse on purpose) and the interval is
Clopper-Pearson's.

Everything here but the training itself: the seeded split into balanced train and test halves,
the minibatch order, the initial weights (drawn in NumPy, so gan_jax.c2st and gan_torch.c2st
start from the same numbers and see the same batches), and the statistics. Each backend's
`c2st(real, fake, seed=0) -> dict` is `result(train_and_predict(plan(real, fake, seed)))`.
Works on any (N, H, W, C) float images; it needs no pretrained network.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from gan_common.errors import UserError

C2ST_KEYS = ("c2st_accuracy", "c2st_ci_low", "c2st_ci_high", "c2st_p_value", "c2st_num_test")
MIN_PER_SET = 10  # at least 5 of each kind to train on and 5 to test: an interval of any use needs far more
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class C2stSpec:
    """The network and its training, the same in both backends (measured choices: docs/evaluation.md)."""

    channels: tuple[int, int] = (16, 32)  # two 3x3 stride-2 convolutions, padding 1: (H, W) -> ceil(H/4), ceil(W/4)
    negative_slope: float = 0.2  # LeakyReLU after each convolution
    # The head is linear on the flattened (H/4, W/4, 32) map, not on its global average: a 2-pixel
    # shift moves where the strokes are, which an average over positions cannot see.
    # Adam steps: at least min_steps, more when `epochs` passes over the training half need more (above
    # 6,400 + 6,400 training images). 300 steps left it undertrained: test images plus N(0, 0.1^2)
    # noise against the test images (2,000 + 2,000) scored 0.74 to 0.99 over five seeds; 1,000: 0.998 to 1.
    epochs: int = 10
    min_steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3  # Adam, betas (0.9, 0.999), eps 1e-8: optax's and torch's defaults agree


SPEC = C2stSpec()


@dataclasses.dataclass(frozen=True)
class C2stPlan:
    """What both backends train and test on, fixed by the inputs and the seed."""

    x_train: np.ndarray  # (2h, H, W, C) float32: h real images, then h generated
    y_train: np.ndarray  # (2h,) float32: 0 real, 1 generated
    x_test: np.ndarray  # (2t, H, W, C) float32, the images not trained on
    y_test: np.ndarray  # (2t,) float32
    order: np.ndarray  # (steps, B) int32: rows of x_train per Adam step
    params: dict[str, np.ndarray]  # initial weights, HWIO / (in, out) as the neutral weight file
    spec: C2stSpec


def check_sets(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float32 (N, H, W, C) of one image shape, finite, at least MIN_PER_SET each; else a UserError."""
    out = []
    for what, x in (("real images", real), ("generated images", fake)):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise UserError(f"C2ST: {what} have dtype {x.dtype}, expected floats (e.g. uint8 / 127.5 - 1)")
        if x.ndim != 4:
            raise UserError(f"C2ST: {what} have shape {x.shape}, expected (N, H, W, C)")
        if x.shape[0] < MIN_PER_SET:
            raise UserError(f"C2ST: {what} hold {x.shape[0]} images; it needs at least {MIN_PER_SET}")
        if not np.all(np.isfinite(x)):
            raise UserError(f"C2ST: {what} contain NaN or inf")
        out.append(x.astype(np.float32, copy=False))
    if out[0].shape[1:] != out[1].shape[1:]:
        raise UserError(f"C2ST: real images are {out[0].shape[1:]} but generated ones {out[1].shape[1:]}")
    return out[0], out[1]


def split(n_real: int, n_fake: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_real, train_fake, test_real, test_fake) row indices: m = min(n_real, n_fake) of each set,
    drawn at random, the first m // 2 to train on and the other m - m // 2 to test on."""
    rng = np.random.default_rng([seed, 0])
    m = min(n_real, n_fake)
    real, fake = rng.permutation(n_real)[:m], rng.permutation(n_fake)[:m]
    h = m // 2
    return real[:h], fake[:h], real[h:], fake[h:]


def batch_order(n_train: int, seed: int, spec: C2stSpec = SPEC) -> np.ndarray:
    """(steps, B) int32 rows of the training half: a fresh permutation per epoch, the last partial
    batch dropped (one compiled step shape), epochs added until there are at least spec.min_steps."""
    rng = np.random.default_rng([seed, 1])
    batch = min(spec.batch_size, n_train)
    per_epoch = n_train // batch
    epochs = max(spec.epochs, math.ceil(spec.min_steps / per_epoch))
    rows = [rng.permutation(n_train)[: per_epoch * batch].reshape(per_epoch, batch) for _ in range(epochs)]
    return np.concatenate(rows).astype(np.int32)


def feature_shape(height: int, width: int, spec: C2stSpec = SPEC) -> tuple[int, int, int]:
    """The second convolution's output (h, w, c): each 3x3 stride-2 padding-1 convolution maps n to ceil(n / 2)."""
    return -(-height // 4), -(-width // 4), spec.channels[1]


def init_params(image_shape: tuple[int, int, int], seed: int, spec: C2stSpec = SPEC) -> dict[str, np.ndarray]:
    """The initial weights, float32: every kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's
    default for Conv2d and Linear). Kernels HWIO and (in, out); keys conv1, conv2, head (.kernel, .bias)."""
    rng = np.random.default_rng([seed, 2])
    height, width, c = image_shape
    c1, c2 = spec.channels
    head_in = math.prod(feature_shape(height, width, spec))  # ceil(H/4) * ceil(W/4) * 32
    shapes = {"conv1": (3, 3, c, c1), "conv2": (3, 3, c1, c2), "head": (head_in, 1)}
    params = {}
    for name, shape in shapes.items():
        bound = 1.0 / math.sqrt(math.prod(shape[:-1]))  # fan_in: all but the output axis
        params[f"{name}.kernel"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        params[f"{name}.bias"] = rng.uniform(-bound, bound, shape[-1:]).astype(np.float32)
    return params


def plan(real: np.ndarray, fake: np.ndarray, seed: int = 0, spec: C2stSpec = SPEC) -> C2stPlan:
    """Everything a backend needs to run the test on `real` and `fake` (N, H, W, C) float images."""
    real, fake = check_sets(real, fake)
    train_real, train_fake, test_real, test_fake = split(real.shape[0], fake.shape[0], seed)
    x_train = np.concatenate([real[train_real], fake[train_fake]])
    x_test = np.concatenate([real[test_real], fake[test_fake]])
    labels = [np.concatenate([np.zeros(len(r), np.float32), np.ones(len(f), np.float32)])
              for r, f in ((train_real, train_fake), (test_real, test_fake))]
    return C2stPlan(x_train, labels[0], x_test, labels[1], batch_order(x_train.shape[0], seed, spec),
                    init_params(real.shape[1:], seed, spec), spec)


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact two-sided binomial interval for k successes in n trials (never narrower than its level)."""
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def p_value(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the chance of k or more right answers from a classifier
    that cannot tell the sets apart (one-sided)."""
    return float(stats.binom.sf(k - 1, n, 0.5))


def result(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """The C2ST_KEYS of a test half's 0/1 predictions against its labels."""
    n = int(labels.shape[0])
    k = int(np.sum(np.asarray(predictions) == labels))
    low, high = clopper_pearson(k, n)
    return {"c2st_accuracy": k / n, "c2st_ci_low": low, "c2st_ci_high": high, "c2st_p_value": p_value(k, n),
            "c2st_num_test": n}
