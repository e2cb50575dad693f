"""Sample-quality numbers for generated MNIST or Fashion-MNIST images, measured with that dataset's shipped classifier.

    python -m gan_torch.evaluate --samples samples.npy --json metrics.json
    python -m gan_torch.evaluate --checkpoint runs/mnist --num 10000 --seed 0
    python -m gan_torch.evaluate --real-baselines --dataset fashion_mnist

The same CLI and keys as gan_jax.evaluate (gan_common.cli.evaluate_main), with the classifier run in
torch (gan_torch.classifier, through gan_torch.backend.evaluator); the two agree to float32 rounding
(parity_tests/test_classifier_parity.py). The c2st_* keys come from gan_torch.c2st (--no-c2st skips
it). A checkpoint is scored with the classifier of the dataset it was trained on (fid_mnist,
fid_fashion_mnist; --dataset for --samples). FID falls with N, so compare it only at the same --num
(10000, the size of the reference).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gan_common.cli import evaluate_main
from gan_common.errors import cli_entry
from gan_torch.backend import evaluator, load_generator


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    return evaluate_main(argv, "python -m gan_torch.evaluate", evaluator, load_generator)


if __name__ == "__main__":
    sys.exit(main())
