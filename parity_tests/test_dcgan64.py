"""--arch dcgan at 64 pixels: the extra stride-2 stage (G's deconv3 and bn2, D's conv3 and bn3) in both backends.

Through the shared harness (harness.DCGAN64_SPECS: BatchNorm D; spectral-norm D with labels): the neutral weight
file round-trips exactly, the forward passes, one real step's losses, gradients and Adam update agree in float32,
and 5 float64 steps are the same run. The data is random 64x64 RGB images, as a folder:/npz: run would hold.
"""

import numpy as np
import pytest

from parity_tests.harness import (
    ADAPTERS,
    DCGAN64_SPECS,
    assert_tensors_close,
    class_labels,
    float64,
    inputs,
    loaded_pair,
    max_rel_err,
)

IDS = [s.name for s in DCGAN64_SPECS]
NUM_STEPS = 5
# The plain spec in the fast tier; the spectral, conditional one (a second compile of every step) in the slow one.
# All slow: the fast tier's 2-minute budget, and the 28/32-pixel nets' same layers are in it (test_dcgan.py).
SLOW_SPECS = [pytest.param(spec, marks=pytest.mark.slow) for spec in DCGAN64_SPECS]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """(96, 64, 64, 3) uint8: smooth random colour fields plus noise, so every pixel of a batch differs."""
    rng = np.random.default_rng(0)
    low = rng.uniform(0, 255, (96, 8, 8, 3))
    smooth = np.repeat(np.repeat(low, 8, axis=1), 8, axis=2)  # (96, 64, 64, 3) blocks of 8x8
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def _labels(config, n: int, num_steps: int):
    """(y_reals, y_ds, y_gs) of harness.class_labels for --conditional specs, else None: 10 classes cycling."""
    return class_labels(config, np.arange(n) % 10, num_steps) if config.conditional else None


@pytest.mark.parametrize("spec", SLOW_SPECS, ids=IDS)
def test_64_pixel_nets_have_the_extra_stage_and_round_trip_exactly(spec):
    jax_a, torch_a = (a(spec.config) for a in ADAPTERS)
    weights = torch_a.export()  # torch's initialisation
    # G: fc -> (8, 8, 4c), three transposed convolutions; D: three convolutions, fc on (8, 8, 4c) features.
    assert weights["generator.fc.kernel"].shape == (16 + 10 * spec.config.conditional, 8 * 8 * 16)
    assert weights["generator.deconv3.kernel"].shape == (4, 4, 3, 4)  # (kh, kw, out, in)
    assert weights["discriminator.conv3.kernel"].shape == (4, 4, 8, 16)  # HWIO
    assert weights["discriminator.fc.kernel"].shape == (8 * 8 * 16, 1)
    # torch -> jax -> torch: the same bits (transposes are exact)
    jax_a.load(weights)
    assert_tensors_close(jax_a.export(), weights, abs=0.0, what="torch -> jax")
    torch_a.load(jax_a.export())
    assert_tensors_close(torch_a.export(), weights, abs=0.0, what="jax -> torch")


@pytest.mark.parametrize("spec", SLOW_SPECS, ids=IDS)
def test_64_pixel_forward_one_step_and_gradients_agree(spec, images):
    config = spec.config
    jax_a, torch_a = loaded_pair(config, ADAPTERS[1](config).export())
    xs, z_ds, z_gs = inputs(config, images, 1)
    labels = _labels(config, len(images), 1)
    step_labels = None if labels is None else tuple(y[0] for y in labels)
    y = None if labels is None else labels[2][0]

    fake_j, fake_t = jax_a.generate(z_gs[0], y), torch_a.generate(z_gs[0], y)  # eval mode
    assert fake_j.shape == fake_t.shape == (8, 64, 64, 3)
    # As test_step_parity: float32 sums of <= 16 * 4c = 256 terms per output, tanh' <= 1: 1e-5 absolute.
    assert np.max(np.abs(fake_j - fake_t)) <= 1e-5
    y_real = None if labels is None else labels[0][0]
    assert max_rel_err(jax_a.discriminate(xs[0], y_real), torch_a.discriminate(xs[0], y_real)) <= 1e-5

    metrics_j, d_grads_j, g_grads_j = jax_a.step_with_grads(xs[0], z_ds[0], z_gs[0], labels=step_labels)
    metrics_t, d_grads_t, g_grads_t = torch_a.step_with_grads(xs[0], z_ds[0], z_gs[0], labels=step_labels)
    # test_step_parity's float32 budget of one forward and backward pass: 1e-5 relative, on losses and on each
    # gradient tensor relative to its largest entry (entries are sums of <= 12,288 float32 products here).
    np.testing.assert_allclose(metrics_j, metrics_t, rtol=1e-5, err_msg="[d_loss, g_loss, D(x), D(G(z))]")
    assert_tensors_close(d_grads_j, d_grads_t, rel=1e-5, what="D's gradients")
    assert_tensors_close(g_grads_j, g_grads_t, rel=1e-5, what="G's gradients (through the updated D)")
    assert {"discriminator.conv3.kernel", "generator.deconv3.kernel"} <= set(d_grads_t) | set(g_grads_t)
    assert min(float(np.max(np.abs(g))) for g in (*d_grads_t.values(), *g_grads_t.values())) > 0  # none is dead


@pytest.mark.slow
@pytest.mark.parametrize("spec", DCGAN64_SPECS[:1], ids=IDS[:1])  # BatchNorm in G and D: the running statistics
def test_64_pixel_float64_runs_are_the_same_run(spec, images):
    """5 real steps in float64 from the same weights on the same inputs (test_dcgan's reason for float64:
    ReLU kinks flip on last-bit float32 differences, and the game amplifies them)."""
    config = spec.config
    xs, z_ds, z_gs = (a.astype(np.float64) for a in inputs(config, images, NUM_STEPS))
    labels = _labels(config, len(images), NUM_STEPS)
    weights = ADAPTERS[1](config).export()
    runs = []
    with float64():
        for adapter in loaded_pair(config, weights, np.float64):
            runs.append((adapter.steps(xs, z_ds, z_gs, labelss=labels), adapter.export()))
    (metrics_j, final_j), (metrics_t, final_t) = runs
    # float64 rounding over 5 steps stays near 1e-13 (test_dcgan measures < 1e-12 over 100); a wrong stage, order
    # of BatchNorm and activation, or kernel layout changes step 1's losses by far more than 1e-10.
    errs = [max_rel_err(metrics_j[:, i], metrics_t[:, i]) for i in range(4)]
    assert max(errs) <= 1e-10, f"float64 runs diverged: [d_loss, g_loss, d_real, d_fake] differ by {errs}"
    # Parameters and running statistics, exported as float32: one float32 ulp of each tensor's largest entry.
    assert_tensors_close(final_j, final_t, rel=2.0**-23, what="after 5 float64 steps")
    stats = [k for k in final_t if k.endswith(".mean")]
    assert len(stats) == (3 if config.d_norm == "spectral" else 5)  # G's bn0..bn2 (+ D's bn2, bn3)
    assert max_rel_err(final_t["discriminator.conv3.kernel"], weights["discriminator.conv3.kernel"]) > 1e-4  # trained
