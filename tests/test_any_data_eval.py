"""Evaluation of data without a shipped classifier (issue 17): the random-convnet features against a direct
convolution, the RandomFeatureEvaluator on cifar10-shaped images (real against real, against noise), the
evaluate CLI's "FID unavailable" line and keys, and --eval-every on an npz dataset.

The real images are smooth random colour fields (4x4 random colours, upsampled, plus N(0, 0.1^2) pixel noise),
one distribution, so two draws of it are real against real. They come through `evaluators(..., load=...)`,
in memory, so no cifar10 download is needed. The C2ST here trains 50 Adam steps, not the shipped 1,000, to
keep the file within seconds: under "one distribution" any classifier scores chance, and uniform noise is
told from smooth fields after far fewer steps, so both checks keep their meaning.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gan_common import c2st, cli, evaluation, random_features
from gan_common.config import Config
from gan_common.datasets import Dataset
from gan_common.errors import UserError

SHAPE = (32, 32, 3)  # cifar10's
FAST_C2ST = c2st.C2stSpec(epochs=1, min_steps=50)


def smooth_fields(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """(n, H, W, C) uint8: 4x4 random colours upsampled to (H, W), plus a little pixel noise."""
    rng = np.random.default_rng(seed)
    height, width, channels = shape
    low = rng.uniform(-0.8, 0.8, (n, 4, 4, channels))
    x = np.repeat(np.repeat(low, height // 4, 1), width // 4, 2) + rng.normal(0, 0.1, (n, height, width, channels))
    return np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)


def to_float(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / 127.5 - 1.0


def fast_c2st(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict:
    """gan_jax's C2ST with FAST_C2ST's 50 steps (the module docstring says why that is enough here)."""
    from gan_jax.c2st import train_and_predict

    p = c2st.plan(real, fake, seed, FAST_C2ST)
    return c2st.result(train_and_predict(p), p.y_test)


def memory_loader(splits: dict[str, np.ndarray]):
    """A load_dataset stand-in serving `splits` ({"train": u8, "test": u8}) for any name."""

    def load(name, split, source="auto", data_dir="", **_):
        return Dataset(name=name, images=splits[split], labels=np.zeros(len(splits[split]), np.int64), source="memory")

    return load


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """600 reference ("test") images, 600 "train" ones, 200 other real ones and 200 of uniform noise, all 32x32x3."""
    u8 = smooth_fields(1400, SHAPE, seed=0)
    noise = np.random.default_rng(1).uniform(-1, 1, (200, *SHAPE)).astype(np.float32)
    return {"test": u8[:600], "train": u8[600:1200], "other": to_float(u8[1200:]), "noise": noise}


@pytest.fixture(scope="module")
def scorer(data):
    return evaluation.evaluators(None, fast_c2st, load=memory_loader(data))("cifar10")


@pytest.fixture(scope="module")
def scored(scorer, data) -> dict[str, dict]:
    """KID from 20 subsets (the CLI's 100 cost ~4 s here): the same unbiased estimate, a noisier mean."""
    return {name: scorer.evaluate_images(data[name], kid_subsets=20) for name in ("other", "noise")}


def recording_c2st(calls: list):
    """A C2ST stand-in for the CLI tests (the real one is checked above): records (real, fake, seed)."""

    def record(real, fake, seed=0):
        calls.append((real, fake, seed))
        return dict(zip(c2st.C2ST_KEYS, (0.5, 0.4, 0.6, 0.5, 2 * min(len(real), len(fake))), strict=True))

    return record


# ----------------------------------------------------------------------------- the features
def direct_features(images: np.ndarray, kernels: list[np.ndarray]) -> np.ndarray:
    """The same network by the definition: every output pixel a sum over its 3x3 window, float64."""
    h, out = images.astype(np.float64), []
    for k in kernels:
        n, height, width, _ = h.shape
        padded = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = np.zeros((n, -(-height // 2), -(-width // 2), k.shape[-1]))
        for r in range(y.shape[1]):
            for c in range(y.shape[2]):
                window = padded[:, 2 * r : 2 * r + 3, 2 * c : 2 * c + 3, :]  # (n, 3, 3, C)
                y[:, r, c] = np.einsum("nijc,ijco->no", window, k)
        h = np.maximum(y, 0.0)
        out.append(h.mean(axis=(1, 2)))
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("shape", [(9, 13, 3), (8, 8, 1)])
def test_random_features_are_a_fixed_relu_convnet(shape):
    x = np.random.default_rng(2).uniform(-1, 1, (5, *shape)).astype(np.float32)
    feats = random_features.random_features(x)
    assert feats.shape == (5, sum(random_features.SPEC.channels)) and feats.dtype == np.float32
    # float32 matmuls against float64 sums of at most 9 x 32 terms of size ~1: within 1e-5 relative.
    want = direct_features(x, random_features.weights(shape[-1]))
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(random_features.random_features(x), feats)  # fixed weights: the same bits again
    # The chunking changes only float32 rounding (BLAS blocks other matrix sizes differently): as above.
    one = random_features.random_features(x, random_features.RandomFeatureSpec(chunk=1))
    np.testing.assert_allclose(one, feats, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the evaluator
def test_any_dataset_reports_random_kid_and_c2st_and_no_fid(scorer, scored):
    assert isinstance(scorer, evaluation.RandomFeatureEvaluator) and scorer.fid_key is None
    assert scorer.fid_unavailable == ("FID-cifar10 unavailable: no shipped classifier for this dataset; "
                                      "reporting C2ST and KID on random features")
    for result in scored.values():
        assert list(result) == list(evaluation.metric_keys("cifar10"))
        assert not any(k.startswith("fid") for k in result) and result["num_samples"] == 200
    assert evaluation.metric_keys("mnist")[0] == "fid_mnist"  # the classifier's datasets keep theirs


def test_real_against_real_is_chance_and_kid_near_zero(scored):
    r = scored["other"]
    # KID is unbiased: two draws of one distribution average 0. kid_random_std is the spread over subsets of
    # the 600 reference images only (all 200 samples are in every subset), so the draw of the samples adds
    # a spread of about the same size: 5 of it is ~3.5 of both (measured -5.3e-5 = 1.1 kid_random_std; five
    # other draws of the 200 gave -1.6 to 1.6).
    assert abs(r["kid_random"]) < 5 * r["kid_random_std"]
    assert r["c2st_ci_low"] <= 0.5 <= r["c2st_ci_high"] and r["c2st_num_test"] == 200
    assert r["precision_random"] > 0.7 and r["recall_random"] > 0.7  # measured 0.86 and 0.85


def test_noise_is_spotted_by_both(scored):
    real, noise = scored["other"], scored["noise"]
    # Measured 0.056 against a real-vs-real kid_random_std of 5e-5: noise sits far outside real's spread.
    assert noise["kid_random"] > 100 * real["kid_random_std"] and noise["kid_random"] > 0.01
    assert noise["c2st_accuracy"] >= 0.95 and noise["c2st_p_value"] < 1e-6  # measured 1.0
    assert noise["precision_random"] < 0.1  # no noise image lies near a smooth one (measured 0.0)


def test_eval_every_numbers_and_shape_errors(scorer, data):
    cheap = scorer.fid_and_coverage(data["noise"], c2st=False)  # what --eval-every logs here
    assert list(cheap) == ["kid_random", "kid_random_std"] and cheap["kid_random"] > 0.01
    with pytest.raises(UserError, match=r"expected \(N, 32, 32, 3\)"):
        scorer.evaluate_images(np.zeros((20, 28, 28, 1), np.float32))


# ----------------------------------------------------------------------------- the evaluate CLI
def test_evaluate_cli_says_fid_is_unavailable_and_writes_the_keys(data, tmp_path, capsys):
    calls: list = []
    evaluator = evaluation.evaluators(None, recording_c2st(calls), load=memory_loader(data))
    samples, out = tmp_path / "s.npy", tmp_path / "m.json"
    np.save(samples, data["noise"][:100])
    assert cli.evaluate_main(["--samples", str(samples), "--dataset", "cifar10", "--json", str(out)],
                             "evaluate", evaluator, load_generator=None) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == evaluator("cifar10").fid_unavailable and printed[1].startswith("kid_random ")
    result = json.loads(out.read_text())
    assert list(result) == list(evaluation.metric_keys("cifar10")) and result["num_samples"] == 100
    (real, fake, seed), = calls  # the C2ST saw the reference's real images and the samples
    assert np.array_equal(real, to_float(data["test"])) and np.array_equal(fake, data["noise"][:100]) and seed == 0

    def load_generator(path):  # a cifar10 run's G drawing noise; the CLI only needs generate and the config
        return (lambda z, labels=None: np.tanh(z[:, :1, None, None] + data["noise"][: len(z)])), Config.tutorial(
            dataset="cifar10", latent_dim=8)

    args = ["--checkpoint", "run", "--num", "50", "--no-c2st", "--json", str(out)]
    assert cli.evaluate_main(args, "evaluate", evaluator, load_generator) == 0
    assert list(json.loads(out.read_text())) == list(evaluation.metric_keys("cifar10", c2st=False))
    assert "FID-cifar10 unavailable" in capsys.readouterr().out

    def wrong_shape(path):
        return (lambda z, labels=None: np.zeros((len(z), 28, 28, 1), np.float32)), Config.tutorial(dataset="cifar10")

    with pytest.raises(UserError, match=r"generated images have shape \(50, 28, 28, 1\), expected \(N, 32, 32, 3\)"):
        cli.evaluate_main(args, "evaluate", evaluator, wrong_shape)


def test_real_baselines_of_one_set_compare_two_halves(tmp_path, capsys):
    """folder:/npz: data has one set ("test" is "train"): the floor is then half of it against the other half."""
    u8 = smooth_fields(200, (64, 64, 1), seed=3)
    evaluator = evaluation.evaluators(None, None, load=memory_loader({"train": u8, "test": u8}))
    out = tmp_path / "floor.json"
    args = ["--real-baselines", "--dataset", "npz:fields.npz", "--no-c2st", "--json", str(out)]
    assert cli.evaluate_main(args, "evaluate", evaluator, load_generator=None) == 0
    floor = json.loads(out.read_text())
    assert floor["num_samples"] == 100  # 100 against 100, not 200 against themselves
    assert capsys.readouterr().out.startswith("FID-npz:fields.npz unavailable")
    # 100 against 100 is one estimate (no subsets, kid_random_std 0), so the scale is noise's: measured -0.0011
    # against 0.05, and a tenth of noise's KID is still a clear "same data".
    noise = np.random.default_rng(5).uniform(-1, 1, (100, 64, 64, 1)).astype(np.float32)
    noise_kid = evaluator("npz:fields.npz").evaluate_images(noise, c2st=False)["kid_random"]
    assert abs(floor["kid_random"]) < 0.1 * noise_kid


# ----------------------------------------------------------------------------- --eval-every
def test_eval_every_is_accepted_for_any_dataset():
    config, _ = cli.parse_args(["--dataset", "cifar10", "--eval-every", "100", "--eval-c2st"], "train", "")
    assert (config.eval_every, config.eval_c2st) == (100, True)


@pytest.mark.slow
def test_eval_every_logs_random_kid_on_an_npz_run(tmp_path):
    from gan_jax import train

    path = tmp_path / "fields.npz"
    np.savez(path, images=smooth_fields(64, (16, 16, 3), seed=4))
    out = tmp_path / "run"
    tiny = ["--preset", "tutorial",
            "--g-hidden", "8", "--d-hidden", "8", "--batch-size", "8", "--steps", "4", "--log-every", "2",
            "--sample-every", "4", "--checkpoint-every", "4", "--eval-every", "4", "--eval-samples", "20"]
    assert train.main(["--dataset", f"npz:{path}", "--out-dir", str(out), *tiny]) == 0
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4] and "kid_random" not in rows[0]
    assert rows[1]["kid_random"] > 0.01 and not any(k.startswith("fid") for k in rows[1])  # 4 steps: not fields yet
