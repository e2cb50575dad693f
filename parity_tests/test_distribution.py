"""Independent runs: each backend trains with its own RNG; their samples agree in distribution.

Same-weights parity (the other files) cannot see a bug in what each backend draws on its own:
its initialisation, its noise, its data order. Here each backend runs its real Backend (the
one `python -m gan_X.train` drives) for NUM_SEEDS seeds, and the statistics of its samples must
agree between backends within the seed-to-seed spread: pixel statistics, and sample quality as
FID-MNIST and the classifier's predicted-class histogram (mode coverage).

The test, for each statistic s (a number, or a vector compared by its Euclidean norm):
    |mean_jax(s) - mean_torch(s)|  <=  K * pooled seed-to-seed std of s
where the pooled std is the RMS distance of one seed's s from its backend's mean, over both
backends (2n - 2 degrees of freedom). If both backends sample one distribution, the
difference of two means of n runs has std sqrt(2 / n) * std, so the ratio
|diff| / pooled std is sqrt(2 / n) * t(2n - 2): with n = 3, K = 4 is the two-sided 0.8 %
point for a single number, and for vectors the ratio concentrates near sqrt(2 / n) = 0.82.

Coarse by design, and blind to two faults that other tests catch (docs/parity.md, "The distributional
test", re-checked by making each change in a copy of the tree): an Adam eps of 1e-6 instead of 1e-8
(this test passes; test_step_parity's Adam, one-step and NumPy tests and test_trajectory fail), and
noise z ~ U[0, 1) instead of N(0, I) in a Backend (this test passes, FID and class histogram included;
test_backend_inputs' Kolmogorov-Smirnov check fails).
"""

import multiprocessing

import numpy as np
import pytest

from gan_common.config import Config
from parity_tests.harness import ADAPTERS

pytestmark = pytest.mark.slow  # make test only: trains both backends to compare their sample statistics

NUM_SEEDS = 3
NUM_STEPS = 1000  # just over an epoch (937 steps); a flipped G loss still fails at 32 pooled stds (docs/parity.md)
NUM_SAMPLES = 2000
K = 4.0
HIST_BINS = np.linspace(-1.0, 1.0, 11)  # 10 bins over tanh's range


def _statistics(images: np.ndarray, adapter_name: str) -> dict[str, np.ndarray]:
    # Sample quality by each backend's own classifier port (they agree to ~1e-8 in FID:
    # test_classifier_parity.py), so the torch worker never imports JAX.
    if adapter_name == "torch":
        from gan_torch.backend import evaluator

        EVALUATOR = evaluator("mnist")
    else:
        from gan_jax.backend import evaluator

        EVALUATOR = evaluator("mnist")
    quality = EVALUATOR.fid_and_coverage(images)
    _, probs = EVALUATOR.features_and_probs(images)
    pixels = images.reshape(len(images), -1).astype(np.float64)  # (N, 784) in [-1, 1]
    return {
        "fid_mnist": np.array([quality["fid_mnist"]]),
        # coverage as the predicted-class histogram: classes_covered alone is often 10 for every
        # seed, which has no spread to compare against
        "class histogram": np.bincount(probs.argmax(1), minlength=10) / len(probs),  # (10,) fractions
        "pixel mean": np.array([pixels.mean()]),
        "pixel std": np.array([pixels.std()]),
        "mean image": pixels.mean(axis=0),  # (784,)
        "pixel histogram": np.histogram(pixels, bins=HIST_BINS)[0] / pixels.size,  # (10,) fractions
    }


def backend_statistics(adapter_name: str, images_u8: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """The statistics of one backend's samples for each seed, after NUM_STEPS of its own training."""
    if images_u8 is None:  # in the worker process: load MNIST there rather than pickle 47 MB across
        import torch

        from gan_common.datasets import load_dataset

        torch.set_num_threads(1)  # as in conftest, which a spawned worker does not run
        images_u8 = load_dataset("mnist", "train").images
    adapter = next(a for a in ADAPTERS if a.name == adapter_name)
    z = np.random.default_rng(12345).standard_normal((NUM_SAMPLES, Config.tutorial().latent_dim), dtype=np.float32)
    stats = []
    for seed in range(NUM_SEEDS):
        config = Config.tutorial(seed=seed, steps=NUM_STEPS, steps_per_call=NUM_STEPS)
        backend = adapter.backend(config, images_u8)
        metrics = backend.fetch(backend.run(NUM_STEPS))
        assert np.isfinite(metrics).all(), f"{adapter_name} seed {seed} diverged"
        stats.append(_statistics(adapter.backend_generate(backend, z), adapter_name))
    return stats


@pytest.fixture(scope="module")
def sample_stats(mnist):
    """{backend: [statistics per seed]}. torch trains in a spawned worker while JAX trains here:
    each is mostly one thread at batch 64, so on two cores this halves the test's wall time."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        torch_stats = pool.apply_async(backend_statistics, ("torch",))
        jax_stats = backend_statistics("jax", mnist)
        return {"jax": jax_stats, "torch": torch_stats.get()}


@pytest.mark.parametrize(
    "statistic", ["pixel mean", "pixel std", "mean image", "pixel histogram", "fid_mnist", "class histogram"]
)
def test_independent_runs_sample_the_same_distribution(sample_stats, statistic):
    per_backend = {name: np.stack([s[statistic] for s in runs]) for name, runs in sample_stats.items()}
    means = {name: v.mean(axis=0) for name, v in per_backend.items()}
    squared = sum(np.sum((v - means[name]) ** 2) for name, v in per_backend.items())
    pooled_std = float(np.sqrt(squared / (2 * NUM_SEEDS - 2)))
    diff = float(np.linalg.norm(means["jax"] - means["torch"]))
    if pooled_std == 0:
        # Every seed of both backends gave the same value (after 2,000 steps the class histogram
        # can be the same collapsed one in all six runs): then only exact agreement passes.
        assert diff == 0, f"{statistic}: no seed-to-seed spread, yet the backends differ by {diff:.4g}"
        return
    assert diff <= K * pooled_std, (
        f"{statistic}: backends differ by {diff:.4g}, {diff / pooled_std:.2f} pooled seed stds "
        f"({pooled_std:.4g}); allowed {K}"
    )
