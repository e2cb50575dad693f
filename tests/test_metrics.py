"""gan_common.metrics on cases whose answers are known in closed form or by brute force."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gan_common import metrics


def _correlated(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """(n, d) Gaussian features with a non-diagonal covariance, like a network's."""
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)


# ------------------------------------------------------------------ Fréchet distance
def test_frechet_identical_sets_is_zero():
    x = _correlated(np.random.default_rng(0), 2000, 64)
    tr = np.trace(np.cov(x, rowvar=False))
    # sqrtm (Schur method) in float64 has relative error ~ d * eps * cond(sigma) ~ 1e-11 here;
    # 1e-8 of the trace leaves margin, and a real bug (e.g. a missing factor 2) is O(trace).
    assert metrics.frechet_distance(x, x) < 1e-8 * tr


def test_frechet_rank_deficient_features_stay_finite():
    """Dead ReLU units give zero-variance features and a singular covariance."""
    x = _correlated(np.random.default_rng(1), 1000, 32)
    x[:, :8] = 0.0
    tr = np.trace(np.cov(x, rowvar=False))
    d = metrics.frechet_distance(x, x)
    # A zero eigenvalue perturbed by eps * |sigma|^2 has a root ~ sqrt(eps) * |sigma| ~ 1e-8 |sigma|;
    # 8 of them stay far below 1e-5 of the trace.
    assert np.isfinite(d) and d < 1e-5 * tr


def test_frechet_diagonal_gaussians_match_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    s1, s2 = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = metrics.frechet_distance_from_moments(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10)  # diagonal sqrtm: exact up to a few ulps per entry
    # The distance is invariant under a common rotation, which makes sqrtm work on a full matrix;
    # a well-conditioned (cond < 30) 16x16 Schur sqrtm is good to ~1e-12 relative, we allow 1e-9.
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    rotated = metrics.frechet_distance_from_moments(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-9)


def test_frechet_of_transformed_samples_is_exact_in_sample_moments():
    """y = 2x + c: sigma_y = 4 sigma_x, so d^2 = |mean_x + c|^2 + tr(sigma_x) exactly, for any sample."""
    x = _correlated(np.random.default_rng(3), 500, 20)
    c = np.linspace(-1.0, 1.0, 20)
    expected = np.sum((x.mean(0) + c) ** 2) + np.trace(np.cov(x, rowvar=False))
    assert metrics.frechet_distance(x, 2 * x + c) == pytest.approx(expected, rel=1e-9)  # float64 rounding only


def test_frechet_of_gaussian_samples_near_population_value():
    rng = np.random.default_rng(4)
    n = 20_000
    x = rng.standard_normal((n, 2)) * np.sqrt([1.0, 4.0])
    y = rng.standard_normal((n, 2)) * np.sqrt([4.0, 1.0]) + [3.0, 0.0]
    expected = 9.0 + (1.0 - 2.0) ** 2 + (2.0 - 1.0) ** 2  # |dmu|^2 + sum (sqrt s1 - sqrt s2)^2 = 11
    # The mean term dominates the sampling error: 2 dmu . e with e ~ N(0, (S1 + S2) / n) has
    # std sqrt(4 * 9 * 5 / n) ~ 0.095; 0.5 is ~5 standard deviations.
    assert metrics.frechet_distance(x, y) == pytest.approx(expected, abs=0.5)


# ------------------------------------------------------------------ KID
def test_kid_single_subset_matches_brute_force():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 3)) + 0.5

    def k(a, b):
        return (a @ b / 3 + 1.0) ** 3

    m = 12
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = metrics.kernel_inception_distance(x, y, subset_size=m, n_subsets=1)
    # A full subset is a permutation, which the estimator ignores; float64 summation order only.
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std == 0.0


def test_kid_same_distribution_is_zero_within_its_spread():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((2000, 16)), rng.standard_normal((2000, 16))
    mean, std = metrics.kernel_inception_distance(x, y, subset_size=500, n_subsets=50, seed=0)
    # The estimator is unbiased, so the mean over subsets sits at 0 give or take about half a
    # subset's spread (subsets overlap); one spread is a 2-sigma bound, deterministic by the seed.
    assert std > 0 and abs(mean) < std
    shifted, shifted_std = metrics.kernel_inception_distance(x, y + 0.5, subset_size=500, n_subsets=50, seed=0)
    assert shifted > 10 * shifted_std  # a half-sigma shift in 16 dims is unmistakable at m = 500


# ------------------------------------------------------------------ classifier score
def test_classifier_score_extremes():
    confident = np.eye(10)[np.arange(1000) % 10]  # one-hot, 100 per class
    assert metrics.classifier_score(confident) == pytest.approx(10.0, rel=1e-9)  # eps=1e-12 clipping only
    same = np.tile(np.full(10, 0.1), (500, 1))
    assert metrics.classifier_score(same) == pytest.approx(1.0, rel=1e-12)
    one_class = np.eye(10)[np.zeros(300, int)]
    assert metrics.classifier_score(one_class) == pytest.approx(1.0, rel=1e-9)


# ------------------------------------------------------------------ mode coverage
def test_mode_coverage_single_class():
    real = np.arange(10_000) % 10  # uniform real labels
    out = metrics.mode_coverage(np.full(500, 7), real)
    assert out["classes_covered"] == 1
    assert out["class_kl"] == pytest.approx(np.log(10.0), rel=1e-12)
    assert out["histogram"][7] == 500 and sum(out["histogram"]) == 500


def test_mode_coverage_matching_proportions_and_threshold():
    real = np.arange(10_000) % 10
    out = metrics.mode_coverage(np.arange(1000) % 10, real)
    assert out["classes_covered"] == 10 and out["class_kl"] == pytest.approx(0.0, abs=1e-12)
    # Expected share 10%; the rule needs >= 10% of it, i.e. >= 1% of the samples.
    gen = np.concatenate([np.zeros(980, int), np.full(10, 1), np.full(9, 2), np.full(1, 3)])  # 1.0%, 0.9%, 0.1%
    assert metrics.mode_coverage(gen, real)["classes_covered"] == 2  # classes 0 and 1


# ------------------------------------------------------------------ precision / recall
def _brute_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(a):
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    d = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # (F, R)
    precision = np.mean([(d[i] <= radii(real)).any() for i in range(len(fake))])
    recall = np.mean([(d[:, j] <= radii(fake)).any() for j in range(len(real))])
    return precision, recall


def test_precision_recall_identical_and_disjoint():
    x = _correlated(np.random.default_rng(7), 1000, 16)
    assert metrics.precision_recall(x, x) == (1.0, 1.0)
    far = x + 1e3
    assert metrics.precision_recall(x, far) == (0.0, 0.0)


def test_precision_recall_half_on_manifold():
    rng = np.random.default_rng(8)
    real = rng.standard_normal((600, 8))
    fake = np.concatenate([real[:300], rng.standard_normal((300, 8)) + 1e3])
    precision, _ = metrics.precision_recall(real, fake)
    assert precision == 0.5  # copies of real points sit in their own balls; the far half in none


def test_precision_recall_matches_brute_force_for_any_chunk():
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((120, 5)), rng.standard_normal((90, 5)) * 1.3 + 0.3
    expected = _brute_precision_recall(real, fake, 3)
    # Exact fractions: the chunked squared-distance route and the brute norms disagree only at
    # ties within float64 rounding, which random Gaussians do not produce.
    for chunk in (7, 64, 10_000):
        assert metrics.precision_recall(real, fake, k=3, chunk=chunk) == pytest.approx(expected, abs=0)


def test_metrics_imports_neither_framework():
    code = "import sys, gan_common.metrics; sys.exit(bool({'jax', 'torch', 'flax'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_evaluation_and_classifier_spec_import_neither_framework():
    """Both backends score through these, so a user with one framework installed must be able to load them."""
    code = (
        "import sys, gan_common.evaluation, gan_common.classifier_spec\n"
        "gan_common.classifier_spec.load_classifier_tensors()\n"
        "sys.exit(bool({'jax', 'torch', 'flax'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
