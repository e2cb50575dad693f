"""The shipped MNIST classifier and the evaluate CLI built on it (no GAN checkpoint needed).
Fashion-MNIST's classifier: tests/test_fashion_evaluation.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gan_common import evaluation
from gan_common.classifier_spec import CLASSIFIERS
from gan_common.datasets import load_dataset
from gan_common.errors import UserError
from gan_jax import classifier, evaluate
from gan_jax.backend import evaluator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = CLASSIFIERS["mnist"]


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("mnist", "test")
    return data.images.astype(np.float32) / 127.5 - 1.0, data.labels  # (10000, 28, 28, 1) in [-1, 1]


def test_shipped_weights_load_with_pinned_sha256():
    assert os.path.getsize(SPEC.path) < 2 * 1024 * 1024
    assert classifier.file_sha256(SPEC.path) == SPEC.sha256
    assert isinstance(classifier.load_classifier(), classifier.MnistClassifier)


def test_corrupted_or_missing_weights_are_refused(tmp_path):
    bad = tmp_path / "mnist_classifier.safetensors"
    shutil.copy(SPEC.path, bad)
    raw = bytearray(bad.read_bytes())
    raw[-100] ^= 0x01  # one bit of one weight: still a valid file, but not the pinned one
    bad.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="sha256"):
        classifier.load_classifier(path=str(bad))
    with pytest.raises(UserError, match="no classifier weights"):
        classifier.load_classifier(path=str(tmp_path / "absent.safetensors"))


def test_accuracy_on_test_set(test_images):
    ref = evaluator("mnist").reference_outputs("test")  # the shipped classifier on all 10k test images, cached
    feats, probs = ref["feats"], ref["probs"]
    assert feats.shape == (10_000, 128) and feats.dtype == np.float32 and probs.shape == (10_000, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # float32 softmax over 10 classes
    # Fixed weights, so this is one deterministic number (99.2% when trained); >= 99% catches a
    # wrong file, layout or input scaling, each of which costs far more than 0.2%.
    assert (probs.argmax(1) == ref["labels"]).mean() >= SPEC.min_accuracy == 0.99
    # A short batch is padded to the compiled batch size; the padding must not leak into the
    # outputs. 1e-5: float32 convolutions may sum in another order at another batch position.
    images, _ = test_images
    few_feats, few_probs = classifier.features_and_probs(images[:37])
    np.testing.assert_allclose(few_feats, feats[:37], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(few_probs, probs[:37], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_evaluate_cli_on_real_images(tmp_path, test_images, capsys):
    images, _ = test_images
    samples, out = tmp_path / "real.npy", tmp_path / "metrics.json"
    np.save(samples, images[:500])
    assert evaluate.main(["--samples", str(samples), "--no-c2st", "--json", str(out)]) == 0  # C2ST: test_c2st.py
    results = json.loads(out.read_text())
    assert list(results) == list(evaluation.metric_keys("mnist", c2st=False))
    assert evaluation.fid_key("mnist") == "fid_mnist"
    assert results["num_samples"] == 500 and results["classes_covered"] == 10
    assert results["precision"] == 1.0  # each sample is also a reference point, inside its own ball
    assert "fid_mnist" in capsys.readouterr().out
    cheap = evaluator("mnist").fid_and_coverage(images[:500])
    assert cheap == {"fid_mnist": pytest.approx(results["fid_mnist"], rel=1e-9), "classes_covered": 10}


def test_evaluate_cli_rejects_bad_samples(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((20, 28, 28), np.float32))  # no channel axis
    proc = subprocess.run(
        [sys.executable, "-m", "gan_jax.evaluate", "--samples", str(bad)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "(N, 28, 28, 1)" in errors[0] and "Traceback" not in proc.stderr


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err  # no usage block, no traceback
    return lines[0]


def test_evaluate_cli_checks_its_json_path_before_any_work(tmp_path, capsys):
    """An unwritable --json fails at once, not after the evaluation: the samples file here does not even
    exist, so an error naming --json proves the path was checked first; nothing is left behind."""
    missing = str(tmp_path / "missing.npy")
    for bad, says in (("/proc/x.json", "cannot be written"), (str(tmp_path), "is a folder")):
        assert evaluate.main(["--samples", missing, "--json", bad]) == 2
        line = _one_error_line(capsys)
        assert "--json" in line and says in line, line
    assert os.listdir(tmp_path) == []  # the probe file is gone; no partial JSON


def test_evaluate_cli_flag_errors_are_one_line(capsys):
    assert evaluate.main(["--samples", "x.npy", "--bogus"]) == 2
    assert "--bogus" in _one_error_line(capsys)
    assert evaluate.main([]) == 2  # none of --samples / --checkpoint / --real-baselines
    assert "is required" in _one_error_line(capsys)


@pytest.mark.parametrize("backend", ["gan_jax", "gan_torch"])
@pytest.mark.parametrize("cli", ["sample", "evaluate"])
def test_help_shows_defaults_and_never_none(backend, cli, capsys):
    module = __import__(f"{backend}.{cli}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "(default: 0)" in out  # --seed
    assert ("(default: 10000)" if cli == "evaluate" else "(default: 64)") in out  # --num


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((20, 28, 28, 1), np.uint8), "x / 127.5 - 1"),
        (np.full((20, 28, 28, 1), 255.0, np.float32), r"expected \[-1, 1\]"),
        (np.full((20, 28, 28, 1), np.nan, np.float32), "NaN"),
        (np.zeros((3, 28, 28, 1), np.float32), "at least"),
    ],
)
def test_check_images_says_what_is_wrong(images, message):
    with pytest.raises(UserError, match=message):
        evaluation.check_images(images)
