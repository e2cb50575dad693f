"""The PyTorch reference end to end: the real CLI, its outputs, resume, and its errors."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from gan_common.config import Config
from gan_torch import losses, sample, train
from gan_torch.backend import TorchBackend, load_generator
from gan_torch.step import epoch_permutation

FAST = ["--log-every", "10", "--sample-every", "20", "--checkpoint-every", "10"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def run_cli(*argv):
    return train.main(list(argv))


@pytest.fixture(scope="module")
def run40(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "r")
    assert run_cli("--out-dir", out, "--steps", "40", *FAST, "--eval-every", "20", "--eval-samples", "300") == 0
    return out


def _state(run: str, step: int) -> dict:
    return torch.load(os.path.join(run, "checkpoints", str(step), "state.pt"), weights_only=True)


@pytest.mark.slow
def test_cli_writes_every_output(run40):
    assert json.load(open(os.path.join(run40, "config.json")))["steps"] == 40
    rows = [json.loads(line) for line in open(os.path.join(run40, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    for key in ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "steps_per_s", "wall_time"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 for r in rows)
    # --eval-every 20 (torch classifier port): FID-MNIST and coverage join the lines of steps 20 and 40.
    assert [r["step"] for r in rows if "fid_mnist" in r] == [20, 40]
    assert all(r["fid_mnist"] > 0 and 1 <= r["classes_covered"] <= 10 for r in rows if "fid_mnist" in r)
    assert sorted(os.listdir(os.path.join(run40, "samples"))) == ["step_0000020.png", "step_0000040.png"]
    assert os.path.getsize(os.path.join(run40, "losses.png")) > 10_000
    # Checkpoints at 10, 20, 30, 40; the newest three are kept, and no temporary folder is left.
    assert sorted(os.listdir(os.path.join(run40, "checkpoints"))) == ["20", "30", "40"]
    ckpt = os.path.join(run40, "checkpoints", "40")
    assert sorted(os.listdir(ckpt)) == ["state.pt", "weights.safetensors"]
    weights = load_file(os.path.join(ckpt, "weights.safetensors"))
    assert len(weights) == 12
    assert weights["generator.fc1.kernel"].shape == (100, 256)  # (in, out): torch's weight transposed
    assert weights["discriminator.fc3.kernel"].shape == (256, 1)
    state = _state(run40, 40)  # plain tensors and Python values: loads with weights_only=True
    assert int(state["step"]) == 40 and state["rng"].dtype == torch.uint8
    np.testing.assert_array_equal(weights["generator.fc1.kernel"], state["generator"]["fc1.weight"].numpy().T)
    assert int(state["g_opt"]["state"][0]["step"]) == 40  # Adam's bias-correction count


@pytest.mark.slow
def test_resume_equals_uninterrupted(run40, tmp_path):
    b = str(tmp_path / "b")
    assert run_cli("--out-dir", b, "--steps", "20", *FAST) == 0  # "interrupted" at step 20
    assert run_cli("--out-dir", b, "--resume", "--steps", "40") == 0
    wa = load_file(os.path.join(run40, "checkpoints", "40", "weights.safetensors"))
    wb = load_file(os.path.join(b, "checkpoints", "40", "weights.safetensors"))
    for k in wa:  # bit-identical: the noise generator's state and the epoch's order come back exactly
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    sa, sb = _state(run40, 40), _state(b, 40)
    assert torch.equal(sa["rng"], sb["rng"])
    for opt in ("g_opt", "d_opt"):
        for i, slot in sa[opt]["state"].items():
            for name, value in slot.items():
                assert torch.equal(value, sb[opt]["state"][i][name]), (opt, i, name)
    la = [json.loads(line) for line in open(os.path.join(run40, "metrics.jsonl"))]
    lb = [json.loads(line) for line in open(os.path.join(b, "metrics.jsonl"))]
    assert [(r["step"], r["d_loss"], r["g_loss"]) for r in la] == [(r["step"], r["d_loss"], r["g_loss"]) for r in lb]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.slow
def test_resume_rejects_corrupt_missing_and_foreign_checkpoints(run40, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "r")
    shutil.copytree(run40, out)
    with open(os.path.join(out, "checkpoints", "40", "state.pt"), "wb") as f:
        f.write(b"\0garbage")
    assert run_cli("--out-dir", out, "--resume", "--steps", "50") == 2
    line = _one_error_line(capsys)
    assert "checkpoints/40/state.pt is unreadable or corrupt" in line and "delete that step folder" in line

    os.remove(os.path.join(out, "checkpoints", "40", "state.pt"))
    assert run_cli("--out-dir", out, "--resume", "--steps", "50") == 2
    assert "holds no state.pt" in _one_error_line(capsys)

    os.makedirs(os.path.join(out, "checkpoints", "50", "state"))  # what gan_jax writes: an orbax folder
    assert run_cli("--out-dir", out, "--resume", "--steps", "60") == 2
    assert "written by gan_jax" in _one_error_line(capsys)

    shutil.rmtree(os.path.join(out, "checkpoints"))
    assert run_cli("--out-dir", out, "--resume", "--steps", "60") == 2
    assert "no checkpoints folder" in _one_error_line(capsys)

    assert run_cli("--out-dir", str(tmp_path / "empty"), "--resume") == 2
    assert "holds no run" in _one_error_line(capsys)


@pytest.mark.slow
def test_a_checkpoint_of_another_shape_is_refused(run40, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "r")
    shutil.copytree(run40, out)
    state = _state(out, 40)
    state["generator"]["fc1.weight"] = torch.zeros(3, 3)
    torch.save(state, os.path.join(out, "checkpoints", "40", "state.pt"))
    assert run_cli("--out-dir", out, "--resume", "--steps", "50") == 2
    assert "does not fit this run's models" in _one_error_line(capsys)


@pytest.mark.slow
def test_sample_cli_writes_npy_and_png(run40, tmp_path):
    npy, png = str(tmp_path / "s.npy"), str(tmp_path / "s.png")
    assert sample.main(["--checkpoint", run40, "--num", "10", "--out", npy]) == 0
    x = np.load(npy)
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1
    assert sample.main(["--checkpoint", os.path.join(run40, "checkpoints", "20"), "--num", "9", "--out", png]) == 0
    assert os.path.getsize(png) > 0


def test_sample_cli_rejects_missing_and_corrupt_checkpoints(tmp_path, capsys):
    assert sample.main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "a.npy")]) == 2
    assert "does not exist" in _one_error_line(capsys)
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert sample.main(["--checkpoint", str(bad), "--out", str(tmp_path / "a.npy")]) == 2
    assert "not a readable safetensors file" in _one_error_line(capsys)


def test_losses_match_hand_computed_values():
    real = torch.tensor([2.0, -1.0, 0.0])
    fake = torch.tensor([-3.0, 0.5, 1.0])
    sig = lambda l: 1 / (1 + np.exp(-l.double().numpy()))  # noqa: E731
    # float32 softplus vs float64 log-sigmoid: a few float32 ulps of values ~1.
    np.testing.assert_allclose(losses.d_loss_fn(real, fake), -np.log(sig(real)).mean() - np.log(1 - sig(fake)).mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(losses.g_loss_fn(fake, "non_saturating"), -np.log(sig(fake)).mean(), rtol=1e-6)
    np.testing.assert_allclose(losses.g_loss_fn(fake, "minimax"), np.log(1 - sig(fake)).mean(), rtol=1e-6)
    # Logits far past float32's sigmoid range stay finite: softplus, not log(sigmoid).
    assert losses.d_loss_fn(torch.tensor([-100.0]), torch.tensor([100.0])).item() == pytest.approx(200.0)


def test_epochs_are_fresh_permutations_and_the_partial_batch_is_dropped():
    p0, p1 = (epoch_permutation(0, e, 1000).numpy() for e in (0, 1))
    assert sorted(p0) == list(range(1000)) and not np.array_equal(p0, p1)
    # Image i is filled with i % 256 + its own row i // 256, so a batch tells which images it holds.
    idx = np.arange(1000)
    data = np.zeros((1000, 28, 28, 1), np.uint8)
    data[:, 0, 0, 0], data[:, 0, 1, 0] = idx % 256, idx // 256
    backend = TorchBackend(Config(batch_size=64), data)
    assert backend.steps_per_epoch == 15  # 1000 // 64: the last 40 images of each epoch are skipped
    epochs = []
    for _ in range(2):
        seen = []
        for _ in range(backend.steps_per_epoch):
            x = backend._batch()  # (64, 28, 28, 1) in [-1, 1]
            u8 = np.rint((x.numpy() + 1) * 127.5).astype(int)
            seen.extend(u8[:, 0, 0, 0] + 256 * u8[:, 0, 1, 0])
            backend.state.step += 1  # the state's step count places the batch
        assert len(set(seen)) == 15 * 64  # each image at most once per epoch
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # a fresh order each epoch


@pytest.mark.slow
def test_bf16_trains_in_float32_parameters(tmp_path):
    out = str(tmp_path / "bf16")
    assert run_cli("--out-dir", out, "--steps", "20", "--precision", "bf16", *FAST) == 0
    state = _state(out, 20)
    assert {t.dtype for t in state["generator"].values()} == {torch.float32}
    generate, config = load_generator(out)
    assert generate(np.zeros((3, config.latent_dim), np.float32)).dtype == np.float32


def test_launch_flags_of_the_jax_runtime_are_refused_with_the_torchrun_command(tmp_path, capsys):
    assert run_cli("--out-dir", str(tmp_path / "r"), "--devices", "2", "--steps", "1") == 2
    assert "torchrun --nproc-per-node N -m gan_torch.train" in capsys.readouterr().err
