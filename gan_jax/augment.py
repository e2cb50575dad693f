"""DiffAugment in JAX: gan_common.augment's transformations of a batch (B, H, W, C) under given draws, and the
draws themselves from a key. gan_torch.augment holds the same functions with the same names.

Translation and cutout only move pixels or replace them by 0 (gathers and selects, no arithmetic), so their
outputs and input gradients are exact and equal in both backends; color is three per-image affine maps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gan_common.augment import AugmentDraws, cutout_centres, cutout_size, max_shift, policy


def augment(x: jax.Array, draws: AugmentDraws) -> jax.Array:
    """x (B, H, W, C) transformed image by image by each kind `draws` holds (color, translation, cutout, in that
    order); differentiable in x. The same shape and dtype."""
    if draws.color is not None:
        x = color(x, draws.color)
    if draws.shift is not None:
        x = translate(x, draws.shift)
    if draws.cutout is not None:
        x = cutout(x, draws.cutout)
    return x


def color(x: jax.Array, u: jax.Array) -> jax.Array:
    """u (B, 3) in [0, 1): brightness + (u0 - 0.5), saturation (u1 * 2) and contrast (u2 + 0.5) about the means."""
    u = u.astype(x.dtype)[:, None, None, :]  # (B, 1, 1, 3)
    x = x + (u[..., 0:1] - 0.5)
    mean = jnp.mean(x, axis=3, keepdims=True)  # over channels (grey images: x itself, so a no-op)
    x = (x - mean) * (u[..., 1:2] * 2) + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)  # over the whole image
    return (x - mean) * (u[..., 2:3] + 0.5) + mean


def translate(x: jax.Array, shift: jax.Array) -> jax.Array:
    """out[b, i, j] = x[b, i - dy_b, j - dx_b], 0 where that falls off the image; shift (B, 2) int = (dy, dx)."""
    height, width = x.shape[1:3]
    rows = jnp.arange(height)[None, :] - shift[:, 0:1]  # (B, H): the source row of each output row
    cols = jnp.arange(width)[None, :] - shift[:, 1:2]  # (B, W)
    inside = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])  # (B, H, W)
    moved = jax.vmap(lambda image, r, c: image[r][:, c])(x, jnp.clip(rows, 0, height - 1),
                                                          jnp.clip(cols, 0, width - 1))  # (B, H, W, C)
    return jnp.where(inside[..., None], moved, jnp.zeros((), x.dtype))


def cutout(x: jax.Array, centre: jax.Array) -> jax.Array:
    """x with a (h, w) = cutout_size square of each image set to 0: rows [cy - h // 2, cy - h // 2 + h), columns
    likewise, clipped to the image; centre (B, 2) int = (cy, cx)."""
    (height, width), (h, w) = x.shape[1:3], (cutout_size(x.shape[1]), cutout_size(x.shape[2]))
    top, left = centre[:, 0:1] - h // 2, centre[:, 1:2] - w // 2  # (B, 1) each
    rows, cols = jnp.arange(height)[None, :], jnp.arange(width)[None, :]
    cut = ((rows >= top) & (rows < top + h))[:, :, None] & ((cols >= left) & (cols < left + w))[:, None, :]
    return jnp.where(cut[..., None], jnp.zeros((), x.dtype), x)


def draw(key: jax.Array, num: int, kinds: str, image_shape: tuple[int, int, int]) -> AugmentDraws:
    """The draws of `num` images for --augment `kinds` (None for a kind it lacks), each row its own, from `key`."""
    kinds = policy(kinds)
    height, width = image_shape[:2]
    k_color, k_shift, k_cut = jax.random.split(key, 3)
    s = jnp.array([max_shift(height), max_shift(width)], jnp.int32)
    return AugmentDraws(
        color=jax.random.uniform(k_color, (num, 3)) if "color" in kinds else None,
        shift=jax.random.randint(k_shift, (num, 2), -s, s + 1, jnp.int32) if "translation" in kinds else None,
        cutout=(jax.random.randint(k_cut, (num, 2), 0, jnp.array([cutout_centres(height), cutout_centres(width)]),
                                   jnp.int32) if "cutout" in kinds else None),
    )
