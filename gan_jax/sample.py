"""Draw samples from a checkpoint of either backend (through its neutral weight file).

    python -m gan_jax.sample --checkpoint runs/mnist --num 64 --out grid.png
    python -m gan_jax.sample --checkpoint runs/mnist --num 10000 --out samples.npy
    python -m gan_jax.sample --checkpoint runs/cmnist --label 7 --out sevens.png   (a --conditional run)
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import jax
import numpy as np

from gan_common.config import Config
from gan_common.errors import cli_entry
from gan_common.sampling import parse_sample_args, write_samples


def load_generator(path: str, ema: bool = True) -> tuple[Callable[[np.ndarray], np.ndarray], Config]:
    """`generate(z (N, latent_dim) float32, labels (N,) int or None) -> (N, 28, 28, 1) float32 in [-1, 1]`,
    and the run config; labels are the classes of a --conditional model (None otherwise).
    ema=False: G's own weights where the run also kept an EMA (which is otherwise what samples)."""
    from gan_jax.checkpoint import load_params
    from gan_jax.train import create

    config, state = load_params(path, ema)
    gan, _ = create(config)
    apply = jax.jit(gan.generate)  # eval mode: BatchNorm uses the running statistics

    def generate(z: np.ndarray, labels: np.ndarray | None = None, batch: int = 4096) -> np.ndarray:
        rows = [slice(i, i + batch) for i in range(0, len(z), batch)]
        return np.concatenate([np.asarray(apply(state.g_params, state.g_stats, z[r],
                                                None if labels is None else labels[r]), np.float32)
                               for r in rows])

    return generate, config


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_sample_args(argv, "python -m gan_jax.sample")
    generate, config = load_generator(args.checkpoint)
    write_samples(generate, config, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
