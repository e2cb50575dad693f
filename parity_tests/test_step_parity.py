"""One step, same weights, same inputs: forward passes, losses, gradients and Adam agree.

Weights are drawn once by one backend and copied to the other through the neutral format.
Tolerances are relative to each tensor's scale (harness.max_rel_err: max |a - b| / max |b|),
so entries that happen to be near zero do not make them meaningless.
"""

import numpy as np
import pytest

from gan_common.config import Config
from parity_tests.harness import ADAPTERS, SPECS, JaxAdapter, TorchAdapter, assert_tensors_close, inputs, max_rel_err

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
    # And the new weights. Adam's first step is w -= lr * g / (|g| + eps): the scale of g cancels, so
    # entries whose gradient is within rounding of zero move by up to +-lr either way (its sign is
    # noise). Where |g| >= 1e-3 of its tensor's largest entry, g is known to ~1e-2 relative and the
    # step to lr * 1e-2 * eps / |g|, far below the float32 rounding of the weights (ulp <= 6e-8 at
    # |w| < 1): 1e-6 there; 2 lr (the two extreme steps) elsewhere.
    grads = {**d_grads_t, **g_grads_t}
    new_j, new_t = jax_a.export(), torch_a.export()
    for key, g in grads.items():
        diff = np.abs(new_j[key] - new_t[key])
        known = np.abs(g) >= 1e-3 * np.max(np.abs(g))
        assert np.max(diff[known]) <= 1e-6, f"{key}: weights after one step differ by {np.max(diff[known]):.3g}"
        assert np.max(diff) <= 2 * config.lr, f"{key}: a step larger than Adam's bound lr"


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
    config = Config(beta1=beta1)
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
