"""Train the metrics classifier and write its weight file.

    python -m gan_jax.train_classifier --out gan_common/assets/mnist_classifier.safetensors

About 3 epochs on a 2-core CPU in a few minutes to >= 99% test accuracy; prints the file's
SHA-256, which must then replace CLASSIFIER_SHA256 in gan_common/classifier_spec.py.
"""

from __future__ import annotations

import argparse
import sys

from gan_common.errors import UserError, cli_entry
from gan_jax.classifier import CLASSIFIER_PATH, save_classifier, train_classifier


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=CLASSIFIER_PATH, help="where to write the safetensors file")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the 60k training images")
    parser.add_argument("--seed", type=int, default=0, help="weights, data order and augmentation derive from it")
    parser.add_argument("--min-accuracy", type=float, default=0.99, help="refuse to write a worse classifier")
    args = parser.parse_args(argv)
    model, acc = train_classifier(epochs=args.epochs, seed=args.seed)
    if acc < args.min_accuracy:
        raise UserError(f"test accuracy {acc:.4f} is below --min-accuracy {args.min_accuracy}; not writing {args.out}")
    digest = save_classifier(model, args.out, acc)
    print(f"test accuracy: {acc:.4f}")
    print(f"wrote {args.out}")
    print(f"sha256: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
