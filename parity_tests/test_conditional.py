"""--conditional: both backends compute the same label-conditioned GAN, and draw its labels as the spec says.

Through the shared harness, with the labels as one more input to the real train_steps: forward
passes, one step's losses and gradients (the label embeddings' too), and 100-step float64 runs;
then what each real Backend feeds its step (the real batch's own labels, uniform fake classes
from a stream of their own, and everything else exactly as the unconditional run draws it).
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from gan_common.config import Config
from parity_tests.harness import (ADAPTERS, JaxAdapter, Spec, TorchAdapter, assert_tensors_close, class_labels,
                                  float64, inputs, interpolation_eps, max_rel_err)

# A narrower MLP at batch 32 keeps the 100-step float64 runs fast (as LOSS_SPECS); wgan_gp with
# n_critic 2 checks the labels' rows follow x's and z_d's through the D updates, and the penalty at the real labels.
_SMALL = dict(latent_dim=32, g_hidden="64,128", d_hidden="128,64", batch_size=32, conditional=True)
CONDITIONAL_SPECS = (
    Spec("cond_gan", Config(**_SMALL)),
    Spec("cond_wgan_gp_2critic", Config(**_SMALL, loss="wgan_gp", n_critic=2, beta1=0.5)),
)
IDS = [s.name for s in CONDITIONAL_SPECS]


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


def test_forward_passes_agree_with_labels(mnist, mnist_labels):
    config = CONDITIONAL_SPECS[0].config
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
    assert np.max(np.abs(jax_a.generate(z, other) - images_j)) > 1e-2
    assert max_rel_err(jax_a.discriminate(x, other), jax_a.discriminate(x, y_real)) > 1e-3


def test_one_step_losses_and_gradients_agree_with_labels(mnist, mnist_labels):
    config = CONDITIONAL_SPECS[0].config
    jax_a, torch_a = _pair(config)
    xs, z_ds, z_gs = inputs(config, mnist, 1)
    labels = tuple(y[0] for y in class_labels(config, mnist_labels, 1))
    metrics_j, d_grads_j, g_grads_j = jax_a.step_with_grads(xs[0], z_ds[0], z_gs[0], labels=labels)
    metrics_t, d_grads_t, g_grads_t = torch_a.step_with_grads(xs[0], z_ds[0], z_gs[0], labels=labels)
    # The one-step budget of test_step_parity: ~100 float32 ulps. The embeddings' gradients are
    # sums over the batch rows of each class of fc1's back-propagated errors: the same kind of sum.
    np.testing.assert_allclose(metrics_j, metrics_t, rtol=1e-5, err_msg="[d_loss, g_loss, D(x), D(G(z))]")
    assert_tensors_close(d_grads_j, d_grads_t, rel=1e-5, what="D's gradients")
    assert_tensors_close(g_grads_j, g_grads_t, rel=1e-5, what="G's gradients (through the updated D)")
    for grads in (d_grads_j, g_grads_j):  # the tables learn: every class in the batch moves its row
        assert np.count_nonzero(np.abs(grads[next(k for k in grads if "label_embed" in k)]).sum(1)) >= 8


NUM_STEPS = 100


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
    moved = max_rel_err(final_t["generator.label_embed.embedding"], torch_a.__class__(config).export()
                        ["generator.label_embed.embedding"])
    assert moved > 1e-3, "the embeddings did not train: the run would not test them"


# ----------------------------------------------------------------------------- what the Backends feed
FED_STEPS = 25  # 800 fake classes each for D and G, 800 real images
FED_CONFIG = Config(**_SMALL, steps=FED_STEPS, steps_per_call=FED_STEPS)


@pytest.fixture(scope="module", params=ADAPTERS, ids=[a.name for a in ADAPTERS])
def fed(request, mnist, mnist_labels):
    adapter = request.param
    cond = adapter.recorded_inputs(FED_CONFIG, mnist, FED_STEPS, mnist_labels)
    plain = adapter.recorded_inputs(dataclasses.replace(FED_CONFIG, conditional=False), mnist, FED_STEPS)
    return adapter.name, cond, plain


def test_backends_feed_the_real_labels_and_uniform_fresh_fake_classes(fed, mnist, mnist_labels):
    _, (xs, z_ds, z_gs, y_reals, y_ds, y_gs), _ = fed
    b = FED_CONFIG.batch_size
    assert y_reals.shape == y_ds.shape == y_gs.shape == (FED_STEPS, b)
    # The real batch's labels are its images' own: look every fed image up in the training set.
    u8 = np.rint((xs.astype(np.float64) + 1.0) * 127.5).astype(np.uint8).reshape(-1, 784)
    label_of = {row.tobytes(): int(y) for row, y in zip(mnist.reshape(len(mnist), -1), mnist_labels)}
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
