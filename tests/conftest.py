"""Fixtures shared by the end-to-end tests."""

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread: on a shared 2-core runner two OpenMP threads spin against other jobs (10x slower)."""
    import torch  # here, not at the top: the gan_common and JAX tests need no torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
