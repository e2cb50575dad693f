"""Files cross between backends, imports never: each loads the other's checkpoints, and each is deterministic."""

import dataclasses
import os
import shutil

import numpy as np
import pytest

from gan_common.config import Config
from gan_common.weights import WEIGHTS_FILE
from parity_tests.harness import ADAPTERS

RUN = Config(steps=12, log_every=6, sample_every=12, checkpoint_every=6, steps_per_call=6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{backend: run folder} after 12 steps of `python -m gan_X.train`'s own code path."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for adapter in ADAPTERS:
        out[adapter.name] = str(root / adapter.name)
        adapter.train_and_evaluate(RUN, out[adapter.name])
    return out


def _ways_to_name(run: str) -> list[str]:
    """Everything --checkpoint accepts: the run, its checkpoints folder, a step folder, a weights file."""
    step = os.path.join(run, "checkpoints", "12")
    return [run, os.path.join(run, "checkpoints"), step, os.path.join(step, WEIGHTS_FILE)]


@pytest.mark.parametrize("trained_by", [a.name for a in ADAPTERS])
def test_each_backend_samples_the_others_checkpoint_identically(runs, trained_by):
    z = np.random.default_rng(3).standard_normal((32, RUN.latent_dim), dtype=np.float32)
    reference = None
    for adapter in ADAPTERS:
        for path in _ways_to_name(runs[trained_by]):
            generate, config = adapter.load_generator(path)
            assert config.steps == RUN.steps and config.latent_dim == RUN.latent_dim
            images = generate(z)
            assert images.shape == (32, 28, 28, 1) and images.dtype == np.float32
            if reference is None:
                reference = images
            # Same weights, same z: test_step_parity's forward tolerance (float32 dot products in a
            # different order; measured 2.7e-7). Within one backend the paths name one file: exact.
            assert np.max(np.abs(images - reference)) <= 1e-5, f"{adapter.name} loading {path}"
    assert np.std(reference) > 0.05, "the trained generator's samples are constant: nothing was compared"


def test_resuming_the_other_backends_run_is_a_clear_error(runs, tmp_path, capsys):
    from gan_jax import train as jax_train
    from gan_torch import train as torch_train

    for main, trained_by, says in ((torch_train.main, "jax", "written by gan_jax"),
                                   (jax_train.main, "torch", "written by gan_torch")):
        run = str(tmp_path / trained_by)
        shutil.copytree(runs[trained_by], run)  # resume rewrites config.json: leave the fixture alone
        assert main(["--out-dir", run, "--resume", "--steps", "20"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "Traceback" not in err


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_same_seed_twice_gives_bit_identical_losses(adapter, mnist):
    """On CPU each backend is deterministic: the same seed, twice, gives the same bits; another seed differs."""
    config = Config(steps=60, steps_per_call=60)
    metrics = []
    for seed in (0, 0, 1):
        backend = adapter.backend(dataclasses.replace(config, seed=seed), mnist)
        metrics.append(backend.fetch(backend.run(30)))
        metrics[-1] = np.concatenate([metrics[-1], backend.fetch(backend.run(30))])  # across calls, too
    np.testing.assert_array_equal(metrics[0], metrics[1])
    assert not np.array_equal(metrics[0], metrics[2])
