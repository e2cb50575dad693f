"""Sample-quality numbers for generated MNIST or Fashion-MNIST images, measured with that dataset's shipped classifier.

    python -m gan_jax.evaluate --samples samples.npy --json metrics.json
    python -m gan_jax.evaluate --checkpoint runs/mnist --num 10000 --seed 0
    python -m gan_jax.evaluate --real-baselines --dataset fashion_mnist

Features and probabilities come from gan_jax.classifier; the checks, references, metrics and
CLI are gan_common.evaluation's, shared with gan_torch.evaluate.
A checkpoint is scored with the classifier of the dataset it was trained on (fid_mnist,
fid_fashion_mnist; --dataset for --samples). FID falls with N, so compare it only at the same
--num (10000, the size of the reference).
"""

from __future__ import annotations

import sys
from typing import Sequence

from gan_common.errors import cli_entry
from gan_common.evaluation import evaluate_main, evaluators
from gan_jax.classifier import features_and_probs

evaluator = evaluators(features_and_probs)  # evaluator(dataset): one per process and dataset, references cached
EVALUATOR = evaluator("mnist")
reference_outputs = EVALUATOR.reference_outputs
evaluate_images = EVALUATOR.evaluate_images
fid_and_coverage = EVALUATOR.fid_and_coverage
real_baselines = EVALUATOR.real_baselines


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    from gan_jax.sample import load_generator

    return evaluate_main(argv, "python -m gan_jax.evaluate", evaluator, load_generator)


if __name__ == "__main__":
    sys.exit(main())
