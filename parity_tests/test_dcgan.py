"""--arch dcgan: what the MLP specs cannot show, the two modes of BatchNorm and of spectral norm, and their state.

test_step_parity and test_trajectory's float32 run already take harness.SPECS' dcgan_small and
dcgan_spectral (forward in eval mode, one step's losses, gradients and Adam update, 20 float32
steps). Here:
  - torch.nn.BatchNorm2d's running-statistics update (momentum 0.1, unbiased running variance,
    biased variance normalising) against gan_jax.layers.BatchNorm and a NumPy formula;
  - a 32x32x3 dataset's nets (G starts at 8x8), both modes, weights across the bridge;
  - 100-step float64 trajectories, --d-norm batch (D called on real and fake apart), none and
    spectral (one call on [real; fake]), spectral with WGAN-GP (a second D call per update), with
    every running statistic and spectral norm's u, v compared at the end;
  - spectral norm's power iteration in both backends against NumPy's SVD, and its eval mode.
Why float64 for the trajectories: test_trajectory.py's reasons (ReLU and LeakyReLU kinks flip
on last-bit differences in float32; Adam and the game amplify them to order lr).
"""

import dataclasses

import numpy as np
import pytest
import torch

from parity_tests.harness import SPECS, JaxAdapter, TorchAdapter, float64_runs, interpolation_eps, max_rel_err

DCGAN = next(s.config for s in SPECS if s.config.arch == "dcgan")
NUM_STEPS = 100


def _numpy_batch_norm(batches, momentum=0.1, eps=1e-5):
    """torch's documented BatchNorm2d in float64 over NHWC batches: outputs (scale 1, bias 0) and running stats."""
    mean, var, outs = np.zeros(batches[0].shape[-1]), np.ones(batches[0].shape[-1]), []
    for x in batches:
        n = x.size // x.shape[-1]
        m, v = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased
        outs.append((x - m) / np.sqrt(v + eps))
        mean = (1 - momentum) * mean + momentum * m
        var = (1 - momentum) * var + momentum * v * n / (n - 1)  # unbiased
    return outs, mean, var


def test_batch_norm_running_statistics_follow_torch():
    import jax.numpy as jnp
    from flax import nnx

    from gan_jax.layers import BatchNorm

    rng = np.random.default_rng(0)
    # Off-centre batches (mean 3, std 2) so a wrong momentum or variance estimator shows: with
    # n = 2 * 3 * 3 = 18 values per channel, biased and unbiased variances differ by 1/17 (6%).
    batches = [(3 + 2 * rng.standard_normal((2, 3, 3, 5))).astype(np.float32) for _ in range(3)]
    want_outs, want_mean, want_var = _numpy_batch_norm([b.astype(np.float64) for b in batches])

    jax_bn = BatchNorm(5, nnx.Rngs(0))
    jax_bn.scale[...] = jnp.ones(5)
    torch_bn = torch.nn.BatchNorm2d(5)  # train mode: torch's default
    for x, want in zip(batches, want_outs, strict=True):
        out_j = np.asarray(jax_bn(jnp.asarray(x), train=True))
        out_t = torch_bn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
        # Normalised values of size ~2, float32 arithmetic over 18 values: a few ulps; 1e-5 absolute.
        for out in (out_j, out_t):
            assert np.max(np.abs(out - want)) <= 1e-5
    # Running statistics: three float32 updates of values ~3 and ~4; 1e-6 is ~8 ulps.
    for name, mean, var in (("jax", jax_bn.mean[...], jax_bn.var[...]),
                            ("torch", torch_bn.running_mean.numpy(), torch_bn.running_var.numpy())):
        np.testing.assert_allclose(mean, want_mean, rtol=1e-6, err_msg=f"{name} running mean")
        np.testing.assert_allclose(var, want_var, rtol=1e-6, err_msg=f"{name} running var (unbiased)")
    # Eval mode normalises with the running statistics and leaves them alone.
    x = batches[0]
    before = np.asarray(jax_bn.mean[...]).copy()
    out_j = np.asarray(jax_bn(jnp.asarray(x), train=False))
    np.testing.assert_array_equal(np.asarray(jax_bn.mean[...]), before)
    np.testing.assert_allclose(out_j, (x - want_mean) / np.sqrt(want_var + 1e-5), atol=1e-5)


@pytest.mark.slow  # make test only: the 28-pixel forward tests are in the fast tier
def test_32x32_colour_images_forward_in_both_modes():
    config = dataclasses.replace(DCGAN, dataset="cifar10")  # (32, 32, 3) images; the nets are built for its shape
    assert config.image_shape == (32, 32, 3)
    jax_a, torch_a = JaxAdapter(config), TorchAdapter(config)
    weights = torch_a.export()
    jax_a.load(weights)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((16, config.latent_dim), dtype=np.float32)
    x = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    # Eval mode (fresh running statistics: mean 0, var 1).
    images_j, images_t = jax_a.generate(z), torch_a.generate(z)
    assert images_j.shape == images_t.shape == (16, 32, 32, 3)
    assert np.max(np.abs(images_j - images_t)) <= 1e-5  # test_step_parity's forward tolerance
    assert max_rel_err(jax_a.discriminate(x), torch_a.discriminate(x)) <= 1e-5
    # Train mode, through one real step: losses, and the running statistics both nets moved.
    metrics_j, metrics_t = jax_a.step(x, z, z), torch_a.step(x, z, z)
    np.testing.assert_allclose(metrics_j, metrics_t, rtol=1e-5)
    stats_j, stats_t = ({k: v for k, v in a.export().items() if k.endswith((".mean", ".var"))}
                        for a in (jax_a, torch_a))
    assert sorted(stats_j) == sorted(stats_t) and len(stats_t) == 6  # bn0, bn1 of G; bn2 of D: mean and var
    for key in stats_t:
        assert max_rel_err(stats_j[key], stats_t[key]) <= 1e-5, key


# D's normalisations, and spectral norm with a penalty: a penalty's D call is one more train-mode call, so
# one more power iteration per D update (gan_jax.step.penalty_discriminator).
FLOAT64_CONFIGS = {
    "batch": DCGAN,
    "none": dataclasses.replace(DCGAN, d_norm="none"),
    "spectral": dataclasses.replace(DCGAN, d_norm="spectral"),
    "spectral_wgan_gp": dataclasses.replace(DCGAN, d_norm="spectral", loss="wgan_gp"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", FLOAT64_CONFIGS)
def test_float64_dcgan_runs_are_the_same_run_running_statistics_included(name, mnist):
    config = FLOAT64_CONFIGS[name]
    jax_run, torch_run = float64_runs(config, mnist, NUM_STEPS, interpolation_eps(config, NUM_STEPS))
    metrics_j, metrics_t = jax_run.metrics, torch_run.metrics
    images_j, images_t = jax_run.images, torch_run.images  # eval mode: the running statistics
    final_j, final_t = jax_run.final, torch_run.final

    # As test_trajectory: float64 rounding grows to ~1e-13 over the run (measured below 1e-12);
    # a wrong momentum, variance estimator or D call order changes step 1's losses by > 1e-4. Relative
    # to each metric's largest magnitude over the run, as test_losses (a WGAN critic loss crosses zero).
    errs = [max_rel_err(metrics_j[:, i], metrics_t[:, i]) for i in range(4)]
    assert max(errs) <= 1e-10, f"float64 runs diverged: [d_loss, g_loss, d_real, d_fake] differ by {errs}"
    assert np.max(np.abs(images_j - images_t)) <= 1e-10
    # Parameters, running statistics and spectral norm's u, v, exported as float32: one float32 ulp of the
    # largest entry.
    assert sorted(final_j) == sorted(final_t)
    for key in final_t:
        assert max_rel_err(final_j[key], final_t[key]) <= 2.0**-23, key
    stats = [k for k in final_t if k.endswith((".mean", ".var"))]
    assert len(stats) == (6 if config.d_norm == "batch" else 4)
    # Not vacuous: every running statistic moved away from its start (mean 0, var 1) ...
    moved = {k: float(np.max(np.abs(final_t[k] - k.endswith(".var")))) for k in stats}
    assert min(moved.values()) > 1e-3, moved
    # ... and so did every u and v (but fc's u: the (1,) unit vector of a one-logit layer is 1).
    vectors = [k for k in final_t if ".sn_" in k]
    assert len(vectors) == (6 if config.d_norm == "spectral" else 0)  # conv1, conv2, fc: u and v
    start = TorchAdapter(config).export()
    moved = {k: max_rel_err(final_t[k], start[k]) for k in vectors if final_t[k].size > 1}
    assert not vectors or min(moved.values()) > 1e-3, moved


# ----------------------------------------------------------------------------- spectral normalisation
def _spectral_layers(seed: int = 0):
    """D's conv2 under --d-norm spectral in both backends, holding one N(0, 1) kernel (4, 4, 8, 16) and one
    u (16,), v (128,) drawn far from W's singular vectors; and that kernel as torch's (16, 128) matrix."""
    import jax.numpy as jnp
    from flax import nnx

    from gan_jax.models import DcganDiscriminator
    from gan_torch.models import build_discriminator

    config = FLOAT64_CONFIGS["spectral"]
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((4, 4, 8, 16)).astype(np.float32)  # HWIO
    matrix = kernel.transpose(3, 2, 0, 1).reshape(16, -1)  # OIHW flattened: torch's weight.flatten(1)
    u, v = ((a / np.linalg.norm(a)).astype(np.float32) for a in (rng.standard_normal(16), rng.standard_normal(128)))
    jax_layer = DcganDiscriminator(config, nnx.Rngs(0)).conv2
    for variable, value in ((jax_layer.kernel, kernel), (jax_layer.sn_u, u), (jax_layer.sn_v, v)):
        variable[...] = jnp.asarray(value)
    torch_layer = build_discriminator(config).conv2
    spectral_norm = torch_layer.parametrizations.weight
    with torch.no_grad():
        spectral_norm.original.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        spectral_norm[0]._u.copy_(torch.from_numpy(u))
        spectral_norm[0]._v.copy_(torch.from_numpy(v))
    return jax_layer, torch_layer, matrix


def _torch_vectors(torch_layer) -> tuple[np.ndarray, np.ndarray]:
    spectral_norm = torch_layer.parametrizations.weight[0]
    return spectral_norm._u.numpy().copy(), spectral_norm._v.numpy().copy()


# A 16 x 128 Gaussian matrix: s1 / s2 = 1.08 here, so sigma's error shrinks only ~0.73x a call.
CALLS = 40


def test_spectral_norm_sigma_converges_to_the_largest_singular_value_in_both_backends():
    """Repeated train-mode calls run one power iteration each: in both backends u and v move alike, and
    sigma = u^T W v climbs to W's largest singular value (NumPy's SVD); v to W's first right singular
    vector, whose entries are in torch's (I, kh, kw) order only if the JAX side reshapes as torch does."""
    import jax.numpy as jnp

    jax_layer, torch_layer, matrix = _spectral_layers()
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 8)).astype(np.float32)
    _, singular_values, vt = np.linalg.svd(matrix.astype(np.float64))
    sigma = lambda u, v: float(u.astype(np.float64) @ matrix @ v)  # noqa: E731
    u0, v0 = _torch_vectors(torch_layer)
    assert abs(sigma(u0, v0) / singular_values[0] - 1) > 0.5, "the start would make convergence vacuous"
    for call in range(CALLS):
        out_j = np.asarray(jax_layer(jnp.asarray(x), train=True))
        out_t = torch_layer(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
        u_j, v_j = np.asarray(jax_layer.sn_u[...]), np.asarray(jax_layer.sn_v[...])
        u_t, v_t = _torch_vectors(torch_layer)
        # Unit vectors from float32 matrix-vector products of <= 128 terms: a few ulps; 1e-5 absolute.
        # (A wrong reshape order puts v's entries elsewhere: errors of order 1 from the first call.)
        assert max(np.max(np.abs(u_j - u_t)), np.max(np.abs(v_j - v_t))) <= 1e-5, f"call {call + 1}"
        assert max_rel_err(out_j, out_t) <= 1e-5, f"call {call + 1}: outputs"
    # Measured: sigma 25% low after one call, 5e-6 after 30, 1.1e-7 after 40; 1 - |<v, v1>| 1.2e-6 after 40.
    assert abs(sigma(u_j, v_j) / singular_values[0] - 1) <= 1e-5
    assert abs(float(v_j @ vt[0])) >= 1 - 1e-5  # the first right singular vector, up to its sign
    # The normalised kernel's largest singular value is then 1.
    normalised = np.asarray(jax_layer.spectral_weight(train=False)).transpose(3, 2, 0, 1).reshape(16, -1)
    assert abs(np.linalg.norm(normalised.astype(np.float64), 2) - 1) <= 1e-5


def test_spectral_norm_eval_mode_leaves_u_and_v_and_divides_by_their_sigma():
    """Eval mode (sampling, the harness' forward tests): no power iteration in either backend; the kernel is
    divided by u^T W v of the stored u, v."""
    import jax.numpy as jnp

    from gan_jax.layers import conv

    jax_layer, torch_layer, matrix = _spectral_layers()
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 8)).astype(np.float32)
    u, v = _torch_vectors(torch_layer)
    torch_layer.eval()
    for _ in range(2):
        out_j = np.asarray(jax_layer(jnp.asarray(x), train=False))
        out_t = torch_layer(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
        np.testing.assert_array_equal(np.asarray(jax_layer.sn_u[...]), u)
        np.testing.assert_array_equal(np.asarray(jax_layer.sn_v[...]), v)
        for got, want in zip(_torch_vectors(torch_layer), (u, v), strict=True):
            np.testing.assert_array_equal(got, want)
    kernel = np.asarray(jax_layer.kernel[...]) / np.float32(u.astype(np.float64) @ matrix @ v)
    want = np.asarray(conv(jnp.asarray(x), jnp.asarray(kernel))) + np.asarray(jax_layer.bias[...])
    # float32 convolutions of 128-term sums (test_step_parity's forward tolerance).
    assert max_rel_err(out_j, want) <= 1e-5 and max_rel_err(out_t, want) <= 1e-5


# ----------------------------------------------------------------------------- the hand-written kernel gradients
@pytest.mark.parametrize("layer", ["conv", "deconv"])
def test_hand_written_kernel_gradients_equal_autodiff_to_second_order(layer):
    """gan_jax.layers.conv / deconv's custom VJPs against lax's own autodiff, in float64.

    First order: both cotangents. Second order: a WGAN-GP-like penalty, the squared norm of the
    input gradient, differentiated w.r.t. the kernel (double backprop through the custom rule).
    The two are the same sums in another order: float64 rounding of ~1e3-term sums, ~1e-13
    relative; 1e-10 leaves room and still fails on any wrong index (errors of order 1).
    """
    import jax
    import jax.numpy as jnp

    from gan_jax import layers

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        if layer == "conv":  # (B, 2H, 2W, I) -> (B, H, W, O), kernel (4, 4, I, O)
            custom, x_shape, k_shape, y_shape = layers.conv, (3, 8, 8, 5), (4, 4, 5, 6), (3, 4, 4, 6)
        else:  # (B, H, W, I) -> (B, 2H, 2W, O), kernel (4, 4, O, I)
            custom, x_shape, k_shape, y_shape = layers.deconv, (3, 4, 4, 6), (4, 4, 5, 6), (3, 8, 8, 5)
        x, k, w = (jnp.asarray(rng.standard_normal(s)) for s in (x_shape, k_shape, y_shape))
        reference = custom.fun  # the primal alone: lax's rules all the way down

        def first(f):
            return jax.grad(lambda x, k: jnp.sum(f(x, k) * w), argnums=(0, 1))(x, k)

        def second(f):
            def penalty(k):
                dx = jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, k)) * w))(x)
                return jnp.sum(dx**2)
            return jax.grad(penalty)(k)

        (gx, gk), (rx, rk) = first(custom), first(reference)
        for got, want, what in ((gx, rx, "d/dx"), (gk, rk, "d/dk"), (second(custom), second(reference), "d2")):
            assert max_rel_err(np.asarray(got), np.asarray(want)) <= 1e-10, f"{layer} {what}"
            assert float(jnp.max(jnp.abs(want))) > 1e-3, "a vanishing gradient would make this vacuous"

