"""Data parallel = one device: the same run on 1 device, 4 devices, 2 processes, and 2 torch ranks.

Every run here is the real CLI in a fresh process (the device count of JAX's CPU backend is
fixed when it starts): `python -m gan_jax.train --devices 4` simulates 4 CPU devices;
`--num-processes 2` starts two processes under `jax.distributed` with 2 devices each,
exchanging collectives over gloo; `torchrun --nproc-per-node 2 -m gan_torch.train` runs DDP.
Each run trains NUM_STEPS steps at the global batch 64, logging every step; the two-process
and the DDP runs stop at step 20 and resume, so their checkpoints are covered too.

What may differ, and the tolerance. With the global batch fixed, every device gets the same
rows, noise and weights as the single-device run; only the order in which per-row gradient
terms are summed changes (per shard, then across shards). That is float32 rounding. Measured
on the 2-core dev machine after 30 steps: per-step losses within 2.2e-7 (JAX, 4 devices) and
1.9e-7 (torch, 2 ranks) relative; weights within 2.1e-6 (JAX) and 2.5e-7 (torch) absolute.
Tolerances: 1e-5 on losses, 2e-5 on weights (a tenth of one Adam step, lr 2e-4), about 10x
the measured drift. Deliberate faults in the torch DDP run, measured: each rank drawing its
own noise moves the losses by 1.3e-2 and the weights by 5e-3; ranks that skip DDP's gradient
averaging, 2.3e-2 and 7e-3. NUM_STEPS stays short because float32 runs that differ in the
last bit drift apart after a few dozen steps (see test_trajectory.py); at 300 steps the JAX
1- and 4-device runs differ by 3e-2.

WGAN-GP with n_critic 2 runs too: its penalty is a double backpropagation, which under DDP
must still average D's gradients once per update. Its losses cross zero, so all losses are
compared as |a - b| / max(|b|, 1) (the default loss stays near 1, where this is relative):
WGAN-GP measured 2.1e-5 (JAX) and 4.3e-6 (torch) over 30 steps, tolerance 1e-4. Its weights
are not compared: Adam scales every gradient entry to about lr, and the critic has entries
whose gradient is within rounding of zero, so they move by up to lr (2e-4) either way
(measured 8e-5 and 2.3e-4) however right the sums are.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

pytestmark = pytest.mark.slow  # make test only: multi-device and multi-process runs

NUM_STEPS = 30
COMMON = ["--preset", "tutorial", "--steps", str(NUM_STEPS), "--log-every", "1", "--sample-every", "1000",
          "--checkpoint-every", "1000",
          "--steps-per-call", "10"]
# name -> (extra flags, loss tolerance, weight tolerance or None)
CASES = {
    "default": ([], 1e-5, 2e-5),
    "wgan_gp_ncritic2": (["--loss", "wgan_gp", "--n-critic", "2"], 1e-4, None),
    # BatchNorm's batch statistics over a sharded batch: XLA reduces them across devices (synchronised
    # BatchNorm), and gan_torch's GlobalBatchNorm2d all-reduces them across ranks, so 4 devices or 2
    # ranks normalise with the global batch's statistics, as one does.
    # Measured (JAX): step 1 equal, step 2 1.2e-7, then float32's drift, amplified by the normalisation's
    # division by small batch variances, to 6.9e-5 by step 20; tolerance 3e-4. Weights not compared
    # (as wgan_gp). Statistics per device (16 rows each) would change step 1 already (not measured).
    "dcgan": (["--arch", "dcgan", "--g-channels", "8", "--d-channels", "8", "--d-norm", "batch"], 3e-4, None),
    # Spectral norm's power iteration reads only D's weights, which every device / rank holds whole,
    # so u and v move alike everywhere; G's BatchNorm keeps the dcgan case's drift and tolerance.
    "dcgan_spectral": (["--arch", "dcgan", "--g-channels", "8", "--d-channels", "8", "--d-norm", "spectral"],
                       3e-4, None),
}
# Under DDP, torch's spectral norm is its own parametrization fed the same weights on every rank, and
# gan_torch's GlobalBatchNorm2d is covered by the dcgan case, so dcgan_spectral runs in JAX only, whose
# sharded step is XLA's partitioning of the whole program, power iteration included. (Its torch run took
# 17 s of the suite's wall clock, three processes at once.)
TORCH_CASES = [case for case in CASES if case != "dcgan_spectral"]


def _env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _run(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(*procs: subprocess.Popen) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"{' '.join(p.args)} failed:\n{out[-3000:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _losses(run: str) -> np.ndarray:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == list(range(1, NUM_STEPS + 1))
    return np.array([[r["d_loss"], r["g_loss"]] for r in rows])  # (NUM_STEPS, 2)


def _weights(run: str) -> dict[str, np.ndarray]:
    return load_file(os.path.join(run, "checkpoints", str(NUM_STEPS), "weights.safetensors"))


def _assert_same_run(got: str, want: str, case: str) -> None:
    _, loss_tol, weight_tol = CASES[case]
    a, b = _losses(got), _losses(want)
    err = np.abs(a - b) / np.maximum(np.abs(b), 1.0)
    assert err.max() <= loss_tol, f"losses differ by {err.max():.3g} at step {err.max(axis=1).argmax() + 1}"
    if weight_tol is None:
        return
    wa, wb = _weights(got), _weights(want)
    assert sorted(wa) == sorted(wb)
    worst = max(wa, key=lambda k: float(np.abs(wa[k] - wb[k]).max()))
    diff = float(np.abs(wa[worst] - wb[worst]).max())
    assert diff <= weight_tol, f"{worst} differs by {diff:.3g} after {NUM_STEPS} steps"


def _jax(out: str, *flags: str, env: dict | None = None) -> subprocess.Popen:
    return _run([sys.executable, "-m", "gan_jax.train", "--out-dir", out, *COMMON, *flags], env or _env())


@pytest.fixture(scope="module")
def jax_one_device(tmp_path_factory) -> dict[str, str]:
    """The reference runs: each case on one device (both started at once: two cores)."""
    root = tmp_path_factory.mktemp("jax1")
    runs = {case: str(root / case) for case in CASES}
    _wait(*(_jax(runs[case], "--devices", "1", *CASES[case][0]) for case in CASES))
    return runs


@pytest.mark.parametrize("case", CASES)
def test_jax_four_devices_equal_one(case, jax_one_device, tmp_path):
    out = str(tmp_path / "run")
    _wait(_jax(out, "--devices", "4", *CASES[case][0]))
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["devices"] == 4
    _assert_same_run(out, jax_one_device[case], case)


def test_jax_two_processes_equal_one(jax_one_device, tmp_path):
    """Two processes x 2 CPU devices under jax.distributed (gloo collectives) = one device.

    The run stops at step 20 and resumes to 30, so the multi-process checkpoint (orbax, each
    process writing its part) is restored too. Only process 0 writes the run's files.
    """
    out = str(tmp_path / "run")
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")

    def two_processes(*flags: str) -> None:
        port = _free_port()
        _wait(*(_jax(out, "--num-processes", "2", "--process-id", str(i), "--coordinator-address",
                     f"localhost:{port}", *flags, env=env) for i in range(2)))

    two_processes("--steps", "20")
    two_processes("--resume")
    _assert_same_run(out, jax_one_device["default"], "default")
    assert sorted(os.listdir(out)) == [".lock", "checkpoints", "config.json", "losses.png", "metrics.jsonl", "samples",
                                       "samples.gif", "tensorboard"]  # process 0's files only, once


@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_ddp_equals_one_process(case, tmp_path):
    """torchrun, 2 ranks = one process; the default case stops at step 20 and resumes from rank 0's checkpoint."""
    one, ddp = str(tmp_path / "one"), str(tmp_path / "ddp")
    flags = [*COMMON, *CASES[case][0]]

    def torchrun(*more: str) -> subprocess.Popen:
        return _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                     str(_free_port()), "-m", "gan_torch.train", "--out-dir", ddp, *flags, *more], _env())

    legs = [("--steps", "20"), ("--resume",)] if case == "default" else [()]
    _wait(_run([sys.executable, "-m", "gan_torch.train", "--out-dir", one, *flags], _env()), torchrun(*legs[0]))
    for leg in legs[1:]:
        _wait(torchrun(*leg))
    _assert_same_run(ddp, one, case)


def test_concat_split_batches_keep_rows_on_their_shard():
    """parallel.concat_batches interleaves per shard, split_batches undoes it, and 1 shard is a plain concat."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    from gan_jax import parallel

    a, b = jnp.arange(8.0).reshape(8, 1), -jnp.arange(8.0).reshape(8, 1) - 1
    one = Mesh(np.asarray(jax.devices()[:1]), (parallel.AXIS,))
    np.testing.assert_array_equal(parallel.concat_batches(a, b, one), jnp.concatenate([a, b]))

    class FourShards:  # only .size is read: the layout maths, without four devices
        size = 4

    ab = parallel.concat_batches(a, b, FourShards)
    # Shard s (rows 4s..4s+3 of the 16) holds a's and b's rows 2s, 2s+1: nothing crosses shards.
    np.testing.assert_array_equal(ab[:4, 0], [0, 1, -1, -2])
    np.testing.assert_array_equal(ab[12:, 0], [6, 7, -7, -8])
    for got, want in zip(parallel.split_batches(ab, FourShards), (a, b), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_batch_that_does_not_split_over_the_devices_is_refused(tmp_path):
    out = str(tmp_path / "run")
    proc = _run([sys.executable, "-m", "gan_jax.train", "--out-dir", out, "--devices", "4", "--batch-size", "62"],
                _env())
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert text.strip().endswith("error: --batch-size 62 does not split evenly over 4 devices; choose a multiple of 4")
    assert not os.path.exists(out)
