"""Fashion-MNIST's metrics classifier, and evaluation routed by the run's dataset.

The shipped file's pin needs nothing else; the rest reads Debian's dataset-fashion-mnist
(.ci/run installs it) and is skipped without it, as in tests/test_datasets.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors import safe_open

from gan_common import cli, datasets, evaluation
from gan_common.classifier_spec import CLASSIFIERS, file_sha256
from gan_common.datasets import load_dataset

pytestmark = pytest.mark.slow  # make test only: trains on Fashion-MNIST and scores 10k images

SPEC = CLASSIFIERS["fashion_mnist"]
needs_fashion = pytest.mark.skipif(not os.path.isdir(datasets.DEFAULT_IDX_DIRS["fashion_mnist"]),
                                   reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
# Tiny nets and a few steps: these runs test the plumbing (which classifier, which key), not the GAN.
TINY = ["--preset", "tutorial",
        "--dataset", "fashion_mnist", "--g-hidden", "32", "--d-hidden", "32", "--batch-size", "8", "--steps", "4",
        "--log-every", "2", "--sample-every", "4", "--checkpoint-every", "4", "--eval-every", "4",
        "--eval-samples", "100"]


def test_shipped_fashion_weights_match_their_pin():
    assert SPEC.filename != CLASSIFIERS["mnist"].filename
    assert os.path.getsize(SPEC.path) < 2 * 1024 * 1024
    assert file_sha256(SPEC.path) == SPEC.sha256
    assert evaluation.fid_key("fashion_mnist") == "fid_fashion_mnist" and evaluation.fid_key("mnist") == "fid_mnist"
    assert evaluation.metric_keys("fashion_mnist")[1:] == evaluation.metric_keys("mnist")[1:]


def _images(name: str, split: str, n: int) -> np.ndarray:
    return load_dataset(name, split).images[:n].astype(np.float32) / 127.5 - 1.0  # (n, 28, 28, 1) in [-1, 1]


@needs_fashion
def test_fashion_classifier_accuracy_meets_its_threshold():
    from gan_jax.backend import evaluator

    ref = evaluator("fashion_mnist").reference_outputs("test")  # all 10k Fashion test images, cached
    accuracy = float((ref["probs"].argmax(1) == ref["labels"]).mean())
    assert accuracy >= SPEC.min_accuracy
    # Fixed weights, so this is the number train_classifier measured and wrote (rounded to 4 places);
    # 2e-4 = rounding plus one image whose top two logits another CPU's float32 sums could swap.
    with safe_open(SPEC.path, "np") as f:
        meta = f.metadata()
    assert meta["dataset"] == "fashion_mnist"
    assert abs(float(meta["test_accuracy"]) - accuracy) <= 2e-4


@needs_fashion
def test_real_fashion_images_score_as_real_and_each_dataset_uses_its_own_classifier():
    from gan_jax.backend import evaluator

    fashion, digits = _images("fashion_mnist", "train", 2000), _images("mnist", "train", 2000)
    real = evaluator("fashion_mnist").fid_and_coverage(fashion)
    # 2,000 real training images against the 10k test set: FID measured 0.73 (N = 2,000 biases it up;
    # 10k give 0.22, docs/evaluation.md). The MNIST equivalent, 2,000 training digits through MNIST's
    # classifier, measures 4.98 (docs/evaluation.md, FID's small-sample bias): Fashion's
    # train and test sets are one random split, MNIST's were written by different people. < 2 is
    # 2.7x the measurement (deterministic weights: only float32 summation order moves it, by far
    # less); the closest bad set in docs/evaluation.md (test images plus noise) scores 115.
    assert set(real) == {"fid_fashion_mnist", "classes_covered"}
    assert real["fid_fashion_mnist"] < 2 and real["classes_covered"] == 10
    # Swapped datasets: digits are far from Fashion's test set through Fashion's classifier and
    # clothes far from MNIST's through MNIST's (measured 315 and 384), so a run routed to the wrong
    # classifier or reference could not pass the line above.
    assert evaluator("fashion_mnist").fid_and_coverage(digits)["fid_fashion_mnist"] > 100
    assert evaluator("mnist").fid_and_coverage(fashion)["fid_mnist"] > 100


@pytest.fixture(scope="module")
def fashion_runs(tmp_path_factory, one_thread):
    """A 4-step Fashion run of each backend, evaluated at step 4 with --eval-every."""
    from gan_jax import train as jax_train
    from gan_torch import train as torch_train

    out = {}
    for name, train in (("gan_jax", jax_train), ("gan_torch", torch_train)):
        out[name] = str(tmp_path_factory.mktemp(name) / "run")
        assert train.main(["--out-dir", out[name], *TINY]) == 0
    return out


@needs_fashion
@pytest.mark.parametrize("backend", ["gan_jax", "gan_torch"])
def test_fashion_run_logs_fid_fashion_mnist(fashion_runs, backend):
    with open(os.path.join(fashion_runs[backend], "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [2, 4]
    evaluated = rows[-1]
    assert "fid_mnist" not in evaluated and "fid_mnist" not in rows[0] and "fid_fashion_mnist" not in rows[0]
    # 4 steps from random weights: nothing like clothes (measured 438 for JAX's; real images score < 2).
    assert evaluated["fid_fashion_mnist"] > 50 and 1 <= evaluated["classes_covered"] <= 10


@needs_fashion
def test_evaluate_cli_scores_a_fashion_checkpoint_with_the_fashion_classifier(fashion_runs, tmp_path, capsys):
    from gan_torch import evaluate
    from gan_torch.backend import evaluator, load_generator

    run, out = fashion_runs["gan_jax"], str(tmp_path / "eval.json")  # torch's CLI on JAX's checkpoint
    assert evaluate.main(["--checkpoint", run, "--num", "100", "--no-c2st", "--json", out]) == 0  # C2ST: test_c2st.py
    result = json.load(open(out))
    assert list(result) == list(evaluation.metric_keys("fashion_mnist", c2st=False))
    # The same z (seed 0) through the same loader and Fashion evaluator: the same float64 maths on
    # the same features (rel 1e-9, as in tests/test_classifier.py); MNIST's classifier and test set
    # give another number altogether (measured 731 against 440 here).
    generate, config = load_generator(run)
    images = cli.generate_images(generate, config.latent_dim, 100, seed=0)
    fashion = evaluator("fashion_mnist").fid_and_coverage(images)["fid_fashion_mnist"]
    assert result["fid_fashion_mnist"] == pytest.approx(fashion, rel=1e-9)
    assert abs(evaluator("mnist").fid_and_coverage(images)["fid_mnist"] - fashion) > 100
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", run, "--dataset", "mnist", "--num", "100"]) == 2
    assert "was trained on fashion_mnist" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["gan_jax", "gan_torch"])
def test_cifar10_without_its_data_is_refused_in_one_line(backend, tmp_path, capsys):
    import importlib

    train = importlib.import_module(f"{backend}.train")
    out = str(tmp_path / "run")
    # No prepared copy of cifar10 here or in CI, and no network: tfds cannot provide it.
    assert train.main(["--dataset", "cifar10", "--eval-every", "100", "--out-dir", out]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "cifar10" in err and "Traceback" not in err
    assert not os.path.exists(out)  # refused before the run folder is written
