"""Sample-quality maths on feature vectors and class probabilities (NumPy/SciPy only).

Each backend supplies the features (a classifier's penultimate layer) and the class
probabilities; the numbers are computed here once, so both backends report the same thing.
All sums run in float64: the inputs are float32 features, and FID subtracts nearly equal traces.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

# |imag(sqrtm)| below this fraction of |sqrtm| is rounding, not a real complex root.
_IMAG_TOL = 1e-6


def feature_moments(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features."""
    x = np.asarray(feats, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1 sigma2)^(1/2)) for PSD sigmas.

    scipy's sqrtm first; on a near-singular product (dead features, a collapsed generator) it
    can return inf/NaN or a visibly complex root, so then we add 1e-6 I to both covariances
    (the usual FID guard); if that still fails, the eigenvalues of sigma1 sigma2, which are
    real and >= 0 for PSD sigmas, give the same trace without a square root of a matrix.
    """
    for offset in (0.0, 1e-6):
        eye = offset * np.eye(sigma1.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "singular matrix" warnings: we check the result instead
            root = scipy.linalg.sqrtm((sigma1 + eye) @ (sigma2 + eye))
        root = np.asarray(root)
        if not np.all(np.isfinite(root)):
            continue
        if np.iscomplexobj(root):
            if np.abs(root.imag).max() > _IMAG_TOL * max(np.abs(root).max(), 1.0):
                continue
            root = root.real
        return float(np.trace(root))
    eig = np.linalg.eigvals(sigma1 @ sigma2).real
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance_from_moments(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))  (Dowson & Landau 1982),
    the quantity FID reports on Inception features (Heusel et al. 2017).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"moment shapes disagree: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2)
    return max(float(d2), 0.0)  # rounding can leave -1e-12 when the two are the same


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID-style distance between Gaussians fitted to (N1, D) and (N2, D) features.

    Biased upwards for small N (the covariance estimate's noise adds to the trace term), so
    compare values only at equal sample counts.
    """
    return frechet_distance_from_moments(*feature_moments(feats1), *feature_moments(feats2))


def _mmd2_unbiased_poly(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size sets under k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape

    def cubic(g):  # g * g * g: several times faster than g ** 3 (a pow call per entry)
        g = g / d + 1.0
        return g * g * g

    kxx, kyy, kxy = cubic(x @ x.T), cubic(y @ y.T), cubic(x @ y.T)  # (m, m) each
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kernel_inception_distance(
    feats1: np.ndarray, feats2: np.ndarray, subset_size: int = 1000, n_subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel.

    k(x, y) = (x.y / d + 1)^3, averaged over `n_subsets` random subsets of `subset_size` from
    each set (each drawn without replacement; capped at the smaller set). Returns the mean and
    the standard deviation over subsets (the spread of one subset's estimate, not the
    standard error of the mean; 0 when both sets are smaller than `subset_size` and of one size, as
    every subset is then both whole sets). Unlike FID, the estimator is unbiased, so 0 means "same
    distribution" at any N and values at different N are comparable.
    """
    x, y = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {x.shape} and {y.shape}")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    if m == x.shape[0] == y.shape[0]:  # every subset would be both whole sets: one estimate, no spread
        return _mmd2_unbiased_poly(x, y), 0.0
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _mmd2_unbiased_poly(
                x[rng.choice(x.shape[0], m, replace=False)], y[rng.choice(y.shape[0], m, replace=False)]
            )
            for _ in range(n_subsets)
        ]
    )
    return float(values.mean()), float(values.std())


def classifier_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """The Inception Score (Salimans et al. 2016) with our own classifier: exp(E_x KL(p(y|x) || p(y))).

    p(y) is the mean of p(y|x) over the samples; one split over all samples (no 10-way split).
    Ranges from 1 (every sample gets the same prediction) to the number of classes (confident
    predictions spread evenly over all classes).
    """
    p = np.clip(np.asarray(probs, np.float64), eps, 1.0)  # (N, C)
    marginal = p.mean(axis=0, keepdims=True)  # (1, C)
    kl = (p * (np.log(p) - np.log(marginal))).sum(axis=1)  # (N,)
    return float(np.exp(kl.mean()))


def mode_coverage(
    pred_labels: np.ndarray, real_labels: np.ndarray, num_classes: int = 10, min_share: float = 0.1
) -> dict[str, object]:
    """Which classes the generator produces, judged by a classifier's predicted labels.

    Rule: class c is covered when its share of generated samples is at least `min_share`
    (default 10%) of its share among the real labels; for MNIST's ~10% per class that is
    >= ~1% of the samples. Also returns KL(p_gen || p_real) over the predicted-label
    histogram (0 log 0 = 0): 0 when the proportions match, log(10) for one class of ten
    equally common ones. Classes absent from the real labels are never counted as covered.
    """
    gen = np.bincount(np.asarray(pred_labels, np.int64).ravel(), minlength=num_classes)[:num_classes]
    real = np.bincount(np.asarray(real_labels, np.int64).ravel(), minlength=num_classes)[:num_classes]
    if gen.sum() == 0 or real.sum() == 0:
        raise ValueError("mode_coverage needs at least one generated and one real label")
    p_gen, p_real = gen / gen.sum(), real / real.sum()
    covered = (p_real > 0) & (p_gen >= min_share * p_real * (1 - 1e-9))  # slack: 0.01 >= 0.1 * 0.1 fails in floats
    held = p_gen > 0
    with np.errstate(divide="ignore"):
        kl = float(np.sum(p_gen[held] * (np.log(p_gen[held]) - np.log(p_real[held]))))  # inf if p_real is 0 there
    return {"histogram": gen.tolist(), "classes_covered": int(covered.sum()), "class_kl": kl}


def per_class_accuracy(pred_labels: np.ndarray, labels: np.ndarray, num_classes: int = 10) -> dict[str, float]:
    """A conditional generator's accuracy: for each class k, the share of samples asked for k that the
    classifier calls k (`class_acc_k`), and their unweighted mean over the classes (`class_acc_mean`).

    A class no sample was asked for scores NaN, and the mean is over the classes asked for.
    """
    pred, labels = np.asarray(pred_labels, np.int64).ravel(), np.asarray(labels, np.int64).ravel()
    if pred.shape != labels.shape:
        raise ValueError(f"per_class_accuracy needs one label per prediction, got {pred.shape} and {labels.shape}")
    accs = [float(np.mean(pred[labels == k] == k)) if np.any(labels == k) else float("nan") for k in range(num_classes)]
    out = {f"class_acc_{k}": acc for k, acc in enumerate(accs)}
    out["class_acc_mean"] = float(np.nanmean(accs)) if not np.all(np.isnan(accs)) else float("nan")
    return out


def _sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)), clipped at 0 against cancellation."""
    return np.maximum((a * a).sum(1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)


def knn_radii(feats: np.ndarray, k: int = 3, chunk: int = 1000) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point: the manifold's ball radii."""
    x = np.asarray(feats, np.float64)
    if x.shape[0] <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {x.shape[0]}")
    x_sq = (x * x).sum(1)
    radii = np.empty(x.shape[0])
    for s in range(0, x.shape[0], chunk):
        d = _sq_dists(x[s : s + chunk], x, x_sq)  # (chunk, N); each row holds its own 0
        radii[s : s + chunk] = np.partition(d, k, axis=1)[:, k]  # index k: self is at 0
    return radii


def precision_recall(
    real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 3, chunk: int = 1000, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points, of radius the distance to the
    k-th nearest neighbour in the same set. Precision: the fraction of fake samples inside the
    real manifold (fidelity). Recall: the fraction of real samples inside the fake manifold
    (diversity). Distances are computed `chunk` rows at a time, so 10k x 10k needs ~80 MB.
    `real_radii`: knn_radii(real_feats, k), when the caller keeps them (a fixed reference set's cost
    ~2.5 s for 10k points on a 2-core CPU, paid once instead of per call).
    """
    real, fake = np.asarray(real_feats, np.float64), np.asarray(fake_feats, np.float64)
    r_real = knn_radii(real, k, chunk) if real_radii is None else real_radii
    r_fake = knn_radii(fake, k, chunk)
    real_sq = (real * real).sum(1)
    fake_in_real = np.zeros(fake.shape[0], bool)
    real_in_fake = np.zeros(real.shape[0], bool)
    for s in range(0, fake.shape[0], chunk):
        d = _sq_dists(fake[s : s + chunk], real, real_sq)  # (chunk, N_real)
        fake_in_real[s : s + chunk] = (d <= r_real[None, :]).any(axis=1)
        real_in_fake |= (d <= r_fake[s : s + chunk, None]).any(axis=0)
    return float(fake_in_real.mean()), float(real_in_fake.mean())
