"""G's exponential moving average (--ema-decay): the recurrence against NumPy, the same EMA in both
backends, and the EMA (not G's last step) drawing every sample.

The spec: ema_0 = G_0 (a copy of G's initial weights; no warm-up, no bias correction), and after
step t's G update ema_t = d ema_{t-1} + (1 - d) G_t, G_t being G's weights after that update.
"""

import dataclasses

import numpy as np
import pytest

from gan_common.weights import WEIGHTS_FILE, load_weights
from parity_tests.harness import (
    ADAPTERS,
    EMA_SPEC,
    SPECS,
    TorchAdapter,
    assert_tensors_close,
    float64,
    inputs,
    loaded_pair,
    max_rel_err,
)

CONFIG = EMA_SPEC.config
DECAY = CONFIG.ema_decay


def _net(tensors: dict, net: str) -> dict:
    """The tensors of `net` under their layer names (`fc1.kernel`, ...), as float64."""
    return {k[len(net) + 1:]: np.asarray(v, np.float64) for k, v in tensors.items() if k.startswith(net + ".")}


def numpy_generate(tensors: dict, net: str, z: np.ndarray) -> np.ndarray:
    """The MLP G in NumPy float64 from neutral tensors of `net` (generator or generator_ema): ReLUs, then tanh."""
    layers = _net(tensors, net)
    h = np.asarray(z, np.float64)
    num = len(layers) // 2
    for i in range(1, num + 1):
        h = h @ layers[f"fc{i}.kernel"] + layers[f"fc{i}.bias"]
        h = np.tanh(h) if i == num else np.maximum(h, 0.0)
    return h.reshape(-1, 28, 28, 1)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_ema_is_the_recurrence_on_g_after_its_update(adapter, mnist):
    xs, z_ds, z_gs = inputs(CONFIG, mnist, 3)
    a = adapter(CONFIG)
    a.load(TorchAdapter(CONFIG).export())
    start = a.export()
    assert _net(start, "generator_ema").keys() == _net(start, "generator").keys()
    for k, v in _net(start, "generator_ema").items():  # ema_0 = G_0, bit for bit
        np.testing.assert_array_equal(v, _net(start, "generator")[k], err_msg=k)
    ema = _net(start, "generator")
    for t in range(3):
        a.step(xs[t], z_ds[t], z_gs[t])
        now = a.export()
        g = _net(now, "generator")
        ema = {k: DECAY * ema[k] + (1 - DECAY) * g[k] for k in ema}
        # The backend's float32 EMA against NumPy's float64 one: each step rounds weights of size <= 0.18 once
        # (~1e-8) and the recurrence damps old errors by d, so they stay ~1e-7. Tolerance 1e-6. Updating the EMA
        # with G before its update would miss by (1 - d) x one Adam step ~ 0.1 lr = 2e-5; skipping a step, by more.
        assert_tensors_close(_net(now, "generator_ema"), ema, abs=1e-6, what=f"{adapter.name} EMA after step {t + 1}")
    # The check can tell: after 3 steps the EMA lags G by a few Adam steps (~5e-4), 500x the tolerance.
    assert max(np.max(np.abs(ema[k] - g[k])) for k in g) > 1e-4


NUM_STEPS = 100


def test_float64_ema_is_the_same_in_both_backends(mnist):
    xs, z_ds, z_gs = (a.astype(np.float64) for a in inputs(CONFIG, mnist, NUM_STEPS))
    weights = TorchAdapter(CONFIG).export()
    with float64():
        jax_a, torch_a = loaded_pair(CONFIG, weights, np.float64)
        metrics_j, metrics_t = jax_a.steps(xs, z_ds, z_gs), torch_a.steps(xs, z_ds, z_gs)
        final_j, final_t = jax_a.export(), torch_a.export()
    # As test_trajectory's float64 run (measured ~1e-14 over 100 steps): the same run.
    assert max_rel_err(metrics_j[:, :2], metrics_t[:, :2]) <= 1e-10
    # Every tensor, the EMA's included, exported as float32: equal up to one float32 ulp of the tensor's
    # largest entry (values that agree to ~1e-14 round to float32 alike, or one ulp apart).
    assert any(k.startswith("generator_ema.") for k in final_t)
    for k in final_t:
        assert max_rel_err(final_j[k], final_t[k]) <= 2.0**-23, k
    # The EMA is neither G's start nor G's end: comparing it means something (measured: ~1e-2 relative apart).
    ema, g_end, g_start = (_net(w, n) for w, n in ((final_t, "generator_ema"), (final_t, "generator"),
                                                    (weights, "generator")))
    for other in (g_end, g_start):
        assert max(max_rel_err(ema[k], other[k]) for k in ema) > 1e-3


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_backend_and_loaders_sample_from_the_ema(adapter, mnist, tmp_path):
    """Training-time grids and evaluations (Backend.generate) and both backends' samplers use the EMA."""
    backend = adapter.backend(dataclasses.replace(CONFIG, out_dir=str(tmp_path)), mnist)
    backend.fetch(backend.run(5))
    folder = backend.save_checkpoint()
    tensors, _ = load_weights(f"{folder}/{WEIGHTS_FILE}")
    z = np.random.default_rng(5).standard_normal((16, CONFIG.latent_dim), dtype=np.float32)
    want = numpy_generate(tensors, "generator_ema", z)
    # Forward-pass tolerance (float32 dot products against float64: measured <= 1.6e-7); G's own samples
    # differ from the EMA's by ~3e-2 after 5 steps, so drawing from G would fail.
    assert np.max(np.abs(backend.generate(z) - want)) <= 1e-5
    assert np.max(np.abs(numpy_generate(tensors, "generator", z) - want)) > 1e-4
    for loader in ADAPTERS:  # the neutral file: either backend's sample/evaluate loader picks the EMA
        generate, config = loader.load_generator(folder)
        assert config.ema_decay == DECAY
        assert np.max(np.abs(generate(z) - want)) <= 1e-5, f"{loader.name} sampling {adapter.name}'s checkpoint"


DCGAN_EMA = dataclasses.replace(next(s.config for s in SPECS if s.name == "dcgan_small"), ema_decay=DECAY)


@pytest.mark.slow  # make test only: the MLP's sampling from the EMA is in the fast tier (above)
@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_dcgan_ema_samples_with_gs_running_statistics(adapter, mnist, tmp_path):
    """The EMA averages parameters only: a BatchNorm G samples (eval mode) with the EMA's weights and G's live
    running statistics, in the run (Backend.generate) and from the neutral file (either backend's loader)."""
    import torch

    from gan_torch.checkpoint import import_weights
    from gan_torch.models import build_discriminator, build_generator

    config = dataclasses.replace(DCGAN_EMA, out_dir=str(tmp_path))
    backend = adapter.backend(config, mnist)
    backend.fetch(backend.run(5))
    tensors, _ = load_weights(f"{backend.save_checkpoint()}/{WEIGHTS_FILE}")
    ema = {"generator." + k[len("generator_ema."):]: v for k, v in tensors.items() if k.startswith("generator_ema.")}
    assert "generator.bn0.scale" in ema and not any(k.endswith((".mean", ".var")) for k in ema)  # params only

    def reference(stats: dict) -> np.ndarray:
        """torch's G in eval mode holding the EMA's parameters and these running statistics."""
        with torch.random.fork_rng(devices=[]):
            G, D = build_generator(config).eval(), build_discriminator(config)
        import_weights({**tensors, **ema, **stats}, G, D)
        with torch.no_grad():
            return G(torch.from_numpy(z)).numpy()

    z = np.random.default_rng(5).standard_normal((16, config.latent_dim), dtype=np.float32)
    want = reference({})
    # Forward-pass tolerance (float32 convolutions in two libraries: measured ~1e-8).
    assert np.max(np.abs(backend.generate(z) - want)) <= 1e-5
    for loader in ADAPTERS:
        generate, _ = loader.load_generator(str(tmp_path))
        assert np.max(np.abs(generate(z) - want)) <= 1e-5, f"{loader.name} sampling {adapter.name}'s checkpoint"
    # The check can tell: the initial statistics (0, 1) that an EMA copy made at step 0 holds give other samples.
    initial = {k: np.zeros_like(v) if k.endswith(".mean") else np.ones_like(v)
               for k, v in tensors.items() if k.startswith("generator.") and k.endswith((".mean", ".var"))}
    assert np.max(np.abs(reference(initial) - want)) > 1e-4
