"""Train the GAN with the JAX backend: K steps per compiled call, the data on the device.

    python -m gan_jax.train                          # the default run on the shipped MNIST
    python -m gan_jax.train --preset best --out-dir runs/best
    python -m gan_jax.train --config runs/best/config.json --seed 1 --out-dir runs/best_seed1
    python -m gan_jax.train --out-dir runs/best --resume

Flags and their meaning: docs/usage.md (or --help). The step is gan_jax.step.train_step, the loop
gan_jax.fused.make_train_chunk, the run (folder, logs, grids, checkpoints) gan_common.loop.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gan_common.cli import parse_args
from gan_common.errors import cli_entry
from gan_jax.backend import train_and_evaluate


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    config, given = parse_args(argv, "python -m gan_jax.train", __doc__.splitlines()[0])
    train_and_evaluate(config, given=given)
    return 0


if __name__ == "__main__":
    sys.exit(main())
