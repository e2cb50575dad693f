"""The metrics classifiers in torch and in JAX: same weight file, same features, same scores.

Both read gan_common/assets/mnist_classifier.safetensors (and fashion_mnist_classifier.safetensors,
whose input normalisation differs); gan_torch converts the kernels
(HWIO -> OIHW, (in, out) -> (out, in)) and flattens in NHWC order. A layout slip there (a
transposed kernel, an NCHW flatten) moves features by O(1), far above the tolerances below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gan_common import datasets, evaluation
from gan_common.datasets import load_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    return load_dataset("mnist", "test").images[:500].astype(np.float32) / 127.5 - 1.0  # (500, 28, 28, 1) in [-1, 1]


@pytest.mark.parametrize("dataset", [
    "mnist",
    pytest.param("fashion_mnist", marks=pytest.mark.skipif(
        not os.path.isdir(datasets.DEFAULT_IDX_DIRS["fashion_mnist"]),
        reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")),
])
def test_features_and_probs_agree(dataset):
    from gan_jax.classifier import features_and_probs as jax_features_and_probs
    from gan_torch.classifier import features_and_probs as torch_features_and_probs

    images = load_dataset(dataset, "test").images[:500].astype(np.float32) / 127.5 - 1.0  # (500, 28, 28, 1)
    jf, jp = jax_features_and_probs(images, dataset)
    tf, tp = torch_features_and_probs(images, dataset)
    assert tf.shape == jf.shape == (500, 128) and tp.shape == jp.shape == (500, 10)
    assert tf.dtype == jf.dtype == tp.dtype == jp.dtype == np.float32
    # Features reach ~15 and fc1 sums 3136 products; float32 (eps 6e-8) summed in another order
    # by XLA and by oneDNN differs by ~1e-5 at most (measured 7e-6 MNIST, 5e-6 Fashion). 1e-4 leaves margin; a
    # layout bug is O(1). Probabilities are softmaxes of fc2 of these, bounded by 1: 1e-5.
    np.testing.assert_allclose(tf, jf, rtol=0, atol=1e-4)
    np.testing.assert_allclose(tp, jp, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(tp.argmax(1), jp.argmax(1))


def test_fid_and_coverage_agree():
    from gan_jax.backend import evaluator as jax_evaluator
    from gan_torch.backend import evaluator as torch_evaluator

    fixed = load_dataset("mnist", "train").images[:2000].astype(np.float32) / 127.5 - 1.0  # (2000, 28, 28, 1)
    j, t = jax_evaluator("mnist").fid_and_coverage(fixed), torch_evaluator("mnist").fid_and_coverage(fixed)
    # FID ~6 here: feature differences of ~1e-6 relative move means and covariances by as much,
    # and the maths after them is float64 (measured 1e-8 relative); 1e-4 leaves room for other BLAS.
    assert t["fid_mnist"] == pytest.approx(j["fid_mnist"], rel=1e-4)
    assert t["classes_covered"] == j["classes_covered"] == 10


@pytest.mark.slow
def test_torch_evaluate_cli_writes_the_jax_keys(tmp_path, test_images):
    from gan_jax import evaluate as jax_evaluate

    samples, jax_out, torch_out = tmp_path / "real.npy", tmp_path / "jax.json", tmp_path / "torch.json"
    np.save(samples, test_images)
    assert jax_evaluate.main(["--samples", str(samples), "--json", str(jax_out)]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "gan_torch.evaluate", "--samples", str(samples), "--json", str(torch_out)],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # one torch thread, as conftest.py sets in-process: the C2ST's
    )  # 1,000 small Adam steps took 4x longer with two threads spinning against other jobs
    assert proc.returncode == 0, proc.stderr
    j, t = json.loads(jax_out.read_text()), json.loads(torch_out.read_text())
    assert list(t) == list(j) == list(evaluation.metric_keys("mnist"))
    assert t["num_samples"] == j["num_samples"] == 500 and t["classes_covered"] == j["classes_covered"]
    assert t["fid_mnist"] == pytest.approx(j["fid_mnist"], rel=1e-4)  # as in test_fid_and_coverage_agree
    # The C2ST trains in each backend from the same weights on the same batches: two runs of one test
    # (parity_tests/test_c2st_parity.py), each accuracy inside the other's interval.
    assert t["c2st_num_test"] == j["c2st_num_test"] == 500
    assert t["c2st_ci_low"] <= j["c2st_accuracy"] <= t["c2st_ci_high"]
