"""The classifier two-sample test: its statistics against SciPy and hand values, the split, batches and
initial weights of gan_common.c2st, its place in the evaluate CLI, and in each backend determinism and any
image shape. Its calibration (real vs real, vs uniform noise, vs real shifted by 2 pixels) is checked in
parity_tests/test_c2st_parity.py, beside the backends' agreement on the same runs.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from gan_common import c2st, cli, evaluation
from gan_common.datasets import load_dataset
from gan_common.errors import UserError

BACKENDS = ("gan_jax", "gan_torch")


@pytest.fixture(scope="module", params=BACKENDS)
def impl(request):
    """gan_jax.c2st or gan_torch.c2st (torch with one thread, as tests/conftest.py's one_thread explains)."""
    if request.param == "gan_jax":
        from gan_jax import c2st as module

        yield module
        return
    torch = pytest.importorskip("torch")
    from gan_torch import c2st as module

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def halves() -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random sets of 2,000 MNIST test images in [-1, 1]. Random, not the first and last
    5,000: those come from NIST's training and test sets, and the test tells them apart (0.73)."""
    u = load_dataset("mnist", "test").images  # (10000, 28, 28, 1) uint8
    perm = np.random.default_rng(0).permutation(u.shape[0])
    x = (u.astype(np.float32) - 127.5) / 127.5
    return x[perm[:2000]], x[perm[2000:4000]]


# ----------------------------------------------------------------------------- the statistics
@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (1000, 2000), (1043, 2000), (1999, 2000), (37, 40)])
def test_interval_and_p_value_match_scipy(k, n):
    test = stats.binomtest(k, n, 0.5, alternative="greater")
    low, high = c2st.clopper_pearson(k, n)
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")  # Clopper-Pearson, SciPy's own code path
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-9, abs=1e-12)  # the same beta quantiles
    assert c2st.p_value(k, n) == pytest.approx(test.pvalue, rel=1e-9)


def test_interval_and_p_value_hand_values():
    # k = 0 of 10: the upper end solves (1 - p)^10 = 0.025, so 1 - 0.025^(1/10); k = n mirrors it.
    assert c2st.clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1), rel=1e-12)
    assert c2st.clopper_pearson(10, 10) == pytest.approx((0.025 ** 0.1, 1.0), rel=1e-12)
    assert c2st.p_value(10, 10) == pytest.approx(1 / 1024, rel=1e-12)  # all ten right by luck
    assert c2st.p_value(5, 10) == pytest.approx(638 / 1024, rel=1e-12)  # C(10, 5) + ... + C(10, 10) = 638
    assert c2st.p_value(0, 10) == 1.0
    # The normal approximation at n = 2000: half-width 1.96 sqrt(1/4 / 2000) = 0.0219 around 0.5.
    low, high = c2st.clopper_pearson(1000, 2000)
    assert (0.5 - low, high - 0.5) == pytest.approx((0.0219, 0.0219), abs=5e-4)


def test_result_counts_right_answers():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32)
    out = c2st.result(np.array([0, 0, 0, 1, 1, 1, 1, 0], np.float32), labels)  # 6 of 8 right
    assert list(out) == list(c2st.C2ST_KEYS)
    assert out["c2st_accuracy"] == 0.75 and out["c2st_num_test"] == 8
    assert out["c2st_p_value"] == pytest.approx(37 / 256, rel=1e-12)  # C(8,6) + C(8,7) + C(8,8) = 28 + 8 + 1
    assert out["c2st_ci_low"] < 0.75 < out["c2st_ci_high"]


# ----------------------------------------------------------------------------- the plan
def test_split_is_balanced_disjoint_and_seeded():
    train_r, train_f, test_r, test_f = c2st.split(1000, 301, seed=3)  # m = 301 of each: 150 to train, 151 to test
    assert (len(train_r), len(train_f), len(test_r), len(test_f)) == (150, 150, 151, 151)
    assert not set(train_r) & set(test_r) and not set(train_f) & set(test_f)
    assert set(train_f) | set(test_f) == set(range(301))  # the smaller set is used whole
    again = c2st.split(1000, 301, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(again, (train_r, train_f, test_r, test_f), strict=True))
    assert not np.array_equal(c2st.split(1000, 301, seed=4)[0], train_r)


def test_batch_order_covers_each_epoch_once():
    order = c2st.batch_order(1000, seed=0)  # 7 batches of 128 per epoch (104 rows dropped): 143 epochs
    assert order.dtype == np.int32 and order.shape == (143 * 7, 128)
    for epoch in order.reshape(143, 7 * 128):
        assert len(set(epoch)) == 7 * 128  # no row twice within an epoch
    big = c2st.batch_order(20_000, seed=0)  # 156 batches per epoch: 10 epochs are more than min_steps
    assert big.shape == (10 * 156, 128) and c2st.SPEC.epochs * 156 > c2st.SPEC.min_steps
    assert c2st.batch_order(30, seed=0).shape == (1000, 30)  # fewer rows than a batch: one batch of all


def test_initial_weights_fit_any_image_shape_and_come_from_the_seed():
    params = c2st.init_params((27, 30, 3), seed=1)
    shapes = {k: v.shape for k, v in params.items()}
    # 27 -> 14 -> 7 and 30 -> 15 -> 8: ceil(n / 2) per stride-2 convolution
    assert shapes == {"conv1.kernel": (3, 3, 3, 16), "conv1.bias": (16,), "conv2.kernel": (3, 3, 16, 32),
                      "conv2.bias": (32,), "head.kernel": (7 * 8 * 32, 1), "head.bias": (1,)}
    assert all(v.dtype == np.float32 for v in params.values())
    assert np.abs(params["conv2.kernel"]).max() <= 1 / np.sqrt(3 * 3 * 16)  # U(+-1/sqrt(fan_in))
    assert np.array_equal(params["head.kernel"], c2st.init_params((27, 30, 3), seed=1)["head.kernel"])
    assert not np.array_equal(params["head.kernel"], c2st.init_params((27, 30, 3), seed=2)["head.kernel"])


def test_plan_labels_and_sizes():
    rng = np.random.default_rng(0)
    real, fake = np.zeros((50, 8, 8, 1), np.float32), np.ones((31, 8, 8, 1), np.float32)
    p = c2st.plan(real + rng.uniform(0, 0.1, real.shape).astype(np.float32), fake, seed=0)
    assert p.x_train.shape == (30, 8, 8, 1) and p.x_test.shape == (32, 8, 8, 1)  # 15 + 15, 16 + 16
    for x, y in ((p.x_train, p.y_train), (p.x_test, p.y_test)):
        assert np.array_equal(y, (x[:, 0, 0, 0] == 1).astype(np.float32))  # label 1 exactly for the generated
        assert y.mean() == 0.5


@pytest.mark.parametrize("real, fake, message", [
    (np.zeros((20, 8, 8, 1), np.uint8), np.zeros((20, 8, 8, 1), np.float32), "dtype uint8"),
    (np.zeros((20, 8, 8), np.float32), np.zeros((20, 8, 8), np.float32), r"\(N, H, W, C\)"),
    (np.zeros((20, 8, 8, 1), np.float32), np.zeros((5, 8, 8, 1), np.float32), "at least 10"),
    (np.zeros((20, 8, 8, 1), np.float32), np.full((20, 8, 8, 1), np.nan, np.float32), "NaN"),
    (np.zeros((20, 8, 8, 1), np.float32), np.zeros((20, 8, 8, 3), np.float32), "generated ones"),
])
def test_bad_inputs_say_what_is_wrong(real, fake, message):
    with pytest.raises(UserError, match=message):
        c2st.plan(real, fake)


# ----------------------------------------------------------------------------- evaluate
def _stub_evaluators(calls: list):
    """Evaluators with a fake classifier (features from pixel sums) and a c2st that records its inputs."""

    def features_and_probs(images, dataset):
        flat = images.reshape(len(images), -1)
        feats = np.stack([flat[:, i::128].sum(1) for i in range(128)], 1).astype(np.float32)  # (N, 128)
        return feats, np.full((len(images), 10), 0.1, np.float32)

    def fake_c2st(real, fake, seed=0):
        calls.append((real, fake, seed))
        return dict(zip(c2st.C2ST_KEYS, (0.5, 0.4, 0.6, 0.5, 2 * min(len(real), len(fake))), strict=True))

    return evaluation.evaluators(features_and_probs, fake_c2st)


def test_evaluate_cli_adds_the_c2st_keys_unless_told_not_to(tmp_path, halves):
    calls: list = []
    evaluator = _stub_evaluators(calls)
    samples, out = tmp_path / "s.npy", tmp_path / "m.json"
    np.save(samples, halves[0][:50])
    args = ["--samples", str(samples), "--json", str(out), "--seed", "7", "--reference", "train"]
    assert cli.evaluate_main(args, "evaluate", evaluator, load_generator=None) == 0
    assert list(json.loads(out.read_text())) == list(evaluation.metric_keys("mnist"))
    (real, fake, seed), = calls
    train = load_dataset("mnist", "train").images[:10_000].astype(np.float32) / 127.5 - 1.0
    assert np.array_equal(real, train) and np.array_equal(fake, halves[0][:50]) and seed == 7  # the reference's images
    assert cli.evaluate_main(args + ["--no-c2st"], "evaluate", evaluator, load_generator=None) == 0
    assert list(json.loads(out.read_text())) == list(evaluation.metric_keys("mnist", c2st=False)) and len(calls) == 1
    assert evaluation.metric_keys("mnist")[-5:] == c2st.C2ST_KEYS


def test_eval_c2st_needs_eval_every():
    with pytest.raises(UserError, match="give --eval-every"):
        cli.parse_args(["--eval-c2st"], "train", "")
    config, _ = cli.parse_args(["--eval-c2st", "--eval-every", "100"], "train", "")
    assert config.eval_c2st and not cli.parse_args([], "train", "")[0].eval_c2st


@pytest.mark.slow
def test_eval_c2st_joins_the_evaluated_log_lines(tmp_path):
    from gan_jax import train

    out = str(tmp_path / "run")
    tiny = ["--preset", "tutorial",
            "--g-hidden", "32", "--d-hidden", "32", "--batch-size", "8", "--steps", "4", "--log-every", "2",
            "--sample-every", "4", "--checkpoint-every", "4", "--eval-every", "4", "--eval-samples", "100"]
    assert train.main(["--out-dir", out, *tiny, "--eval-c2st"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4] and "c2st_accuracy" not in rows[0]
    evaluated = rows[1]
    assert set(c2st.C2ST_KEYS) <= set(evaluated) and evaluated["c2st_num_test"] == 100  # 50 + 50 of 100 + 10k
    assert evaluated["c2st_accuracy"] >= 0.9  # 4 steps from random weights: noise, not digits


# ----------------------------------------------------------------------------- the backends
def test_any_image_shape_and_the_same_number_twice(impl):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (40, 9, 13, 3)).astype(np.float32)
    fake = np.clip(real[::-1] + 0.5, -1, 1)  # brighter: easy to spot even from 20 + 20 training images
    first = impl.c2st(real, fake, seed=1)
    assert list(first) == list(c2st.C2ST_KEYS) and first["c2st_num_test"] == 40
    assert first["c2st_accuracy"] >= 0.9
    assert impl.c2st(real, fake, seed=1) == first  # fixed seeds, same CPU: the same bits


# The calibration runs (real against real, noise, a two-pixel shift) are in parity_tests/test_c2st_parity.py,
# which runs each once per backend for its agreement checks too.
