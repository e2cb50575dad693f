"""Files cross between backends, imports never: each loads the other's checkpoints, and each is deterministic."""

import dataclasses
import os
import shutil

import numpy as np
import pytest

from gan_common.config import Config
from gan_common.weights import WEIGHTS_FILE, load_weights
from parity_tests.harness import ADAPTERS, assert_tensors_close

ADAPTER_IDS = [a.name for a in ADAPTERS]

pytestmark = pytest.mark.slow  # make test only: trains both backends through their CLI code paths

RUN = Config.tutorial(steps=12, log_every=6, sample_every=12, checkpoint_every=6, steps_per_call=6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{backend: (run folder, its Backend)} after 12 steps of `python -m gan_X.train`'s own code path
    (train_and_evaluate), the Backend object kept: it holds the weights the run ended with."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for adapter in ADAPTERS:
        folder = str(root / adapter.name)
        _, backend = adapter.trained_run(RUN, folder)
        assert backend.step == RUN.steps
        out[adapter.name] = (folder, backend)
    return out


def _ways_to_name(run: str) -> list[str]:
    """Everything --checkpoint accepts: the run, its checkpoints folder, a step folder, a weights file."""
    step = os.path.join(run, "checkpoints", "12")
    return [run, os.path.join(run, "checkpoints"), step, os.path.join(step, WEIGHTS_FILE)]


@pytest.mark.parametrize("trained_by", ADAPTER_IDS)
def test_each_backend_samples_the_others_checkpoint_identically(runs, trained_by):
    """Each loader, on each way of naming the run, draws the images of the weights the run ended with."""
    folder, backend = runs[trained_by]
    trainer = ADAPTERS[ADAPTER_IDS.index(trained_by)]
    z = np.random.default_rng(3).standard_normal((32, RUN.latent_dim), dtype=np.float32)
    # The reference: the trained Backend's own state, sampled in memory (no file, no loader).
    trained = trainer.backend_generate(backend, z)
    # The checkpoint's weight file holds exactly that state, G and D (read as a file, not through a loader).
    stored, _ = load_weights(os.path.join(folder, "checkpoints", "12", WEIGHTS_FILE))
    assert_tensors_close(stored, trainer.backend_export(backend), abs=0.0, what=f"{trained_by}'s step-12 weights file")
    # Stale weights must fail the comparison below by far: the run's own step-0 G (create(RUN): the same
    # seed) and its step-6 checkpoint. Measured max |difference| from the trained G's images: 0.38 / 0.39
    # (step 0, jax / torch) and 0.22 / 0.20 (step 6), against the tolerance 1e-5; required > 0.05.
    untrained = trainer(RUN).generate(z)
    step6, _ = trainer.load_generator(os.path.join(folder, "checkpoints", "6"))
    for name, stale in (("an untrained G", untrained), ("the step-6 checkpoint", step6(z))):
        assert np.max(np.abs(stale - trained)) > 0.05, f"{name} samples like the trained G: nothing is compared"
    assert np.std(trained) > 0.05, "the trained generator's samples are constant: nothing was compared"
    for adapter in ADAPTERS:
        for path in _ways_to_name(folder):
            generate, config = adapter.load_generator(path)
            assert config.steps == RUN.steps and config.latent_dim == RUN.latent_dim
            images = generate(z)
            assert images.shape == (32, 28, 28, 1) and images.dtype == np.float32
            # Same weights, same z: test_step_parity's forward tolerance (float32 dot products in a
            # different order). Measured: 0.0 within a backend, 3.0e-7 / 2.1e-7 across (either trainer).
            err = np.max(np.abs(images - trained))
            assert err <= 1e-5, f"{adapter.name} loading {path}: {err:.3g} from the trained {trained_by} G's images"


def test_resuming_the_other_backends_run_is_a_clear_error(runs, tmp_path, capsys):
    from gan_jax import train as jax_train
    from gan_torch import train as torch_train

    for main, trained_by, says in ((torch_train.main, "jax", "written by gan_jax"),
                                   (jax_train.main, "torch", "written by gan_torch")):
        run = str(tmp_path / trained_by)
        shutil.copytree(runs[trained_by][0], run)  # resume rewrites config.json: leave the fixture alone
        assert main(["--out-dir", run, "--resume", "--steps", "20"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "Traceback" not in err


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_same_seed_twice_gives_bit_identical_losses(adapter, mnist):
    """On CPU each backend is deterministic: the same seed, twice, gives the same bits; another seed differs."""
    config = Config.tutorial(steps=60, steps_per_call=60)
    metrics = []
    for seed in (0, 0, 1):
        backend = adapter.backend(dataclasses.replace(config, seed=seed), mnist)
        metrics.append(backend.fetch(backend.run(30)))
        metrics[-1] = np.concatenate([metrics[-1], backend.fetch(backend.run(30))])  # across calls, too
    np.testing.assert_array_equal(metrics[0], metrics[1])
    assert not np.array_equal(metrics[0], metrics[2])
