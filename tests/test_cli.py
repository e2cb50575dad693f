"""Both backends' CLIs end to end (train, sample, evaluate; outputs, resume, errors) and the pieces of the step
that each backend has its own copy of (losses, epoch order).

A test that holds for both backends runs once for each (`backend`: gan_jax, gan_torch), through that backend's
modules; what only one backend has (torch's state.pt, JAX's orbax folders) sits in a branch marked with its name,
or in a test for that backend alone (`only`). The JAX fused loop's own tests are in tests/test_train_jax.py.
"""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from gan_common.checkpoints import write_manifest
from gan_common.config import Config
from gan_common.errors import UserError
from gan_common.loop import _StopFlag

BACKENDS = ("gan_jax", "gan_torch")
# Tiny nets (the defaults are 256,512 and 512,256): these tests check the CLI's wiring and files, not what G learns.
SMALL = ["--preset", "tutorial", "--g-hidden", "32,64", "--d-hidden", "64,32"]
# Every chunk 10 steps long (the loop also cuts a chunk at each log, sample and checkpoint step), so every gan_jax
# run here needs the same K-step program, compiled once a session (the cache set up in the repo root's conftest.py).
FAST = ["--log-every", "10", "--steps-per-call", "10", "--sample-every", "20", "--checkpoint-every", "10"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def only(name: str):
    """Run a test that takes `backend` (and so `run40`) for one backend."""
    return pytest.mark.parametrize("backend", [name], indirect=True)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


def _module(backend: str, name: str):
    return importlib.import_module(f"{backend}.{name}")


def run_cli(backend: str, *argv: str) -> int:
    return _module(backend, "train").main(list(argv))


@pytest.fixture(scope="module")
def run40(backend, tmp_path_factory) -> str:
    """A 40-step run of `backend`, evaluated at steps 20 and 40; tests read it, or copy it before changing it."""
    out = str(tmp_path_factory.mktemp(backend) / "r")
    argv = ["--out-dir", out, "--steps", "40", *SMALL, *FAST, "--eval-every", "20", "--eval-samples", "300"]
    assert run_cli(backend, *argv) == 0
    return out


def _rows(run: str) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _weights(run: str, step: int) -> dict[str, np.ndarray]:
    return load_file(os.path.join(run, "checkpoints", str(step), "weights.safetensors"))


def _torch_state(run: str, step: int) -> dict:
    import torch

    return torch.load(os.path.join(run, "checkpoints", str(step), "state.pt"), weights_only=True)


def _jax_state(run: str):
    """The newest checkpoint of a gan_jax run, restored as --resume restores it."""
    from gan_jax import checkpoint
    from gan_jax.step import create

    gan, fresh = create(Config.from_json_file(os.path.join(run, "config.json")))
    return checkpoint.restore_latest(os.path.join(run, "checkpoints"), gan, fresh)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- the train CLI
@pytest.mark.slow
def test_cli_writes_every_output(backend, run40):
    assert json.load(open(os.path.join(run40, "config.json")))["steps"] == 40
    rows = _rows(run40)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    for key in ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "steps_per_s", "wall_time"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 for r in rows)
    # steps/s is timed from one fetched (finished) interval to the next: a rate above 20k steps/s
    # (>10x any device here, even for these tiny nets) would mean it timed the asynchronous dispatch instead.
    assert all(0 < r["steps_per_s"] < 20_000 for r in rows)
    # --eval-every 20: FID-MNIST and coverage join the log lines of steps 20 and 40 only.
    assert [r["step"] for r in rows if "fid_mnist" in r] == [20, 40]
    assert all(r["fid_mnist"] > 0 and 1 <= r["classes_covered"] <= 10 for r in rows if "fid_mnist" in r)
    assert sorted(os.listdir(os.path.join(run40, "samples"))) == ["step_0000020.png", "step_0000040.png"]
    assert os.path.getsize(os.path.join(run40, "losses.png")) > 10_000
    # Checkpoints at 10, 20, 30, 40; the newest three are kept, and no temporary folder is left.
    assert sorted(os.listdir(os.path.join(run40, "checkpoints"))) == ["20", "30", "40"]
    ckpt = os.path.join(run40, "checkpoints", "40")
    weights = _weights(run40, 40)
    assert len(weights) == 12
    assert weights["generator.fc1.kernel"].shape == (100, 32)  # (in, out): z to --g-hidden's first width
    assert weights["discriminator.fc3.kernel"].shape == (32, 1)  # --d-hidden's last width to one logit
    if backend == "gan_jax":  # orbax's state and meta beside the neutral file
        assert {"state", "meta", "weights.safetensors"} <= set(os.listdir(ckpt))
        state = _jax_state(run40)
        assert int(state.step) == 40
        assert int(state.g_opt[0].count) == 40  # Adam's bias-correction count resumes too
    else:  # gan_torch: one state.pt of plain tensors and Python values, loadable with weights_only=True
        assert sorted(os.listdir(ckpt)) == ["manifest.json", "state.pt", "weights.safetensors"]
        import torch

        state = _torch_state(run40, 40)
        assert int(state["step"]) == 40 and state["rng"].dtype == torch.uint8
        # The neutral file's (in, out) kernel is torch's (out, in) weight transposed.
        np.testing.assert_array_equal(weights["generator.fc1.kernel"], state["generator"]["fc1.weight"].numpy().T)
        assert int(state["g_opt"]["state"][0]["step"]) == 40  # Adam's bias-correction count


@pytest.mark.slow
def test_out_dir_holding_a_run_is_refused_without_resume(backend, run40, capsys):
    assert run_cli(backend, "--out-dir", run40, "--steps", "5") == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_equals_uninterrupted(backend, run40, tmp_path):
    b = str(tmp_path / "b")
    assert run_cli(backend, "--out-dir", b, "--steps", "20", *SMALL, *FAST) == 0  # "interrupted" at step 20
    assert run_cli(backend, "--out-dir", b, "--resume", "--steps", "40") == 0
    wa, wb = _weights(run40, 40), _weights(b, 40)
    # Bit-identical: gan_jax draws each step's noise and batch from (seed, step) alone; gan_torch restores its
    # noise generator's state and the epoch's order exactly. (run40's evaluations draw nothing from either.)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    la, lb = _rows(run40), _rows(b)
    assert [(r["step"], r["d_loss"], r["g_loss"]) for r in la] == [(r["step"], r["d_loss"], r["g_loss"]) for r in lb]
    if backend == "gan_jax":  # the whole state: step, run key and both Adam states
        import jax

        sa, sb = _jax_state(run40), _jax_state(b)
        leaves_b = jax.tree_util.tree_leaves(sb)
        leaves_a = jax.tree_util.tree_leaves_with_path(sa)
        assert len(leaves_a) == len(leaves_b)
        for (path, x), y in zip(leaves_a, leaves_b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
    else:  # gan_torch: the noise generator's state and both Adam states
        import torch

        sa, sb = _torch_state(run40, 40), _torch_state(b, 40)
        assert torch.equal(sa["rng"], sb["rng"])
        for opt in ("g_opt", "d_opt"):
            for i, slot in sa[opt]["state"].items():
                for name, value in slot.items():
                    assert torch.equal(value, sb[opt]["state"][i][name]), (opt, i, name)


@pytest.mark.slow
def test_resume_rejects_missing_and_corrupt_checkpoints(backend, run40, tmp_path, capsys):
    out = str(tmp_path / "r")
    shutil.copytree(run40, out)
    # Damage every checkpoint: with one good one left, --resume falls back to it (tests/test_faults_checkpoint.py).
    for step in (20, 30, 40):
        folder = os.path.join(out, "checkpoints", str(step))
        if backend == "gan_jax":  # every data file of its orbax state
            damaged = [os.path.join(root, f) for root, _, files in os.walk(os.path.join(folder, "state"))
                       for f in files]
        else:
            damaged = [os.path.join(folder, "state.pt")]
        assert damaged
        for path in damaged:
            with open(path, "wb") as fh:
                fh.write(b"\0garbage")
    assert run_cli(backend, "--out-dir", out, "--resume", "--steps", "50") == 2
    line = _one_error_line(capsys)  # one line, so no traceback
    assert "no complete checkpoint in" in line and "checkpoints/40 is corrupt" in line
    if backend == "gan_torch":  # the file it names, and the other ways a torch run's checkpoints can be missing
        assert "checkpoints/40 is corrupt (state.pt is 8 bytes" in line

        os.remove(os.path.join(out, "checkpoints", "40", "state.pt"))
        assert run_cli(backend, "--out-dir", out, "--resume", "--steps", "50") == 2
        assert "checkpoints/40 is incomplete (no state.pt)" in _one_error_line(capsys)
        # No checkpoints folder at all restarts the run from step 0 (tests/test_faults_run.py).

    assert run_cli(backend, "--out-dir", str(tmp_path / "empty"), "--resume") == 2
    assert "holds no run" in _one_error_line(capsys)


@pytest.mark.slow
@only("gan_torch")
def test_a_checkpoint_of_another_shape_is_refused(backend, run40, tmp_path, capsys):
    import torch

    out = str(tmp_path / "r")
    shutil.copytree(run40, out)
    state = _torch_state(out, 40)
    state["generator"]["fc1.weight"] = torch.zeros(3, 3)
    torch.save(state, os.path.join(out, "checkpoints", "40", "state.pt"))
    write_manifest(os.path.join(out, "checkpoints", "40"), 40, "gan_torch")  # signed again: intact, but misfit
    assert run_cli(backend, "--out-dir", out, "--resume", "--steps", "50") == 2
    assert "does not fit this run's models" in _one_error_line(capsys)


@pytest.mark.slow
def test_bf16_trains_and_samples_in_float32_outputs(backend, tmp_path):
    out = str(tmp_path / "bf16")
    assert run_cli(backend, "--out-dir", out, "--steps", "20", "--precision", "bf16", *SMALL, *FAST) == 0
    rows = _rows(out)
    assert [r["step"] for r in rows] == [10, 20] and all(np.isfinite(r["d_loss"]) for r in rows)
    weights = _weights(out, 20)
    assert {w.dtype for w in weights.values()} == {np.dtype(np.float32)}
    if backend == "gan_torch":  # the parameters it trained, as state.pt holds them
        import torch

        assert {t.dtype for t in _torch_state(out, 20)["generator"].values()} == {torch.float32}
    generate, config = _module(backend, "backend").load_generator(out)
    images = generate(np.zeros((3, config.latent_dim), np.float32))
    assert config.precision == "bf16" and images.dtype == np.float32 and images.shape == (3, 28, 28, 1)


def test_too_large_batch_and_unwritable_out_dir(backend, tmp_path, capsys):
    assert run_cli(backend, "--out-dir", str(tmp_path / "big"), "--batch-size", "70000", "--steps", "1") == 2
    assert "--batch-size 70000 exceeds the 60000 training images" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(backend, "--out-dir", str(blocker / "sub"), "--steps", "1") == 2
    assert "is not writable" in capsys.readouterr().err


@pytest.mark.slow
def test_jax_device_counts_the_process_cannot_give_are_refused(tmp_path, capsys):
    """Once JAX has started with one CPU device, --devices 8 must say how to get 8."""
    import jax

    assert len(jax.devices()) == 1  # starts JAX now if no earlier test did: too late to simulate 8
    assert run_cli("gan_jax", "--out-dir", str(tmp_path / "d8"), "--devices", "8", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "--devices 8, but JAX sees 1 cpu device(s)" in err and "xla_force_host_platform_device_count=8" in err
    assert err.count("\n") == 1
    assert not os.path.exists(tmp_path / "d8")  # refused before the run folder is written


def test_torch_refuses_the_jax_runtimes_launch_flags_with_the_torchrun_command(tmp_path, capsys):
    assert run_cli("gan_torch", "--out-dir", str(tmp_path / "r"), "--devices", "2", "--steps", "1") == 2
    assert "torchrun --nproc-per-node N -m gan_torch.train" in capsys.readouterr().err


@pytest.mark.slow
def test_jax_sigint_writes_a_checkpoint_and_exits_0_saying_how_to_resume(tmp_path):
    out = str(tmp_path / "r")
    # SMALL and 10-step chunks: the programs run40 compiled (the subprocess shares the session's cache). No
    # checkpoint step is reached before the signal, so the one checkpoint is Ctrl-C's.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gan_jax.train", "--out-dir", out, "--steps", "1000000", "--log-every", "20",
         "--steps-per-call", "10", "--checkpoint-every", "1000000", *SMALL],
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


# ----------------------------------------------------------------------------- the sample and evaluate CLIs
@pytest.mark.slow
def test_sample_cli_writes_npy_and_png(backend, run40, tmp_path):
    sample = _module(backend, "sample")
    npy, png = str(tmp_path / "s.npy"), str(tmp_path / "s.png")
    assert sample.main(["--checkpoint", run40, "--num", "10", "--out", npy]) == 0
    x = np.load(npy)
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1
    assert sample.main(["--checkpoint", os.path.join(run40, "checkpoints", "20"), "--num", "9", "--out", png]) == 0
    assert os.path.getsize(png) > 0


def test_sample_cli_rejects_missing_and_corrupt_checkpoints(backend, tmp_path, capsys):
    sample = _module(backend, "sample")
    assert sample.main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "a.npy")]) == 2
    assert "does not exist" in _one_error_line(capsys)
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert sample.main(["--checkpoint", str(bad), "--out", str(tmp_path / "a.npy")]) == 2
    assert "not a readable safetensors file" in _one_error_line(capsys)


@pytest.mark.slow
@only("gan_jax")  # the metrics are gan_common's; gan_torch's classifier port: tests/test_fashion_evaluation.py
def test_evaluate_cli_scores_a_checkpoint(backend, run40, tmp_path):
    out = str(tmp_path / "eval.json")
    assert _module(backend, "evaluate").main(["--checkpoint", run40, "--num", "500", "--no-c2st", "--json", out]) == 0
    result = json.load(open(out))
    for key in ("fid_mnist", "kid", "classifier_score", "classes_covered", "precision", "recall"):
        assert np.isfinite(result[key]), key
    assert result["num_samples"] == 500
    # 40 steps of training: far from real digits (real-vs-real FID is about 2; see docs/evaluation.md).
    assert result["fid_mnist"] > 50


# ----------------------------------------------------------------------------- the step's pieces
def _tensor(backend: str, values):
    """float32 values as the backend's array type."""
    if backend == "gan_jax":
        import jax.numpy as jnp

        return jnp.asarray(values, jnp.float32)
    import torch

    return torch.tensor(values, dtype=torch.float32)


def test_losses_match_hand_computed_values(backend):
    losses = _module(backend, "losses")
    real, fake = [2.0, -1.0, 0.0], [-3.0, 0.5, 1.0]
    sig = lambda logits: 1 / (1 + np.exp(-np.asarray(logits, np.float64)))  # noqa: E731
    expected_d = -np.log(sig(real)).mean() - np.log(1 - sig(fake)).mean()
    real_t, fake_t = _tensor(backend, real), _tensor(backend, fake)
    # float32 softplus vs float64 log-sigmoid: agreement to a few float32 ulps of values ~1.
    np.testing.assert_allclose(losses.d_loss_fn(real_t, fake_t), expected_d, rtol=1e-6)
    np.testing.assert_allclose(losses.g_loss_fn(fake_t, "non_saturating"), -np.log(sig(fake)).mean(), rtol=1e-6)
    np.testing.assert_allclose(losses.g_loss_fn(fake_t, "minimax"), np.log(1 - sig(fake)).mean(), rtol=1e-6)
    # At D's equilibrium (logits 0, D = 1/2) the D loss is 2 log 2.
    zeros = _tensor(backend, np.zeros(4))
    np.testing.assert_allclose(losses.d_loss_fn(zeros, zeros), 2 * np.log(2), rtol=1e-6)
    # Logits far past float32's sigmoid range stay finite: softplus, not log(sigmoid).
    assert float(losses.d_loss_fn(_tensor(backend, [-100.0]), _tensor(backend, [100.0]))) == pytest.approx(200.0)


def test_epochs_are_fresh_permutations_and_drop_the_partial_batch(backend):
    if backend == "gan_jax":
        import jax

        from gan_jax.step import epoch_permutation

        p0, p1 = (np.asarray(epoch_permutation(jax.random.PRNGKey(0), e, 1000)) for e in (0, 1))
    else:
        from gan_torch.step import epoch_permutation

        p0, p1 = (epoch_permutation(0, e, 1000).numpy() for e in (0, 1))
    assert sorted(p0) == list(range(1000)) and not np.array_equal(p0, p1)
    # 1000 images at batch 64: 15 full batches per epoch; step 15 starts epoch 1.
    assert Config.tutorial(batch_size=64, epochs=2).total_steps(1000) == 30
    if backend == "gan_torch":  # the batches TorchBackend takes from them
        from gan_torch.backend import TorchBackend

        # Image i is filled with i % 256 + its own row i // 256, so a batch tells which images it holds.
        idx = np.arange(1000)
        data = np.zeros((1000, 28, 28, 1), np.uint8)
        data[:, 0, 0, 0], data[:, 0, 1, 0] = idx % 256, idx // 256
        torch_backend = TorchBackend(Config.tutorial(batch_size=64), data)
        assert torch_backend.steps_per_epoch == 15  # 1000 // 64: the last 40 images of each epoch are skipped
        epochs = []
        for _ in range(2):
            seen = []
            for _ in range(torch_backend.steps_per_epoch):
                x = torch_backend._batch()  # (64, 28, 28, 1) in [-1, 1]
                u8 = np.rint((x.numpy() + 1) * 127.5).astype(int)
                seen.extend(u8[:, 0, 0, 0] + 256 * u8[:, 0, 1, 0])
                torch_backend.state.step += 1  # the state's step count places the batch
            assert len(set(seen)) == 15 * 64  # each image at most once per epoch
            epochs.append(seen)
        assert epochs[0] != epochs[1]  # a fresh order each epoch


def test_a_second_signal_stops_at_once_in_one_line():
    """The first Ctrl-C / SIGTERM asks for a checkpoint; a second one while it is written stops at once, with one
    error line (not KeyboardInterrupt's traceback, which a second SIGTERM used to print)."""
    flag = _StopFlag()
    flag._handle(signal.SIGTERM, None)
    assert flag.requested == "SIGTERM"
    with pytest.raises(UserError, match="^a second SIGINT after SIGTERM: stopped at once") as e:
        flag._handle(signal.SIGINT, None)
    assert "\n" not in str(e.value)
