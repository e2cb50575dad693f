"""Sample-quality numbers for generated MNIST or Fashion-MNIST images, measured with that dataset's shipped classifier.

    python -m gan_torch.evaluate --samples samples.npy --json metrics.json
    python -m gan_torch.evaluate --checkpoint runs/mnist --num 10000 --seed 0
    python -m gan_torch.evaluate --real-baselines --dataset fashion_mnist

The same CLI and keys as gan_jax.evaluate (gan_common.evaluation), with the classifier run in
torch (gan_torch.classifier); the two agree to float32 rounding (parity_tests/test_classifier_parity.py).
A checkpoint is scored with the classifier of the dataset it was trained on (fid_mnist,
fid_fashion_mnist; --dataset for --samples). FID falls with N, so compare it only at the same
--num (10000, the size of the reference).
"""

from __future__ import annotations

import sys
from typing import Sequence

from gan_common.errors import cli_entry
from gan_common.evaluation import evaluate_main, evaluators
from gan_torch.classifier import features_and_probs

evaluator = evaluators(features_and_probs)  # evaluator(dataset): one per process and dataset, references cached
EVALUATOR = evaluator("mnist")
reference_outputs = EVALUATOR.reference_outputs
evaluate_images = EVALUATOR.evaluate_images
fid_and_coverage = EVALUATOR.fid_and_coverage
real_baselines = EVALUATOR.real_baselines


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    from gan_torch.sample import load_generator

    return evaluate_main(argv, "python -m gan_torch.evaluate", evaluator, load_generator)


if __name__ == "__main__":
    sys.exit(main())
