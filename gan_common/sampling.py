"""Noise and class labels drawn in NumPy, so that both backends sample from the same inputs."""

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


