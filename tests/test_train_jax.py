"""The JAX backend's own pieces: losses where probabilities underflow, the fused loop's determinism and
random draws, and the host loop's NaN guard. Both backends' CLIs (and the tests they share) are tests/test_cli.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_common.config import Config
from gan_common.loop import TrainingDiverged, train_loop
from gan_jax import losses
from gan_jax.fused import make_train_chunk
from gan_jax.step import create, step_draws, train_step

# Tiny nets (the defaults are 256,512 and 512,256): what is tested does not depend on the widths.
SMALL = {"g_hidden": "32,64", "d_hidden": "64,32"}


# ----------------------------------------------------------------------------- losses
def test_losses_stay_finite_where_probabilities_underflow():
    huge = jnp.array([100.0, -100.0])
    # sigmoid(-100) underflows to 0 in float32, so log(sigmoid) would be -inf; softplus gives 100.
    np.testing.assert_allclose(losses.d_loss_fn(-huge, huge), 100.0, rtol=1e-6)
    g = jax.grad(lambda logits: losses.g_loss_fn(logits, "non_saturating"))(jnp.array([-100.0]))
    assert np.isfinite(g).all() and g[0] == pytest.approx(-1.0)  # d/dl softplus(-l) = -sigmoid(-l) -> -1


@pytest.mark.slow
def test_same_seed_twice_is_bit_identical_and_another_seed_differs():
    config = Config.tutorial(steps=30)
    data = np.random.default_rng(0).integers(0, 256, (640, 28, 28, 1), dtype=np.uint8)
    runs = []
    for seed in (0, 0, 1):
        gan, state = create(Config.tutorial(seed=seed, **SMALL))
        chunk = make_train_chunk(gan, len(data))
        _, m = chunk(state, jnp.asarray(data), num_steps=config.steps)
        runs.append(np.asarray(m))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.slow
def test_a_chunk_draws_what_step_by_step_draws_and_its_length_does_not_matter():
    """The fused loop draws all K steps' noise, interpolation weights and labels before its scan
    (one threefry call instead of several a step); what step t is fed must still be the (key, t)
    function `step_draws`, bit for bit, so that neither K nor a resume can change a run."""
    config = Config.tutorial(loss="wgan_gp", n_critic=2, conditional=True, batch_size=8, latent_dim=6)
    key, steps = jax.random.PRNGKey(3), jnp.arange(5, 9)
    batched = jax.jit(jax.vmap(lambda s: step_draws(key, s, config)))(steps)
    draws_at = jax.jit(lambda s: step_draws(key, s, config))  # one compile for every step number
    for i, step in enumerate(steps):
        one = draws_at(step)
        for a, b in zip(batched, one, strict=True):
            np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b))

    # 12 steps of 10 an epoch as one call and as 5 + 7 (across the epoch boundary): the same
    # metrics and weights, and every step fed the noise step_draws gives for its own step number.
    # (Uneven chunks on purpose: three K-step programs, 12, 5 and 7, must agree.)
    fed = []

    def recording_step(gan, state, x, z_d, z_g, eps=None, labels=None):
        jax.debug.callback(lambda *a: fed.append([np.asarray(v) for v in a]), state.step, z_d, z_g, ordered=True)
        return train_step(gan, state, x, z_d, z_g, eps, labels)

    data = jnp.asarray(np.random.default_rng(0).integers(0, 256, (640, 28, 28, 1), dtype=np.uint8))
    runs = []
    for split in ((12,), (5, 7)):
        gan, state = create(Config.tutorial(seed=1, **SMALL))
        chunk = make_train_chunk(gan, len(data), step_fn=recording_step)
        metrics = []
        for k in split:
            state, m = chunk(state, data, num_steps=k)
            metrics.append(np.asarray(m))
        runs.append((np.concatenate(metrics), np.asarray(jax.tree.leaves(state.g_params)[0])))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    jax.effects_barrier()
    assert [int(step) for step, _, _ in fed] == list(range(12)) * 2
    run_config = Config.tutorial(seed=1, **SMALL)
    for step, z_d, z_g in fed:
        want = step_draws(jax.random.PRNGKey(1), jnp.int32(step), run_config)
        np.testing.assert_array_equal(z_d, np.asarray(want[0]))
        np.testing.assert_array_equal(z_g, np.asarray(want[1]))


class _DivergingBackend:
    """A stand-in backend whose losses turn NaN at step 37, to test the host loop's guard."""

    def __init__(self, root):
        self.step, self.root, self.saved = 0, root, []

    def run(self, n):
        steps = np.arange(self.step + 1, self.step + n + 1)
        self.step += n
        m = np.ones((n, 4))
        m[steps >= 37, 0] = np.nan
        return m

    def fetch(self, m):
        return m

    def sample(self):
        return np.zeros((4, 28, 28, 1), np.float32)

    def save_checkpoint(self):
        self.saved.append(self.step)
        return ""


@pytest.mark.slow
def test_nan_losses_stop_training_naming_the_step_and_keep_the_last_good_checkpoint(tmp_path):
    config = Config.tutorial(out_dir=str(tmp_path), log_every=10, sample_every=100, checkpoint_every=20,
                             steps_per_call=5)
    backend = _DivergingBackend(tmp_path)
    with pytest.raises(TrainingDiverged, match="non-finite at step 37"):
        train_loop(config, backend, total_steps=100, steps_per_epoch=50, backend_name="gan_jax")
    assert backend.saved == [20]  # nothing written after the divergence
