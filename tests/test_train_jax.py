"""The JAX product end to end: losses, the real CLI, outputs, resume, determinism, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from gan_common.config import Config
from gan_common.loop import TrainingDiverged, train_loop
from gan_jax import backend, checkpoint, losses, sample, train
from gan_jax import evaluate as gan_jax_evaluate
from gan_jax.fused import make_train_chunk
from gan_jax.step import create, epoch_permutation, step_draws, train_step

FAST = ["--log-every", "10", "--sample-every", "20", "--checkpoint-every", "20", "--steps-per-call", "7"]


def run_cli(*argv):
    return train.main(list(argv))


# ----------------------------------------------------------------------------- losses
def test_losses_match_hand_computed_values():
    real = np.array([2.0, -1.0, 0.0], np.float32)
    fake = np.array([-3.0, 0.5, 1.0], np.float32)
    sig = lambda l: 1 / (1 + np.exp(-l.astype(np.float64)))  # noqa: E731
    expected_d = -np.log(sig(real)).mean() - np.log(1 - sig(fake)).mean()
    # float32 softplus vs float64 log-sigmoid: agreement to a few float32 ulps of values ~1.
    np.testing.assert_allclose(losses.d_loss_fn(real, fake), expected_d, rtol=1e-6)
    np.testing.assert_allclose(losses.g_loss_fn(fake, "non_saturating"), -np.log(sig(fake)).mean(), rtol=1e-6)
    np.testing.assert_allclose(losses.g_loss_fn(fake, "minimax"), np.log(1 - sig(fake)).mean(), rtol=1e-6)
    # At D's equilibrium (logits 0, D = 1/2) the D loss is 2 log 2.
    np.testing.assert_allclose(losses.d_loss_fn(np.zeros(4), np.zeros(4)), 2 * np.log(2), rtol=1e-6)


def test_losses_stay_finite_where_probabilities_underflow():
    huge = jnp.array([100.0, -100.0])
    # sigmoid(-100) underflows to 0 in float32, so log(sigmoid) would be -inf; softplus gives 100.
    np.testing.assert_allclose(losses.d_loss_fn(-huge, huge), 100.0, rtol=1e-6)
    g = jax.grad(lambda l: losses.g_loss_fn(l, "non_saturating"))(jnp.array([-100.0]))
    assert np.isfinite(g).all() and g[0] == pytest.approx(-1.0)  # d/dl softplus(-l) = -sigmoid(-l) -> -1


# ----------------------------------------------------------------------------- the real CLI
@pytest.fixture(scope="module")
def run40(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "r")
    assert run_cli("--out-dir", out, "--steps", "40", *FAST, "--eval-every", "20", "--eval-samples", "300") == 0
    return out


@pytest.mark.slow
def test_cli_writes_every_output(run40):
    assert json.load(open(os.path.join(run40, "config.json")))["steps"] == 40
    rows = [json.loads(line) for line in open(os.path.join(run40, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    for key in ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "steps_per_s", "wall_time"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 for r in rows)
    # steps/s is timed from one fetched (finished) interval to the next: a rate above 20k steps/s
    # (>10x any device here) would mean it timed the asynchronous dispatch instead.
    assert all(0 < r["steps_per_s"] < 20_000 for r in rows)
    # --eval-every 20: FID-MNIST and coverage join the log lines of steps 20 and 40 only.
    assert [r["step"] for r in rows if "fid_mnist" in r] == [20, 40]
    assert all(r["fid_mnist"] > 0 and 1 <= r["classes_covered"] <= 10 for r in rows if "fid_mnist" in r)
    assert sorted(os.listdir(os.path.join(run40, "samples"))) == ["step_0000020.png", "step_0000040.png"]
    assert os.path.getsize(os.path.join(run40, "losses.png")) > 10_000
    ckpt = os.path.join(run40, "checkpoints", "40")
    assert {"state", "meta", "weights.safetensors"} <= set(os.listdir(ckpt))
    weights = load_file(os.path.join(ckpt, "weights.safetensors"))
    assert weights["generator.fc1.kernel"].shape == (100, 256)  # (in, out)
    assert weights["discriminator.fc3.kernel"].shape == (256, 1)
    assert len(weights) == 12


@pytest.mark.slow
def test_out_dir_holding_a_run_is_refused_without_resume(run40, capsys):
    assert run_cli("--out-dir", run40, "--steps", "5") == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_sample_cli_writes_npy_and_png(run40, tmp_path):
    npy, png = str(tmp_path / "s.npy"), str(tmp_path / "s.png")
    assert sample.main(["--checkpoint", run40, "--num", "10", "--out", npy]) == 0
    x = np.load(npy)
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1
    assert sample.main(["--checkpoint", os.path.join(run40, "checkpoints", "20"), "--num", "9", "--out", png]) == 0
    assert os.path.getsize(png) > 0


@pytest.mark.slow
def test_evaluate_cli_scores_a_checkpoint(run40, tmp_path):
    out = str(tmp_path / "eval.json")
    assert gan_jax_evaluate.main(["--checkpoint", run40, "--num", "500", "--json", out]) == 0
    result = json.load(open(out))
    for key in ("fid_mnist", "kid", "classifier_score", "classes_covered", "precision", "recall"):
        assert np.isfinite(result[key]), key
    assert result["num_samples"] == 500
    # 40 steps of training: far from real digits (real-vs-real FID is about 2; see docs/evaluation.md).
    assert result["fid_mnist"] > 50


def test_sample_cli_rejects_missing_and_corrupt_checkpoints(tmp_path, capsys):
    assert sample.main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "a.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert sample.main(["--checkpoint", str(bad), "--out", str(tmp_path / "a.npy")]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli("--out-dir", a, "--steps", "50", *FAST) == 0
    assert run_cli("--out-dir", b, "--steps", "20", *FAST) == 0  # "interrupted" at step 20 (a log step)
    assert run_cli("--out-dir", b, "--resume", "--steps", "50") == 0
    wa = load_file(os.path.join(a, "checkpoints", "50", "weights.safetensors"))
    wb = load_file(os.path.join(b, "checkpoints", "50", "weights.safetensors"))
    for k in wa:  # bit-identical: the step's noise and batch depend only on (seed, step)
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    la = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl"))]
    lb = [json.loads(line) for line in open(os.path.join(b, "metrics.jsonl"))]
    assert [(r["step"], r["d_loss"], r["g_loss"]) for r in la] == [(r["step"], r["d_loss"], r["g_loss"]) for r in lb]


@pytest.mark.slow
def test_resume_restores_the_optimiser_state_and_step(tmp_path):
    out = str(tmp_path / "r")
    assert run_cli("--out-dir", out, "--steps", "20", *FAST) == 0
    config = Config.from_json_file(os.path.join(out, "config.json"))
    gan, fresh = create(config)
    state = checkpoint.restore_latest(os.path.join(out, "checkpoints"), gan, fresh)
    assert int(state.step) == 20
    assert int(state.g_opt[0].count) == 20  # Adam's bias-correction count resumes too


@pytest.mark.slow
def test_same_seed_twice_is_bit_identical_and_another_seed_differs():
    config = Config(steps=30)
    data = np.random.default_rng(0).integers(0, 256, (640, 28, 28, 1), dtype=np.uint8)
    runs = []
    for seed in (0, 0, 1):
        gan, state = create(Config(seed=seed))
        chunk = make_train_chunk(gan, len(data))
        _, m = chunk(state, jnp.asarray(data), num_steps=config.steps)
        runs.append(np.asarray(m))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.slow
def test_a_chunk_draws_what_step_by_step_draws_and_its_length_does_not_matter():
    """The fused loop draws all K steps' noise, interpolation weights and labels before its scan
    (one threefry call instead of several a step); what step t is fed must still be the (key, t)
    function `step_draws`, bit for bit, so that neither K nor a resume can change a run."""
    config = Config(loss="wgan_gp", n_critic=2, conditional=True, batch_size=8, latent_dim=6)
    key, steps = jax.random.PRNGKey(3), jnp.arange(5, 9)
    batched = jax.jit(jax.vmap(lambda s: step_draws(key, s, config)))(steps)
    for i, step in enumerate(steps):
        one = jax.jit(lambda s: step_draws(key, s, config))(step)
        for a, b in zip(batched, one, strict=True):
            np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b))

    # 12 steps of 10 an epoch as one call and as 5 + 7 (across the epoch boundary): the same
    # metrics and weights, and every step fed the noise step_draws gives for its own step number.
    fed = []

    def recording_step(gan, state, x, z_d, z_g, eps=None, labels=None):
        jax.debug.callback(lambda *a: fed.append([np.asarray(v) for v in a]), state.step, z_d, z_g, ordered=True)
        return train_step(gan, state, x, z_d, z_g, eps, labels)

    data = jnp.asarray(np.random.default_rng(0).integers(0, 256, (640, 28, 28, 1), dtype=np.uint8))
    runs = []
    for split in ((12,), (5, 7)):
        gan, state = create(Config(seed=1))
        chunk = make_train_chunk(gan, len(data), step_fn=recording_step)
        metrics = []
        for k in split:
            state, m = chunk(state, data, num_steps=k)
            metrics.append(np.asarray(m))
        runs.append((np.concatenate(metrics), np.asarray(jax.tree.leaves(state.g_params)[0])))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    jax.effects_barrier()
    assert [int(step) for step, _, _ in fed] == list(range(12)) * 2
    run_config = Config(seed=1)
    for step, z_d, z_g in fed:
        want = step_draws(jax.random.PRNGKey(1), jnp.int32(step), run_config)
        np.testing.assert_array_equal(z_d, np.asarray(want[0]))
        np.testing.assert_array_equal(z_g, np.asarray(want[1]))


def test_epochs_are_fresh_permutations_and_drop_the_partial_batch():
    key = jax.random.PRNGKey(0)
    p0, p1 = (np.asarray(epoch_permutation(key, e, 1000)) for e in (0, 1))
    assert sorted(p0) == list(range(1000)) and not np.array_equal(p0, p1)
    # 1000 images at batch 64: 15 full batches per epoch; step 15 starts epoch 1.
    assert Config(batch_size=64, epochs=2).total_steps(1000) == 30


def test_too_large_batch_and_unwritable_out_dir(tmp_path, capsys):
    assert run_cli("--out-dir", str(tmp_path / "big"), "--batch-size", "70000", "--steps", "1") == 2
    assert "--batch-size 70000 exceeds the 60000 training images" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli("--out-dir", str(blocker / "sub"), "--steps", "1") == 2
    assert "is not writable" in capsys.readouterr().err


@pytest.mark.slow
def test_device_counts_the_process_cannot_give_are_refused(tmp_path, capsys):
    """Once JAX has started with one CPU device, --devices 8 must say how to get 8."""
    assert len(jax.devices()) == 1  # starts JAX now if no earlier test did: too late to simulate 8
    assert run_cli("--out-dir", str(tmp_path / "d8"), "--devices", "8", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "--devices 8, but JAX sees 1 cpu device(s)" in err and "xla_force_host_platform_device_count=8" in err
    assert err.count("\n") == 1
    assert not os.path.exists(tmp_path / "d8")  # refused before the run folder is written


@pytest.mark.slow
def test_bf16_trains_and_samples_in_float32_outputs(tmp_path):
    out = str(tmp_path / "bf16")
    assert run_cli("--out-dir", out, "--steps", "20", "--precision", "bf16", *FAST) == 0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [10, 20] and all(np.isfinite(r["d_loss"]) for r in rows)
    weights = load_file(os.path.join(out, "checkpoints", "20", "weights.safetensors"))
    assert {w.dtype for w in weights.values()} == {np.dtype(np.float32)}
    generate, config = backend.load_generator(out)
    images = generate(np.zeros((3, config.latent_dim), np.float32))
    assert config.precision == "bf16" and images.dtype == np.float32 and images.shape == (3, 28, 28, 1)


@pytest.mark.slow
def test_resume_rejects_missing_and_corrupt_checkpoints(tmp_path, capsys):
    assert run_cli("--out-dir", str(tmp_path / "empty"), "--resume") == 2
    assert "holds no run" in capsys.readouterr().err
    out = str(tmp_path / "r")
    assert run_cli("--out-dir", out, "--steps", "20", *FAST) == 0
    # Damage every data file of the newest checkpoint's orbax state.
    for root, _, files in os.walk(os.path.join(out, "checkpoints", "20", "state")):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\0garbage")
    assert run_cli("--out-dir", out, "--resume", "--steps", "30") == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "unreadable or corrupt" in err and "Traceback" not in err


class _DivergingBackend:
    """A stand-in backend whose losses turn NaN at step 37, to test the host loop's guard."""

    def __init__(self, root):
        self.step, self.root, self.saved = 0, root, []

    def run(self, n):
        steps = np.arange(self.step + 1, self.step + n + 1)
        self.step += n
        m = np.ones((n, 4))
        m[steps >= 37, 0] = np.nan
        return m

    def fetch(self, m):
        return m

    def sample(self):
        return np.zeros((4, 28, 28, 1), np.float32)

    def save_checkpoint(self):
        self.saved.append(self.step)
        return ""


@pytest.mark.slow
def test_nan_losses_stop_training_naming_the_step_and_keep_the_last_good_checkpoint(tmp_path):
    config = Config(out_dir=str(tmp_path), log_every=10, sample_every=100, checkpoint_every=20, steps_per_call=5)
    backend = _DivergingBackend(tmp_path)
    with pytest.raises(TrainingDiverged, match="non-finite at step 37"):
        train_loop(config, backend, total_steps=100, steps_per_epoch=50, backend_name="gan_jax")
    assert backend.saved == [20]  # nothing written after the divergence


@pytest.mark.slow
def test_sigint_writes_a_checkpoint_and_exits_0_saying_how_to_resume(tmp_path):
    out = str(tmp_path / "r")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gan_jax.train", "--out-dir", out, "--steps", "1000000", "--log-every", "20",
         "--steps-per-call", "10"],
        stderr=subprocess.PIPE, text=True,
    )
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 120
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "--resume" in err
    steps = [int(s) for s in os.listdir(os.path.join(out, "checkpoints"))]
    assert len(steps) == 1 and steps[0] > 0
