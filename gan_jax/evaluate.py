"""Sample-quality numbers for generated MNIST digits, measured with the shipped MNIST classifier.

    python -m gan_jax.evaluate --samples samples.npy --json metrics.json
    python -m gan_jax.evaluate --checkpoint runs/mnist --num 10000 --seed 0
    python -m gan_jax.evaluate --real-baselines

Features and probabilities come from gan_jax.classifier; the checks, references, metrics and
CLI are gan_common.evaluation's, shared with gan_torch.evaluate.
FID falls with N, so compare fid_mnist only at the same --num (10000, the size of the reference).
"""

from __future__ import annotations

import sys
from typing import Sequence

from gan_common.errors import cli_entry
from gan_common.evaluation import Evaluator, evaluate_main
from gan_jax.classifier import features_and_probs

EVALUATOR = Evaluator(features_and_probs)  # one per process: its 10k-image references are cached
reference_outputs = EVALUATOR.reference_outputs
evaluate_images = EVALUATOR.evaluate_images
fid_and_coverage = EVALUATOR.fid_and_coverage
real_baselines = EVALUATOR.real_baselines


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    from gan_jax.sample import load_generator

    return evaluate_main(argv, "python -m gan_jax.evaluate", EVALUATOR, load_generator)


if __name__ == "__main__":
    sys.exit(main())
