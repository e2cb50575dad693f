"""Checkpoints under injected faults (docs/reliability.md, "Checkpoints"), for both backends.

A save killed between its parts, flipped bytes and truncation in each kind of file, empty, symlinked and
misnumbered step folders, a full disk, bad metadata and non-finite weights in a neutral file. Each case says
what it exits with, prints exactly one `error:` or `warning:` line and no traceback, and leaves the run folder
resumable where it should. Most cases damage a copy of a run folder made without training (`made`: its
untrained state saved as checkpoints 20, 30 and 40); a resume there stops where it starts, so nothing is
compiled or trained. Two cases train (slow): a resume from the fallback checkpoint, which must be bit-identical
to an uninterrupted 40-step run (`trained`), and a full disk at the checkpoint after 10 more steps.
"""

import errno
import importlib
import json
import logging
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gan_common.checkpoints import MANIFEST, check_folder
from gan_common.config import Config
from gan_common.errors import UserError
from gan_common.weights import WEIGHTS_FILE

BACKENDS = ("gan_jax", "gan_torch")
# tests/test_cli.py's tiny nets and 10-step chunks: gan_jax reuses the programs that module compiles.
SMALL = ["--preset", "tutorial", "--g-hidden", "32,64", "--d-hidden", "64,32"]
FAST = ["--log-every", "10", "--steps-per-call", "10", "--sample-every", "20", "--checkpoint-every", "10"]

# Fault injection drives whole CLIs (runs, resumes, damaged folders): make test only, not the fast tier.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # one_thread: tests/conftest.py


class Killed(BaseException):
    """What a kill -9 leaves behind: the save stops where it is and nothing of ours cleans up after it."""


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


def _main(backend: str, cli: str, *argv: str) -> int:
    return importlib.import_module(f"{backend}.{cli}").main(list(argv))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """made(backend) -> a run folder as a 40-step run leaves it (config.json; checkpoints 20, 30, 40), holding
    the untrained state under each step's name: what these tests damage, made once a module in a second."""
    runs = {}

    def get(backend: str) -> str:
        if backend not in runs:
            out = str(tmp_path_factory.mktemp(f"made_{backend}") / "r")
            config = Config.tutorial(g_hidden=SMALL[3], d_hidden=SMALL[5], steps=40, log_every=10, steps_per_call=10,
                            sample_every=20, checkpoint_every=10, out_dir=out)
            os.makedirs(out)
            with open(os.path.join(out, "config.json"), "w") as f:
                f.write(config.to_json())
            checkpoint, step = (importlib.import_module(f"{backend}.{m}") for m in ("checkpoint", "step"))
            gan, state = step.create(config)
            for s in (20, 30, 40):
                checkpoint.save(_ckpt(out), gan, _at_step(backend, state, s))
            runs[backend] = out
        return runs[backend]

    return get


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """trained(backend) -> a real 40-step run folder of that backend, trained once a module; never changed."""
    runs = {}

    def get(backend: str) -> str:
        if backend not in runs:
            out = str(tmp_path_factory.mktemp(backend) / "r")
            assert _main(backend, "train", "--out-dir", out, "--steps", "40", *SMALL, *FAST) == 0
            runs[backend] = out
        return runs[backend]

    return get


@pytest.fixture
def run(backend, made, tmp_path, capfd) -> str:
    """A copy of the backend's made run, to damage."""
    out = str(tmp_path / "r")
    shutil.copytree(made(backend), out, symlinks=True)
    capfd.readouterr()  # what making it printed
    return out


def _ckpt(run: str, step: int | str = "") -> str:
    return os.path.join(run, "checkpoints", str(step)) if step != "" else os.path.join(run, "checkpoints")


def _only_line(capfd, kind: str) -> str:
    """The one `error:` or `warning:` line on stderr (fd 2: orbax's threads and Python's unraisable-exception
    hook write there too), with no traceback and no line of the other kind."""
    err = capfd.readouterr().err
    for noise in ("Traceback", "Exception ignored", "ERROR:absl"):
        assert noise not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith(kind), err
    return lines[0]


def _quiet(capfd) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err and "error:" not in err and "warning:" not in err, err


def _weights(folder: str) -> dict[str, np.ndarray]:
    return load_file(os.path.join(folder, WEIGHTS_FILE))


def _restored(backend: str, run: str):
    """(checkpoint module, gan, state at the newest checkpoint), as --resume restores it."""
    checkpoint, step = (importlib.import_module(f"{backend}.{m}") for m in ("checkpoint", "step"))
    gan, fresh = step.create(Config.from_json_file(os.path.join(run, "config.json")))
    return checkpoint, gan, checkpoint.restore_latest(_ckpt(run), gan, fresh)


def _at_step(backend: str, state, step: int):
    if backend == "gan_jax":
        return state._replace(step=np.asarray(step, np.asarray(state.step).dtype))
    state.step = step
    return state


def _state_file(backend: str, folder: str) -> str:
    """The file of a checkpoint that holds the training state: torch's state.pt; orbax's largest data file."""
    if backend == "gan_torch":
        return os.path.join(folder, "state.pt")
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(folder, "state")) for f in fs]
    return max(files, key=os.path.getsize)


def _flip(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


# ----------------------------------------------------------------------------- what a save leaves
def test_every_checkpoint_is_complete_with_the_usual_file_modes(backend, made):
    run = made(backend)
    assert sorted(os.listdir(_ckpt(run))) == ["20", "30", "40"]  # KEEP = 3, and no scratch folder left
    umask = os.umask(0)
    os.umask(umask)
    for step in (20, 30, 40):
        folder = _ckpt(run, step)
        why, manifest = check_folder(folder, (WEIGHTS_FILE,))
        assert why is None and manifest["step"] == step and manifest["backend"] == backend
        # Every file of the folder is in the manifest (it is written last), and the manifest is no file of it.
        on_disk = {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}
        assert set(manifest["files"]) == on_disk - {MANIFEST}
        for name in (WEIGHTS_FILE, MANIFEST):  # a plain open(): 0644 under umask 022 (safetensors' own was 0600)
            assert os.stat(os.path.join(folder, name)).st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize("part", ["weights", "manifest"])
def test_a_save_killed_between_its_parts_leaves_no_step_folder(backend, run, part, monkeypatch, capfd, tmp_path):
    checkpoint, gan, state = _restored(backend, run)

    def killed(*args, **kwargs):
        raise Killed

    # After the state (orbax's, or torch's state.pt), before the neutral file; or before the manifest.
    target = f"{backend}.checkpoint.save_weights" if part == "weights" else "gan_common.checkpoints.write_manifest"
    monkeypatch.setattr(target, killed)
    with pytest.raises(Killed):
        checkpoint.save(_ckpt(run), gan, _at_step(backend, state, 50))
    monkeypatch.undo()
    assert sorted(os.listdir(_ckpt(run))) == [".50.tmp", "20", "30", "40"]  # the scratch folder, never a "50"
    npy = str(tmp_path / "s.npy")
    assert _main(backend, "sample", "--checkpoint", run, "--num", "4", "--out", npy) == 0
    _quiet(capfd)  # a scratch folder is no checkpoint: nothing skipped, nothing to say
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "40") == 0  # at step 40: no training
    _quiet(capfd)
    checkpoint.save(_ckpt(run), gan, _at_step(backend, state, 50))  # the next save clears the scratch
    assert sorted(os.listdir(_ckpt(run))) == ["30", "40", "50"]


@pytest.mark.slow
def test_an_incomplete_newest_checkpoint_is_skipped_and_resume_from_the_one_before_is_bit_identical(
        backend, trained, capfd, tmp_path):
    run = str(tmp_path / "r")
    shutil.copytree(trained(backend), run)
    capfd.readouterr()
    # What gan_jax's old writer left when killed between orbax's commit and the neutral file.
    for name in (WEIGHTS_FILE, MANIFEST):
        os.remove(os.path.join(_ckpt(run, 40), name))
    expected = f"warning: {_ckpt(run, 40)} is incomplete (no {WEIGHTS_FILE}); using {_ckpt(run, 30)}"
    npy = str(tmp_path / "s.npy")
    assert _main(backend, "sample", "--checkpoint", run, "--num", "4", "--out", npy) == 0
    assert _only_line(capfd, "warning:") == expected
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "40") == 0  # 30 -> 40 again
    assert _only_line(capfd, "warning:") == expected
    assert sorted(os.listdir(_ckpt(run))) == ["20", "30", "40"]  # repaired in place, still three
    # Bit-identical to the uninterrupted run: weights, and each logged loss (metrics.jsonl was cut back to 30).
    ref = trained(backend)
    wa, wb = _weights(_ckpt(ref, 40)), _weights(_ckpt(run, 40))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)

    def losses(r):
        with open(os.path.join(r, "metrics.jsonl")) as f:
            return [(row["step"], row["d_loss"], row["g_loss"]) for row in map(json.loads, f)]

    assert losses(run) == losses(ref) and [s for s, *_ in losses(run)] == [10, 20, 30, 40]


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("part", ["state", "weights"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_newest_checkpoint_is_caught_by_its_manifest(backend, run, part, damage, capfd, tmp_path):
    path = _state_file(backend, _ckpt(run, 40)) if part == "state" else os.path.join(_ckpt(run, 40), WEIGHTS_FILE)
    size = os.path.getsize(path)
    if damage == "flip":
        _flip(path)
        why = "fails its sha256 check"
    else:
        os.truncate(path, size // 2)
        why = f"is {size // 2} bytes, its manifest says {size}"
    rel = os.path.relpath(path, _ckpt(run, 40))
    expected = f"warning: {_ckpt(run, 40)} is corrupt ({rel} {why}); using {_ckpt(run, 30)}"
    # --steps 30: resume from the fallback, and stop there (no training). Orbax never reads the damaged file.
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "30") == 0
    assert _only_line(capfd, "warning:") == expected
    assert _main(backend, "sample", "--checkpoint", run, "--num", "4", "--out", str(tmp_path / "s.npy")) == 0
    assert _only_line(capfd, "warning:") == expected
    if part == "weights":  # named directly, the damaged file is refused rather than replaced by another
        assert _main(backend, "sample", "--checkpoint", _ckpt(run, 40), "--out", str(tmp_path / "t.npy")) == 2
        assert f"is corrupt ({WEIGHTS_FILE} {why})" in _only_line(capfd, "error:")


def test_no_good_checkpoint_left_is_one_error(backend, run, capfd, tmp_path):
    for step in (20, 30, 40):
        _flip(os.path.join(_ckpt(run, step), WEIGHTS_FILE))
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "50") == 2
    line = _only_line(capfd, "error:")
    assert line.startswith(f"error: no complete checkpoint in {_ckpt(run)}: {_ckpt(run, 40)} is corrupt")
    assert _main(backend, "sample", "--checkpoint", run, "--out", str(tmp_path / "s.npy")) == 2
    assert "no complete checkpoint" in _only_line(capfd, "error:")


def test_a_lone_weight_file_with_a_flipped_byte_is_refused(backend, run, capfd, tmp_path):
    # No manifest beside it: the sha256 of its tensors, recorded in its own metadata, is what catches it.
    path = str(tmp_path / WEIGHTS_FILE)
    shutil.copyfile(os.path.join(_ckpt(run, 40), WEIGHTS_FILE), path)
    assert _main(backend, "sample", "--checkpoint", path, "--num", "4", "--out", str(tmp_path / "s.npy")) == 0
    capfd.readouterr()
    _flip(path)  # the middle of the file: tensor bytes, the header is a few kB at the front
    assert _main(backend, "sample", "--checkpoint", path, "--num", "4", "--out", str(tmp_path / "t.npy")) == 2
    assert f"{path} is damaged: its tensors do not match the sha256 recorded in it" in _only_line(capfd, "error:")


def test_resuming_another_backends_run_is_refused(backend, made, tmp_path, capfd):
    other = BACKENDS[1 - BACKENDS.index(backend)]
    run = str(tmp_path / "r")
    shutil.copytree(made(other), run)
    capfd.readouterr()
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "50") == 2
    assert f"{_ckpt(run, 40)} was written by {other}" in _only_line(capfd, "error:")


# ----------------------------------------------------------------------------- odd entries in checkpoints/
@pytest.mark.parametrize("entry", ["empty", "symlink", "misnumbered"])
def test_odd_entries_in_the_checkpoints_folder_are_skipped_with_one_warning(backend, run, entry, capfd, tmp_path):
    root = _ckpt(run)
    outside = str(tmp_path / "elsewhere")
    if entry == "empty":  # a numbered folder with nothing in it: incomplete, not "written by the other backend"
        os.makedirs(os.path.join(root, "50"))
        expected = f"{root}/50 is incomplete (empty)"
    elif entry == "symlink":  # a complete checkpoint, but out of the run folder: never followed
        shutil.copytree(_ckpt(run, 40), outside)
        os.symlink(outside, os.path.join(root, "50"))
        expected = f"{root}/50 is a symlink (not followed)"
    else:
        shutil.copytree(_ckpt(run, 40), os.path.join(root, "0400"))
        os.makedirs(os.path.join(root, "abc"))
        expected = f"{root}/0400 is not a step folder (ignored); {root}/abc is not a step folder (ignored)"
    expected = f"warning: {expected}; using {root}/40"
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "40") == 0
    assert _only_line(capfd, "warning:") == expected
    assert _main(backend, "sample", "--checkpoint", run, "--num", "4", "--out", str(tmp_path / "s.npy")) == 0
    assert _only_line(capfd, "warning:") == expected
    checkpoint, gan, state = _restored(backend, run)
    capfd.readouterr()
    checkpoint.save(root, gan, _at_step(backend, state, 60))  # pruning deletes neither a link nor its target
    if entry == "symlink":
        assert os.path.islink(os.path.join(root, "50")) and check_folder(outside)[0] is None
    if entry == "misnumbered":
        assert {"0400", "abc"} <= set(os.listdir(root))


# ----------------------------------------------------------------------------- a full disk
@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_error_and_leaves_no_partial_folder(backend, run, monkeypatch, capfd):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(f"{backend}.checkpoint.save_weights", full)  # after the state was written
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "50") == 2  # trains 40 -> 50, then saves
    line = _only_line(capfd, "error:")
    assert f"disk full (ENOSPC) while writing checkpoint {_ckpt(run, 50)}" in line
    assert f"the last good checkpoint is {_ckpt(run, 40)}" in line
    assert sorted(os.listdir(_ckpt(run))) == ["20", "30", "40"]  # nothing half-written, not even hidden
    monkeypatch.undo()
    assert _main(backend, "train", "--out-dir", run, "--resume", "--steps", "40") == 0
    _quiet(capfd)


@pytest.mark.parametrize("backend", ["gan_jax"], indirect=True)
def test_orbax_failing_on_a_full_disk_is_one_error_without_its_thread_noise(backend, run, monkeypatch, capfd):
    """What orbax 0.11 did on a 40 MB tmpfs: a ValueError carrying tensorstore's text, each worker thread
    logging it with a traceback (absl's logger), un-awaited coroutines reported when collected."""
    checkpoint, gan, state = _restored(backend, run)
    capfd.readouterr()

    class Noisy:
        def __del__(self):
            raise ValueError("a coroutine's failure")  # Python reports it: "Exception ignored in: ..."

    class FullDisk:
        def save(self, *args, **kwargs):
            logging.getLogger("absl").error("_SignalingThread.run() raised an exception", exc_info=True)
            Noisy()  # collected at once, through sys.unraisablehook
            raise ValueError("RESOURCE_EXHAUSTED: Failed to write 64 bytes: No space left on device "
                             "[os_error_code='28']")

    monkeypatch.setattr(checkpoint, "_checkpointer", FullDisk)
    with pytest.raises(UserError, match=r"disk full \(ENOSPC\) while writing checkpoint .*/50; nothing of it was "
                                        r"kept, the last good checkpoint is .*/40"):
        checkpoint.save(_ckpt(run), gan, _at_step(backend, state, 50))
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err and "raised an exception" not in err, err
    assert sorted(os.listdir(_ckpt(run))) == ["20", "30", "40"]


# ----------------------------------------------------------------------------- bad neutral files
BAD_METADATA = {  # the metadata's config -> what the error line must name
    "not json": ("{not json", "metadata config is not JSON"),
    "a list": ("[1, 2]", "metadata config holds [1, 2], not a JSON object"),
    "latent_dim abc": ({"latent_dim": "abc"}, "metadata config field 'latent_dim' is \"abc\", expected a JSON integer"),
    "latent_dim -5": ({"latent_dim": -5}, "--latent-dim must be a positive integer, got -5"),
    "unknown dataset": ({"dataset": "nope"}, "--dataset: invalid choice: 'nope'"),
}


@pytest.mark.parametrize("case", BAD_METADATA)
def test_bad_metadata_in_a_weight_file_is_one_error_naming_file_and_field(backend, run, case, capfd, tmp_path):
    change, says = BAD_METADATA[case]
    config = json.load(open(os.path.join(run, "config.json")))
    text = change if isinstance(change, str) else json.dumps({**config, **change})
    path = str(tmp_path / "w.safetensors")  # no manifest beside it: read as it is, then checked
    save_file(_weights(_ckpt(run, 40)), path, metadata={"format": "gan-neutral-v1", "config": text})
    assert _main(backend, "sample", "--checkpoint", path, "--out", str(tmp_path / "s.npy")) == 2
    line = _only_line(capfd, "error:")
    assert line.startswith(f"error: {path}: ") and says in line


@pytest.mark.parametrize("value", ["nan", "huge"])
def test_non_finite_weights_or_samples_are_refused_by_sample_and_evaluate(backend, run, value, capfd, tmp_path):
    tensors = _weights(_ckpt(run, 40))
    if value == "nan":
        tensors["generator.fc1.kernel"][0, 0] = np.nan
        says = "holds NaN or inf in generator.fc1.kernel"
    else:  # finite, but every layer's sums overflow: inf - inf in the next layer is NaN
        tensors = {k: v * np.float32(1e30) if k.startswith("generator.") else v for k, v in tensors.items()}
        says = "NaN or inf"
    path = str(tmp_path / "w.safetensors")
    save_file(tensors, path, metadata={"format": "gan-neutral-v1",
                                       "config": open(os.path.join(run, "config.json")).read()})
    out = str(tmp_path / "s.npy")
    assert _main(backend, "sample", "--checkpoint", path, "--num", "16", "--out", out) == 2
    assert says in _only_line(capfd, "error:") and not os.path.exists(out)
    assert _main(backend, "evaluate", "--checkpoint", path, "--num", "16", "--no-c2st") == 2
    assert says in _only_line(capfd, "error:")
