"""What a run writes for people to read: the run folder's file names, metrics.jsonl, sample grids
(float images in [-1, 1] to one uint8 PNG, Pillow) and losses.png (matplotlib, without pyplot). Every file is
written to a temporary name and renamed, so a crash never leaves half a file."""

from __future__ import annotations

import json
import math
import os

import numpy as np
from matplotlib.figure import Figure  # a Figure draws to files without pyplot's global state or a window
from PIL import Image

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
LOSSES_PLOT = "losses.png"


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


def save_grid(images: np.ndarray, path: str, nrow: int | None = None, scale: int = 2) -> None:
    """Write a PNG grid, upscaled `scale`x with nearest neighbours so 28x28 digits are legible."""
    grid = make_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    img.save(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- metrics.jsonl and losses.png
def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def truncate_metrics(path: str, step: int) -> None:
    """On resume, drop log lines past the checkpoint so metrics.jsonl reads as one run."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
    if len(keep) != len(lines):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)


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
    tmp = out_png + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, out_png)
