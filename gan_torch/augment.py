"""DiffAugment in PyTorch: gan_common.augment's transformations of a batch (B, H, W, C) under given draws, and
the draws themselves from a generator. gan_jax.augment holds the same functions with the same names.

Translation and cutout only move pixels or replace them by 0 (indexing and selects, no arithmetic), so their
outputs and input gradients are exact and equal in both backends; color is three per-image affine maps.
"""

from __future__ import annotations

import torch

from gan_common.augment import AugmentDraws, cutout_centres, cutout_size, max_shift, policy


def augment(x: torch.Tensor, draws: AugmentDraws) -> torch.Tensor:
    """x (B, H, W, C) transformed image by image by each kind `draws` holds (color, translation, cutout, in that
    order); differentiable in x. The same shape and dtype."""
    if draws.color is not None:
        x = color(x, draws.color)
    if draws.shift is not None:
        x = translate(x, draws.shift)
    if draws.cutout is not None:
        x = cutout(x, draws.cutout)
    return x


def color(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """u (B, 3) in [0, 1): brightness + (u0 - 0.5), saturation (u1 * 2) and contrast (u2 + 0.5) about the means."""
    u = u.to(x.dtype)[:, None, None, :]  # (B, 1, 1, 3)
    x = x + (u[..., 0:1] - 0.5)
    mean = x.mean(dim=3, keepdim=True)  # over channels (grey images: x itself, so a no-op)
    x = (x - mean) * (u[..., 1:2] * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # over the whole image
    return (x - mean) * (u[..., 2:3] + 0.5) + mean


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out[b, i, j] = x[b, i - dy_b, j - dx_b], 0 where that falls off the image; shift (B, 2) int = (dy, dx)."""
    batch, height, width = x.shape[:3]
    rows = torch.arange(height)[None, :] - shift[:, 0:1]  # (B, H): the source row of each output row
    cols = torch.arange(width)[None, :] - shift[:, 1:2]  # (B, W)
    inside = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])  # (B, H, W)
    b = torch.arange(batch)[:, None, None]
    moved = x[b, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]]  # (B, H, W, C)
    return torch.where(inside[..., None], moved, torch.zeros((), dtype=x.dtype))


def cutout(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """x with a (h, w) = cutout_size square of each image set to 0: rows [cy - h // 2, cy - h // 2 + h), columns
    likewise, clipped to the image; centre (B, 2) int = (cy, cx)."""
    (height, width), (h, w) = x.shape[1:3], (cutout_size(x.shape[1]), cutout_size(x.shape[2]))
    top, left = centre[:, 0:1] - h // 2, centre[:, 1:2] - w // 2  # (B, 1) each
    rows, cols = torch.arange(height)[None, :], torch.arange(width)[None, :]
    cut = ((rows >= top) & (rows < top + h))[:, :, None] & ((cols >= left) & (cols < left + w))[:, None, :]
    return torch.where(cut[..., None], torch.zeros((), dtype=x.dtype), x)


def draw(rng: torch.Generator, num: int, kinds: str, image_shape: tuple[int, int, int]) -> AugmentDraws:
    """The draws of `num` images for --augment `kinds` (None for a kind it lacks), each row its own, from `rng`:
    color, then the shifts, then the centres, each only if the policy has it."""
    kinds = policy(kinds)
    height, width = image_shape[:2]

    def ints(low: tuple[int, int], high: tuple[int, int]) -> torch.Tensor:  # (num, 2): a column per axis
        return torch.stack([torch.randint(lo, hi, (num,), generator=rng) for lo, hi in zip(low, high, strict=True)],
                           dim=1)

    sy, sx = max_shift(height), max_shift(width)
    return AugmentDraws(
        color=torch.rand(num, 3, generator=rng) if "color" in kinds else None,
        shift=ints((-sy, -sx), (sy + 1, sx + 1)) if "translation" in kinds else None,
        cutout=ints((0, 0), (cutout_centres(height), cutout_centres(width))) if "cutout" in kinds else None,
    )
