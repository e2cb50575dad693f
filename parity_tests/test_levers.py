"""The training levers of issue 16 (TTUR, --lr-decay-steps, --ema-rampup, lazy R1, DiffAugment): each backend
against NumPy, and the two backends against each other.

- Each backend's real train_step over four steps against NumPy: D's loss is the log-loss of D on augmented
  reals and augmented fakes plus k x R1 on the steps `r1_due` names, G's loss that of the updated D on
  augmented fakes, each net moves by Adam at its own decayed learning rate, and the EMA follows its warm-up.
- Same weights, same inputs, same augmentation draws: one step's losses and gradients agree (the MLP with
  every lever, a spectral-norm DCGAN with DiffAugment and lazy R1), and so does a float64 run of every lever.
Unit tests of the schedules and of the augmentations themselves are in tests/test_levers.py.
"""

import dataclasses

import numpy as np
import pytest

from gan_common import schedules
from gan_common.augment import AugmentDraws, cutout_size
from gan_common.config import Config
from parity_tests.harness import (
    ADAPTERS,
    EMA_SPEC,
    SPECS,
    TorchAdapter,
    _step_of,
    assert_tensors_close,
    augment_draws,
    float64_runs,
    inputs,
    loaded_pair,
    max_rel_err,
)
from parity_tests.test_ema import numpy_generate

# Every lever on, at values that make each visible within four steps: D's lr four times G's, both decaying to 0
# at step 8 (x 7/8, 6/8, ... by step 3), an EMA warming up (keep 0.1, 0.18, 0.25, ... instead of 0.99), R1 on
# updates 0 and 2 only (weight x 2), and all three augmentations. The nets of harness.LOSS_SPECS and EMA_SPEC:
# JAX's programs that do not depend on the levers (initialising, the weights' import) are compiled once.
LEVERS = dataclasses.replace(EMA_SPEC.config, ema_decay=0.99, g_lr=1e-4, d_lr=4e-4, lr_decay_steps=8,
                             ema_rampup=True, r1_weight=5.0, r1_every=2, augment="color,translation,cutout")


# ----------------------------------------------------------------------------- NumPy references
def numpy_augment(x: np.ndarray, d: AugmentDraws) -> np.ndarray:
    """gan_common.augment's transformations in float64, written pixel by pixel where the backends gather."""
    x = np.asarray(x, np.float64)
    if d.color is not None:
        u = np.asarray(d.color, np.float64)[:, None, None, :]
        x = x + (u[..., 0:1] - 0.5)
        x = (x - x.mean(3, keepdims=True)) * (2 * u[..., 1:2]) + x.mean(3, keepdims=True)
        x = (x - x.mean((1, 2, 3), keepdims=True)) * (u[..., 2:3] + 0.5) + x.mean((1, 2, 3), keepdims=True)
    height, width = x.shape[1:3]
    if d.shift is not None:  # out[i, j] = x[i - dy, j - dx]: the overlapping block copied, zeros elsewhere
        out = np.zeros_like(x)
        for b, (dy, dx) in enumerate(d.shift):
            out[b, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
                x[b, max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
        x = out
    if d.cutout is not None:
        x = x.copy()
        h, w = cutout_size(height), cutout_size(width)
        for b, (cy, cx) in enumerate(d.cutout):
            x[b, max(cy - h // 2, 0):max(cy - h // 2 + h, 0), max(cx - w // 2, 0):max(cx - w // 2 + w, 0)] = 0
    return x


def softplus(a: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, np.asarray(a, np.float64))


def _net(tensors: dict, net: str) -> dict:
    return {k[len(net) + 1:]: np.asarray(v, np.float64) for k, v in tensors.items() if k.startswith(net + ".")}


def numpy_discriminate(tensors: dict, x: np.ndarray, slope: float) -> tuple[np.ndarray, np.ndarray]:
    """The MLP D in float64 from neutral tensors: its logits (B,) and their input gradients (B, H W C), the
    latter by the chain rule written out (LeakyReLU' is 1 or the slope)."""
    layers = _net(tensors, "discriminator")
    h, slopes = np.asarray(x, np.float64).reshape(len(x), -1), []
    num = len(layers) // 2
    for i in range(1, num + 1):
        h = h @ layers[f"fc{i}.kernel"] + layers[f"fc{i}.bias"]
        if i < num:
            slopes.append(np.where(h > 0, 1.0, slope))
            h = h * slopes[-1]
    grad = np.broadcast_to(layers[f"fc{num}.kernel"][:, 0], (len(x), layers[f"fc{num}.kernel"].shape[0]))
    for i in range(num - 1, 0, -1):  # back through LeakyReLU i, then fc i
        grad = (grad * slopes[i - 1]) @ layers[f"fc{i}.kernel"].T
    return h[:, 0], grad


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_each_backend_trains_as_the_levers_say(adapter, mnist):
    config = LEVERS
    a = adapter(config)
    a.load(TorchAdapter(config).export())
    xs, z_ds, z_gs = inputs(config, mnist, 4)
    augments = augment_draws(config, 4)
    b1, b2, eps, slope = config.beta1, config.beta2, config.adam_eps, config.leaky_slope
    moments = {}  # Adam's (m, v) per neutral key, in float64
    ema = _net(a.export(), "generator")
    for t in range(4):
        real_draws, fake_draws, g_draws = _step_of(augments, t)
        before, now = a.params(), a.export()
        # D's loss, before its update: D on the augmented reals and fakes, plus k R1 (at the augmented reals) if due.
        logits_real, grad_real = numpy_discriminate(now, numpy_augment(xs[t], real_draws), slope)
        fakes = numpy_generate(now, "generator", z_ds[t])
        logits_fake, _ = numpy_discriminate(now, numpy_augment(fakes, fake_draws), slope)
        want_d = softplus(-logits_real).mean() + softplus(logits_fake).mean()
        if schedules.r1_due(t, config.n_critic, 0, config.r1_every):  # steps 0 and 2
            want_d += config.r1_every * config.r1_weight / 2 * np.mean(np.sum(grad_real**2, axis=1))
        g_fakes = numpy_augment(numpy_generate(now, "generator", z_gs[t]), g_draws)

        metrics, d_grads, g_grads = a.step_with_grads(xs[t], z_ds[t], z_gs[t], augment=(real_draws, fake_draws,
                                                                                         g_draws))
        # float32 forward passes and sums of <= 784 terms against float64: ~1e-7 relative; 1e-5 as test_step_parity.
        # R1 is ~2e-2 of d_loss at step 0: R1 on the wrong steps, or without its x k, misses by ~1000x the
        # tolerance; D on unaugmented reals by ~350x.
        assert abs(metrics[0] - want_d) <= 1e-5 * abs(want_d), f"step {t}: d_loss {metrics[0]} vs {want_d}"
        assert abs(metrics[2] - np.mean(1 / (1 + np.exp(-logits_real)))) <= 1e-5, f"step {t}: d_real"
        # G's loss: the updated D (its parameters after the step) on G's augmented fakes.
        want_g = softplus(-numpy_discriminate(a.export(), g_fakes, slope)[0]).mean()
        assert abs(metrics[1] - want_g) <= 1e-5 * abs(want_g), f"step {t}: g_loss {metrics[1]} vs {want_g}"

        # Each net's Adam step at its own lr, decayed: lr_t = lr (8 - t) / 8.
        after = a.params()
        for net, grads in (("generator", g_grads), ("discriminator", d_grads)):
            lr = schedules.learning_rate(config, net[0], t)
            for key, g in grads.items():
                g = np.asarray(g, np.float64)
                m, v = moments.get(key, (0.0, 0.0))
                m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                moments[key] = m, v
                want = -lr * (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
                moved = np.asarray(after[key], np.float64) - np.asarray(before[key], np.float64)
                # Parameters |p| <= 0.25 are float32 (ulp <= 3e-8): the difference of two of them is good to ~3e-8,
                # and Adam's float32 arithmetic adds ~1e-7 of an update (<= 4e-4). Tolerance 1e-7, 0.2% of the
                # smallest update here (G's 1e-4 x 5/8); G stepping at D's lr, or either without the decay, misses
                # by 20% or more.
                np.testing.assert_allclose(moved, want, rtol=0, atol=1e-7, err_msg=f"step {t}: {key}")
        # The EMA after its warm-up's (keep, take) of step t: (0.1, 0.9), (2/11, 9/11), ... (--ema-decay 0.99 only
        # from step 890 on).
        keep, take = schedules.ema_weights(t, config.ema_decay, config.ema_rampup)
        now = a.export()
        g = _net(now, "generator")
        ema = {k: keep * ema[k] + take * g[k] for k in ema}
        # As parity_tests/test_ema.py: float32 rounding of weights <= 0.25, damped by keep <= 0.25: ~1e-7.
        assert_tensors_close(_net(now, "generator_ema"), ema, abs=1e-6, what=f"{a.name} EMA after step {t + 1}")
    # The check can tell: without the warm-up (keep 0.99) the EMA would still sit at G's start, ~4 Adam steps away.
    start = _net(TorchAdapter(config).export(), "generator")
    assert max(np.max(np.abs(ema[k] - start[k])) for k in ema) > 1e-4


# ----------------------------------------------------------------------------- backend against backend
# The nets as initialised, D's zero conv biases included: DiffAugment's zeros then make whole pre-activations
# exactly 0, where both backends' LeakyReLU take the slope as derivative (gan_jax.layers.leaky_relu; with
# jax.nn.leaky_relu's 1 there, step 0's R1 differed by ~2%).
def _weights(config: Config) -> dict:
    return TorchAdapter(config).export()


_DCGAN = next(s.config for s in SPECS if s.name == "dcgan_spectral")
ONE_STEP = {
    "mlp_every_lever": LEVERS,
    # Translation and cutout through convolutions, lazy R1 on a spectral-norm D (u, v move only when R1 runs).
    "dcgan_spectral_augment_lazy_r1": dataclasses.replace(_DCGAN, augment="translation,cutout", r1_weight=5.0,
                                                          r1_every=2, lr_decay_steps=8),
}


# The DCGAN's compile (R1's double backward through the convolutions' hand-written gradients, in a lax.cond) is
# ~15 s of a 2-core CPU: make test only.
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if "dcgan" in n else []) for n in ONE_STEP])
def test_two_steps_losses_and_gradients_agree(name, mnist):
    """Steps 0 (R1 due) and 1 (not): same metrics, same D and G gradients, float32."""
    config = ONE_STEP[name]
    jax_a, torch_a = loaded_pair(config, _weights(config))
    xs, z_ds, z_gs = inputs(config, mnist, 2)
    augments = augment_draws(config, 2)
    for t in range(2):
        fed = (xs[t], z_ds[t], z_gs[t], None, None, _step_of(augments, t))
        metrics_j, d_grads_j, g_grads_j = jax_a.step_with_grads(*fed)
        metrics_t, d_grads_t, g_grads_t = torch_a.step_with_grads(*fed)
        # One forward and backward pass (and R1's second one) in float32: 1e-5 for the metrics, as test_step_parity
        # and test_losses. Gradients: 1e-4 of each tensor's scale. A bias whose gradient is a sum of nearly
        # cancelling terms (D's last: mean sigma(D(fake)) - mean sigma(-D(x)), ~0.5 - 0.5; G's last) keeps fewer
        # digits: measured up to 3e-5 in these configs with every lever off as well as on (step 1 starts from
        # weights one float32 Adam step apart). A lever done differently moves some tensor's gradient by far more
        # (measured, torch against itself): R1 off or on every update, the augmentation off: >= 0.4 of its scale;
        # D's lr 1% off: 2e-2 at step 1.
        assert max_rel_err(metrics_j, metrics_t) <= 1e-5, f"step {t}: metrics {metrics_j} vs {metrics_t}"
        assert_tensors_close(d_grads_j, d_grads_t, rel=1e-4, what=f"step {t}: D's gradients")
        assert_tensors_close(g_grads_j, g_grads_t, rel=1e-4, what=f"step {t}: G's gradients")


NUM_STEPS = 40


@pytest.mark.slow
def test_float64_runs_with_every_lever_are_the_same_run(mnist):
    """40 steps, every lever on (the decay over the run's 40 steps), float64: the same run, as test_losses."""
    config = dataclasses.replace(LEVERS, lr_decay_steps=NUM_STEPS)
    jax_run, torch_run = float64_runs(config, mnist, NUM_STEPS, augments=augment_draws(config, NUM_STEPS))
    # Measured 2e-16 (every lever alone and together, 10-40 steps); 1e-10 as test_trajectory: far below any
    # change of the maths (one lr off by one ulp of float32, 6e-8, moves the run by more).
    errs = [max_rel_err(jax_run.metrics[:, i], torch_run.metrics[:, i]) for i in range(4)]
    assert max(errs) <= 1e-10, f"[d_loss, g_loss, d_real, d_fake] differ by {errs}"
    assert np.max(np.abs(jax_run.images - torch_run.images)) <= 1e-10
    for key in torch_run.final:  # the EMA included; exported as float32: one float32 ulp of the tensor's scale
        assert max_rel_err(jax_run.final[key], torch_run.final[key]) <= 2.0**-23, key
    moved = max(max_rel_err(torch_run.final[k], w) for k, w in TorchAdapter(config).export().items())
    assert moved > 1e-3, "the weights hardly moved: the trajectory would prove nothing"
