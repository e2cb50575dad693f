r"""Train a metrics classifier and write its weight file.

    python -m gan_jax.train_classifier --out gan_common/assets/mnist_classifier.safetensors
    python -m gan_jax.train_classifier --dataset fashion_mnist \
        --out gan_common/assets/fashion_mnist_classifier.safetensors

MNIST: 3 epochs on a 2-core CPU in a few minutes to >= 99% test accuracy; Fashion-MNIST: 5 epochs
to >= 90% (docs/evaluation.md has the measured numbers). Prints the file's SHA-256, which must
then replace the dataset's sha256 in gan_common/classifier_spec.py.
"""

from __future__ import annotations

import argparse
import sys

from gan_common.classifier_spec import EVAL_DATASETS, classifier_spec
from gan_common.errors import UserError, cli_entry
from gan_jax.classifier import save_classifier, train_classifier


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=EVAL_DATASETS, help="what to train on and classify")
    parser.add_argument("--out", help="where to write the safetensors file (default: the dataset's shipped file)")
    parser.add_argument("--epochs", type=int, help="passes over the 60k training images (default: the dataset's, "
                        "3 for mnist, 5 for fashion_mnist)")
    parser.add_argument("--seed", type=int, default=0, help="weights, data order and augmentation derive from it")
    parser.add_argument("--min-accuracy", type=float, help="refuse to write a worse classifier (default: the "
                        "dataset's, 0.99 for mnist, 0.90 for fashion_mnist)")
    args = parser.parse_args(argv)
    spec = classifier_spec(args.dataset)
    out = args.out or spec.path
    min_accuracy = spec.min_accuracy if args.min_accuracy is None else args.min_accuracy
    model, acc = train_classifier(args.dataset, epochs=args.epochs, seed=args.seed)
    if acc < min_accuracy:
        raise UserError(f"test accuracy {acc:.4f} is below --min-accuracy {min_accuracy}; not writing {out}")
    digest = save_classifier(model, out, acc, args.dataset)
    print(f"test accuracy: {acc:.4f}")
    print(f"wrote {out}")
    print(f"sha256: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
