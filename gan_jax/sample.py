"""Draw samples from a checkpoint of either backend (through its neutral weight file).

    python -m gan_jax.sample --checkpoint runs/mnist --num 64 --out grid.png
    python -m gan_jax.sample --checkpoint runs/mnist --num 10000 --out samples.npy
    python -m gan_jax.sample --checkpoint runs/cmnist --label 7 --out sevens.png   (a --conditional run)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gan_common.cli import sample_main
from gan_common.errors import cli_entry
from gan_jax.backend import load_generator


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    return sample_main(argv, "python -m gan_jax.sample", load_generator)


if __name__ == "__main__":
    sys.exit(main())
