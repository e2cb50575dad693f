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

from gan_common.config import LAUNCH_FIELDS, NUM_CLASSES, PRESET_SUMMARIES, PRESETS, Config, flag_name, validate
from gan_common.errors import UserError
from gan_common.evaluation import (
    MIN_SAMPLES,
    REFERENCE_SIZE,
    REFERENCES,
    AnyEvaluator,
    format_table,
    load_samples,
)
from gan_common.outputs import save_animation, save_grid
from gan_common.sampling import latent_walk, sample_labels, sample_noise

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
# --help's sections. Each Config field's section follows from its place in Config: an entry here names the first
# field of a run of consecutive fields that share a section, so a field added among others joins their section.
SECTIONS = ("model", "optimisation", "data", "run", "evaluation", "parallel and precision")
SECTION_STARTS = {"arch": "model", "g_loss": "optimisation", "steps": "run", "dataset": "data", "out_dir": "run",
                  "eval_every": "evaluation", "steps_per_call": "run", "precision": "parallel and precision"}


def flag_sections() -> dict[str, str]:
    """Config field name -> the --help section of its flag (SECTION_STARTS)."""
    sections, current = {}, SECTIONS[0]
    for f in dataclasses.fields(Config):
        current = SECTION_STARTS.get(f.name, current)
        sections[f.name] = current
    return sections


class TrainHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """HelpFormatter that prints the epilog's example commands line for line instead of re-wrapping them."""


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    examples = (
        "examples:\n"
        "  # the best recipe measured (benchmarks/QUALITY.md): the default's with D 2x wider, 2x longer\n"
        f"  {prog} --preset best --out-dir runs/best\n"
        "  # a new run from that one's config.json, with another seed\n"
        f"  {prog} --config runs/best/config.json --seed 1 --out-dir runs/best_seed1\n"
        "  # the seed tutorial's GAN exactly, for 5 epochs; then continue it to 10 epochs in all\n"
        f"  {prog} --preset tutorial --epochs 5 --out-dir runs/seed\n"
        f"  {prog} --out-dir runs/seed --resume --epochs 10\n"
    )
    parser = Parser(prog=prog, description=description, epilog=examples, formatter_class=TrainHelpFormatter)
    start = parser.add_argument_group("start from", "a saved or named configuration; flags given with either "
                                      "override its values")
    start.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="start a new run from a saved config.json (a run's own, or one written by hand) with "
                            "every value it holds but --resume and the device layout (--devices, multi-host flags)")
    start.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                       help="a named configuration measured in benchmarks/QUALITY.md (recorded as the config's "
                            "preset; docs/usage.md lists its values). "
                            + "; ".join(f"{name}: {PRESET_SUMMARIES[name]}" for name in PRESETS))
    groups = {title: parser.add_argument_group(title) for title in SECTIONS}
    section_of = flag_sections()
    for f in dataclasses.fields(Config):
        if f.name == "preset":  # --preset above: it sets other fields, and records its name
            continue
        flag = "--" + flag_name(f.name)
        # default=SUPPRESS: the namespace holds only flags the user typed (resume keeps the rest).
        kwargs: dict[str, Any] = {"help": f.metadata["help"], "default": argparse.SUPPRESS}
        if f.type in ("bool", bool):  # a switch: off unless given; one on by default also gets --no-FLAG
            kwargs["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        else:
            kwargs["help"] += f" (default: {f.default if f.default != '' else 'empty'})"
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            kwargs["metavar"] = f.name.upper() if "choices" not in f.metadata else None
        groups[section_of[f.name]].add_argument(flag, **kwargs)
    return parser


def _saved_config(path: str) -> dict[str, Any]:
    """--config FILE: the fields of a saved config that say what a run computes and how long and where it
    writes; a new run, so not --resume, and the launch layout (devices, hosts) comes from this command line."""
    saved = dataclasses.asdict(Config.from_json_file(path))
    return {k: v for k, v in saved.items() if k != "resume" and k not in LAUNCH_FIELDS}


def parse_args(argv: Sequence[str] | None, prog: str, description: str) -> tuple[Config, set[str]]:
    """Parse a command line into a validated Config and the set of fields the user set explicitly
    (a --preset's values count as set; a --config file's do not: it starts a new run, never a resumed one)."""
    typed = dict(vars(build_parser(prog, description).parse_args(argv)))
    base = {}
    if "config" in typed:
        if typed.get("resume"):
            raise UserError("--config starts a new run; --resume continues the one in --out-dir from its own "
                            "config.json: give one of them")
        base = _saved_config(typed.pop("config"))
    preset = typed.pop("preset", None)
    given = {**PRESETS.get(preset, {}), **typed}  # the preset's values count as given
    config = Config(**{**base, **given, "preset": preset if preset is not None else base.get("preset", "")})
    return validate(config), set(given)


# ----------------------------------------------------------------------------- sample
WALK_FRAMES = 16  # --frames: frames from one walk point to the next


def parse_sample_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    p = Parser(prog=prog, description="Write samples of a trained generator as .npy or a PNG grid, or a latent-space "
               "walk as a GIF.", formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a run folder (newest checkpoint), one checkpoint folder, or a weights.safetensors of "
                   "either backend")
    p.add_argument("--num", type=int, default=None, help="number of samples (default: 64)")
    p.add_argument("--out", required=True, help="FILE.npy: float32 (N, H, W, C) in [-1, 1]; FILE.png: a grid; "
                   "FILE.gif with --interpolate: the walk")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise z ~ N(0, I) (NumPy, so both backends agree)")
    p.add_argument("--label", type=int, default=None,
                   help="conditional models only: every sample of this class, 0..9 (default: classes 0..9 cycling, "
                        "so sample i is class i %% 10 and each row of a PNG reads 0..9; a walk: class 0)")
    p.add_argument("--interpolate", type=int, default=None, metavar="K",
                   help="instead of samples, a GIF of G's images along a walk through K random points of z "
                   "(spherical interpolation, back to the first point at the end)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"--interpolate: frames from one point to the next (default: {WALK_FRAMES})")
    args = p.parse_args(argv)
    ext = os.path.splitext(args.out)[1].lower()
    if args.interpolate is not None:
        if args.interpolate < 2 or (args.frames is not None and args.frames < 1):
            raise UserError(f"--interpolate needs at least 2 points and --frames at least 1, got {args.interpolate} "
                            f"and {args.frames}")
        if args.num is not None:
            raise UserError("--num sets a number of samples; --interpolate draws one walk of K x --frames images: "
                            "give one of them")
        if ext != ".gif":
            raise UserError(f"--interpolate writes a GIF: --out {args.out!r} must end in .gif")
        args.frames = WALK_FRAMES if args.frames is None else args.frames
    else:
        if args.frames is not None:
            raise UserError("--frames applies only to --interpolate K; give --interpolate too")
        if ext not in (".npy", ".png"):
            raise UserError(f"--out {args.out!r} must end in .npy (array) or .png (grid), or .gif with --interpolate")
        args.num = 64 if args.num is None else args.num
        if args.num <= 0:
            raise UserError(f"--num must be a positive integer, got {args.num}")
    if args.label is not None and not 0 <= args.label < NUM_CLASSES:
        raise UserError(f"--label must be a class in 0..{NUM_CLASSES - 1}, got {args.label}")
    return args


def write_samples(generate: Callable[..., np.ndarray], config: Config, args: argparse.Namespace) -> None:
    """`generate(z, labels)` from the sample CLI's flags; labels None for an unconditional model."""
    labels = None
    if args.label is not None and not config.conditional:
        raise UserError(f"--label {args.label}: this checkpoint's model is unconditional (trained without "
                        "--conditional); drop --label")
    if args.interpolate is not None:  # one walk; a conditional G keeps one class along it
        z = latent_walk(sample_noise(args.interpolate, config.latent_dim, args.seed), args.frames)
        if config.conditional:
            labels = sample_labels(len(z), args.label or 0)
    else:
        z = sample_noise(args.num, config.latent_dim, args.seed)
        if config.conditional:
            labels = sample_labels(args.num, args.label)
    images = generate(z, labels).astype(np.float32)
    if not np.all(np.isfinite(images)):  # finite weights can still overflow: no NaN image leaves with exit 0
        raise UserError(f"the generator of {args.checkpoint} draws NaN or inf images; its weights are damaged or "
                        f"diverged: sample an earlier checkpoint")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if args.interpolate is not None:
            save_animation(images, args.out)
        elif args.out.lower().endswith(".npy"):
            np.save(args.out, images)
        else:  # cycling classes: ten columns, so column k is class k
            save_grid(images, args.out, nrow=NUM_CLASSES if labels is not None and args.label is None else None)
    except OSError as e:
        raise UserError(f"cannot write --out {args.out!r}: {e.strerror or e}") from None
    if args.interpolate is not None:
        kept = f" of class {labels[0]}" if labels is not None else ""
        print(f"wrote a {len(images)}-frame walk{kept} through {args.interpolate} points to {args.out}")
    else:
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


def evaluate_main(argv: Sequence[str] | None, prog: str, evaluator: Callable[..., AnyEvaluator],
                  load_generator: Callable) -> int:
    """`python -m gan_{jax,torch}.evaluate`; `evaluator` is the backend's `evaluators(...)` and
    `load_generator(path) -> (generate, config)` its loader."""
    parser = Parser(
        prog=prog, description="Sample-quality numbers for generated images: for MNIST and Fashion-MNIST with the "
        "shipped classifier of that dataset (FID, KID, ...); for any other dataset KID and precision/recall on "
        "random-convnet features (no FID). Both: a classifier two-sample test.", formatter_class=HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", help=".npy of (N, H, W, C) float32 images in [-1, 1], the dataset's shape")
    source.add_argument("--checkpoint", help="a run dir, a checkpoint dir or a neutral weights.safetensors")
    source.add_argument("--real-baselines", action="store_true", help="score 10k training images (the floor)")
    parser.add_argument("--num", type=int, default=REFERENCE_SIZE, help="images to draw with --checkpoint "
                        "(a conditional model: classes 0..9 cycling, each scored apart as class_acc_K)")
    parser.add_argument("--seed", type=int, default=0, help="seed of z for --checkpoint, of KID's subsets and of "
                        "the C2ST's split and initial weights")
    parser.add_argument("--reference", default="test", choices=REFERENCES, help="10k real images to compare with")
    parser.add_argument("--dataset", help="whose real images (and, for mnist and fashion_mnist, classifier) to "
                        "score with: any --dataset of train (default: a --checkpoint's own dataset, otherwise mnist)")
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
        scorer = evaluator(args.dataset or "mnist", data_dir=args.data_dir)
        results = scorer.real_baselines(args.seed, c2st)
    else:
        scorer = evaluator(args.dataset or "mnist", data_dir=args.data_dir)
        if args.checkpoint:
            if args.num < MIN_SAMPLES:
                raise UserError(f"--num {args.num} is too small; the metrics need at least {MIN_SAMPLES} images")
            generate, config = load_generator(args.checkpoint)
            if args.dataset and args.dataset != config.dataset:
                raise UserError(f"--dataset {args.dataset}, but {args.checkpoint} was trained on {config.dataset}; "
                                f"drop --dataset to score it with its own dataset's classifier")
            scorer = evaluator(config.dataset, data_dir=args.data_dir, image_size=config.image_size,
                               channels=config.channels)  # folder:/npz: data decoded as the run had it
            if config.conditional:  # classes 0..9 cycling: num / 10 of each, scored per class too
                labels = sample_labels(args.num)
            images = scorer.check(generate_images(generate, config.latent_dim, args.num, args.seed, labels),
                                  "generated images", args.reference)
        else:
            images = load_samples(args.samples, scorer.image_shape(args.reference))
        results = scorer.evaluate_images(images, args.reference, seed=args.seed, labels=labels, c2st=c2st)
    if scorer.fid_unavailable:  # a dataset without a shipped classifier: say so, then what is reported
        print(scorer.fid_unavailable)
    print(format_table(results))
    if args.json:
        write_json(args.json, results, "--json")
    return 0
