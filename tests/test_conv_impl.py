"""--conv-impl: the DCGAN's convolutions as lax's own with autodiff (xla, for GPUs and TPUs) or with the
hand-written kernel gradient (custom, for CPUs) compute the same numbers, and auto picks by platform.

The two differ only in the order of their sums (gan_jax/layers.py), so they are compared at float32 against
the classical bound on a float32 sum's rounding error: each of two computations of sum_i t_i is within
n u sum_i |t_i| of the exact sum (n terms, u = 2^-24; Higham, Accuracy and Stability, 2nd ed., eq. 3.5),
so they are within 2 n u sum_i |t_i| of each other, entry by entry. sum_i |t_i| is the same product of the
absolute values (float64). A wrong index or a missing term gives errors of the order of the values
themselves, thousands of times the bound.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gan_common.config import Config, resume_config
from gan_jax import layers
from gan_jax.models import DcganDiscriminator, DcganGenerator
from gan_jax.step import create, d_objective, g_objective

U32 = 2.0**-24  # float32's unit roundoff
# A DCGAN at a sixteenth of the default widths: every layer kind at a cost of milliseconds.
SMALL = Config.tutorial(arch="dcgan", beta1=0.5, latent_dim=16, g_channels=4, d_channels=4, batch_size=8)


def test_auto_is_custom_on_cpus_and_xla_elsewhere():
    assert layers.conv_impl("auto", "cpu") == "custom"
    assert layers.conv_impl("auto", "gpu") == layers.conv_impl("auto", "tpu") == "xla"
    assert layers.conv_impl("xla", "cpu") == "xla" and layers.conv_impl("custom", "gpu") == "custom"  # forced
    assert layers.conv_impl("auto") == layers.conv_impl("auto", jax.default_backend())  # this process's platform


@pytest.mark.parametrize("flag", ["auto", "xla", "custom"])
def test_the_flag_reaches_every_convolution(flag):
    config = dataclasses.replace(SMALL, conv_impl=flag)
    # abstract nets (shapes only): what is checked is each layer's static choice, not its weights
    nets = (nnx.eval_shape(lambda: DcganGenerator(config, nnx.Rngs(0))),
            nnx.eval_shape(lambda: DcganDiscriminator(config, nnx.Rngs(1))))
    impls = [m.impl for net in nets for _, m in net.iter_modules() if isinstance(m, layers.Conv | layers.ConvTranspose)]
    assert impls == [layers.conv_impl(flag)] * 4  # deconv1, deconv2, conv1, conv2


def test_a_resumed_run_may_change_the_implementation():
    """Only float rounding changes (and auto itself changes with the platform a run resumes on)."""
    saved = dataclasses.replace(SMALL, conv_impl="custom")
    resumed = resume_config(saved, dataclasses.replace(saved, conv_impl="xla", resume=True), {"conv_impl", "resume"})
    assert resumed.conv_impl == "xla"


def _products(op: str, a, kernel, cotangent):
    """(output, input gradient, kernel gradient) of `op` ("conv" or "deconv") under xla and under custom, and the
    same three products of the operands' absolute values in float64 (sum |t| of every entry)."""
    index = 0 if op == "conv" else 1
    out = {}
    for impl in ("xla", "custom"):
        y, vjp = jax.vjp(jax.jit(layers.CONV_OPS[impl][index]), a, kernel)
        out[impl] = (y, *vjp(cotangent))
    with jax.enable_x64(True):
        abs_a, abs_k, abs_c = (jnp.abs(jnp.asarray(np.asarray(t), jnp.float64)) for t in (a, kernel, cotangent))
        y, vjp = jax.vjp(layers.CONV_OPS["xla"][index], abs_a, abs_k)
        sums = [np.asarray(t) for t in (y, *vjp(abs_c))]
    return out["xla"], out["custom"], sums


@pytest.mark.parametrize("op", ["conv", "deconv"])
def test_both_implementations_compute_the_same_products(op):
    """D's conv2 and G's deconv1 at the default widths, batch 4: output, input and kernel gradients."""
    rng = np.random.default_rng(0)
    # conv: (B, 14, 14, 64) -> (B, 7, 7, 128), kernel (4, 4, 64, 128); deconv: its transpose, same kernel shape.
    small, big = (4, 7, 7, 128), (4, 14, 14, 64)
    a_shape, c_shape = (big, small) if op == "conv" else (small, big)
    a, cotangent = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (a_shape, c_shape))
    kernel = jnp.asarray(0.02 * rng.standard_normal((4, 4, 64, 128)), jnp.float32)
    xla, custom, abs_sums = _products(op, a, kernel, cotangent)
    # Terms per sum: an output or input-gradient entry sums over a 4x4 window's in-range taps and all channels
    # (<= 16 * 128); a kernel-gradient entry over every output position (B * 7 * 7 or B * 14 * 14).
    terms = (16 * 128, 16 * 128, 4 * 14 * 14)
    for what, x, c, s, n in zip(("output", "input gradient", "kernel gradient"), xla, custom, abs_sums, terms,
                                strict=True):
        x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
        assert x.shape == c.shape == s.shape, what
        assert np.max(np.abs(x)) > 1e-2, f"{what}: vanishing values would make this vacuous"
        excess = np.abs(x - c) - 2 * n * U32 * s
        assert np.max(excess) <= 0, f"{op} {what}: {np.max(excess):.3g} above the float32 bound"


@pytest.mark.slow  # two compiled steps: ~8 s on a busy 2-core machine
def test_both_implementations_train_the_same_dcgan_step():
    """One step's D and G gradients of a small DCGAN (BatchNorm in G and D), from the same weights and inputs."""
    gans = {impl: create(dataclasses.replace(SMALL, conv_impl=impl)) for impl in ("xla", "custom")}
    (gan_x, state), (gan_c, state_c) = gans["xla"], gans["custom"]
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), (state.g_params, state.d_params),
                              (state_c.g_params, state_c.d_params))
    assert all(jax.tree.leaves(same)), "the implementation must not change the initial weights"
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (8, 28, 28, 1)), jnp.float32)
    z_d, z_g = (jnp.asarray(rng.standard_normal((8, 16)), jnp.float32) for _ in range(2))

    def grads(gan):
        fake = gan.generate_train(state.g_params, state.g_stats, z_d)[0]
        d_loss, d_grads = jax.value_and_grad(lambda p: d_objective(gan, p, state.d_stats, x, fake, None)[0])(
            state.d_params)
        g_loss, g_grads = jax.value_and_grad(lambda p: g_objective(gan, p, state.g_stats, state.d_params,
                                                                   state.d_stats, z_g)[0])(state.g_params)
        return (d_loss, g_loss), (d_grads, g_grads)

    (losses_x, grads_x), (losses_c, grads_c) = (jax.jit(functools.partial(grads, gan))() for gan in (gan_x, gan_c))
    # The forward passes are the same lax ops in both (measured: equal losses); 1e-6, float32 rounding of a
    # mean over the batch, allows another order of sums on another XLA.
    np.testing.assert_allclose(np.asarray(losses_c), np.asarray(losses_x), rtol=1e-6)
    # Gradients: the kernel gradients are sums of <= B * 14 * 14 = 1568 terms in another order (the others
    # measured equal): measured <= 1.1e-6 of each tensor's largest entry; 1e-5 leaves room, and a wrong
    # index gives errors of the order of the entries.
    named = jax.tree_util.tree_leaves_with_path(grads_x)
    for (path, gx), gc in zip(named, jax.tree.leaves(grads_c), strict=True):
        scale = float(jnp.max(jnp.abs(gx)))
        assert scale > 0, f"{jax.tree_util.keystr(path)}: a zero gradient would make this vacuous"
        err = float(jnp.max(jnp.abs(gc - gx))) / scale
        assert err <= 1e-5, f"{jax.tree_util.keystr(path)}: {err:.3g} of its largest entry"

