"""DiffAugment (Zhao et al. 2020), the spec both backends implement: the policy, the sizes, and what is drawn.

D only ever sees augmented images: the real batch, the fakes of its own update and the fakes of G's update
each go through the same kind of random, differentiable transformation (each image its own draw), so G
learns through the augmentation and D cannot memorise the raw training set. The paper's settings, for an
H x W image:
- color: brightness + U(-0.5, 0.5), then saturation (x - mean over channels) * U(0, 2), then contrast
  (x - mean over the image) * U(0.5, 1.5), each mean added back;
- translation: a shift of each image by integers (dy, dx), |dy| <= round(H / 8), |dx| <= round(W / 8),
  zeros shifted in;
- cutout: a square of half the side, centred on a uniform pixel (or just off the image), set to 0.
They run in that order, whatever the order of the policy's words. The random parameters are inputs of
`train_step` (`AugmentDraws`), like its noise: each backend draws its own in a run, and the parity tests
feed both the same. Translation and cutout move or zero whole pixels, so they are exact in either backend.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gan_common.errors import UserError

KINDS = ("color", "translation", "cutout")  # the order they are applied in
TRANSLATION_RATIO = 1 / 8  # the paper's: shifts up to 1/8 of the side
CUTOUT_RATIO = 1 / 2  # the paper's: a square of half the side


class AugmentDraws(NamedTuple):
    """The random parameters of one augmentation of N images, one row each; None where the policy lacks the kind.
    A pytree of arrays in gan_jax, of tensors in gan_torch, of NumPy arrays in the parity tests."""

    color: Any = None  # (N, 3) float in [0, 1): brightness, saturation, contrast, each mapped to its range
    shift: Any = None  # (N, 2) int in [-s, s]: (dy, dx), the rows and columns each image moves down and right
    cutout: Any = None  # (N, 2) int: the square's centre (row, column), rows in [0, cutout_centres(H))


def policy(text: str) -> tuple[str, ...]:
    """--augment's comma-separated kinds in the order they run; () for "" (off). A UserError names a bad word."""
    words = [w.strip() for w in text.split(",")] if text.strip() else []
    bad = [w for w in words if w not in KINDS]
    if bad or len(set(words)) != len(words):
        raise UserError(f"--augment {text!r} is not a comma-separated list of distinct kinds among "
                        f"{', '.join(KINDS)} (e.g. translation,cutout; empty: off)")
    return tuple(k for k in KINDS if k in words)


def max_shift(side: int) -> int:
    """The largest translation along a side of `side` pixels: 1/8 of it, rounded half up (28 -> 4, 32 -> 4)."""
    return int(side * TRANSLATION_RATIO + 0.5)


def cutout_size(side: int) -> int:
    """The cutout square's side along a side of `side` pixels: half of it, rounded half up (28 -> 14)."""
    return int(side * CUTOUT_RATIO + 0.5)


def cutout_centres(side: int) -> int:
    """How many centre positions along a side: [0, side] for an even square, [0, side) for an odd one, as in the
    paper's code; a square centred near an edge hangs over it by up to half its side."""
    return side + 1 - cutout_size(side) % 2
