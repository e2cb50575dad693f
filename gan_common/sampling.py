"""Noise and class labels drawn in NumPy, so that both backends sample from the same inputs; and latent walks
through them (slerp), for `sample --interpolate`."""

from __future__ import annotations

import numpy as np

from gan_common.config import NUM_CLASSES


def sample_noise(num: int, latent_dim: int, seed: int) -> np.ndarray:
    """z (num, latent_dim) float32 from NumPy, so the same seed gives the same z in either backend."""
    return np.random.default_rng(seed).standard_normal((num, latent_dim), dtype=np.float32)


CLASS_GRID_COLUMNS = 8  # --conditional training grids: one row per class, one fixed noise vector per column


def class_grid_inputs(z_fixed: np.ndarray, columns: int = CLASS_GRID_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """A conditional run's sample grid: z (10 * columns, latent_dim), the first `columns` fixed noise vectors
    repeated in every row, and labels (10 * columns,) int32, row k all class k."""
    z = np.tile(np.asarray(z_fixed, np.float32)[:columns], (NUM_CLASSES, 1))
    return z, np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), columns)


def sample_labels(num: int, label: int | None = None) -> np.ndarray:
    """Classes for `num` samples of a conditional model, (num,) int32: all `label`, or 0..9 cycling (balanced)."""
    if label is not None:
        return np.full(num, label, np.int32)
    return (np.arange(num) % NUM_CLASSES).astype(np.int32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation from a (D,) to b (D,) at fractions t (T,) -> (T, D), float64; unit vectors stay
    on the unit sphere. Gaussian z lies near a sphere of radius sqrt(D), which a straight line would cut inside
    (White 2016, "Sampling Generative Networks"). Nearly parallel vectors (the angle's sine < 1e-6, where dividing
    by it loses every digit): a straight line, the same path to that precision."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]  # (T, 1)
    cos = np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def latent_walk(points: np.ndarray, frames: int) -> np.ndarray:
    """A closed walk through points (K, D): `frames` steps from each point to the next, the last back to the first;
    (K * frames, D) float32, frame k * frames exactly points[k]."""
    t = np.arange(frames) / frames  # [0, 1): the next segment starts at t = 1
    return np.concatenate([slerp(p, q, t) for p, q in zip(points, np.roll(points, -1, axis=0), strict=True)]
                          ).astype(np.float32)
