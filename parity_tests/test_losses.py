"""The --loss kinds (hinge, lsgan, wgan_gp with n_critic, R1 on gan): NumPy, closed forms, and both backends.

- Each backend's d_loss_fn / g_loss_fn against the formulas written in NumPy.
- The two penalties against closed forms on critics whose input gradient is known: a linear
  D (gradient w everywhere) and a quadratic D (gradient a x), values and parameter gradients,
  so a wrong norm, a missing square, a swapped eps or a penalty cut off from D's parameters
  fails here by name.
- Same weights, same inputs: penalty values and their (double-backprop) parameter gradients,
  one step's losses and gradients, and 100-step float64 trajectories agree across backends.
- What each real Backend feeds its step with n_critic > 1: n_critic distinct batches, fresh eps.
Specs are harness.LOSS_SPECS; tolerances are relative to each tensor's scale (harness.max_rel_err).
"""

import dataclasses

import numpy as np
import pytest

from parity_tests.harness import (
    LOSS_SPECS,
    SPECS,
    JaxAdapter,
    TorchAdapter,
    assert_tensors_close,
    float64_runs,
    inputs,
    interpolation_eps,
    loaded_pair,
    max_rel_err,
)

SPEC_IDS = [s.name for s in LOSS_SPECS]
SPEC = {s.name: s.config for s in LOSS_SPECS}


# ----------------------------------------------------------------------------- each backend against NumPy
def _jax_fns():
    import jax.numpy as jnp

    from gan_jax import losses

    return losses, jnp.asarray, np.asarray


def _torch_fns():
    import torch

    from gan_torch import losses

    return losses, lambda a: torch.tensor(np.asarray(a)), lambda t: t.detach().numpy()


BACKENDS = {"jax": _jax_fns, "torch": _torch_fns}


@pytest.mark.parametrize("backend", BACKENDS)
def test_losses_match_numpy(backend):
    train, to, _ = BACKENDS[backend]()
    real = np.array([2.0, -1.0, 0.0, 0.5], np.float32)
    fake = np.array([-3.0, 0.5, 1.0, -0.2], np.float32)
    r, f = real.astype(np.float64), fake.astype(np.float64)
    want_d = {
        "hinge": np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean(),  # 0.75 + 0.825
        "lsgan": 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
        "wgan_gp": f.mean() - r.mean(),
    }
    want_g = {"hinge": -f.mean(), "lsgan": 0.5 * ((f - 1) ** 2).mean(), "wgan_gp": -f.mean()}
    # float32 sums of four values ~1 against float64: a few ulps.
    for loss in want_d:
        np.testing.assert_allclose(float(train.d_loss_fn(to(real), to(fake), loss)), want_d[loss], rtol=1e-6,
                                   err_msg=loss)
        # G's loss ignores --g-loss outside gan: its form belongs to the loss.
        np.testing.assert_allclose(float(train.g_loss_fn(to(fake), "non_saturating", loss)), want_g[loss],
                                   rtol=1e-6, err_msg=loss)
    # The d_real / d_fake metrics: probabilities for gan, raw outputs otherwise.
    np.testing.assert_allclose(float(train.mean_d_output(to(real), "gan")), (1 / (1 + np.exp(-r))).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(train.mean_d_output(to(real), "hinge")), r.mean(), rtol=1e-6)


# Tiny critics on (4, 28, 28, 1) images whose input gradients are known in closed form.
_RNG = np.random.default_rng(3)
_X = _RNG.uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)
_FAKE = _RNG.uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)
_EPS = np.array([0.0, 0.3, 0.7, 1.0], np.float32)  # both ends: x_hat = fake exactly, then x exactly
_W = (_RNG.standard_normal(784) * 2 / 28).astype(np.float32)  # |w| ~ 2: the GP's (|w| - 1) is far from 0
_A = np.float32(0.05)  # quadratic D(x) = a |x|^2 / 2: |grad| = a |x|, ~0.8 here, on both sides of 1
GAMMA, LAMBDA = 3.0, 10.0


def _closed_forms():
    """{critic: {penalty: (value, {param: gradient})}} in float64, from the gradients written out by hand."""
    w, a = _W.astype(np.float64), float(_A)
    x, fake, eps = (v.astype(np.float64).reshape(4, -1) for v in (_X, _FAKE, _EPS[:, None]))
    x_hat = eps * x + (1 - eps) * fake
    nw = np.linalg.norm(w)
    n_hat, n_x = np.linalg.norm(x_hat, axis=1), np.linalg.norm(x, axis=1)
    return {
        # D(x) = x . w + b: grad_x D = w for every x; GP = lambda (|w| - 1)^2, R1 = gamma / 2 |w|^2; b gets 0.
        "linear": {
            "gp": (LAMBDA * (nw - 1) ** 2, {"w": 2 * LAMBDA * (nw - 1) * w / nw, "b": np.zeros(1)}),
            "r1": (GAMMA / 2 * nw**2, {"w": GAMMA * w, "b": np.zeros(1)}),
        },
        # D(x) = a |x|^2 / 2: grad_x D = a x; GP = lambda mean((a |x_hat| - 1)^2), R1 = gamma / 2 a^2 mean |x|^2.
        "quadratic": {
            "gp": (LAMBDA * np.mean((a * n_hat - 1) ** 2),
                   {"a": np.array(LAMBDA * np.mean(2 * (a * n_hat - 1) * n_hat))}),
            "r1": (GAMMA / 2 * a**2 * np.mean(n_x**2), {"a": np.array(GAMMA * a * np.mean(n_x**2))}),
        },
    }


def _penalty_and_grads(backend: str, critic: str, penalty: str):
    """The backend's gradient_penalty / r1_penalty on a tiny critic: (value, {param: gradient})."""
    params = {"w": _W, "b": np.zeros(1, np.float32)} if critic == "linear" else {"a": _A}
    if backend == "jax":
        import jax

        from gan_jax import losses

        def fn(p):
            def discriminate(x):
                flat = x.reshape(x.shape[0], -1)
                return flat @ p["w"] + p["b"][0] if critic == "linear" else p["a"] * jax.numpy.sum(flat**2, 1) / 2

            if penalty == "gp":
                return losses.gradient_penalty(discriminate, _X, _FAKE, _EPS, LAMBDA)
            return losses.r1_penalty(discriminate, _X, GAMMA)

        value, grads = jax.value_and_grad(fn)({k: jax.numpy.asarray(v) for k, v in params.items()})
        return float(value), {k: np.asarray(v) for k, v in grads.items()}
    import torch

    from gan_torch import losses

    p = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}

    def discriminate(x):
        flat = x.reshape(x.shape[0], -1)
        return flat @ p["w"] + p["b"][0] if critic == "linear" else p["a"] * (flat**2).sum(1) / 2

    x, fake = torch.from_numpy(_X), torch.from_numpy(_FAKE)
    if penalty == "gp":
        value = losses.gradient_penalty(discriminate, x, fake, torch.from_numpy(_EPS), LAMBDA)
    else:
        value = losses.r1_penalty(discriminate, x, GAMMA)
    value.backward()
    # A parameter the penalty does not reach (the linear critic's b) keeps .grad None: gradient 0.
    return value.item(), {k: np.zeros(v.shape) if v.grad is None else v.grad.numpy() for k, v in p.items()}


@pytest.mark.parametrize("penalty", ["gp", "r1"])
@pytest.mark.parametrize("critic", ["linear", "quadratic"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_penalties_match_closed_forms(backend, critic, penalty):
    want_value, want_grads = _closed_forms()[critic][penalty]
    value, grads = _penalty_and_grads(backend, critic, penalty)
    # float32 sums of 784 squared gradient entries and one square root: ~1e-7 relative; 1e-5 is
    # ~100 ulps. A wrong penalty misses by far more: |w| instead of |w|^2 (50 %), eps on the wrong
    # side (the quadratic GP, ~20 %), a gradient not flowing back to D's parameters (grads 0).
    np.testing.assert_allclose(value, want_value, rtol=1e-5, err_msg="penalty value")
    for k, g in want_grads.items():
        assert np.asarray(grads[k]).shape == np.shape(g) or np.size(g) == 1, k
        np.testing.assert_allclose(np.ravel(grads[k]), np.ravel(g), rtol=1e-5, atol=1e-6 * np.max(np.abs(g)),
                                   err_msg=f"d penalty / d {k}")


# ----------------------------------------------------------------------------- backend against backend
_DCGAN = next(s.config for s in SPECS if s.config.arch == "dcgan")
# The DCGAN's D too (without BatchNorm, which validate refuses with a penalty): its convolutions'
# hand-written kernel gradients (gan_jax.layers.conv) are differentiated a second time here; with
# spectral norm, through sigma = u^T W v as well, after the penalty's own power iteration.
PENALTY_SPECS = {**SPEC, "dcgan_wgan_gp": dataclasses.replace(_DCGAN, d_norm="none", loss="wgan_gp"),
                 "dcgan_r1": dataclasses.replace(_DCGAN, d_norm="none", r1_weight=5.0),
                 "dcgan_spectral_r1": dataclasses.replace(_DCGAN, d_norm="spectral", r1_weight=5.0)}


@pytest.mark.parametrize("penalty, spec", [("gp", "wgan_gp"), ("r1", "gan_r1"), ("gp", "dcgan_wgan_gp"),
                                           ("r1", "dcgan_r1"), ("r1", "dcgan_spectral_r1")])
def test_penalty_values_and_gradients_agree(penalty, spec, mnist):
    """The real D, the same weights, x, G(z) and eps: the same penalty and the same double-backprop gradient."""
    config = PENALTY_SPECS[spec]
    jax_a, torch_a = loaded_pair(config, TorchAdapter(config).export())
    xs, z_ds, _ = inputs(config, mnist, 1)
    x, fake = xs[0], torch_a.generate(z_ds[0])
    eps = np.random.default_rng(5).random(config.batch_size, dtype=np.float32)
    value_j, grads_j = jax_a.penalty_with_grads(penalty, x, fake, eps)
    value_t, grads_t = torch_a.penalty_with_grads(penalty, x, fake, eps)
    # A vanishing penalty would make this test vacuous. The DCGAN's N(0, 0.02) kernels give it ~7e-5
    # at the start (R1), thousands of float32 ulps above zero; the MLP's ~1e-1.
    assert value_t > 1e-6, "a vanishing penalty would make this test vacuous"
    # The penalty is a batch mean of a function of D's input gradient, itself a backward pass
    # (<= 784-term float32 sums, as in test_step_parity): ~1e-7 relative. Its parameter gradient
    # is a second backward pass through the first: measured <= 1e-6 relative (GP, R1); 1e-5,
    # the one-step gradient budget, bounds both.
    assert abs(value_j - value_t) <= 1e-5 * abs(value_t), f"{penalty}: {value_j} vs {value_t}"
    assert_tensors_close(grads_j, grads_t, rel=1e-5, what=f"{penalty}'s gradients w.r.t. D's parameters")


ONE_UPDATE_SPECS = [s for s in LOSS_SPECS if s.config.n_critic == 1]  # one D update: its gradients are comparable


@pytest.mark.parametrize("spec", ONE_UPDATE_SPECS, ids=[s.name for s in ONE_UPDATE_SPECS])
def test_one_step_losses_and_gradients_agree(spec, mnist):
    """One D update (penalty included) and one G step, float32: same metrics, same D and G gradients."""
    config = spec.config
    jax_a, torch_a = loaded_pair(config, TorchAdapter(config).export())
    xs, z_ds, z_gs = inputs(config, mnist, 1)
    eps = interpolation_eps(config, 1)
    eps = None if eps is None else eps[0]
    metrics_j, d_grads_j, g_grads_j = jax_a.step_with_grads(xs[0], z_ds[0], z_gs[0], eps)
    metrics_t, d_grads_t, g_grads_t = torch_a.step_with_grads(xs[0], z_ds[0], z_gs[0], eps)
    # [d_loss, g_loss, d_real, d_fake]: means of logits that agree to ~1e-7 of their scale (raw logits
    # for hinge / lsgan / wgan_gp can sit near 0, hence relative to the vector's scale). 1e-5: one
    # forward and backward pass in float32, as test_step_parity.
    assert max_rel_err(metrics_j, metrics_t) <= 1e-5, f"metrics {metrics_j} vs {metrics_t}"
    assert_tensors_close(d_grads_j, d_grads_t, rel=1e-5, what="D's gradients (loss + penalty)")
    assert_tensors_close(g_grads_j, g_grads_t, rel=1e-5, what="G's gradients (through the updated D)")


NUM_STEPS = 100


@pytest.mark.slow  # make test only: the fast tier keeps every loss's one-step parity above; these are trajectories
@pytest.mark.parametrize("spec", LOSS_SPECS, ids=SPEC_IDS)
def test_float64_runs_are_the_same_run(spec, mnist):
    """100 real steps (n_critic D updates each) in float64 from the same weights and inputs: the same run.

    float64 for the reason test_trajectory gives: in float32 ReLU kinks turn last-bit differences
    into order-lr weight differences within a few dozen steps; in float64 they do not.
    """
    config = spec.config
    jax_run, torch_run = float64_runs(config, mnist, NUM_STEPS, interpolation_eps(config, NUM_STEPS))
    metrics_j, metrics_t = jax_run.metrics, torch_run.metrics
    images_j, images_t = jax_run.images, torch_run.images
    final_j, final_t = jax_run.final, torch_run.final

    assert metrics_j.dtype == metrics_t.dtype == np.float64
    # Each metric's worst difference over the run, relative to its largest magnitude in the run
    # (a WGAN critic loss crosses zero, so per-step relative errors would be meaningless).
    # Measured <= 1e-15 (all specs); 1e-10 as in test_trajectory, far below any change of the
    # maths (a penalty weight off by 1 % moves step 1's d_loss by ~1e-3).
    errs = [max_rel_err(metrics_j[:, i], metrics_t[:, i]) for i in range(4)]
    assert max(errs) <= 1e-10, f"[d_loss, g_loss, d_real, d_fake] differ by {errs}"
    assert np.max(np.abs(images_j - images_t)) <= 1e-10
    for key in final_t:  # exported as float32: one float32 ulp of the tensor's scale
        assert max_rel_err(final_j[key], final_t[key]) <= 2.0**-23, key
    moved = max(max_rel_err(final_t[k], w) for k, w in TorchAdapter(config).export().items())
    assert moved > 1e-3, "the weights hardly moved: the trajectory would prove nothing"


# ----------------------------------------------------------------------------- what the real loops feed
@pytest.mark.parametrize("adapter", [JaxAdapter, TorchAdapter], ids=["jax", "torch"])
def test_backends_feed_n_critic_distinct_batches_and_fresh_eps(adapter):
    """n_critic 2, batch 8, 100 images: 16 images a step, 6 steps an epoch, each image once per epoch."""
    config = dataclasses.replace(SPEC["wgan_gp"], batch_size=8, n_critic=2)
    idx = np.arange(100)
    data = np.zeros((100, 28, 28, 1), np.uint8)
    data[:, 0, 0, 0] = idx  # image i carries its index
    xs, z_ds, z_gs, eps = adapter.recorded_inputs(config, data, 12)
    assert xs.shape == (12, 16, 28, 28, 1) and z_ds.shape == (12, 16, 32) and z_gs.shape == (12, 8, 32)
    seen = np.rint((xs[:, :, 0, 0, 0] + 1) * 127.5).astype(int)  # (12, 16) image indices
    for epoch in (seen[:6], seen[6:]):
        assert len(set(epoch.ravel())) == 6 * 16  # the epoch's 96 images are distinct: n_critic batches, not repeats
    assert not np.array_equal(seen[:6], seen[6:])  # a fresh order each epoch
    assert eps.shape == (12, 16) and eps.min() >= 0 and eps.max() < 1
    assert len(np.unique(eps)) == eps.size  # fresh each D update and step
    # 192 U(0, 1) draws: mean 0.5 +- 0.021 (one standard error); 5 standard errors.
    assert abs(eps.mean() - 0.5) < 5 * np.sqrt(1 / 12 / eps.size)
