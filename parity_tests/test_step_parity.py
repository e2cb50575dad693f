"""One step, same weights, same inputs: forward passes, losses, gradients and Adam agree.

Weights are drawn once by one backend and copied to the other through the neutral format.
Tolerances are relative to each tensor's scale (harness.max_rel_err: max |a - b| / max |b|),
so entries that happen to be near zero do not make them meaningless. Gradients are the ones each
real train_step hands its optimisers (harness.step_with_grads), and are also checked against a
tiny MLP differentiated by hand in NumPy (test_train_step_gradients_equal_numpy).
"""

import dataclasses

import numpy as np
import pytest

from gan_common.config import Config
from parity_tests.harness import (
    ADAPTERS,
    SPECS,
    JaxAdapter,
    TorchAdapter,
    assert_tensors_close,
    float64,
    inputs,
    max_rel_err,
)

SPEC_IDS = [s.name for s in SPECS]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("source", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_neutral_weights_round_trip_exactly(spec, source):
    """Export from one backend, import into the other, export again: the same bits (a transpose is exact)."""
    weights = source(spec.config).export()
    for target in ADAPTERS:
        other = target(spec.config)
        other.load(weights)
        assert_tensors_close(other.export(), weights, abs=0.0, what=f"{source.name} -> {target.name}")


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("source", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_forward_passes_agree(spec, source, mnist):
    config = spec.config
    weights = source(config).export()  # each backend's own initialisation, copied to the other
    jax_a, torch_a = JaxAdapter(config), TorchAdapter(config)
    jax_a.load(weights)
    torch_a.load(weights)
    xs, zs, _ = inputs(config, mnist, 1)
    x, z = xs[0], zs[0]

    images_j, images_t = jax_a.generate(z), torch_a.generate(z)
    assert images_j.shape == images_t.shape == (config.batch_size, 28, 28, 1)
    # float32 dot products of <= 512 terms, summed in a different order by XLA and oneDNN/MKL:
    # each pre-activation is off by a few ulps of its largest partial sum (~1e-7 relative); tanh'
    # <= 1, so pixels in [-1, 1] agree to ~1e-6. 1e-5 leaves room for other BLAS kernels.
    assert np.max(np.abs(images_j - images_t)) <= 1e-5

    for name, batch in (("real", x), ("fake", images_t)):
        logits_j, logits_t = jax_a.discriminate(batch), torch_a.discriminate(batch)
        assert logits_j.shape == logits_t.shape == (config.batch_size,)
        # The same argument over a 784-term dot product, relative to the logits' scale.
        assert max_rel_err(logits_j, logits_t) <= 1e-5, f"D logits on {name} images"


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_one_step_losses_and_gradients_agree(spec, mnist):
    """D's step and G's step (through the updated D) on identical inputs: same losses, same gradients."""
    config = spec.config
    weights = TorchAdapter(config).export()
    jax_a, torch_a = JaxAdapter(config), TorchAdapter(config)
    jax_a.load(weights)
    torch_a.load(weights)
    xs, z_ds, z_gs = inputs(config, mnist, 1)
    metrics_j, d_grads_j, g_grads_j = jax_a.step_with_grads(xs[0], z_ds[0], z_gs[0])
    metrics_t, d_grads_t, g_grads_t = torch_a.step_with_grads(xs[0], z_ds[0], z_gs[0])

    # Losses are batch means of softplus of logits that agree to ~1e-7 relative (see above):
    # 1e-5 relative is the float32 budget of one forward and one backward pass.
    np.testing.assert_allclose(metrics_j, metrics_t, rtol=1e-5, err_msg="[d_loss, g_loss, D(x), D(G(z))]")
    # Gradients are sums over the batch of products of float32 activations and back-propagated
    # errors (<= 784 terms per entry): a few ulps of the largest term, relative to each tensor's
    # largest entry, so 1e-5 (about 100 float32 ulps) bounds them.
    assert_tensors_close(d_grads_j, d_grads_t, rel=1e-5, what="D's gradients")
    # G's gradient flows through the D that D's step just updated: if either backend used the
    # old D, these would differ by the size of one Adam step on D (~1e-3 relative), not 1e-5.
    assert_tensors_close(g_grads_j, g_grads_t, rel=1e-5, what="G's gradients (through the updated D)")
    # And the new weights. Where |g| >= 1e-3 of its tensor's largest entry, g is known to ~1e-2 relative, and
    # Adam's first step, w - lr * g / (|g| + eps), to lr * 1e-2 * eps / |g|: far below the float32 rounding
    # of the weights (ulp <= 6e-8 at |w| < 1), so the backends agree to 1e-6 there (measured 1.5e-8).
    grads = {**d_grads_t, **g_grads_t}
    new_j, new_t = jax_a.export(), torch_a.export()
    for key, g in grads.items():
        diff = np.abs(new_j[key] - new_t[key])
        known = np.abs(g) >= 1e-3 * np.max(np.abs(g))
        assert np.max(diff[known]) <= 1e-6, f"{key}: weights after one step differ by {np.max(diff[known]):.3g}"
    # Elsewhere g is within rounding of zero, its sign is noise, and the backends' steps may differ by up to
    # 2 lr. There, and everywhere, each backend's new weights must be Adam's first step on the gradient its own
    # train_step computed: m-hat = g and sqrt(v-hat) = |g| at step 1, so w - lr * g / (|g| + eps), per entry.
    # This replaces a bound of 2 lr on the difference, which any two first Adam steps met; it implies that
    # bound (each step is within lr) and fails for a wrong lr, eps (1e-6: off by up to 1.6e-4), bias
    # correction (x3.16) or sign. Tolerance per entry: half a float32 ulp of the new weight (its rounding)
    # plus 2e-5 lr. optax takes Adam's bias correction 1 - b2^t in float32, where b2 = 0.999 rounds to
    # 0.99900001, so 1 - b2 is 1.29e-5 relative off and every JAX update 6.4e-6 relative large; measured
    # 6.9e-6 lr (JAX) and 2.5e-7 lr (torch) beyond the half ulp.
    for adapter, own in ((jax_a, {**d_grads_j, **g_grads_j}), (torch_a, grads)):
        new = adapter.export()
        for key, g in own.items():
            g64 = g.astype(np.float64)
            want = weights[key].astype(np.float64) - config.lr * g64 / (np.abs(g64) + config.adam_eps)
            allowed = 0.5 * np.spacing(np.abs(want).astype(np.float32)) + 2e-5 * config.lr
            excess = np.abs(new[key] - want) / allowed
            worst = np.unravel_index(np.argmax(excess), excess.shape)
            assert excess[worst] <= 1, (f"{adapter.name} {key}{list(worst)}: {new[key][worst]!r}, Adam's first step "
                                        f"on its own gradient {g[worst]!r} gives {want[worst]!r}")


# ----------------------------------------------------------------------------- Adam alone
ADAM_SHAPES = {"w_big": (64, 32), "w_small": (48, 16), "w_tiny": (32, 8), "b": (32,)}
# Gradient scales spanning Adam's regimes: |g| >> eps (update ~ lr, scale cancels), |g| ~ 1e-7 (eps
# = 1e-8 matters at the 10 % level), and 1e-3 (where a wrong eps of 1e-6 changes every update by 0.1 %).
ADAM_SCALES = {"w_big": 1.0, "w_small": 1e-3, "w_tiny": 1e-7, "b": 3e-2}
ADAM_STEPS = 300


def _adam_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.1, 0.1, s).astype(np.float32) for k, s in ADAM_SHAPES.items()}
    # A drifting mean plus noise, like real gradients; a tenth of the entries exactly zero (dead units).
    base = {k: rng.standard_normal(s) for k, s in ADAM_SHAPES.items()}
    dead = {k: rng.random(s) < 0.1 for k, s in ADAM_SHAPES.items()}

    def grads(t: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng([seed, t])
        return {k: np.where(dead[k], 0.0, ADAM_SCALES[k] * (np.cos(t / 50) * base[k] + r.standard_normal(s)))
                .astype(np.float32) for k, s in ADAM_SHAPES.items()}

    return params, grads


def numpy_adam(params, grads, num_steps, lr, b1, b2, eps):
    """Kingma & Ba's Algorithm 1 in float64, eps outside the square root (as torch and optax both do)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t in range(1, num_steps + 1):
        g = grads(t - 1)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k].astype(np.float64) ** 2
            p[k] -= lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("beta1", [0.9, 0.5], ids=["beta1=0.9", "beta1=0.5"])
def test_adam_updates_agree_with_each_other_and_with_numpy(beta1):
    config = Config.tutorial(beta1=beta1)
    params, grads = _adam_inputs()
    want = numpy_adam(params, grads, ADAM_STEPS, config.lr, config.beta1, config.beta2, config.adam_eps)
    got = {a.name: a.adam_run(config, params, grads, ADAM_STEPS) for a in ADAPTERS}
    # Each update is at most ~lr = 2e-4 (m / sqrt(v) <= ~1) and is itself computed to ~1e-7 relative
    # (2e-11); what accumulates is float32 rounding of the weight, up to half an ulp per step
    # (<= 7.5e-9 at |w| < 0.25), a random walk of ~sqrt(300) * 7.5e-9 = 1.3e-7 over 300 steps.
    # 1e-6 leaves ~8x margin, against float64 and against each other.
    for name, p in got.items():
        assert_tensors_close(p, {k: v.astype(np.float32) for k, v in want.items()}, abs=1e-6,
                             what=f"{name} Adam vs NumPy float64")
    assert_tensors_close(got["jax"], got["torch"], abs=1e-6, what="optax vs torch.optim.Adam")
    moved = {k: np.max(np.abs(want[k] - params[k])) for k in params}
    assert min(moved.values()) > 1e-4, f"Adam hardly moved the weights ({moved}): the test would be vacuous"


# ----------------------------------------------------------------------------- train_step against NumPy
# A tiny MLP: every layer kind of the default one (ReLU, LeakyReLU, tanh; two hidden layers each), small
# enough to differentiate by hand. MNIST's image shape, so G's last and D's first layer are 784 wide.
TINY = Config.tutorial(latent_dim=3, g_hidden="4,5", d_hidden="5,4", batch_size=4)


def _softplus(t):
    return np.logaddexp(0.0, t)


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _mlp(w: dict, net: str, h: np.ndarray, hidden, output):
    """The MLP `net` of neutral weights w on h (B, n): (its output, [its layers' inputs], [pre-activations])."""
    num_layers = len({k.split(".")[1] for k in w if k.startswith(net + ".")})
    inputs, pre = [], []
    for i in range(1, num_layers + 1):
        inputs.append(h)
        pre.append(h @ w[f"{net}.fc{i}.kernel"] + w[f"{net}.fc{i}.bias"])
        h = (hidden if i < num_layers else output)(pre[-1])
    return h, inputs, pre


def _mlp_backward(w: dict, net: str, delta: np.ndarray, inputs, pre, hidden_grad):
    """Back-propagate delta = dL/d(last pre-activation) (B, m): (gradients {key: array}, dL/d(input) (B, n))."""
    grads = {}
    for i in range(len(inputs), 0, -1):
        grads[f"{net}.fc{i}.kernel"] = inputs[i - 1].T @ delta  # (n_in, n_out), the neutral (in, out) layout
        grads[f"{net}.fc{i}.bias"] = delta.sum(axis=0)
        delta = delta @ w[f"{net}.fc{i}.kernel"].T  # dL/d(layer i's input)
        if i > 1:
            delta = delta * hidden_grad(pre[i - 2])
    return grads, delta


def numpy_train_step(config: Config, w: dict, x, z_d, z_g):
    """One train_step of the MLP with --loss gan, in float64 by hand: D's gradient and Adam's first step on
    it, then G's gradient through the updated D and Adam's first step on that.
    Returns (metrics (4,), D's gradients, G's gradients, new weights, G's gradients through the old D)."""
    slope, batch, lr, eps = config.leaky_slope, config.batch_size, config.lr, config.adam_eps
    relu, relu_grad = (lambda a: np.maximum(a, 0.0)), (lambda a: (a > 0).astype(np.float64))
    leaky, leaky_grad = (lambda a: np.where(a > 0, a, slope * a)), (lambda a: np.where(a > 0, 1.0, slope))

    def generate(w, z):
        return _mlp(w, "generator", z, relu, np.tanh)

    def discriminate(w, images):
        logits, inputs, pre = _mlp(w, "discriminator", images.reshape(len(images), -1), leaky, lambda a: a)
        return logits[:, 0], inputs, pre

    def adam_first_step(params, grads):  # m-hat = g, v-hat = g^2 at t = 1
        return {k: params[k] - lr * g / (np.abs(g) + eps) for k, g in grads.items()}

    # D: softplus(-D(x)) + softplus(D(G(z_d))), batch means summed; one D call on [real; fake]
    fake = generate(w, z_d)[0]  # (B, 784), G in no-grad
    logits, inputs, pre = discriminate(w, np.concatenate([x.reshape(batch, -1), fake]))
    real, fake_logits = logits[:batch], logits[batch:]
    d_loss = _softplus(-real).mean() + _softplus(fake_logits).mean()
    dlogits = np.concatenate([-_sigmoid(-real), _sigmoid(fake_logits)]) / batch  # dL/dlogit, (2B,)
    d_grads, _ = _mlp_backward(w, "discriminator", dlogits[:, None], inputs, pre, leaky_grad)
    d_new = {**w, **adam_first_step(w, d_grads)}

    def g_step(d_weights):
        images, g_inputs, g_pre = generate(w, z_g)
        logits, inputs, pre = discriminate(d_weights, images)
        if config.g_loss == "non_saturating":  # -log sigma(l)
            loss, dlogits = _softplus(-logits).mean(), -_sigmoid(-logits) / batch
        else:  # log(1 - sigma(l)) = -softplus(l)
            loss, dlogits = -_softplus(logits).mean(), -_sigmoid(logits) / batch
        _, dimages = _mlp_backward(d_weights, "discriminator", dlogits[:, None], inputs, pre, leaky_grad)
        delta = dimages * (1.0 - images**2)  # through tanh
        grads, _ = _mlp_backward(w, "generator", delta, g_inputs, g_pre, relu_grad)
        return loss, grads

    g_loss, g_grads = g_step(d_new)
    _, g_grads_old_d = g_step(w)
    metrics = np.array([d_loss, g_loss, _sigmoid(real).mean(), _sigmoid(fake_logits).mean()])
    return metrics, d_grads, g_grads, {**d_new, **adam_first_step(w, g_grads)}, g_grads_old_d


@pytest.mark.parametrize("g_loss", ["non_saturating", "minimax"])
@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_train_step_gradients_equal_numpy(adapter, g_loss, mnist):
    """The gradients each backend's real train_step hands its optimisers (harness.step_with_grads: JAX's
    recorded from inside the compiled step, torch's .grad), against the MLP differentiated by hand in NumPy."""
    config = dataclasses.replace(TINY, g_loss=g_loss)
    weights = TorchAdapter(config).export()  # float32 values, exactly representable in float64
    xs, z_ds, z_gs = (a[0].astype(np.float64) for a in inputs(config, mnist, 1))
    want_metrics, want_d, want_g, want_new, g_through_old_d = numpy_train_step(
        config, {k: v.astype(np.float64) for k, v in weights.items()}, xs, z_ds, z_gs)
    with float64():
        a = adapter(config, np.float64)
        a.load(weights)
        metrics, d_grads, g_grads = a.step_with_grads(xs, z_ds, z_gs)
        new = a.params()
    assert metrics.dtype == np.float64 and all(g.dtype == np.float64 for g in (*d_grads.values(), *g_grads.values()))
    # float64 sums of <= 784 products (rounding 1.1e-16 each), relative to each tensor's scale: measured
    # metrics <= 1.5e-16, D's gradients 5.0e-16, G's 1.3e-15 (a longer chain), new weights 3.1e-16, in both
    # backends. 1e-12 leaves ~1000x and is far below any error in the maths: G's gradient through the D
    # before its update instead of after is off by 3.4e-2 (asserted > 1e-3 below); a wrong slope, sign or
    # factor by O(1); an Adam eps of 1e-6 in either backend puts g_loss (through the updated D) 2.9e-7 off.
    assert max_rel_err(metrics, want_metrics) <= 1e-12, f"[d_loss, g_loss, D(x), D(G(z))] {metrics} vs {want_metrics}"
    assert_tensors_close(d_grads, want_d, rel=1e-12, what=f"{adapter.name} D's gradients vs NumPy")
    assert_tensors_close(g_grads, want_g, rel=1e-12, what=f"{adapter.name} G's gradients vs NumPy")
    # Adam's first step on those gradients (float64: the JAX bias correction is exact here).
    assert_tensors_close(new, want_new, rel=1e-12, what=f"{adapter.name} weights after the step vs NumPy")
    # Not vacuous: every gradient tensor is non-zero, and the updated D matters at this tolerance.
    assert min(np.max(np.abs(g)) for g in (*want_d.values(), *want_g.values())) > 1e-6
    old_d_err = max(max_rel_err(g_through_old_d[k], want_g[k]) for k in want_g)
    assert old_d_err > 1e-3, f"G's gradient hardly depends on D's update ({old_d_err:.2g}): the test is too weak"
