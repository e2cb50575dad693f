"""Training: losses on logits, a pure `train_step`, and the fused K-steps-per-call loop.

One step is Goodfellow et al. (2014), Algorithm 1 with k = 1:
  1. real batch x and fresh noise z_d; D ascends log D(x) + log(1 - D(G(z_d)));
  2. fresh noise z_g; G descends -log D(G(z_g)) (non-saturating) or log(1 - D(G(z_g)))
     (minimax), through the D just updated.
The hot loop (`make_train_chunk`) scans K such steps in one compiled call, with the uint8
training set resident on the device; the host only wakes between calls.

    python -m gan_jax.train --help
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gan_common.config import Config, parse_args
from gan_common.errors import cli_entry
from gan_common.loop import CHECKPOINT_DIR, run_training
from gan_jax import parallel
from gan_jax.models import Discriminator, Generator

NUM_FIXED_SAMPLES = 64  # the sample grid: 8 x 8 digits from one noise batch fixed for the run


# ----------------------------------------------------------------------------- losses
def d_loss_fn(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """-log sigma(D(x)) - log(1 - sigma(D(G(z)))), batch means summed; softplus is the stable form."""
    # -log sigma(l) = softplus(-l);  -log(1 - sigma(l)) = softplus(l)
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def g_loss_fn(fake_logits: jax.Array, kind: str) -> jax.Array:
    """G's loss on D's logits of fresh fakes: non_saturating -log sigma(l), minimax log(1 - sigma(l))."""
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-fake_logits))
    if kind == "minimax":
        return -jnp.mean(jax.nn.softplus(fake_logits))
    raise ValueError(f"unknown g_loss {kind!r}")


# ----------------------------------------------------------------------------- state
class TrainState(NamedTuple):
    """Everything a step reads and writes; a pytree, donated to the compiled loop."""

    g_params: nnx.State
    d_params: nnx.State
    g_opt: optax.OptState
    d_opt: optax.OptState
    step: jax.Array  # () int32: global steps done; with `key` it fixes the noise and data order
    key: jax.Array  # (2,) uint32: the run key, jax.random.PRNGKey(seed)


@dataclasses.dataclass(frozen=True, eq=False)
class Gan:
    """The static half: graph definitions, optimisers and the device mesh. Hashed by identity, closed over by jit."""

    config: Config
    g_def: nnx.GraphDef
    d_def: nnx.GraphDef
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh | None = None  # the batch is split over it (gan_jax.parallel); None: one device

    def generate(self, g_params: nnx.State, z: jax.Array) -> jax.Array:
        return nnx.merge(self.g_def, g_params)(z)  # (B, 28, 28, 1) in [-1, 1], compute dtype

    def discriminate(self, d_params: nnx.State, x: jax.Array) -> jax.Array:
        logits = nnx.merge(self.d_def, d_params)(x)  # (B,)
        # Losses are taken in float32 (or wider) whatever the compute dtype (--precision bf16).
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


# Streams derived from the run key with fold_in: resuming needs only (key, step).
_INIT, _NOISE, _DATA, _FIXED = 0, 1, 2, 3


def adam(config: Config) -> optax.GradientTransformation:
    """torch.optim.Adam's update: eps outside the square root, bias-corrected moments."""
    return optax.adam(config.lr, b1=config.beta1, b2=config.beta2, eps=config.adam_eps)


def create(config: Config, mesh: jax.sharding.Mesh | None = None) -> tuple[Gan, TrainState]:
    """Fresh models and optimisers for `config`, initialised from its seed (on the default device)."""
    key = jax.random.PRNGKey(config.seed)
    init_key = jax.random.fold_in(key, _INIT)
    g_key, d_key = jax.random.split(init_key)
    g_def, g_params = nnx.split(Generator(config, nnx.Rngs(params=g_key)))
    d_def, d_params = nnx.split(Discriminator(config, nnx.Rngs(params=d_key)))
    gan = Gan(config, g_def, d_def, adam(config), adam(config), mesh)
    state = TrainState(
        g_params=g_params,
        d_params=d_params,
        g_opt=gan.g_tx.init(g_params),
        d_opt=gan.d_tx.init(d_params),
        step=jnp.zeros((), jnp.int32),
        key=key,
    )
    return gan, state


# ----------------------------------------------------------------------------- one step
def train_step(
    gan: Gan, state: TrainState, x: jax.Array, z_d: jax.Array, z_g: jax.Array
) -> tuple[TrainState, jax.Array]:
    """One D step then one G step on given inputs; pure, so parity tests can feed both backends alike.

    x: (B, 28, 28, 1) real images in [-1, 1]; z_d, z_g: (B, latent_dim) noise.
    Returns the new state and metrics (4,) = [d_loss, g_loss, mean D(x), mean D(G(z_d))].
    """
    fake_d = gan.generate(state.g_params, z_d)  # (B, 28, 28, 1); outside grad: no G backward in D's step

    # Update D: maximise log D(x) + log(1 - D(G(z_d))). One D call on [real; fake] (same maths, one matmul;
    # on a mesh, concatenated per device so no row moves).
    def d_objective(d_params):
        logits = gan.discriminate(d_params, parallel.concat_batches(x, fake_d, gan.mesh))  # (2B,)
        real, fake = parallel.split_batches(logits, gan.mesh)  # (B,), (B,)
        return d_loss_fn(real, fake), (real, fake)

    (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(state.d_params)
    d_updates, d_opt = gan.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # Update G: minimise -log D(G(z_g)) (or log(1 - D(G(z_g)))) through the updated D; D is a constant here.
    def g_objective(g_params):
        return g_loss_fn(gan.discriminate(d_params, gan.generate(g_params, z_g)), gan.config.g_loss)

    g_loss, g_grads = jax.value_and_grad(g_objective)(state.g_params)
    g_updates, g_opt = gan.g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    metrics = jnp.stack([d_loss, g_loss, jnp.mean(jax.nn.sigmoid(real_logits)), jnp.mean(jax.nn.sigmoid(fake_logits))])
    new_state = TrainState(g_params, d_params, g_opt, d_opt, state.step + 1, state.key)
    return new_state, metrics


def step_noise(key: jax.Array, step: jax.Array, batch: int, latent_dim: int) -> tuple[jax.Array, jax.Array]:
    """z_d, z_g (B, latent_dim) ~ N(0, I) for global step `step`: a function of (key, step) only."""
    k_d, k_g = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, _NOISE), step))
    return jax.random.normal(k_d, (batch, latent_dim)), jax.random.normal(k_g, (batch, latent_dim))


def epoch_permutation(key: jax.Array, epoch: jax.Array, num_train: int) -> jax.Array:
    """The order of the training set in epoch `epoch`: a fresh permutation each epoch."""
    return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, _DATA), epoch), num_train)


def scale_images(images_u8: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1], the range of G's tanh.

    (u - 127.5) / 127.5 rather than u / 127.5 - 1: XLA turns the division into a multiply by a
    rounded 1/127.5, which the first form keeps exactly inside [-1, 1] (255 -> 1.0, not 1.0000001).
    """
    return (images_u8.astype(jnp.float32) - 127.5) / 127.5


# ----------------------------------------------------------------------------- the fused loop
def make_train_chunk(gan: Gan, num_train: int):
    """A `train_chunk(state, data, num_steps) -> (state, metrics (num_steps, 4))` running K compiled steps.

    `data` is the whole uint8 training set (N, 28, 28, 1) on the device; each step gathers
    its batch from the epoch's permutation, draws its noise from (key, step), and runs
    `train_step`. The state is donated: its buffers are reused, never copied.
    On a mesh (`gan.mesh`), state and data are replicated and each device gathers and draws
    only its slice of the batch: threefry's partitionable mode makes every slice of the noise
    equal to the same rows drawn on one device, so the run computes the same numbers on any
    number of devices, up to the order of the gradient sums.
    """
    batch = gan.config.batch_size
    steps_per_epoch = num_train // batch  # the final partial batch is dropped
    latent_dim = gan.config.latent_dim
    mesh = gan.mesh
    out_shardings = None if mesh is None else parallel.replicated(mesh)

    @functools.partial(jax.jit, static_argnames="num_steps", donate_argnums=(0, 1), out_shardings=out_shardings)
    def scan_steps(state: TrainState, perm: jax.Array, data: jax.Array, num_steps: int):
        def body(carry, _):
            state, perm = carry
            epoch, pos = state.step // steps_per_epoch, state.step % steps_per_epoch
            # A new epoch reshuffles; the permutation rides in the carry between epoch starts.
            perm = jax.lax.cond(pos == 0, lambda: epoch_permutation(state.key, epoch, num_train), lambda: perm)
            idx = parallel.shard_batch(jax.lax.dynamic_slice_in_dim(perm, pos * batch, batch), mesh)  # (B,)
            x = parallel.shard_batch(scale_images(data[idx]), mesh)  # (B, 28, 28, 1) in [-1, 1]
            z_d, z_g = (parallel.shard_batch(z, mesh) for z in step_noise(state.key, state.step, batch, latent_dim))
            state, metrics = train_step(gan, state, x, z_d, z_g)
            return (state, perm), metrics

        (state, perm), metrics = jax.lax.scan(body, (state, perm), length=num_steps)
        return state, perm, metrics  # metrics (num_steps, 4)

    current_perm = jax.jit(lambda key, step: epoch_permutation(key, step // steps_per_epoch, num_train),
                           out_shardings=out_shardings)
    carried: list = [None, None]  # the last state returned, and its epoch's permutation

    def train_chunk(state: TrainState, data: jax.Array, num_steps: int):
        # Sorting 60k keys costs ~25 ms on a CPU: reuse the permutation while the caller
        # passes back the state we returned; recompute it for a fresh or restored state.
        perm = carried[1] if state is carried[0] else current_perm(state.key, state.step)
        state, perm, metrics = scan_steps(state, perm, data, num_steps=num_steps)
        carried[:] = [state, perm]
        return state, metrics

    return train_chunk


def fixed_noise(config: Config) -> jax.Array:
    """The run's sample-grid noise (64, latent_dim): the same grid rows at every step, in both backends' runs."""
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(config.seed), _FIXED),
                             (NUM_FIXED_SAMPLES, config.latent_dim))


# ----------------------------------------------------------------------------- the run
class JaxBackend:
    """gan_common.loop.Backend over the fused loop: `run` queues compiled calls, never waits."""

    def __init__(self, config: Config, data_u8: np.ndarray, state: TrainState | None = None,
                 mesh: jax.sharding.Mesh | None = None):
        from gan_jax import checkpoint

        mesh = mesh if mesh is not None else parallel.make_mesh(config)
        self.gan, fresh = create(config, mesh)
        self.state = parallel.replicate(state if state is not None else fresh, mesh)
        self.step = int(parallel.to_host(self.state.step))
        self.data = parallel.replicate(data_u8, mesh)  # (N, 28, 28, 1) uint8 on every device, once
        self.train_chunk = make_train_chunk(self.gan, data_u8.shape[0])
        self.z_fixed = parallel.replicate(fixed_noise(config), mesh)
        self._sample = jax.jit(lambda g, z: self.gan.generate(g, z).astype(jnp.float32),
                               out_shardings=parallel.replicated(mesh))
        self._checkpoint = checkpoint
        self.is_primary = parallel.is_primary()

    def run(self, num_steps: int) -> jax.Array:
        self.state, metrics = self.train_chunk(self.state, self.data, num_steps=num_steps)
        self.step += num_steps
        return metrics

    def fetch(self, metrics: jax.Array) -> np.ndarray:
        return parallel.to_host(metrics).astype(np.float64)

    def sample(self) -> np.ndarray:
        return parallel.to_host(self._sample(self.state.g_params, self.z_fixed))

    def generate(self, z: np.ndarray) -> np.ndarray:
        z = parallel.replicate(np.asarray(z, np.float32), self.gan.mesh)
        return parallel.to_host(self._sample(self.state.g_params, z))

    def save_checkpoint(self) -> str:
        return self._checkpoint.save(os.path.join(self.gan.config.out_dir, CHECKPOINT_DIR), self.gan, self.state)


def _make_backend(config: Config, images: np.ndarray) -> JaxBackend:
    mesh = parallel.make_mesh(config)
    state = None
    if config.resume:
        from gan_jax import checkpoint

        _, fresh = create(config, mesh)
        state = checkpoint.restore_latest(os.path.join(config.out_dir, CHECKPOINT_DIR),
                                          parallel.replicate(fresh, mesh))
    return JaxBackend(config, images, state, mesh)


def _load_evaluator():
    from gan_jax.evaluate import fid_and_coverage

    return fid_and_coverage


def train_and_evaluate(config: Config, workdir: str | None = None, given: Sequence[str] = ()) -> dict:
    """Train (or resume) the run described by `config` in `workdir`; return the last logged metrics.

    Multi-process runs (--num-processes) call this in every process; only process 0 writes.
    """
    parallel.init_runtime(config)
    return run_training(config, workdir, given, _make_backend, "gan_jax", _load_evaluator,
                        primary=parallel.is_primary())


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    config, given = parse_args(argv, "python -m gan_jax.train", __doc__.splitlines()[0] + " (JAX backend)")
    train_and_evaluate(config, given=given)
    return 0


if __name__ == "__main__":
    sys.exit(main())
