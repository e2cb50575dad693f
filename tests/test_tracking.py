"""Watching a run: TensorBoard events, wandb, the plain progress lines without a terminal, samples.gif and the
sample CLI's latent-space walk (gan_common.tracking, .loop, .outputs, .cli).

One tiny in-process run per backend (module scope) shows that both backends log the same things; what the host
loop does alone (evaluation tags, the terminal switch, a missing wandb) runs it on a NumPy stand-in backend,
which takes milliseconds.
"""

import contextlib
import importlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

from gan_common.config import Config
from gan_common.errors import UserError
from gan_common.loop import train_loop
from gan_common.outputs import to_uint8
from gan_common.sampling import latent_walk, slerp
from gan_common.tracking import WANDB_MISSING, Tracker

BACKENDS = ("gan_jax", "gan_torch")
# tests/test_cli.py's nets and 10-step chunks: the same compiled gan_jax program (the session's compile cache).
SMALL = ["--preset", "tutorial", "--g-hidden", "32,64", "--d-hidden", "64,32"]
RUN = ["--steps", "30", "--log-every", "10", "--steps-per-call", "10", "--sample-every", "10", "--checkpoint-every",
       "30", *SMALL]
TRAIN_TAGS = {f"train/{k}" for k in ("d_loss", "g_loss", "d_real", "d_fake", "steps_per_s", "epoch")}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """A 30-step run of each backend, {backend: {"out": folder, "stderr": what it printed}}; stderr is a StringIO,
    not a terminal, so the loop prints plain lines."""
    result = {}
    for backend in BACKENDS:
        out = str(tmp_path_factory.mktemp(backend) / "r")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert importlib.import_module(f"{backend}.train").main(["--out-dir", out, *RUN]) == 0
        result[backend] = {"out": out, "stderr": err.getvalue()}
    return result


def read_events(folder: str) -> dict[str, dict[int, object]]:
    """Every event file in `folder` as {tag: {step: value}}: a float for a scalar, a Pillow image for an image.
    Read from the TFRecord framing (length, its masked CRC-32C, the record, its masked CRC-32C) with both CRCs
    checked, each record a tensorboard Event protobuf."""
    tags: dict[str, dict[int, object]] = {}
    names = sorted(n for n in os.listdir(folder) if n.startswith("events.out.tfevents."))
    assert names, f"no event file in {folder}"
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            header = data[i : i + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[i + 8 : i + 12])[0] == masked_crc32c(header)
            record = data[i + 12 : i + 12 + length]
            assert struct.unpack("<I", data[i + 12 + length : i + 16 + length])[0] == masked_crc32c(record)
            i += 16 + length
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("image"):
                    found = Image.open(io.BytesIO(value.image.encoded_image_string))
                else:
                    found = value.simple_value
                tags.setdefault(value.tag, {})[event.step] = found
    return tags


def _rows(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- both backends, end to end
@pytest.mark.slow
def test_event_files_hold_every_logged_number_and_grid_with_the_same_tags_in_both_backends(runs):
    tags = {b: read_events(os.path.join(runs[b]["out"], "tensorboard")) for b in BACKENDS}
    assert set(tags["gan_jax"]) == set(tags["gan_torch"]) == TRAIN_TAGS | {"samples"}
    for backend in BACKENDS:
        rows = _rows(runs[backend]["out"])
        assert [r["step"] for r in rows] == [10, 20, 30]
        for tag in TRAIN_TAGS:
            # Event files hold float32 (simple_value): equal to the JSON float64 rounded to float32, exactly.
            assert tags[backend][tag] == {r["step"]: float(np.float32(r[tag[6:]])) for r in rows}, tag
        grids = tags[backend]["samples"]
        assert sorted(grids) == [10, 20, 30]
        for step, image in grids.items():  # the PNG grid before its 2x upscaling: 8x8 digits, 2-pixel borders
            png = Image.open(os.path.join(runs[backend]["out"], "samples", f"step_{step:07d}.png"))
            assert image.size == (8 * 30 + 2, 8 * 30 + 2) == (png.width // 2, png.height // 2)
            assert np.array_equal(np.asarray(image.convert("L")), np.asarray(png)[::2, ::2])


@pytest.mark.slow
def test_without_a_terminal_each_log_is_one_plain_line(runs):
    pattern = re.compile(r"step (\d+)/30 epoch (\S+) (\S+) steps/s d_loss (\S+) g_loss (\S+) D\(x\) (\S+) "
                         r"D\(G\(z\)\) (\S+) ETA (\d+s|\d+m\d\ds|\d+h\d\dm)")
    for backend in BACKENDS:
        lines = [ln for ln in runs[backend]["stderr"].splitlines() if ln.startswith("step ")]
        assert "\r" not in runs[backend]["stderr"]  # no tqdm bar redrawing itself
        rows = _rows(runs[backend]["out"])
        assert len(lines) == len(rows) == 3
        for line, row in zip(lines, rows, strict=True):
            m = pattern.fullmatch(line)
            assert m, line
            assert int(m[1]) == row["step"]
            assert (m[4], m[5]) == (f"{row['d_loss']:.4f}", f"{row['g_loss']:.4f}")
            assert (m[6], m[7]) == (f"{row['d_real']:.3f}", f"{row['d_fake']:.3f}")
        assert lines[-1].endswith("ETA 0s")


@pytest.mark.slow
def test_samples_gif_has_one_frame_per_grid(runs):
    for backend in BACKENDS:
        out = runs[backend]["out"]
        pngs = sorted(os.listdir(os.path.join(out, "samples")))
        assert pngs == ["step_0000010.png", "step_0000020.png", "step_0000030.png"]
        gif = Image.open(os.path.join(out, "samples.gif"))
        assert gif.n_frames == len(pngs) and gif.info["loop"] == 0
        for k, name in enumerate(pngs):  # grey levels survive the GIF's palette exactly
            gif.seek(k)
            assert np.array_equal(np.asarray(gif.convert("L")), np.asarray(Image.open(os.path.join(out, "samples",
                                                                                                    name))))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_writes_a_walk_gif_starting_at_the_first_point(backend, runs, tmp_path, capsys):
    sample = importlib.import_module(f"{backend}.sample").main
    walk, first = str(tmp_path / "walk.gif"), str(tmp_path / "first.npy")
    assert sample(["--checkpoint", runs[backend]["out"], "--interpolate", "3", "--frames", "4", "--out", walk]) == 0
    assert "12-frame walk through 3 points" in capsys.readouterr().out
    gif = Image.open(walk)
    assert (gif.n_frames, gif.size) == (12, (28 * 4, 28 * 4))  # K x frames, each image 4x
    # Frame 0 is G(z_0), and z_0 is the first noise vector of the same seed: sample --num 1 draws it too.
    assert sample(["--checkpoint", runs[backend]["out"], "--num", "1", "--out", first]) == 0
    expected = to_uint8(np.load(first))[0, :, :, 0].repeat(4, axis=0).repeat(4, axis=1)
    # One grey level: G ran on a batch of 12 and of 1, whose float32 sums may round apart and cross a .5 level.
    assert np.abs(np.asarray(gif.convert("L"), np.int16) - expected).max() <= 1


@pytest.mark.parametrize("argv, message", [
    (["--interpolate", "1"], "--interpolate needs at least 2 points"),
    (["--interpolate", "3", "--num", "8"], "--num sets a number of samples; --interpolate"),
    (["--interpolate", "3", "--out", "w.png"], "--interpolate writes a GIF"),
    (["--frames", "4"], "--frames applies only to --interpolate"),
    (["--out", "w.gif"], "must end in .npy (array) or .png (grid), or .gif with --interpolate"),
])
def test_sample_cli_refuses_walk_flags_that_do_not_fit(argv, message, tmp_path, capsys):
    from gan_jax.sample import main

    argv = ["--checkpoint", str(tmp_path), *argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "w.gif")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_tensorboardx_does_not_bring_torch_into_a_gan_jax_process():
    # tensorboardX's writer imports torch when it can; gan_common.tracking hides it (a fresh process: this one has
    # torch already). About 2 s of imports.
    code = ("import importlib.util, sys\nfrom gan_common.tracking import _tensorboardx\n"
            "assert _tensorboardx() is not None and 'torch' not in sys.modules\n"
            "assert importlib.util.find_spec('torch') is not None\n")  # torch is installed: hidden, then findable
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- slerp
def test_slerp_endpoints_are_exact_and_unit_vectors_stay_on_the_sphere():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(100), rng.standard_normal(100)
    path = slerp(a, b, np.linspace(0, 1, 11))
    assert np.array_equal(path[0], a) and np.array_equal(path[-1], b)  # coefficients exactly 1 and 0
    u, v = a / np.linalg.norm(a), b / np.linalg.norm(b)
    # float64 rounding of a few sines and products: ~1e-16 each
    np.testing.assert_allclose(np.linalg.norm(slerp(u, v, np.linspace(0, 1, 11)), axis=1), 1.0, atol=1e-12)


def test_slerp_midpoint_of_orthogonal_unit_vectors_is_their_normalised_sum():
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    np.testing.assert_allclose(slerp(e1, e2, np.array([0.5]))[0], (e1 + e2) / np.sqrt(2), atol=1e-15)
    # And a quarter of the way: 22.5 degrees from e1 (cos and sin of pi/8).
    np.testing.assert_allclose(slerp(e1, e2, np.array([0.25]))[0], [np.cos(np.pi / 8), np.sin(np.pi / 8), 0],
                               atol=1e-15)


def test_slerp_of_parallel_and_nearly_parallel_vectors_is_finite_and_on_the_line():
    a = np.array([1.0, 2.0, 3.0])
    t = np.linspace(0, 1, 5)
    for b in (a, 2 * a, a + 1e-9):  # sin(angle) is 0 or below 1e-6: the straight line, not 0/0
        path = slerp(a, b, t)
        assert np.all(np.isfinite(path))
        np.testing.assert_allclose(path, (1 - t)[:, None] * a + t[:, None] * b, rtol=1e-9)


def test_latent_walk_passes_each_point_exactly_and_loops_back():
    points = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)  # equal norms: slerp turns at a constant rate
    walk = latent_walk(points, 4)
    assert walk.shape == (12, 5) and walk.dtype == np.float32
    assert np.array_equal(walk[::4], points)
    # The last frame is one step short of the first point again: the angle to it is a quarter of the segment's.
    angle = lambda p, q: np.arccos(p @ q / np.linalg.norm(p) / np.linalg.norm(q))  # noqa: E731
    np.testing.assert_allclose(angle(walk[-1], points[0]), angle(points[2], points[0]) / 4, rtol=1e-5)  # float32


# ----------------------------------------------------------------------------- the loop alone (a NumPy backend)
class FakeBackend:
    """Metrics and images from NumPy, each step's different, so that the loop's outputs can be told apart."""

    is_primary = True

    def __init__(self, out: str) -> None:
        self.step, self.out = 0, out

    def run(self, num_steps: int) -> np.ndarray:
        steps = np.arange(self.step + 1, self.step + num_steps + 1, dtype=np.float64)
        self.step += num_steps
        return np.stack([1 / steps, 2 / steps, np.full_like(steps, 0.6), np.full_like(steps, 0.4)], axis=1)

    def fetch(self, metrics: np.ndarray) -> np.ndarray:
        return metrics

    def sample(self) -> np.ndarray:
        return np.full((64, 28, 28, 1), -1 + self.step / 50, np.float32)

    def save_checkpoint(self) -> str:
        return os.path.join(self.out, "checkpoints", str(self.step))

    def generate(self, z: np.ndarray, labels=None) -> np.ndarray:
        return np.zeros((len(z), 28, 28, 1), np.float32)


def _fake_run(tmp_path, plain_lines=None, **fields) -> tuple[Config, dict]:
    os.makedirs(tmp_path, exist_ok=True)
    config = Config.tutorial(out_dir=str(tmp_path), steps=30, log_every=10, sample_every=10, checkpoint_every=30,
                    steps_per_call=10, eval_every=10, eval_samples=10, **fields)
    evaluator = lambda images, labels: {"fid_mnist": 100.0 / len(images), "classes_covered": 7}  # noqa: E731
    last = train_loop(config, FakeBackend(str(tmp_path)), 30, 100, "fake", evaluator, plain_lines=plain_lines)
    return config, last


def test_evaluation_metrics_go_to_tensorboard_under_eval(tmp_path):
    _fake_run(tmp_path, plain_lines=True)
    tags = read_events(str(tmp_path / "tensorboard"))
    assert set(tags) == TRAIN_TAGS | {"eval/fid_mnist", "eval/classes_covered", "samples"}
    assert tags["eval/fid_mnist"] == {10: 10.0, 20: 10.0, 30: 10.0}
    assert tags["train/d_loss"][10] == pytest.approx(np.mean(1 / np.arange(1, 11)), rel=1e-7)  # float32 storage


def test_with_a_terminal_the_bar_replaces_the_lines_and_no_tensorboard_writes_no_events(tmp_path, capsys):
    _fake_run(tmp_path, plain_lines=False, tensorboard=False)
    err = capsys.readouterr().err
    assert not re.search(r"^step \d+/", err, flags=re.M) and "steps/s" not in err
    assert not os.path.exists(tmp_path / "tensorboard")


def test_wandb_not_installed_is_one_line_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as if absent
    _, last = _fake_run(tmp_path, plain_lines=True, wandb="my-project")
    err = capsys.readouterr().err
    assert WANDB_MISSING in err.splitlines() and err.count("pip install") == 1
    assert last["step"] == 30 and "Traceback" not in err


def test_wandb_that_cannot_start_is_one_error_line(tmp_path):
    class WandbError(Exception):
        pass

    def init(**kwargs):
        raise WandbError("No API key configured. Use `wandb login` to log in.")

    fake = types.SimpleNamespace(init=init, Error=WandbError, Image=None)  # wandb's names, as when not logged in
    config = Config.tutorial(out_dir=str(tmp_path), wandb="my-project")
    with pytest.raises(UserError) as e:
        Tracker(config, 0, wandb=fake)
    assert str(e.value) == ("--wandb my-project: wandb could not start (No API key configured. Use `wandb login` to "
                            "log in.); log in with `wandb login`, or log offline with WANDB_MODE=offline (then "
                            "`wandb sync`)")
    assert os.path.isdir(tmp_path / "tensorboard")  # its writer was opened first, and closed


@pytest.mark.slow  # wandb starts its service process: ~3 s
def test_wandb_offline_logs_the_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    _, last = _fake_run(tmp_path / "run", plain_lines=True, wandb="my-project")
    runs = [d for d in os.listdir(tmp_path / "wb" / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1
    run = tmp_path / "wb" / "wandb" / runs[0]
    # The grids: wandb's media files, named by tag and step.
    media = sorted(os.listdir(run / "files" / "media" / "images"))
    assert [m.split("_")[:2] for m in media] == [["samples", "10"], ["samples", "20"], ["samples", "30"]]
    assert Image.open(run / "files" / "media" / "images" / media[0]).size == (242, 242)
    # The numbers: the offline run file (wandb's own binary log, no public reader) holds each tag and each value
    # as JSON text; the last row's, as JSON writes a float64.
    (record,) = [n for n in os.listdir(run) if n.endswith(".wandb")]
    data = (run / record).read_bytes()
    for tag in (*TRAIN_TAGS, "eval/fid_mnist", "eval/classes_covered"):
        assert tag.encode() in data, tag
    assert json.dumps(last["d_loss"]).encode() in data and json.dumps(last["g_loss"]).encode() in data
