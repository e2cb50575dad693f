"""Parity runs in true float32: TF32 off in torch, the highest matmul precision in JAX.

On CPU neither setting changes anything today; they keep the suite honest on a GPU, where
TF32 (10-bit mantissas) would otherwise make both backends' matmuls disagree at ~1e-3.

torch gets one intra-op thread: at batch 64 the matmuls are too small to gain from two, and
on a shared 2-core runner its OpenMP threads spin against JAX's pool and other jobs (measured
at load 7: 28 ms/step with one thread, 250 ms/step with two). No tolerance depends on it.
"""

import jax
import numpy as np
import pytest
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def mnist() -> np.ndarray:
    """MNIST's 60,000 training images, (N, 28, 28, 1) uint8, as both backends train on them."""
    from gan_common.datasets import load_dataset

    return load_dataset("mnist", "train").images
