"""Sample-quality numbers for generated MNIST or Fashion-MNIST images, measured with that dataset's shipped classifier.

    python -m gan_jax.evaluate --samples samples.npy --json metrics.json
    python -m gan_jax.evaluate --checkpoint runs/mnist --num 10000 --seed 0
    python -m gan_jax.evaluate --real-baselines --dataset fashion_mnist

Features and probabilities come from gan_jax.classifier; the checks, references, metrics and
CLI are gan_common.evaluation's, shared with gan_torch.evaluate. The c2st_* keys come from a
classifier two-sample test that trains its own small convnet (gan_jax.c2st; --no-c2st skips it).
A checkpoint is scored with the classifier of the dataset it was trained on (fid_mnist,
fid_fashion_mnist; --dataset for --samples). FID falls with N, so compare it only at the same
--num (10000, the size of the reference).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gan_common.cli import evaluate_main
from gan_common.errors import cli_entry
from gan_jax.backend import evaluator, load_generator


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    return evaluate_main(argv, "python -m gan_jax.evaluate", evaluator, load_generator)


if __name__ == "__main__":
    sys.exit(main())
