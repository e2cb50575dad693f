"""Faults a run folder must survive (docs/reliability.md, "Run folder"): a run killed before its first checkpoint,
SIGTERM, two processes on one folder, damaged or malformed files, symbolic links, a full disk.

Every refusal is checked the way a user meets it: the train CLI's `main` returns 2 and stderr holds exactly one
`error:` line and no traceback. Refusals happen before training, so they are cheap and run for both backends;
what needs a trained run (resume after a crash, SIGTERM) runs each backend for a few tiny steps, and checks that
the resumed run is bit-identical to an uninterrupted one (each backend draws a step's noise and batch from the
seed and the step alone, so any difference is a bug, not rounding). The host loop's writers are the same code
for both backends: their full-disk cases run it with a stand-in backend (`_FakeBackend`), one real case per
backend aside.
"""

import errno
import fcntl
import gzip
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from gan_common import loop
from gan_common.checkpoints import has_step_folders, save_step, step_dirs
from gan_common.config import Config, check_memory, memory_estimate, parameter_count, validate
from gan_common.datasets import IDX_FILES, load_dataset
from gan_common.errors import UserError, cli_entry
from gan_common.outputs import LOOP_OUTPUTS, read_metrics
from gan_common.runlock import RunLock

BACKENDS = ("gan_jax", "gan_torch")
# tests/test_cli.py's tiny nets and 10-step chunks: gan_jax compiles the same programs, once a session (conftest.py).
SMALL = ["--preset", "tutorial", "--g-hidden", "32,64", "--d-hidden", "64,32"]
FAST = ["--log-every", "10", "--steps-per-call", "10", "--sample-every", "20", "--checkpoint-every", "10"]
# A run that only stops when told: no checkpoint or grid until the end, a metrics line every 10 steps.
ENDLESS = ["--steps", "1000000", "--log-every", "10", "--steps-per-call", "10", "--sample-every", "1000000",
           "--checkpoint-every", "1000000"]

# Fault injection drives whole CLIs (runs, resumes, damaged folders): make test only, not the fast tier.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # one_thread: tests/conftest.py


def train(backend: str, *argv: str) -> int:
    return importlib.import_module(f"{backend}.train").main(list(argv))


def one_error(err: str) -> str:
    """The one `error:` line of a refusal's stderr (other lines, such as the loop's progress, may precede it)."""
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def no_error(err: str) -> None:
    assert "Traceback" not in err and "error:" not in err, err


def weights(run: str, step: int) -> dict[str, np.ndarray]:
    return load_file(os.path.join(run, "checkpoints", str(step), "weights.safetensors"))


def assert_same_run(a: str, b: str, step: int) -> None:
    """Runs `a` and `b` hold bit-identical nets at `step`, and logged the same losses up to it."""
    wa, wb = weights(a, step), weights(b, step)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)

    def losses(run):
        return [(r["step"], r["d_loss"], r["g_loss"]) for r in read_metrics(os.path.join(run, "metrics.jsonl"))
                if r["step"] <= step]

    assert losses(a) == losses(b)


def new_run_folder(path) -> str:
    """A run folder as a run that died before its first checkpoint leaves it: its config.json, nothing else."""
    os.makedirs(path)
    config = Config.tutorial(out_dir=str(path), steps=20, g_hidden="32,64", d_hidden="64,32")
    (path / "config.json").write_text(config.to_json() + "\n")
    return str(path)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def run40(backend, tmp_path_factory) -> str:
    """An uninterrupted 40-step run (checkpoints 20, 30, 40 kept): what every resumed run must equal."""
    out = str(tmp_path_factory.mktemp(backend) / "r")
    assert train(backend, "--out-dir", out, "--steps", "40", *SMALL, *FAST) == 0
    return out


def crashed_after_step_20(run40: str, dest) -> str:
    """run40 as a crash after its step-20 checkpoint leaves it: later checkpoints gone, its log running ahead."""
    out = str(dest / "crashed")
    shutil.copytree(run40, out)
    for step in (30, 40):
        shutil.rmtree(os.path.join(out, "checkpoints", str(step)))
    return out


def wait_for_metrics(proc: subprocess.Popen, out: str) -> None:
    """Until the run's first metrics line: it is training, with the loop's signal handlers in place."""
    path = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 180
    while not (os.path.exists(path) and os.path.getsize(path) > 0):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "no metrics line within 180 s"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- killed, interrupted
@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(backend, run40, tmp_path, capsys):
    """kill -9 (or the OOM killer) before any checkpoint: --resume starts the run over, saying so, and equals a run
    that was never killed. The dead process held the folder's lock: the kernel dropped it, so it blocks nothing."""
    out = str(tmp_path / "r")
    proc = subprocess.Popen([sys.executable, "-m", f"{backend}.train", "--out-dir", out, *ENDLESS, *SMALL],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_metrics(proc, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert not has_step_folders(os.path.join(out, "checkpoints"))
    assert train(backend, "--out-dir", out, "--resume", "--steps", "20") == 0
    err = capsys.readouterr().err
    no_error(err)
    assert "has no checkpoint yet" in err and "starting it again from step 0" in err
    assert [r["step"] for r in read_metrics(os.path.join(out, "metrics.jsonl"))] == [10, 20]
    assert_same_run(out, run40, 20)


@pytest.mark.slow
def test_sigterm_checkpoints_exits_0_and_the_resume_is_bit_identical(backend, run40, tmp_path, capsys, monkeypatch):
    """What SLURM and Kubernetes send before killing a job: handled as the first Ctrl-C. The signal is a real one,
    sent to this process while it writes the step-20 metrics line, so that the step it stops at is known and the
    resumed run can be held against run40 (a subprocess costs seconds of imports; test_cli's SIGINT test has one)."""
    out = str(tmp_path / "r")
    append = loop.append_metrics

    def append_and_get_sigterm(path, row):
        append(path, row)
        if row["step"] == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "append_metrics", append_and_get_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    assert train(backend, "--out-dir", out, *ENDLESS, *SMALL) == 0
    err = capsys.readouterr().err
    no_error(err)
    assert "interrupted (SIGTERM): checkpoint written at step 20" in err and "--resume" in err
    assert step_dirs(os.path.join(out, "checkpoints")) == [20]  # SIGTERM's: ENDLESS writes none before the end
    assert signal.getsignal(signal.SIGTERM) == handler  # the loop put the previous handler back
    monkeypatch.undo()
    assert train(backend, "--out-dir", out, "--resume", "--steps", "40") == 0
    no_error(capsys.readouterr().err)
    assert_same_run(out, run40, 40)


# ----------------------------------------------------------------------------- the lock
@pytest.mark.parametrize("name", BACKENDS)
def test_a_second_process_on_a_locked_folder_is_refused_naming_the_holder(name, tmp_path, capsys):
    out = new_run_folder(tmp_path / "r")
    before = open(os.path.join(out, "config.json")).read()
    fd = os.open(os.path.join(out, ".lock"), os.O_RDWR | os.O_CREAT)  # another open file: flock sees two holders
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")  # the pid RunLock records
        assert train(name, "--out-dir", out, "--resume") == 2
    finally:
        os.close(fd)
    line = one_error(capsys.readouterr().err)
    assert f"--out-dir {out!r} is in use by another training run (pid 4242)" in line
    assert sorted(os.listdir(out)) == [".lock", "config.json"]  # nothing written
    assert open(os.path.join(out, "config.json")).read() == before


def test_a_lock_whose_holder_was_killed_does_not_block(tmp_path):
    """flock belongs to the holder's open file: the kernel releases it when the process dies, however it dies."""
    folder = str(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gan_common.runlock import RunLock; "
         "RunLock(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(300)", folder],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"in use by another training run \\(pid {holder.pid}\\)"):
            RunLock(folder).__enter__()
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with RunLock(folder):  # the dead holder's lock is gone
        assert open(os.path.join(folder, ".lock")).read().strip() == str(os.getpid())
    with RunLock(folder):  # and ours went with the `with`
        pass


# ----------------------------------------------------------------------------- refused before anything is written
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("argv, fragment", [
    (["--batch-size", "100000000"], "--batch-size 100000000 exceeds the 60000 training images"),
    (["--g-hidden", "100000000"], "GiB (the nets' weights, gradients and Adam states"),
    (["--latent-dim", "100000000"], "GiB (the nets' weights, gradients and Adam states"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
])
def test_a_run_that_cannot_work_is_refused_before_its_folder_is_written(name, argv, fragment, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert train(name, "--out-dir", out, "--steps", "20", *argv) == 2
    assert fragment in one_error(capsys.readouterr().err)
    assert not os.path.exists(out)  # so `train --out-dir` there starts afresh, no --resume needed


def test_every_float_flag_must_be_finite():
    floats = [f for f, v in vars(Config.tutorial()).items() if isinstance(v, float)]
    assert {"lr", "beta1", "beta2", "adam_eps", "epochs", "gp_weight", "leaky_slope"} <= set(floats)
    for name in floats:
        for bad in (math.inf, -math.inf, math.nan):
            with pytest.raises(UserError, match=f"--{name.replace('_', '-')} must be a finite number"):
                validate(Config.tutorial(**{name: bad}))


def test_the_memory_estimate_counts_every_parameter_and_refuses_what_cannot_fit():
    import torch  # noqa: F401 -- the reference nets, to count their parameters

    from gan_torch.models import build_discriminator, build_generator

    for fields in ({"conditional": True, "g_hidden": "8,16,5", "dataset": "cifar10"},
                   {"arch": "dcgan", "g_channels": 4, "d_channels": 6}, {"arch": "dcgan", "d_norm": "spectral"},
                   {"arch": "dcgan", "conditional": True, "d_norm": "none", "dataset": "cifar10"}, {}):
        config = Config.tutorial(**fields)
        count = sum(p.numel() for net in (build_generator(config), build_discriminator(config))
                    for p in net.parameters())
        assert parameter_count(config) == count, fields
    # The seed's MLP, by hand: its parameters (counted above) 4 times over in float32 (17.5 MB), and per image
    # G's 100 + 256 + 512 + 784 numbers and D's 784 + 512 + 256 + 1 twice (a real and a fake image), with their
    # gradients, for a batch of 64 (2.4 MB). A floor a laptop fits, which names the shortfall when it does not.
    need = memory_estimate(Config.tutorial())
    assert need == 4 * 4 * count + 4 * 2 * 64 * (100 + 256 + 512 + 784 + 2 * (784 + 512 + 256 + 1))
    check_memory(Config.tutorial(), available=need)
    with pytest.raises(UserError, match="more than this machine's 0.0 GiB; reduce --g-hidden, --d-hidden"):
        check_memory(Config.tutorial(), available=need - 1)


# ----------------------------------------------------------------------------- malformed files
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("text, fragment", [
    ("[1, 2]", "holds [1, 2], not a JSON object of flag values"),
    ("null", "holds null, not a JSON object"),
    ('{"lr": "abc"}', "field 'lr' is \"abc\", expected a JSON number"),
    ('{"steps": true}', "field 'steps' is true, expected a JSON integer"),
    ('{"arch": "xyz"}', "--arch 'xyz' is not one of mlp, dcgan"),
    ('{"lr": Infinity}', "--lr must be a finite number, got inf"),
    ('{"lr": 0.0', "is not JSON"),
    ("\udcff", "is not JSON"),  # a byte that is not UTF-8
])
def test_a_malformed_config_json_is_one_line_naming_the_file_and_field(name, text, fragment, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert train(name, "--out-dir", str(out), "--resume") == 2
    line = one_error(capsys.readouterr().err)
    assert f"run config {out / 'config.json'}: " in line and fragment in line
    assert os.listdir(out) == ["config.json"]  # refused before the lock or anything else


@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory) -> str:
    """The first 128 training images of MNIST as a gzipped IDX folder (--data-source idx)."""
    folder = tmp_path_factory.mktemp("idx")
    data = load_dataset("mnist")
    images, labels = data.images[:128, ..., 0], data.labels[:128]
    blobs = {"images": bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes(),
             "labels": bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()}
    for kind, raw in blobs.items():
        (folder / (IDX_FILES[("train", kind)] + ".gz")).write_bytes(gzip.compress(raw, mtime=0))
    return str(folder)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_damaged_gzip_stream_is_one_line(name, idx_folder, tmp_path, capsys):
    data = str(tmp_path / "idx")
    shutil.copytree(idx_folder, data)
    path = os.path.join(data, IDX_FILES[("train", "images")] + ".gz")
    raw = bytearray(open(path, "rb").read())
    raw[10] |= 0b110  # the first deflate block's type bits (after gzip's 10-byte header) to 3, which is reserved
    open(path, "wb").write(bytes(raw))
    with pytest.raises(UserError, match="invalid block type"):  # zlib.error, which used to escape as a traceback
        load_dataset("mnist", "train", "idx", data)
    out = str(tmp_path / "r")
    assert train(name, "--out-dir", out, "--data-source", "idx", "--data-dir", data, "--batch-size", "8") == 2
    assert f"cannot read {path}: " in one_error(capsys.readouterr().err)
    assert not os.path.exists(out)


@pytest.mark.parametrize("name", BACKENDS)
def test_labels_outside_the_classes_are_refused_for_a_conditional_run(name, idx_folder, tmp_path, capsys):
    """gan_jax's embedding lookup clipped label 12 silently (the run went NaN, blamed on --lr); gan_torch raised
    IndexError in a step. An unconditional run never reads the labels: it is not refused."""
    data = str(tmp_path / "idx")
    shutil.copytree(idx_folder, data)
    path = os.path.join(data, IDX_FILES[("train", "labels")] + ".gz")
    raw = bytearray(gzip.decompress(open(path, "rb").read()))
    raw[8 + 5] = 12  # the sixth label
    open(path, "wb").write(gzip.compress(bytes(raw)))
    out = str(tmp_path / "r")
    assert train(name, "--out-dir", out, "--data-source", "idx", "--data-dir", data, "--batch-size", "8",
                 "--conditional") == 2
    line = one_error(capsys.readouterr().err)
    assert f"{path} holds label 12 at index 5" in line and "needs classes 0..9" in line
    assert not os.path.exists(out)
    assert load_dataset("mnist", "train", "idx", data).labels[5] == 12  # fine without --conditional


@pytest.mark.slow
def test_disk_full_mid_line_then_resume_trims_the_half_line_and_is_bit_identical(backend, run40, tmp_path, capsys,
                                                                                  monkeypatch):
    """The disk fills up while the step-40 line is written: half of it reaches metrics.jsonl."""
    out = crashed_after_step_20(run40, tmp_path)
    append = loop.append_metrics

    def append_until_the_disk_is_full(path, row):
        if row["step"] == 40:
            with open(path, "a") as f:
                f.write(json.dumps(row)[:25])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        append(path, row)

    monkeypatch.setattr(loop, "append_metrics", append_until_the_disk_is_full)
    assert train(backend, "--out-dir", out, "--resume", "--steps", "40") == 2
    line = one_error(capsys.readouterr().err)
    assert f"cannot write {out}/metrics.jsonl: No space left on device (ENOSPC)" in line
    assert "the last good checkpoint is step 30" in line and "--resume" in line
    monkeypatch.undo()
    assert train(backend, "--out-dir", out, "--resume", "--steps", "40") == 0
    err = capsys.readouterr().err
    no_error(err)
    assert "metrics.jsonl: dropped its cut-short last line" in err
    assert_same_run(out, run40, 40)


def test_a_damaged_line_before_the_last_is_one_line(tmp_path, capsys):
    out = new_run_folder(tmp_path / "r")
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        f.write('{"step": 10}\n{"step": 2\n{"step": 30}\n')
    assert train("gan_torch", "--out-dir", out, "--resume") == 2
    assert "metrics.jsonl line 2 is not a JSON object with a step" in one_error(capsys.readouterr().err)


# ----------------------------------------------------------------------------- symbolic links
@pytest.mark.parametrize("name, output", [("gan_jax", "metrics.jsonl"), *(("gan_torch", o) for o in LOOP_OUTPUTS)])
def test_a_symlinked_output_is_refused_and_nothing_outside_is_written(name, output, tmp_path, capsys):
    """The refusal is gan_common's, the same for both backends: every output with one, metrics.jsonl with both."""
    out = new_run_folder(tmp_path / "r")
    outside = tmp_path / "elsewhere"  # a folder for samples/, else a file (a copy of config.json, which resume reads)
    if output == "samples":
        outside.mkdir()
    else:
        shutil.copy(os.path.join(out, "config.json"), outside)
    if output == "config.json":
        os.remove(os.path.join(out, output))
    os.symlink(outside, os.path.join(out, output))

    def snapshot():
        return sorted(os.listdir(outside)) if outside.is_dir() else outside.read_bytes()

    before = snapshot()
    assert train(name, "--out-dir", out, "--resume") == 2
    line = one_error(capsys.readouterr().err)
    assert f"{out}/{output} is a symbolic link (to {outside})" in line
    assert snapshot() == before
    assert sorted(os.listdir(out)) == sorted({".lock", "config.json", output})  # nothing written inside either


# ----------------------------------------------------------------------------- a full disk, the loop's other writers
class _FakeBackend:
    """gan_common.loop.Backend without nets: losses 0.5 (NaN from step `nan_from` on), blank grids, and
    checkpoints written through gan_common.checkpoints.save_step as the real backends' are."""

    is_primary = True

    def __init__(self, out: str, nan_from: int | None = None):
        self.step, self.out, self.nan_from = 0, out, nan_from

    def run(self, n: int) -> np.ndarray:
        steps = np.arange(self.step + 1, self.step + n + 1)
        self.step += n
        metrics = np.full((n, 4), 0.5)
        if self.nan_from is not None:
            metrics[steps >= self.nan_from, 0] = np.nan
        return metrics

    def fetch(self, metrics: np.ndarray) -> np.ndarray:
        return metrics

    def sample(self) -> np.ndarray:
        return np.zeros((64, 28, 28, 1), np.float32)

    def save_checkpoint(self) -> str:
        def write(folder):
            os.makedirs(folder)
            open(os.path.join(folder, "state"), "w").write(str(self.step))

        return save_step(os.path.join(self.out, "checkpoints"), self.step, write, "fake")


def fake_run(tmp_path, total: int = 40, nan_from: int | None = None) -> tuple[int, str]:
    """A 40-step run of `_FakeBackend` (logs every 10, grids every 20, checkpoints every 20) through the CLIs'
    error wrapper: (exit code, out dir)."""
    out = str(tmp_path / "r")
    os.makedirs(out)
    config = Config.tutorial(out_dir=out, log_every=10, sample_every=20, checkpoint_every=20, steps_per_call=10)
    return cli_entry(loop.train_loop)(config, _FakeBackend(out, nan_from), total, 100, "fake"), out


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# fake_run's order at step 20: log line, grid, checkpoint; so the grid's failure comes before any checkpoint.
@pytest.mark.parametrize("writer, path, rows, last", [
    ("append_metrics", "metrics.jsonl", [], "no checkpoint was written yet: free some space, then --resume starts "
                                            "the run again from step 0"),
    ("save_grid", "samples/step_0000020.png", [10, 20], "no checkpoint was written yet"),
    ("plot_losses", "losses.png", [10, 20, 30, 40], "the last good checkpoint is step 40 in"),
])
def test_a_full_disk_is_one_line_naming_the_file_and_the_last_checkpoint(writer, path, rows, last, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setattr(loop, writer, no_space)
    code, out = fake_run(tmp_path)
    assert code == 2
    line = one_error(capsys.readouterr().err)
    assert f"cannot write {out}/{path}: No space left on device (ENOSPC); {last}" in line
    metrics = os.path.join(out, "metrics.jsonl")
    if rows:  # what was logged before the failure is intact
        assert [r["step"] for r in read_metrics(metrics)] == rows
    else:
        assert not os.path.exists(metrics)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_full_disk_writing_config_json_leaves_a_folder_that_starts_afresh(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "write_atomically", no_space)
    out = str(tmp_path / "r")
    assert train(name, "--out-dir", out, "--steps", "20", *SMALL) == 2
    line = one_error(capsys.readouterr().err)
    assert f"cannot write {out}/config.json: No space left on device (ENOSPC); no checkpoint was written yet" in line
    assert os.listdir(out) == [".lock"]  # no config.json: a plain `train --out-dir` starts there, no --resume needed


# ----------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("nan_from, saved", [(7, None), (37, 20)])
def test_nan_names_its_step_the_checkpoint_if_any_and_what_to_change(nan_from, saved, tmp_path, capsys):
    code, out = fake_run(tmp_path, nan_from=nan_from)
    assert code == 2
    line = one_error(capsys.readouterr().err)
    assert f"losses became non-finite at step {nan_from} " in line
    if saved is None:
        assert "no checkpoint was written before it" in line
    else:  # a resume would replay the same steps into the same NaN: not offered
        assert f"the last good checkpoint, step {saved} in {out}/checkpoints, is kept" in line
        assert "a resume would repeat the divergence" in line
    assert "Start a new run in another --out-dir with a lower --lr, e.g. --lr 5e-05" in line
    assert step_dirs(os.path.join(out, "checkpoints")) == ([] if saved is None else [saved])


# ----------------------------------------------------------------------------- benchmarks/bad_inputs.py's bookkeeping
def test_the_bad_inputs_table_replaces_its_own_section_only(tmp_path):
    from benchmarks.bad_inputs import HEADING, TITLE, Case, classify, write_section

    doc = tmp_path / "reliability.md"
    write_section(f"{HEADING}\n\nfirst\n", str(doc))  # no file yet: the title, then the section
    assert doc.read_text() == f"{TITLE}\n\n{HEADING}\n\nfirst\n"
    doc.write_text(f"{TITLE}\n\n## Checkpoints\n\ntheirs\n\n{HEADING}\n\nold\n\n## Later\n\nkept\n")
    write_section(f"{HEADING}\n\nnew\n", str(doc))
    assert doc.read_text() == f"{TITLE}\n\n## Checkpoints\n\ntheirs\n\n{HEADING}\n\nnew\n\n## Later\n\nkept\n"
    case, tolerable = Case("x", "train", ()), Case("x", "train", (), tolerable=True)
    assert classify(case, 2, "", "[gan_jax] training\nerror: bad\n") == "clean"
    assert classify(case, 2, "", "error: a\nerror: b\n") == "other"
    assert classify(case, 1, "", "Traceback (most recent call last):\nValueError\n") == "traceback"
    assert classify(case, 2, "", "usage: train [-h]\ntrain: error: x\n") == "usage block"
    assert classify(case, 0, "", "") == "silent" and classify(tolerable, 0, "", "warning: x\n") == "tolerated"
