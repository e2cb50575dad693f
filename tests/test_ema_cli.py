"""--ema-decay from each backend's real CLI: it trains, writes the EMA, resumes exactly, and samples from it."""

import importlib
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from gan_common.config import Config
from gan_common.weights import save_weights

# A small model and 8 steps: the wiring (flag, checkpoint, resume, sampler), not the maths (parity_tests/test_ema.py).
# The nets of tests/test_cli.py (SMALL there), so gan_jax's programs that do not depend on the EMA (initialising,
# sampling) repeat from that file; every chunk two steps long, so no run compiles a second chunk length.
SMALL = ["--preset", "tutorial", "--g-hidden", "32,64", "--d-hidden", "64,32"]
TINY = ["--log-every", "4", "--sample-every", "8", "--checkpoint-every", "4", "--batch-size", "16",
        *SMALL, "--steps-per-call", "2", "--ema-decay", "0.9"]
BACKENDS = ["gan_jax", "gan_torch"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


def _train(backend: str, *argv: str) -> None:
    assert importlib.import_module(f"{backend}.train").main(list(argv)) == 0


def _weights(run: str, step: int) -> dict:
    return load_file(os.path.join(run, "checkpoints", str(step), "weights.safetensors"))


@pytest.fixture(scope="module", params=BACKENDS)
def run8(request, tmp_path_factory):
    out = str(tmp_path_factory.mktemp(request.param) / "r")
    _train(request.param, "--out-dir", out, "--steps", "8", *TINY)
    return request.param, out


def test_ema_is_trained_and_written(run8):
    backend, run = run8
    assert json.load(open(os.path.join(run, "config.json")))["ema_decay"] == 0.9
    w = _weights(run, 8)
    g = {k[len("generator."):]: v for k, v in w.items() if k.startswith("generator.")}
    ema = {k[len("generator_ema."):]: v for k, v in w.items() if k.startswith("generator_ema.")}
    assert sorted(ema) == sorted(g) == ["fc1.bias", "fc1.kernel", "fc2.bias", "fc2.kernel", "fc3.bias", "fc3.kernel"]
    assert all(ema[k].shape == g[k].shape for k in g)
    # 8 steps at decay 0.9: the EMA lags G by several Adam steps (~1e-3), far from rounding.
    assert 1e-4 < max(np.max(np.abs(ema[k] - g[k])) for k in g) < 1e-2
    assert os.path.isfile(os.path.join(run, "samples", "step_0000008.png"))


def test_resume_with_ema_equals_uninterrupted(run8, tmp_path):
    backend, run = run8
    b = str(tmp_path / "b")
    _train(backend, "--out-dir", b, "--steps", "4", *TINY)  # "interrupted" at step 4
    _train(backend, "--out-dir", b, "--resume", "--steps", "8")
    wa, wb = _weights(run, 8), _weights(b, 8)
    assert sorted(wa) == sorted(wb)
    for k in wa:  # bit-identical, the EMA included: it is restored from the checkpoint, not restarted
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    if backend == "gan_torch":
        import torch

        sa, sb = (torch.load(os.path.join(r, "checkpoints", "8", "state.pt"), weights_only=True) for r in (run, b))
        for k, v in sa["generator_ema"].items():
            assert torch.equal(v, sb["generator_ema"][k]), k


def test_resume_cannot_change_the_ema_decay(run8, capsys):
    backend, run = run8
    assert importlib.import_module(f"{backend}.train").main(["--out-dir", run, "--resume", "--ema-decay", "0.5"]) == 2
    assert "--resume cannot change --ema-decay" in capsys.readouterr().err


def test_sample_cli_draws_from_the_ema(run8, tmp_path):
    backend, run = run8
    sample = importlib.import_module(f"{backend}.sample")
    w = _weights(run, 8)
    config = Config.from_json_file(os.path.join(run, "config.json"))
    # The same file with the EMA's tensors as G's, and the EMA keys dropped: a plain generator file.
    ema_as_g = {k.replace("generator_ema.", "generator."): v for k, v in w.items() if not k.startswith("generator.")}
    g_only = {k: v for k, v in w.items() if not k.startswith("generator_ema.")}
    outs = {}
    for name, source in (("run", run), ("ema_as_g", ema_as_g), ("g_only", g_only)):
        if isinstance(source, dict):
            save_weights(str(tmp_path / f"{name}.safetensors"), source, config)
            source = str(tmp_path / f"{name}.safetensors")
        assert sample.main(["--checkpoint", source, "--num", "8", "--out", str(tmp_path / f"{name}.npy")]) == 0
        outs[name] = np.load(tmp_path / f"{name}.npy")
    np.testing.assert_array_equal(outs["run"], outs["ema_as_g"])  # the same weights, the same backend: exact
    assert np.max(np.abs(outs["run"] - outs["g_only"])) > 1e-4  # G's own weights draw other samples
