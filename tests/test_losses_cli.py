"""Each --loss trains from each backend's real CLI (a few steps), and writes what a run writes."""

import importlib
import json
import os

import numpy as np
import pytest

from gan_common.outputs import read_metrics

LOSS_FLAGS = {
    "hinge": ["--loss", "hinge"],
    "lsgan": ["--loss", "lsgan"],
    "wgan_gp": ["--loss", "wgan_gp", "--n-critic", "2", "--gp-weight", "5"],
    "gan_r1": ["--r1-weight", "10"],
}
# A small model and 4 steps: this checks the wiring (flags, the loop, outputs), not the maths (parity_tests do).
# The nets of tests/test_cli.py (SMALL there), so gan_jax's programs that do not depend on the loss (initialising,
# sampling) repeat from that file; every chunk two steps long, so no run compiles a second chunk length.
SMALL = ["--preset", "tutorial", "--g-hidden", "32,64", "--d-hidden", "64,32"]
TINY = ["--steps", "4", "--log-every", "2", "--sample-every", "4", "--checkpoint-every", "4", "--batch-size", "16",
        *SMALL, "--steps-per-call", "2"]


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


@pytest.mark.parametrize("loss", LOSS_FLAGS)
@pytest.mark.parametrize("backend", ["gan_jax", "gan_torch"])
def test_each_loss_trains_from_the_cli(backend, loss, tmp_path):
    out = str(tmp_path / "run")
    train = importlib.import_module(f"{backend}.train")
    assert train.main(["--out-dir", out, *TINY, *LOSS_FLAGS[loss]]) == 0
    saved = json.load(open(os.path.join(out, "config.json")))
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert all(np.isfinite(r[key]) for r in rows), key
    # An epoch is one pass of D over the data: n_critic batches of 16 per step.
    assert rows[-1]["epoch"] == pytest.approx(4 / (60000 // (16 * saved["n_critic"])))
    if loss == "gan_r1":  # probabilities; the other losses log D's raw outputs
        assert all(0 < r["d_real"] < 1 for r in rows)
    assert os.path.isfile(os.path.join(out, "samples", "step_0000004.png"))
    assert os.path.getsize(os.path.join(out, "losses.png")) > 10_000
    assert os.path.isdir(os.path.join(out, "checkpoints", "4"))
