"""What a run writes for people to read: the run folder's file names, metrics.jsonl, sample grids
(float images in [-1, 1] to one uint8 PNG, Pillow), GIFs of grids or of a latent walk (Pillow) and losses.png
(matplotlib, without pyplot). Every file is written to a temporary name and renamed, so a crash never leaves
half a file; metrics.jsonl, appended a line at a time, may end in half a line, which the readers here drop.
No write follows a symbolic link."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from typing import IO

import numpy as np
from matplotlib.figure import Figure  # a Figure draws to files without pyplot's global state or a window
from PIL import Image

from gan_common.errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
LOSSES_PLOT = "losses.png"
SAMPLES_GIF = "samples.gif"
TENSORBOARD_DIR = "tensorboard"
# What the host loop writes in a run folder; none may be a symbolic link (`refuse_symlinks`).
LOOP_OUTPUTS = (CONFIG_FILE, METRICS_FILE, SAMPLES_DIR, LOSSES_PLOT, SAMPLES_GIF, TENSORBOARD_DIR)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # open() fails with ELOOP on a link instead of writing through it


def write_atomically(path: str, write: Callable[[IO], None], binary: bool = True) -> None:
    """`write(f)` to `path.tmp`, renamed over `path` when complete. Neither name is followed if it is a
    symbolic link: the temporary file is opened O_NOFOLLOW, and os.replace replaces a link, not its target."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: leave no temporary file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def refuse_symlinks(out: str) -> None:
    """A run writes inside its --out-dir only: a linked metrics.jsonl or samples/ (say, another run's) would
    take this run's writes out of the folder."""
    for name in LOOP_OUTPUTS:
        path = os.path.join(out, name)
        if os.path.islink(path):
            raise UserError(f"{path} is a symbolic link (to {os.readlink(path)}); a run writes only inside its "
                            f"--out-dir: replace the link with a copy of what it points to, or delete it")


# ----------------------------------------------------------------------------- sample grids
def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) floats in [-1, 1] -> uint8 in [0, 255], the inverse of the training scaling."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, H, W, C) in [-1, 1] -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) uint8 image."""
    images = to_uint8(images)
    n, h, w, c = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def _to_pil(image: np.ndarray, scale: int) -> Image.Image:
    """(H, W, C) uint8 -> a Pillow image ("L" for one channel), upscaled `scale`x with nearest neighbours."""
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def save_grid(images: np.ndarray, path: str, nrow: int | None = None, scale: int = 2) -> np.ndarray:
    """Write a PNG grid, upscaled `scale`x with nearest neighbours so 28x28 digits are legible; return the grid
    before upscaling, (rows*(H+2)+2, cols*(W+2)+2, C) uint8, for other writers (TensorBoard)."""
    grid = make_grid(images, nrow)
    img = _to_pil(grid, scale)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomically(path, lambda f: img.save(f, format="PNG"))
    return grid


# ----------------------------------------------------------------------------- animations
def save_gif(frames: list[Image.Image], path: str, frame_ms: int) -> None:
    """An endlessly looping GIF of `frames` (Pillow images of one size and mode), `frame_ms` each. Pillow merges
    consecutive identical frames into one longer frame; frames that differ are all kept."""
    write_atomically(path, lambda f: frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                                                    duration=frame_ms, loop=0))


def save_animation(images: np.ndarray, path: str, frame_ms: int = 80, scale: int = 4) -> None:
    """(T, H, W, C) images in [-1, 1] -> a GIF of T frames, each upscaled `scale`x (a latent-space walk)."""
    save_gif([_to_pil(image, scale) for image in to_uint8(images)], path, frame_ms)


def sample_grid_paths(samples_dir: str, last_step: int) -> list[str]:
    """The run's samples/step_XXXXXXX.png up to `last_step`, in step order (the zero-padded names sort so);
    grids past it are a stopped run's, which a resumed run has not reached yet."""
    names = sorted(n for n in os.listdir(samples_dir) if n.startswith("step_") and n.endswith(".png")
                   and n[5:-4].isdigit()) if os.path.isdir(samples_dir) else []
    return [os.path.join(samples_dir, n) for n in names if int(n[5:-4]) <= last_step]


def save_samples_gif(samples_dir: str, path: str, last_step: int, frame_ms: int = 500) -> int:
    """samples.gif: the run's sample grids over training, one frame each; return the number of grids."""
    frames = []
    for grid_path in sample_grid_paths(samples_dir, last_step):
        with Image.open(grid_path) as img:
            frames.append(img.copy())  # copy: loaded, and the file closed
    if frames:
        save_gif(frames, path, frame_ms)
    return len(frames)


# ----------------------------------------------------------------------------- metrics.jsonl and losses.png
def _parse_metrics(path: str) -> tuple[list[dict], list[str], bool]:
    """metrics.jsonl's rows, their lines, and whether a cut-short last line (a writer killed mid-line, a full
    disk) was dropped. A damaged line elsewhere is a UserError: no crash writes one."""
    with open(path, errors="replace") as f:
        lines = [ln for ln in f.read().splitlines(keepends=True) if ln.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("step"), int)):
            if i == len(lines) - 1:
                return rows, lines[:-1], True
            raise UserError(f"{path} line {i + 1} is not a JSON object with a step ({line.strip()[:40]!r}); "
                            f"delete that line or the file")
        rows.append(row)
    return rows, lines, False


def read_metrics(path: str) -> list[dict]:
    """The rows of a run's metrics.jsonl, less a cut-short last line."""
    return _parse_metrics(path)[0]


def append_metrics(path: str, row: dict) -> None:
    """One JSON line, opened and closed each time so that a failed write leaves nothing buffered to retry;
    never through a symbolic link."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(path: str, step: int) -> bool:
    """On resume, drop log lines past the checkpoint so metrics.jsonl reads as one run; and a cut-short last
    line, returning True when there was one."""
    if not os.path.exists(path):
        return False
    rows, lines, partial = _parse_metrics(path)
    keep = [ln if ln.endswith("\n") else ln + "\n" for row, ln in zip(rows, lines, strict=True) if row["step"] <= step]
    if partial or keep != lines:
        write_atomically(path, lambda f: f.writelines(keep), binary=False)
    return partial


def plot_losses(metrics_path: str, out_png: str, loss: str = "gan") -> None:
    """losses.png: D and G loss, and D's mean outputs on real and fake, against step.

    For --loss gan D's outputs are probabilities, with the equilibrium marked; for the other
    losses they are D's raw outputs (the backends' `mean_d_output`), on a free scale.
    """
    rows = read_metrics(metrics_path) if os.path.exists(metrics_path) else []
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, [r["d_loss"] for r in rows], label="D loss")
    ax1.plot(steps, [r["g_loss"] for r in rows], label="G loss")
    if loss == "gan":
        ax1.axhline(2 * math.log(2), color="grey", lw=0.8, ls="--", label="D loss at equilibrium (2 log 2)")
    ax1.set_xlabel("step")
    ax1.legend()
    what = "D" if loss == "gan" else "raw D"
    ax2.plot(steps, [r["d_real"] for r in rows], label=f"mean {what}(x)")
    ax2.plot(steps, [r["d_fake"] for r in rows], label=f"mean {what}(G(z))")
    if loss == "gan":
        ax2.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.legend()
    fig.tight_layout()
    write_atomically(out_png, lambda f: fig.savefig(f, format="png", dpi=100))
