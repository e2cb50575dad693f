"""gan_jax.c2st against gan_torch.c2st: the same network from the same initial weights (drawn once in
NumPy by gan_common.c2st), fed the same minibatches; and each backend's calibration on real images.

JAX convolves as nine strided slices and one matmul, torch with its own Conv2d, so the forward test
also checks that the slicing, the kernel layouts and the flatten order agree. The first Adam steps
agree to float32 rounding; over the full 1,000 steps rounding differences grow as in any long
trajectory, so the accuracies are compared as two runs of one test: each inside the other's interval.
The same runs are the calibration: real against real must look like chance, uniform noise and a
two-pixel shift must be spotted.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gan_common import c2st
from gan_common.datasets import load_dataset
from gan_jax import c2st as jax_c2st
from gan_torch import c2st as torch_c2st


def _jax_params(params: dict[str, np.ndarray]) -> dict:
    return {k: jnp.asarray(v) for k, v in params.items()}


def _torch_as_neutral(params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Back to HWIO for comparison with the JAX weights."""
    return {k: (v.detach().permute(2, 3, 1, 0) if v.ndim == 4 else v.detach()).numpy() for k, v in params.items()}


@pytest.mark.parametrize("shape", [(28, 28, 1), (27, 30, 3), (5, 4, 2)])
def test_forward_agrees_on_the_same_weights(shape):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, *shape)).astype(np.float32)
    params = c2st.init_params(shape, seed=0)
    j = np.asarray(jax_c2st.logits(_jax_params(params), jnp.asarray(x), 0.2))
    t = torch_c2st.logits(torch_c2st.to_torch(params), torch.from_numpy(x), 0.2).detach().numpy()
    # float32 sums of <= 9 * 16 products and a head of <= 1,568: measured 5e-8 on logits of ~0.1
    np.testing.assert_allclose(j, t, rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps, atol", [(1, 1e-6), (10, 1e-4)])
def test_first_adam_steps_agree(steps, atol):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (256, 28, 28, 1)).astype(np.float32)
    p = c2st.plan(real, np.clip(real[::-1] + 0.1, -1, 1), seed=0)
    order = p.order[:steps]  # batches of 128
    j = jax_c2st.train(_jax_params(p.params), jnp.asarray(p.x_train), jnp.asarray(p.y_train), jnp.asarray(order),
                       c2st.SPEC.lr, c2st.SPEC.negative_slope)
    t = _torch_as_neutral(torch_c2st.train(torch_c2st.to_torch(p.params), torch.from_numpy(p.x_train),
                                           torch.from_numpy(p.y_train), order, c2st.SPEC.lr,
                                           c2st.SPEC.negative_slope))
    for name, value in p.params.items():
        moved = np.abs(np.asarray(j[name]) - value).max()
        assert moved > 0.5 * steps * c2st.SPEC.lr, name  # Adam's early steps move each tensor by about lr per step
        # Step 1 is lr * g / (|g| + eps), blind to rounding in g (measured 2e-7 apart). Later steps divide m by
        # sqrt(v) of a few gradients only, which passes the backends' different summation orders (nine slices
        # and a matmul against Conv2d) on: after 10 steps measured 2e-5 apart, 0.2% of the 1e-2 they moved.
        np.testing.assert_allclose(np.asarray(j[name]), t[name], rtol=0, atol=atol, err_msg=name)


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    u = load_dataset("mnist", "test").images  # (10000, 28, 28, 1) uint8
    x = (u.astype(np.float32) - 127.5) / 127.5
    # Two disjoint random sets of 2,000 test images. Random, not the first and last 5,000: those come from
    # NIST's training and test sets, a real difference that a C2ST finds but does not saturate (measured
    # 0.73), where two trainings could part ways, hence its own case.
    perm = np.random.default_rng(0).permutation(x.shape[0])
    real, other = x[perm[:2000]], x[perm[2000:4000]]
    noise = np.random.default_rng(1).uniform(-1, 1, other.shape).astype(np.float32)
    return {"real": (real, other), "noise": (real, noise),
            "shifted": (real, np.roll(other, (2, 2), axis=(1, 2))),  # 2 pixels down and right; the border is 0
            "test_halves": (x[:5000], x[5000:])}


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, dict]]:
    """{case: {"jax": result, "torch": result}}: every case's C2ST (seed 0) by both backends, run once for the
    calibration checks and the agreement between backends alike."""
    return {name: {"jax": jax_c2st.c2st(*pair, seed=0), "torch": torch_c2st.c2st(*pair, seed=0)}
            for name, pair in _cases().items()}


# Calibration (docs/evaluation.md): each test half holds 2,000 images, so the 95% interval is about +-0.022
# wide around 0.5, narrow enough that "contains 0.5" means something, and a 2-pixel shift or uniform noise
# (both measured 1.0) lies more than twenty interval widths above chance.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_real_against_real_is_indistinguishable(runs, backend):
    r = runs["real"][backend]  # measured 0.4990 (JAX) and 0.4935 (torch), p = 0.55 and 0.73
    assert r["c2st_num_test"] == 2000 and r["c2st_ci_low"] <= 0.5 <= r["c2st_ci_high"]
    assert r["c2st_p_value"] > 0.05 and abs(r["c2st_accuracy"] - 0.5) < 0.03


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_uniform_noise_and_a_two_pixel_shift_are_spotted(runs, backend):
    assert runs["noise"][backend]["c2st_accuracy"] >= 0.99  # measured 1.0 in both
    r = runs["shifted"][backend]  # measured 1.0 in both: strokes where centred digits have none
    assert r["c2st_p_value"] < 0.01 and r["c2st_ci_low"] > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["real", "noise", "shifted", "test_halves"])
def test_accuracies_agree_within_the_interval(runs, name):
    j, t = runs[name]["jax"], runs[name]["torch"]
    assert j["c2st_num_test"] == t["c2st_num_test"] == (5000 if name == "test_halves" else 2000)
    # Each backend's accuracy inside the other's 95% interval (+-0.022 at 0.5 for 2,000, +-0.013 at 0.73 for
    # 5,000): the gap is that of two runs of one test, not of two tests. Measured gaps 0.0055, 0, 0 and 0.001
    # (docs/evaluation.md).
    assert j["c2st_ci_low"] <= t["c2st_accuracy"] <= j["c2st_ci_high"]
    assert t["c2st_ci_low"] <= j["c2st_accuracy"] <= t["c2st_ci_high"]
