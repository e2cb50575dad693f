"""What each Backend feeds its own train_step: the same kind of batches and noise.

The same-weights tests hand both steps identical inputs, so they cannot see a backend that
draws its own inputs wrongly (uniform noise, one noise batch for both nets, a mis-scaled or
repeating batch), and the distributional test is too coarse to: a torch backend drawing
z ~ U[0, 1) instead of N(0, I) passed it (tried, see docs/parity.md). Here both real Backends
run NUM_STEPS steps with a recording wrapper around train_step, and what they fed it is
checked against the spec. Every check is statistical with a fixed seed, so it either always
passes or always fails on a given machine; thresholds are 5 standard errors (false alarm 6e-7).
"""

import numpy as np
import pytest
from scipy import stats

from gan_common.config import Config
from parity_tests.harness import ADAPTERS

NUM_STEPS = 50
CONFIG = Config.tutorial(steps=NUM_STEPS, steps_per_call=NUM_STEPS)


@pytest.fixture(scope="module", params=ADAPTERS, ids=[a.name for a in ADAPTERS])
def fed(request, mnist):
    xs, z_ds, z_gs = request.param.recorded_inputs(CONFIG, mnist, NUM_STEPS)
    assert xs.shape == (NUM_STEPS, CONFIG.batch_size, 28, 28, 1) and xs.dtype == np.float32
    assert z_ds.shape == z_gs.shape == (NUM_STEPS, CONFIG.batch_size, CONFIG.latent_dim)
    return xs, z_ds, z_gs


def test_noise_is_standard_normal_fresh_each_step_and_separate_for_d_and_g(fed):
    _, z_ds, z_gs = fed
    z = np.concatenate([z_ds.ravel(), z_gs.ravel()]).astype(np.float64)  # 320,000 draws
    # Kolmogorov-Smirnov against N(0, 1): U[0, 1) noise scores D = 0.5, a wrong scale D ~ 0.1;
    # p >= 6e-7 (5 sigma) means D <= ~0.005 here.
    ks = stats.kstest(z, "norm")
    assert ks.pvalue >= 6e-7, f"noise is not N(0, 1): Kolmogorov-Smirnov D = {ks.statistic:.3g}"
    n = z_ds.size
    # z_d and z_g independent (not one batch reused for both nets): correlation within 5/sqrt(n).
    corr = np.corrcoef(z_ds.ravel(), z_gs.ravel())[0, 1]
    assert abs(corr) <= 5 / np.sqrt(n), f"D's and G's noise are correlated ({corr:.3g})"
    # Fresh every step: consecutive steps' noise uncorrelated too.
    corr = np.corrcoef(z_ds[1:].ravel(), z_ds[:-1].ravel())[0, 1]
    assert abs(corr) <= 5 / np.sqrt(n), f"consecutive steps' noise is correlated ({corr:.3g})"


def test_batches_are_distinct_training_images_scaled_to_minus_one_one(fed, mnist):
    xs, _, _ = fed
    levels = (xs.astype(np.float64) + 1.0) * 127.5  # back to [0, 255]: whole numbers if x = u8 / 127.5 - 1
    # [-1, 1] up to one float32 ulp: compiled by XLA, gan_jax's u8 / 127.5 - 1 becomes a multiply by
    # the rounded 1 / 127.5, so 255 maps to 1 + 1.2e-7 (harmless; reported in docs/parity.md).
    assert xs.min() >= -1.0 - 2.0**-23 and xs.max() <= 1.0 + 2.0**-23
    assert np.max(np.abs(levels - np.rint(levels))) <= 1e-3
    images = np.rint(levels).astype(np.uint8).reshape(-1, 28 * 28)  # (T * B, 784)
    # Within an epoch (50 * 64 < 60,000) no image twice: rows of the permutation, not draws with
    # replacement (which would repeat one by 3,200^2 / 120,000 = 85 expected pairs).
    assert len({row.tobytes() for row in images}) == len(images)
    # Every batch image is a training image, and the batches are a uniform sample of the set:
    # their mean brightness is within 5 standard errors of the training set's.
    train = mnist.reshape(len(mnist), -1)
    known = {row.tobytes() for row in train}
    assert all(row.tobytes() in known for row in images[:256])
    per_image = train.mean(axis=1)
    standard_error = per_image.std() / np.sqrt(len(images))
    assert abs(images.mean() - per_image.mean()) <= 5 * standard_error
