"""The sample CLI's flags and output, shared by gan_jax.sample and gan_torch.sample."""

from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

import numpy as np

from gan_common.config import Config, _Parser
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
    args = p.parse_args(argv)
    if args.num <= 0:
        raise UserError(f"--num must be a positive integer, got {args.num}")
    if os.path.splitext(args.out)[1].lower() not in (".npy", ".png"):
        raise UserError(f"--out {args.out!r} must end in .npy (array) or .png (grid)")
    return args


def sample_noise(num: int, latent_dim: int, seed: int) -> np.ndarray:
    """z (num, latent_dim) float32 from NumPy, so the same seed gives the same z in either backend."""
    return np.random.default_rng(seed).standard_normal((num, latent_dim), dtype=np.float32)


def write_samples(generate: Callable[[np.ndarray], np.ndarray], config: Config, args: argparse.Namespace) -> None:
    images = generate(sample_noise(args.num, config.latent_dim, args.seed)).astype(np.float32)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if args.out.lower().endswith(".npy"):
            np.save(args.out, images)
        else:
            save_grid(images, args.out)
    except OSError as e:
        raise UserError(f"cannot write --out {args.out!r}: {e.strerror or e}")
    print(f"wrote {len(images)} samples {images.shape[1:]} to {args.out}")
