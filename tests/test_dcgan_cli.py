"""--arch dcgan end to end in both backends: train, resume exactly, sample either's checkpoint, refuse bad combos."""

import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from gan_common.cli import parse_args
from gan_common.errors import UserError

# Tiny nets, few steps: what is tested is the plumbing (BatchNorm statistics in the state, the
# checkpoint and the neutral file; eval-mode sampling), not what the nets learn.
TINY = ["--preset", "tutorial",
        "--arch", "dcgan", "--d-norm", "batch", "--g-channels", "4", "--d-channels", "4", "--latent-dim", "8",
        "--batch-size", "8",
        "--log-every", "4", "--sample-every", "8", "--checkpoint-every", "4", "--steps-per-call", "4"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


def _backends():
    from gan_jax import backend as jax_backend
    from gan_jax import train as jax_train
    from gan_torch import backend as torch_backend
    from gan_torch import train as torch_train

    return {"jax": (jax_train.main, jax_backend.load_generator),
            "torch": (torch_train.main, torch_backend.load_generator)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{backend: (uninterrupted run, run interrupted at step 4 and resumed)}, 8 steps each."""
    root = tmp_path_factory.mktemp("dcgan")
    out = {}
    for name, (main, _) in _backends().items():
        a, b = str(root / f"{name}_a"), str(root / f"{name}_b")
        assert main(["--out-dir", a, "--steps", "8", *TINY]) == 0
        assert main(["--out-dir", b, "--steps", "4", *TINY]) == 0
        assert main(["--out-dir", b, "--resume", "--steps", "8"]) == 0
        out[name] = (a, b)
    return out


def _weights(run: str) -> dict[str, np.ndarray]:
    return load_file(os.path.join(run, "checkpoints", "8", "weights.safetensors"))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_resume_equals_uninterrupted_running_statistics_included(runs, backend):
    a, b = runs[backend]
    wa, wb = _weights(a), _weights(b)
    assert {"generator.bn0.mean", "generator.bn1.var", "discriminator.bn2.mean", "generator.deconv1.kernel"} <= set(wa)
    for k in wa:  # bit-identical: the running statistics are checkpointed with the parameters
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    assert np.max(np.abs(wa["generator.bn1.mean"])) > 0, "G's running statistics never moved"


@pytest.mark.parametrize("trained_by", ["jax", "torch"])
def test_either_backend_samples_either_checkpoint_in_eval_mode(runs, trained_by):
    run = runs[trained_by][0]
    z = np.random.default_rng(3).standard_normal((16, 8), dtype=np.float32)
    images = {}
    for name, (_, load_generator) in _backends().items():
        generate, config = load_generator(run)
        assert config.arch == "dcgan" and config.g_channels == 4
        images[name] = generate(z)
        assert images[name].shape == (16, 28, 28, 1) and images[name].dtype == np.float32
        # Eval mode: each image depends on its own z only (up to the last bits of a different batch size).
        np.testing.assert_allclose(generate(z[:4]), images[name][:4], atol=1e-6)
    # Same weights and running statistics, same z: test_step_parity's forward tolerance.
    assert np.max(np.abs(images["jax"] - images["torch"])) <= 1e-5


def test_torch_backend_samples_in_eval_mode_and_stays_in_train_mode():
    import torch

    from gan_common.config import Config
    from gan_torch.backend import TorchBackend

    backend = TorchBackend(Config.tutorial(arch="dcgan", g_channels=4, d_channels=4, latent_dim=8, batch_size=8),
                           np.zeros((16, 28, 28, 1), np.uint8))
    G = backend.state.generator
    before = G.bn1.running_mean.clone()
    z = np.random.default_rng(0).standard_normal((4, 8), dtype=np.float32)
    np.testing.assert_allclose(backend.generate(z)[:1], backend.generate(z[:1]), atol=1e-6)  # no batch statistics
    assert torch.equal(G.bn1.running_mean, before) and G.training


@pytest.mark.parametrize("argv, fragment", [
    (["--g-channels", "32"], "--g-channels applies only to --arch dcgan"),
    (["--d-norm", "none"], "--d-norm applies only to --arch dcgan"),
    (["--arch", "dcgan", "--g-hidden", "128"], "--g-hidden applies only to --arch mlp"),
    (["--arch", "dcgan", "--d-norm", "batch", "--loss", "wgan_gp", "--r1-weight", "0"], "--d-norm spectral or none"),
    (["--arch", "dcgan", "--d-norm", "batch"], r"R1 \(--r1-weight 5, on by default\).*--r1-weight 0"),
    (["--arch", "dcgan", "--d-channels", "0"], "--d-channels must be a positive integer"),
])
def test_bad_combinations_are_one_line_errors(argv, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_args(argv, "test", "test")
