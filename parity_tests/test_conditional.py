"""--conditional: both backends compute the same label-conditioned GAN, and draw its labels as the spec says.

Through the shared harness, with the labels as one more input to the real train_steps: forward
passes, one step's losses and gradients (the label embeddings' and the projection's too), and
100-step float64 runs, for the MLP and the DCGAN (a projection discriminator); then what each real
Backend feeds its step (the real batch's own labels, uniform fake classes from a stream of their
own, and everything else exactly as the unconditional run draws it).
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from gan_common.config import Config
from parity_tests.harness import (
    ADAPTERS,
    JaxAdapter,
    Spec,
    TorchAdapter,
    assert_tensors_close,
    class_labels,
    float64,
    inputs,
    interpolation_eps,
    max_rel_err,
)

# A narrower MLP at batch 32 keeps the 100-step float64 runs fast (as LOSS_SPECS); wgan_gp with
# n_critic 2 checks the labels' rows follow x's and z_d's through the D updates, and the penalty at the real labels.
_SMALL = dict(latent_dim=32, g_hidden="64,128", d_hidden="128,64", batch_size=32, conditional=True)
# The DCGAN at harness.SPECS' dcgan_small sizes: with BatchNorm in D (real and fake in two calls, each with
# its own labels), and SNGAN-projection's setting, spectral norm (the projection's table too) with the hinge loss.
_DCGAN = dict(arch="dcgan", latent_dim=16, g_channels=8, d_channels=8, batch_size=16, conditional=True)
CONDITIONAL_SPECS = (
    Spec("cond_gan", Config.tutorial(**_SMALL)),
    Spec("cond_wgan_gp_2critic", Config.tutorial(**_SMALL, loss="wgan_gp", n_critic=2, beta1=0.5)),
    Spec("cond_dcgan", Config.tutorial(**_DCGAN)),
    Spec("cond_dcgan_spectral_hinge", Config.tutorial(**_DCGAN, d_norm="spectral", loss="hinge")),
)
IDS = [s.name for s in CONDITIONAL_SPECS]
ONE_UPDATE_SPECS = [s for s in CONDITIONAL_SPECS if s.config.n_critic == 1]  # one D update: comparable gradients
ONE_UPDATE_IDS = [s.name for s in ONE_UPDATE_SPECS]


@pytest.fixture(scope="module")
def mnist_labels() -> np.ndarray:
    from gan_common.datasets import load_dataset

    return load_dataset("mnist", "train").labels


def _pair(config: Config, dtype=np.float32):
    weights = TorchAdapter(config).export()
    jax_a, torch_a = JaxAdapter(config, dtype), TorchAdapter(config, dtype)
    jax_a.load(weights)
    torch_a.load(weights)
    return jax_a, torch_a


def test_embeddings_cross_as_classes_by_dim_tables_exactly():
    config = CONDITIONAL_SPECS[0].config
    for source in ADAPTERS:
        weights = source(config).export()
        for net in ("generator", "discriminator"):
            table = weights[f"{net}.label_embed.embedding"]
            assert table.shape == (10, 10)  # (classes, dim): torch's nn.Embedding layout, not a transposed kernel
            # Both initialise N(0, 1), as torch's nn.Embedding: 100 draws, std within ~5 standard errors of 1.
            assert abs(table.std() - 1) < 0.4 and abs(table.mean()) < 0.5, f"{source.name} {net} init"
        assert weights["generator.fc1.kernel"].shape == (config.latent_dim + 10, 64)
        assert weights["discriminator.fc1.kernel"].shape == (784 + 10, 128)
        for target in ADAPTERS:
            t = target(config)
            t.load(weights)
            assert_tensors_close(t.export(), weights, abs=0.0, what=f"{source.name} -> {target.name}")


def test_dcgan_label_tables_cross_exactly():
    """The conditional DCGAN's tables: G's (10, 10) label embedding, N(0, 1) as the MLP's, and D's projection,
    (10, features) in nn.Embedding's layout, N(0, 0.02) as the kernels; both round trip in both directions."""
    config = CONDITIONAL_SPECS[2].config
    features = 7 * 7 * 2 * config.d_channels
    for source in ADAPTERS:
        weights = source(config).export()
        table, projection = weights["generator.label_embed.embedding"], weights["discriminator.projection.embedding"]
        assert table.shape == (10, 10) and projection.shape == (10, features)
        assert abs(table.std() - 1) < 0.4, f"{source.name} label embedding init"
        assert abs(projection.std() - 0.02) < 0.002, f"{source.name} projection init"  # 7840 draws: 1% std error
        assert weights["generator.fc.kernel"].shape == (config.latent_dim + 10, 7 * 7 * 2 * config.g_channels)
        assert "discriminator.label_embed.embedding" not in weights  # the projection replaces it
        for target in ADAPTERS:
            t = target(config)
            t.load(weights)
            assert_tensors_close(t.export(), weights, abs=0.0, what=f"{source.name} -> {target.name}")


@pytest.mark.parametrize("spec", ONE_UPDATE_SPECS, ids=ONE_UPDATE_IDS)
def test_forward_passes_agree_with_labels(spec, mnist, mnist_labels):
    config = spec.config
    jax_a, torch_a = _pair(config)
    xs, zs, _ = inputs(config, mnist, 1)
    y_reals, y_ds, _ = class_labels(config, mnist_labels, 1)
    x, z, y_real, y = xs[0], zs[0], y_reals[0], y_ds[0]
    images_j, images_t = jax_a.generate(z, y), torch_a.generate(z, y)
    # test_step_parity's forward tolerances: float32 dot products summed in another order.
    assert np.max(np.abs(images_j - images_t)) <= 1e-5
    for name, batch, labels in (("real", x, y_real), ("fake", images_t, y)):
        assert max_rel_err(jax_a.discriminate(batch, labels), torch_a.discriminate(batch, labels)) <= 1e-5, name
    # Not vacuous: the labels change both nets' outputs (another class, other images and logits).
    other = (y + 1) % 10
    assert max_rel_err(jax_a.generate(z, other), images_j) > 1e-2
    assert max_rel_err(jax_a.discriminate(x, other), jax_a.discriminate(x, y_real)) > 1e-3


@pytest.mark.parametrize("spec", ONE_UPDATE_SPECS, ids=ONE_UPDATE_IDS)
def test_one_step_losses_and_gradients_agree_with_labels(spec, mnist, mnist_labels):
    config = spec.config
    jax_a, torch_a = _pair(config)
    xs, z_ds, z_gs = inputs(config, mnist, 1)
    labels = tuple(y[0] for y in class_labels(config, mnist_labels, 1))
    metrics_j, d_grads_j, g_grads_j = jax_a.step_with_grads(xs[0], z_ds[0], z_gs[0], labels=labels)
    metrics_t, d_grads_t, g_grads_t = torch_a.step_with_grads(xs[0], z_ds[0], z_gs[0], labels=labels)
    # The one-step budget of test_step_parity: ~100 float32 ulps. The tables' gradients are sums over the
    # batch rows of each class (of fc1's back-propagated errors; of D's features for the projection): the
    # same kind of sum. Relative to the vector's scale: hinge's raw D outputs can sit near 0.
    assert max_rel_err(metrics_j, metrics_t) <= 1e-5, f"[d_loss, g_loss, D(x), D(G(z))]: {metrics_j} vs {metrics_t}"
    assert_tensors_close(d_grads_j, d_grads_t, rel=1e-5, what="D's gradients")
    assert_tensors_close(g_grads_j, g_grads_t, rel=1e-5, what="G's gradients (through the updated D)")
    # The tables learn: exactly the rows of the classes each net was shown move (D: real and fake labels).
    y_real, y_d, y_g = labels
    for grads, shown in ((d_grads_j, {*y_real, *y_d}), (g_grads_j, {*y_g})):
        table = next(k for k in grads if k.endswith((".label_embed.embedding", ".projection.embedding")))
        assert set(np.flatnonzero(np.abs(grads[table]).sum(1))) == shown, table


NUM_STEPS = 100


@pytest.mark.slow
@pytest.mark.parametrize("spec", CONDITIONAL_SPECS, ids=IDS)
def test_float64_runs_are_the_same_run(spec, mnist, mnist_labels):
    config = spec.config
    xs, z_ds, z_gs = (a.astype(np.float64) for a in inputs(config, mnist, NUM_STEPS))
    eps = interpolation_eps(config, NUM_STEPS)
    eps = None if eps is None else eps.astype(np.float64)
    labelss = class_labels(config, mnist_labels, NUM_STEPS)
    with float64():
        jax_a, torch_a = _pair(config, np.float64)
        metrics_j = jax_a.steps(xs, z_ds, z_gs, eps, labelss)
        metrics_t = torch_a.steps(xs, z_ds, z_gs, eps, labelss)
        z = np.random.default_rng(7).standard_normal((60, config.latent_dim))
        y = np.arange(60, dtype=np.int32) % 10
        images_j, images_t = jax_a.generate(z, y), torch_a.generate(z, y)
        final_j, final_t = jax_a.export(), torch_a.export()
    assert metrics_j.dtype == metrics_t.dtype == np.float64
    # As test_losses' float64 runs: relative to each metric's largest magnitude over the run (a WGAN
    # critic loss crosses zero); float64 rounding grows to ~1e-15 here, any change to the maths
    # (a label on the wrong row, the penalty at the fake labels) shows at >= 1e-7.
    scale = np.max(np.abs(metrics_t), axis=0)
    worst = float(np.max(np.abs(metrics_j - metrics_t) / scale))
    assert worst <= 1e-10, f"float64 runs differ by {worst:.3g}"
    assert np.max(np.abs(images_j - images_t)) <= 1e-10
    for key in final_t:  # one float32 ulp of the tensor's scale, as in test_trajectory
        assert max_rel_err(final_j[key], final_t[key]) <= 2.0**-23, key
    start = TorchAdapter(config).export()
    tables = [k for k in final_t if k.endswith(".embedding")]
    assert len(tables) == 2  # G's label embedding, and D's (the MLP) or its projection (the DCGAN)
    for key in tables:
        assert max_rel_err(final_t[key], start[key]) > 1e-3, f"{key} did not train: the run would not test it"


# ----------------------------------------------------------------------------- what the Backends feed
FED_STEPS = 25  # 800 fake classes each for D and G, 800 real images
FED_CONFIG = Config.tutorial(**_SMALL, steps=FED_STEPS, steps_per_call=FED_STEPS)


@pytest.fixture(scope="module", params=ADAPTERS, ids=[a.name for a in ADAPTERS])
def fed(request, mnist, mnist_labels):
    adapter = request.param
    cond = adapter.recorded_inputs(FED_CONFIG, mnist, FED_STEPS, mnist_labels)
    plain = adapter.recorded_inputs(dataclasses.replace(FED_CONFIG, conditional=False), mnist, FED_STEPS)
    return adapter.name, cond, plain


@pytest.mark.slow  # make test only: the real loops, both backends (the fast tier's 2-minute budget)
def test_backends_feed_the_real_labels_and_uniform_fresh_fake_classes(fed, mnist, mnist_labels):
    _, (xs, z_ds, z_gs, y_reals, y_ds, y_gs), _ = fed
    b = FED_CONFIG.batch_size
    assert y_reals.shape == y_ds.shape == y_gs.shape == (FED_STEPS, b)
    # The real batch's labels are its images' own: look every fed image up in the training set.
    u8 = np.rint((xs.astype(np.float64) + 1.0) * 127.5).astype(np.uint8).reshape(-1, 784)
    label_of = {row.tobytes(): int(y) for row, y in zip(mnist.reshape(len(mnist), -1), mnist_labels, strict=True)}
    assert [label_of[row.tobytes()] for row in u8] == y_reals.ravel().tolist()
    # The fakes' classes: uniform over 0..9 (chi-square p >= 6e-7, 5 sigma), D's and G's independent,
    # and fresh each step.
    for y in (y_ds, y_gs):
        counts = np.bincount(y.ravel(), minlength=10)
        assert counts.size == 10 and stats.chisquare(counts).pvalue >= 6e-7, counts
    n = y_ds.size
    assert abs(np.corrcoef(y_ds.ravel(), y_gs.ravel())[0, 1]) <= 5 / np.sqrt(n)
    assert abs(np.corrcoef(y_ds[1:].ravel(), y_ds[:-1].ravel())[0, 1]) <= 5 / np.sqrt(n)
    # Not the real labels again.
    assert abs(np.corrcoef(y_ds.ravel(), y_reals.ravel())[0, 1]) <= 5 / np.sqrt(n)


@pytest.mark.slow  # make test only: the real loops, both backends (the fast tier's 2-minute budget)
def test_conditional_runs_draw_the_unconditional_runs_images_and_noise(fed):
    """The labels come from a stream of their own: the data order is (seed, epoch)'s in both backends;
    JAX's noise is (key, step)'s, the same as without labels at every step; torch draws a step's
    classes after all of its other draws, so its first step's noise is the unconditional run's
    (and unconditional runs draw exactly what they drew before --conditional existed)."""
    name, (xs, z_ds, z_gs, *_), (xs_plain, z_ds_plain, z_gs_plain) = fed
    np.testing.assert_array_equal(xs, xs_plain, err_msg="real batches")
    same_steps = slice(None) if name == "jax" else slice(0, 1)
    np.testing.assert_array_equal(z_ds[same_steps], z_ds_plain[same_steps], err_msg="D's noise")
    np.testing.assert_array_equal(z_gs[same_steps], z_gs_plain[same_steps], err_msg="G's noise")
