"""The sample CLI's flags and output, shared by gan_jax.sample and gan_torch.sample."""

from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

import numpy as np

from gan_common.config import NUM_CLASSES, Config, _Parser
from gan_common.errors import UserError
from gan_common.images import save_grid


def parse_sample_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    p = _Parser(prog=prog, description="Write samples of a trained generator as .npy or a PNG grid.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a run folder (newest checkpoint), one checkpoint folder, or a weights.safetensors of either backend")
    p.add_argument("--num", type=int, default=64, help="number of samples")
    p.add_argument("--out", required=True, help="FILE.npy: float32 (N, 28, 28, 1) in [-1, 1]; FILE.png: a grid")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise z ~ N(0, I) (NumPy, so both backends agree)")
    p.add_argument("--label", type=int, default=None,
                   help="conditional models only: every sample of this class, 0..9 (default: classes 0..9 cycling, "
                        "so sample i is class i %% 10 and each row of a PNG reads 0..9)")
    args = p.parse_args(argv)
    if args.num <= 0:
        raise UserError(f"--num must be a positive integer, got {args.num}")
    if args.label is not None and not 0 <= args.label < NUM_CLASSES:
        raise UserError(f"--label must be a class in 0..{NUM_CLASSES - 1}, got {args.label}")
    if os.path.splitext(args.out)[1].lower() not in (".npy", ".png"):
        raise UserError(f"--out {args.out!r} must end in .npy (array) or .png (grid)")
    return args


def sample_noise(num: int, latent_dim: int, seed: int) -> np.ndarray:
    """z (num, latent_dim) float32 from NumPy, so the same seed gives the same z in either backend."""
    return np.random.default_rng(seed).standard_normal((num, latent_dim), dtype=np.float32)


CLASS_GRID_COLUMNS = 8  # --conditional training grids: one row per class, one fixed noise vector per column


def class_grid_inputs(z_fixed: np.ndarray, columns: int = CLASS_GRID_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """A conditional run's sample grid: z (10 * columns, latent_dim), the first `columns` fixed noise vectors
    repeated in every row, and labels (10 * columns,) int32, row k all class k."""
    z = np.tile(np.asarray(z_fixed, np.float32)[:columns], (NUM_CLASSES, 1))
    return z, np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), columns)


def sample_labels(num: int, label: int | None = None) -> np.ndarray:
    """Classes for `num` samples of a conditional model, (num,) int32: all `label`, or 0..9 cycling (balanced)."""
    if label is not None:
        return np.full(num, label, np.int32)
    return (np.arange(num) % NUM_CLASSES).astype(np.int32)


def write_samples(generate: Callable[..., np.ndarray], config: Config, args: argparse.Namespace) -> None:
    """`generate(z, labels)` from the sample CLI's flags; labels None for an unconditional model."""
    labels = None
    if config.conditional:
        labels = sample_labels(args.num, args.label)
    elif args.label is not None:
        raise UserError(f"--label {args.label}: this checkpoint's model is unconditional (trained without "
                        "--conditional); drop --label")
    images = generate(sample_noise(args.num, config.latent_dim, args.seed), labels).astype(np.float32)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if args.out.lower().endswith(".npy"):
            np.save(args.out, images)
        else:  # cycling classes: ten columns, so column k is class k
            save_grid(images, args.out, nrow=NUM_CLASSES if labels is not None and args.label is None else None)
    except OSError as e:
        raise UserError(f"cannot write --out {args.out!r}: {e.strerror or e}")
    print(f"wrote {len(images)} samples {images.shape[1:]} to {args.out}")
