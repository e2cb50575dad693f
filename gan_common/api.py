"""The Python API both backends export (gan_jax.api, gan_torch.api), written once over a backend's functions.

What the CLIs do, as calls: train a run from a Config, load a trained generator, draw images, score them.
Errors are the CLIs' UserErrors, but name Config fields and arguments (`lr must be > 0`), not flags
(`--lr must be > 0`): a caller of `train(Config(lr=0))` typed no flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from gan_common.cli import generate_images
from gan_common.config import Config, as_field_names, validate
from gan_common.errors import UserError
from gan_common.evaluation import Evaluator
from gan_common.sampling import sample_labels


class Generator(NamedTuple):
    """A trained G: what a backend's `load_generator` returns, so it also unpacks as `apply, config = ...`."""

    apply: Callable[..., np.ndarray]  # (z (N, latent_dim) float32, labels (N,) int | None) -> (N, H, W, C) in [-1, 1]
    config: Config  # the run's config: latent_dim, image shape, whether it is conditional


@contextlib.contextmanager
def field_names(renames: dict[str, str] | None = None) -> Iterator[None]:
    """Re-raise a UserError from inside with Config field names for flags (gan_common.config.as_field_names)."""
    try:
        yield
    except UserError as e:
        e.args = (as_field_names(str(e), renames),)
        raise


def generate(generator: Generator, num: int = 64, seed: int = 0, label: int | None = None) -> np.ndarray:
    """`num` images (num, H, W, C) float32 in [-1, 1], from z ~ N(0, I) drawn by NumPy from `seed`: the
    images `python -m gan_jax.sample --num NUM --seed SEED` writes, with either backend. A conditional G draws
    class `label`, or classes 0..9 cycling when it is None."""
    apply, config = generator
    if num <= 0:
        raise UserError(f"num must be a positive integer, got {num}")
    if not config.conditional and label is not None:
        raise UserError(f"label {label}: this generator is unconditional (trained without conditional); drop label")
    labels = sample_labels(num, label) if config.conditional else None  # (num,) int
    return generate_images(apply, config.latent_dim, num, seed, labels).astype(np.float32)


class BackendApi:
    """`train`, `load_generator` and `evaluate` over one backend's functions; gan_jax.api and gan_torch.api
    each bind their own and export the bound methods."""

    def __init__(self, train_and_evaluate: Callable[..., dict], load_generator: Callable[..., tuple],
                 evaluator: Callable[..., Evaluator]):
        self._train_and_evaluate = train_and_evaluate  # backend.train_and_evaluate(config, given=...)
        self._load_generator = load_generator  # backend.load_generator(path, ema) -> (apply, config)
        self._evaluator = evaluator  # backend.evaluator(dataset) -> Evaluator

    def train(self, config: Config) -> dict[str, Any]:
        """Train the run `config` describes into `config.out_dir`, writing what the train CLI writes; return its
        last logged metrics (step, d_loss, g_loss, ...). With `resume=True` it continues the run there: the
        fields set away from their defaults are the overrides a resume may make (steps, log_every, ...)."""
        with field_names():
            validate(config)
            defaults = Config()
            given = {f.name for f in dataclasses.fields(Config) if getattr(config, f.name) != getattr(defaults, f.name)}
            return self._train_and_evaluate(config, given=given)

    def load_generator(self, path: str, ema: bool = True) -> Generator:
        """The generator of a checkpoint of either backend: `path` a run folder (its newest checkpoint), one
        checkpoint folder, or a weights.safetensors. ema=False: G's own weights where the run also kept an EMA."""
        with field_names({"checkpoint": "path"}):
            return Generator(*self._load_generator(path, ema))

    def evaluate(self, images: np.ndarray, dataset: str = "mnist", labels: np.ndarray | None = None,
                 reference: str = "test", seed: int = 0, c2st: bool = True) -> dict[str, float | int]:
        """The evaluate CLI's metrics of (N, 28, 28, 1) float32 images in [-1, 1] (N >= 10) against 10k real
        images of `dataset` (mnist or fashion_mnist), through the shipped classifier; `labels` (N,): the classes a
        conditional G was asked for (adds class_acc_*). c2st=False skips the two-sample test, which trains a
        small network (seconds)."""
        with field_names():
            return self._evaluator(dataset).evaluate_images(images, reference, seed=seed, labels=labels, c2st=c2st)
