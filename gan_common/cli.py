"""The command lines both backends share: train's flags (one per Config field), and the whole
sample and evaluate CLIs, which take the backend's `load_generator` (and classifier) as arguments.
Every parse error is a UserError: one line, exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gan_common.classifier_spec import EVAL_DATASETS
from gan_common.config import NUM_CLASSES, PRESETS, Config, flag_name, validate
from gan_common.errors import UserError
from gan_common.evaluation import (
    MIN_SAMPLES,
    REFERENCE_SIZE,
    REFERENCES,
    Evaluator,
    check_images,
    format_table,
    load_samples,
)
from gan_common.outputs import save_grid
from gan_common.sampling import sample_labels, sample_noise

LoadGenerator = Callable[[str], "tuple[Callable[..., np.ndarray], Config]"]  # path -> (generate(z, labels), config)


class Parser(argparse.ArgumentParser):
    """argparse that raises UserError, so every bad flag ends in the same one-line message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default where it has one: not on required flags, switches, flags whose
    absence means something (default None, which would read "(default: None)"), or where the help text
    already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        no_default = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if action.required or no_default or "(default" in action.help:  # or the help says it in its own words
            return action.help
        return super()._get_help_string(action)


def writable_file(path: str, flag: str) -> None:
    """Fail now, before minutes of work, if `path` cannot be written: a folder, or a place no file can be made."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path!r} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path!r} cannot be written ({e.strerror or e}); choose a writable place") from None


def write_json(path: str, results: dict, flag: str) -> None:
    """One flat JSON object, written to a temporary file and renamed: never half a file."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {flag} {path!r}: {e.strerror or e}") from None



# ----------------------------------------------------------------------------- train
def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                        help="start from a named configuration measured in benchmarks/QUALITY.md; flags given "
                             "with it override its values. " + "; ".join(
                                 f"{name}: " + " ".join(f"--{flag_name(k)} {v}" for k, v in flags.items())
                                 for name, flags in PRESETS.items()))
    for f in dataclasses.fields(Config):
        flag = "--" + flag_name(f.name)
        # default=SUPPRESS: the namespace holds only flags the user typed (resume keeps the rest).
        kwargs: dict[str, Any] = {"help": f.metadata["help"] + f" (default: {f.default})", "default": argparse.SUPPRESS}
        if f.type in ("bool", bool):
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            kwargs["metavar"] = f.name.upper() if "choices" not in f.metadata else None
        parser.add_argument(flag, **kwargs)
    return parser


def parse_args(argv: Sequence[str] | None, prog: str, description: str) -> tuple[Config, set[str]]:
    """Parse a command line into a validated Config and the set of fields the user set explicitly."""
    ns = build_parser(prog, description).parse_args(argv)
    typed = dict(vars(ns))
    given = {**PRESETS.get(typed.pop("preset", ""), {}), **typed}  # the preset's values count as given
    return validate(Config(**given)), set(given)



# ----------------------------------------------------------------------------- sample
def parse_sample_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    p = Parser(prog=prog, description="Write samples of a trained generator as .npy or a PNG grid.",
                formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a run folder (newest checkpoint), one checkpoint folder, or a weights.safetensors of "
                   "either backend")
    p.add_argument("--num", type=int, default=64, help="number of samples")
    p.add_argument("--out", required=True, help="FILE.npy: float32 (N, H, W, C) in [-1, 1]; FILE.png: a grid")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise z ~ N(0, I) (NumPy, so both backends agree)")
    p.add_argument("--label", type=int, default=None,
                   help="conditional models only: every sample of this class, 0..9 (default: classes 0..9 cycling, "
                        "so sample i is class i %% 10 and each row of a PNG reads 0..9)")
    args = p.parse_args(argv)
    if args.num <= 0:
        raise UserError(f"--num must be a positive integer, got {args.num}")
    if args.label is not None and not 0 <= args.label < NUM_CLASSES:
        raise UserError(f"--label must be a class in 0..{NUM_CLASSES - 1}, got {args.label}")
    if os.path.splitext(args.out)[1].lower() not in (".npy", ".png"):
        raise UserError(f"--out {args.out!r} must end in .npy (array) or .png (grid)")
    return args


def write_samples(generate: Callable[..., np.ndarray], config: Config, args: argparse.Namespace) -> None:
    """`generate(z, labels)` from the sample CLI's flags; labels None for an unconditional model."""
    labels = None
    if config.conditional:
        labels = sample_labels(args.num, args.label)
    elif args.label is not None:
        raise UserError(f"--label {args.label}: this checkpoint's model is unconditional (trained without "
                        "--conditional); drop --label")
    images = generate(sample_noise(args.num, config.latent_dim, args.seed), labels).astype(np.float32)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if args.out.lower().endswith(".npy"):
            np.save(args.out, images)
        else:  # cycling classes: ten columns, so column k is class k
            save_grid(images, args.out, nrow=NUM_CLASSES if labels is not None and args.label is None else None)
    except OSError as e:
        raise UserError(f"cannot write --out {args.out!r}: {e.strerror or e}") from None
    print(f"wrote {len(images)} samples {images.shape[1:]} to {args.out}")


def sample_main(argv: Sequence[str] | None, prog: str, load_generator: LoadGenerator) -> int:
    """`python -m gan_{jax,torch}.sample`: the backend passes its `load_generator`."""
    args = parse_sample_args(argv, prog)
    generate, config = load_generator(args.checkpoint)
    write_samples(generate, config, args)
    return 0


# ------------------------------------------------------------------ the evaluate CLI of both backends
def generate_images(generate: Callable[..., np.ndarray], latent_dim: int, num: int, seed: int,
                    labels: np.ndarray | None = None) -> np.ndarray:
    """`num` images from a backend's `load_generator` function (it batches itself), z ~ N(0, I)
    from `seed` as in the sample CLI, so either backend sees the same z; `labels` (num,) for a conditional G."""
    return np.asarray(generate(sample_noise(num, latent_dim, seed), labels))  # (N, H, W, C)


def evaluate_main(argv: Sequence[str] | None, prog: str, evaluator: Callable[..., Evaluator],
                  load_generator: Callable) -> int:
    """`python -m gan_{jax,torch}.evaluate`; `evaluator` is the backend's `evaluators(...)` and
    `load_generator(path) -> (generate, config)` its loader."""
    parser = Parser(
        prog=prog, description="Sample-quality numbers for generated MNIST or Fashion-MNIST images, measured with "
        "the shipped classifier of that dataset.", formatter_class=HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", help=".npy of (N, 28, 28, 1) float32 images in [-1, 1]")
    source.add_argument("--checkpoint", help="a run dir, a checkpoint dir or a neutral weights.safetensors")
    source.add_argument("--real-baselines", action="store_true", help="score 10k training images (the floor)")
    parser.add_argument("--num", type=int, default=REFERENCE_SIZE, help="images to draw with --checkpoint "
                        "(a conditional model: classes 0..9 cycling, each scored apart as class_acc_K)")
    parser.add_argument("--seed", type=int, default=0, help="seed of z for --checkpoint, of KID's subsets and of "
                        "the C2ST's split and initial weights")
    parser.add_argument("--reference", default="test", choices=REFERENCES, help="10k real images to compare with")
    parser.add_argument("--dataset", choices=EVAL_DATASETS, help="whose classifier and real images to score with "
                        "(default: a --checkpoint's own dataset, otherwise mnist)")
    parser.add_argument("--data-dir", default="", help="folder of the dataset's four IDX files, for the real "
                        "images (default: where training finds them)")
    parser.add_argument("--no-c2st", action="store_true", help="skip the classifier two-sample test (the c2st_* "
                        "keys: a small convnet trained to tell the images from the reference's; seconds on a CPU)")
    parser.add_argument("--json", help="also write the metrics as one flat JSON object here")
    args = parser.parse_args(argv)
    if args.json:
        writable_file(args.json, "--json")  # before the work, not after it
    labels = None  # the classes asked of a conditional checkpoint's G
    c2st = not args.no_c2st
    if args.real_baselines:
        results = evaluator(args.dataset or "mnist", data_dir=args.data_dir).real_baselines(args.seed, c2st)
    else:
        scorer = evaluator(args.dataset or "mnist", data_dir=args.data_dir)
        if args.checkpoint:
            if args.num < MIN_SAMPLES:
                raise UserError(f"--num {args.num} is too small; the metrics need at least {MIN_SAMPLES} images")
            generate, config = load_generator(args.checkpoint)
            if args.dataset and args.dataset != config.dataset:
                raise UserError(f"--dataset {args.dataset}, but {args.checkpoint} was trained on {config.dataset}; "
                                f"drop --dataset to score it with its own dataset's classifier")
            scorer = evaluator(config.dataset, data_dir=args.data_dir)  # cifar10 fails here, before generating
            if config.conditional:  # classes 0..9 cycling: num / 10 of each, scored per class too
                labels = sample_labels(args.num)
            images = check_images(generate_images(generate, config.latent_dim, args.num, args.seed, labels),
                                  "generated images")
        else:
            images = load_samples(args.samples)
        results = scorer.evaluate_images(images, args.reference, seed=args.seed, labels=labels, c2st=c2st)
    print(format_table(results))
    if args.json:
        write_json(args.json, results, "--json")
    return 0
