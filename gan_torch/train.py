"""Train the GAN with the PyTorch backend: the reference, one eager step at a time.

    python -m gan_torch.train                          # the default run on the shipped MNIST
    python -m gan_torch.train --preset best --out-dir runs/best
    python -m gan_torch.train --config runs/best/config.json --seed 1 --out-dir runs/best_seed1
    python -m gan_torch.train --out-dir runs/best --resume
    torchrun --nproc-per-node 2 -m gan_torch.train --batch-size 64   # data parallel (gan_torch.parallel)

The same flags and output files as gan_jax.train (docs/usage.md, or --help). The step is
gan_torch.step.train_step, the backend gan_torch.backend.TorchBackend, the run (folder, logs, grids,
checkpoints) gan_common.loop.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gan_common.cli import parse_args
from gan_common.errors import cli_entry
from gan_torch.backend import train_and_evaluate


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    config, given = parse_args(argv, "python -m gan_torch.train", __doc__.splitlines()[0])
    train_and_evaluate(config, given=given)
    return 0


if __name__ == "__main__":
    sys.exit(main())
