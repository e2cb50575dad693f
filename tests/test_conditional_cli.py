"""--conditional end to end in both backends: training, the class-by-row grid, per-class accuracy,
exact resume, `sample --label`, and the evaluate CLI (the maths is in parity_tests/test_conditional.py)."""

import importlib
import json
import os

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from gan_common import metrics
from gan_common.evaluation import CLASS_ACC_KEYS
from gan_common.outputs import read_metrics

BACKENDS = ("gan_jax", "gan_torch")
# A small model and 4 steps: the wiring, not the quality.
TINY = ["--preset", "tutorial",
        "--steps", "4", "--log-every", "2", "--sample-every", "4", "--checkpoint-every", "2", "--batch-size", "16",
        "--latent-dim", "16", "--g-hidden", "64", "--d-hidden", "64", "--steps-per-call", "2", "--conditional"]
# The DCGAN's projection discriminator, spectrally normalised: its resume also proves u and v are checkpointed.
NETS = {"mlp": TINY, "dcgan": [a for a in TINY if a not in ("--g-hidden", "--d-hidden", "64")]
        + ["--arch", "dcgan", "--g-channels", "4", "--d-channels", "4", "--d-norm", "spectral"]}
EVAL = ["--eval-every", "4", "--eval-samples", "100"]
# An unconditional run with tests/test_cli.py's nets and 10-step chunks (SMALL, FAST there): its program is that
# file's, compiled once a session.
PLAIN = ["--preset", "tutorial",
         "--g-hidden", "32,64", "--d-hidden", "64,32", "--log-every", "10", "--steps-per-call", "10",
         "--sample-every", "20", "--checkpoint-every", "10"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


def _main(backend: str, module: str):
    return importlib.import_module(f"{backend}.{module}").main


@pytest.fixture(scope="module", params=NETS)
def runs(request, tmp_path_factory) -> dict:
    """A 4-step conditional run of each backend, of each net (`NETS`); gan_jax's evaluated at step 4 (the
    loop and the evaluation are gan_common's, shared: one backend's classifier keeps this file fast)."""
    out = {"argv": NETS[request.param]}
    for backend in BACKENDS:
        out[backend] = str(tmp_path_factory.mktemp(backend) / "run")
        argv = ["--out-dir", out[backend], *out["argv"], *(EVAL if backend == "gan_jax" else [])]
        assert _main(backend, "train")(argv) == 0
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_conditional_run_logs_per_class_accuracy_and_writes_a_class_by_row_grid(runs, backend):
    run = runs[backend]
    assert json.load(open(os.path.join(run, "config.json")))["conditional"] is True
    rows = read_metrics(os.path.join(run, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [2, 4]
    if backend == "gan_jax":  # --eval-every 4
        evaluated = rows[-1]
        for key in CLASS_ACC_KEYS:
            assert 0.0 <= evaluated[key] <= 1.0, key
        assert evaluated["class_acc_mean"] == pytest.approx(np.mean([evaluated[f"class_acc_{k}"] for k in range(10)]))
    # Ten rows (one per class) of 8 digits, 2-pixel gaps, upscaled 2x: (10 * 30 + 2) * 2 by (8 * 30 + 2) * 2.
    assert Image.open(os.path.join(run, "samples", "step_0000004.png")).size == (484, 604)
    weights = load_file(os.path.join(run, "checkpoints", "4", "weights.safetensors"))
    assert weights["generator.label_embed.embedding"].shape == (10, 10)
    if "dcgan" in runs["argv"]:  # D's projection, (10, 7 * 7 * 2 * 4), and spectral norm's u, v of its four weights
        assert weights["discriminator.projection.embedding"].shape == (10, 392)
        assert {f"discriminator.{layer}.sn_{uv}" for layer in ("conv1", "conv2", "fc", "projection")
                for uv in "uv"} <= set(weights)
    else:
        assert weights["discriminator.label_embed.embedding"].shape == (10, 10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_equals_uninterrupted(runs, backend, tmp_path):
    b = str(tmp_path / "b")
    train = _main(backend, "train")
    assert train(["--out-dir", b, *runs["argv"], "--steps", "2"]) == 0
    assert train(["--out-dir", b, "--resume", "--steps", "4"]) == 0
    wa = load_file(os.path.join(runs[backend], "checkpoints", "4", "weights.safetensors"))
    wb = load_file(os.path.join(b, "checkpoints", "4", "weights.safetensors"))
    # Bit-identical: the fake classes come back with the noise (JAX: (key, step); torch: its generator), and
    # spectral norm's u, v with the checkpoint (a resumed run that restarted them would differ from step 3 on).
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_sample_label_draws_that_class_from_either_backends_checkpoint(runs, tmp_path):
    from gan_common.sampling import sample_noise
    from gan_jax.backend import load_generator

    for trained_by in BACKENDS:
        run = runs[trained_by]
        got = {}
        for backend in BACKENDS:
            for label in (7, 3):
                out = str(tmp_path / f"{trained_by}-{backend}-{label}.npy")
                assert _main(backend, "sample")(["--checkpoint", run, "--num", "12", "--label", str(label),
                                                  "--out", out]) == 0
                got[backend, label] = np.load(out)
        # Both sample CLIs give the same images of class 7 (the forward tolerance of test_step_parity) ...
        assert np.max(np.abs(got["gan_jax", 7] - got["gan_torch", 7])) <= 1e-5
        # ... which are G's images at label 7 for the CLI's z, not those of another class.
        generate, config = load_generator(run)
        want = generate(sample_noise(12, config.latent_dim, 0), np.full(12, 7))
        np.testing.assert_allclose(got["gan_jax", 7], want, atol=1e-6)
        assert np.max(np.abs(got["gan_jax", 7] - got["gan_jax", 3])) > 1e-3
        # Without --label: classes 0..9 cycling, and a PNG of ten columns.
        png = str(tmp_path / f"{trained_by}.png")
        assert _main("gan_torch", "sample")(["--checkpoint", run, "--num", "20", "--out", png]) == 0
        assert Image.open(png).size == ((10 * 30 + 2) * 2, (2 * 30 + 2) * 2)


def test_label_on_an_unconditional_model_and_conditional_on_resume_are_one_line_errors(tmp_path, capsys):
    run = str(tmp_path / "plain")
    assert _main("gan_jax", "train")(["--out-dir", run, *PLAIN, "--steps", "10"]) == 0
    capsys.readouterr()
    for backend in BACKENDS:
        assert _main(backend, "sample")(["--checkpoint", run, "--label", "7", "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --label 7") and "unconditional" in err and "\n" not in err
    assert _main("gan_jax", "sample")(["--checkpoint", run, "--label", "10", "--out", str(tmp_path / "x.png")]) == 2
    assert "0..9" in capsys.readouterr().err
    assert _main("gan_jax", "train")(["--out-dir", run, "--resume", "--conditional", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume cannot change --conditional")


def test_evaluate_cli_reports_per_class_accuracy(runs, tmp_path, capsys):
    out = str(tmp_path / "eval.json")  # gan_common's evaluate CLI, on the torch run's checkpoint
    argv = ["--checkpoint", runs["gan_torch"], "--num", "200", "--no-c2st", "--json", out]
    assert _main("gan_jax", "evaluate")(argv) == 0
    printed = capsys.readouterr().out
    result = json.load(open(out))
    assert result["num_samples"] == 200
    for key in CLASS_ACC_KEYS:
        assert 0.0 <= result[key] <= 1.0 and key in printed, key


def test_per_class_accuracy_is_right():
    pred = np.array([0, 0, 1, 2, 1, 1, 9])
    asked = np.array([0, 0, 1, 1, 1, 2, 9])
    got = metrics.per_class_accuracy(pred, asked)
    assert got["class_acc_0"] == 1.0 and got["class_acc_1"] == pytest.approx(2 / 3) and got["class_acc_2"] == 0.0
    assert got["class_acc_9"] == 1.0 and np.isnan(got["class_acc_5"])  # never asked for: NaN, not 0
    assert got["class_acc_mean"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)


def test_real_test_digits_grouped_by_their_labels_score_the_classifiers_accuracy():
    """Real MNIST test digits, 'asked for' by their true labels: the shipped classifier's ~99% per class;
    with the labels shifted by one class, ~0."""
    from gan_common.datasets import load_dataset
    from gan_jax.backend import evaluator

    test = load_dataset("mnist", "test")
    images, labels = test.images[:2000].astype(np.float32) / 127.5 - 1.0, test.labels[:2000]
    right = evaluator("mnist").fid_and_coverage(images, labels)
    assert all(right[f"class_acc_{k}"] >= 0.95 for k in range(10)), right
    assert right["class_acc_mean"] >= 0.98
    wrong = evaluator("mnist").fid_and_coverage(images, (labels + 1) % 10)
    assert wrong["class_acc_mean"] <= 0.02
