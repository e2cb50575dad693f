"""Training: losses on logits, an eager `train_step`, and the Backend the shared loop drives.

One step is Goodfellow et al. (2014), Algorithm 1 with k = 1, exactly as gan_jax.train:
  1. real batch x and fresh noise z_d; D ascends log D(x) + log(1 - D(G(z_d)));
  2. fresh noise z_g; G descends -log D(G(z_g)) (non-saturating) or log(1 - D(G(z_g)))
     (minimax), through the D just updated.
Written plainly, one step at a time: this backend is the reference gan_jax is checked against.

    python -m gan_torch.train --help
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gan_common.config import Config, parse_args
from gan_common.errors import cli_entry
from gan_common.loop import CHECKPOINT_DIR, run_training
from gan_torch import parallel
from gan_torch.models import Discriminator, Generator

NUM_FIXED_SAMPLES = 64  # the sample grid: 8 x 8 digits from one noise batch fixed for the run


# ----------------------------------------------------------------------------- losses
def d_loss_fn(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigma(D(x)) - log(1 - sigma(D(G(z)))), batch means summed; softplus is the stable form."""
    # -log sigma(l) = softplus(-l);  -log(1 - sigma(l)) = softplus(l)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_fn(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """G's loss on D's logits of fresh fakes: non_saturating -log sigma(l), minimax log(1 - sigma(l))."""
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"unknown g_loss {kind!r}")


# ----------------------------------------------------------------------------- state
@dataclasses.dataclass(eq=False)
class Gan:
    """Both nets and their optimisers. `train_step` updates them in place (gan_jax's returns new state)."""

    config: Config
    generator: Generator
    discriminator: Discriminator
    g_opt: torch.optim.Adam
    d_opt: torch.optim.Adam
    # The modules whose backward updates a net: the nets themselves, or under torchrun their
    # DistributedDataParallel wrappers, whose backward averages the gradients over ranks.
    g_sync: torch.nn.Module | None = None
    d_sync: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        self.g_sync = self.generator if self.g_sync is None else self.g_sync
        self.d_sync = self.discriminator if self.d_sync is None else self.d_sync


# Independent random streams derived from the run seed (the same roles as gan_jax's fold_in streams).
_INIT, _NOISE, _DATA, _FIXED = 0, 1, 2, 3


def stream_seed(seed: int, *path: int) -> int:
    """A 32-bit seed for the stream `path` of run `seed`, so streams are unrelated even for equal seeds."""
    return int(np.random.SeedSequence([seed % 2**64, *path]).generate_state(1)[0])


def adam(params, config: Config) -> torch.optim.Adam:
    """Adam with the config's settings; eps is added outside the square root, as in optax."""
    return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.adam_eps)


def autocast(config: Config):
    """--precision bf16: bfloat16 matmuls and activations in the forward passes; params stay float32."""
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16")


def create(config: Config) -> Gan:
    """Fresh models and optimisers for `config`, initialised from its seed (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(config.seed, _INIT))
        generator, discriminator = Generator(config), Discriminator(config)
    return Gan(config, generator, discriminator, adam(generator.parameters(), config),
               adam(discriminator.parameters(), config))


# ----------------------------------------------------------------------------- one step
def _loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Losses are taken in float32 (or wider: float64 in tests) whatever the compute dtype (--precision bf16)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def train_step(gan: Gan, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor) -> torch.Tensor:
    """One D step then one G step on given inputs, updating `gan` in place.

    x: (B, 28, 28, 1) real images in [-1, 1]; z_d, z_g: (B, latent_dim) noise.
    Returns metrics (4,) = [d_loss, g_loss, mean D(x), mean D(G(z_d))].
    After the call each parameter's .grad holds the gradient of its own net's last step.
    """
    G, D = gan.generator, gan.discriminator
    batch = x.shape[0]
    with torch.no_grad(), autocast(gan.config):
        fake_d = G(z_d)  # (B, 28, 28, 1); no G backward in D's step

    # Update D: maximise log D(x) + log(1 - D(G(z_d))). One D call on [real; fake], as in gan_jax.
    with autocast(gan.config):
        logits = _loss_dtype(gan.d_sync(torch.cat([x, fake_d])))  # (2B,)
    real_logits, fake_logits = logits[:batch], logits[batch:]
    d_loss = d_loss_fn(real_logits, fake_logits)
    gan.d_opt.zero_grad()
    d_loss.backward()
    gan.d_opt.step()

    # Update G: minimise -log D(G(z_g)) (or log(1 - D(G(z_g)))) through the updated D; D is a constant here.
    D.requires_grad_(False)  # backward stops at D's input: D's .grad keeps D's own step
    with autocast(gan.config):
        fake_logits_g = _loss_dtype(D(gan.g_sync(z_g)))  # (B,); plain D: only G's gradients are averaged over ranks
    g_loss = g_loss_fn(fake_logits_g, gan.config.g_loss)
    gan.g_opt.zero_grad()
    g_loss.backward()
    gan.g_opt.step()
    D.requires_grad_(True)

    with torch.no_grad():
        return torch.stack([d_loss, g_loss, torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()])


def epoch_permutation(seed: int, epoch: int, num_train: int) -> torch.Tensor:
    """The order of the training set in epoch `epoch`: a fresh permutation each epoch, from (seed, epoch) only."""
    return torch.randperm(num_train, generator=torch.Generator().manual_seed(stream_seed(seed, _DATA, epoch)))


def scale_images(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range of G's tanh."""
    return (images_u8.to(torch.float32) - 127.5) / 127.5


def fixed_noise(config: Config) -> torch.Tensor:
    """The run's sample-grid noise (64, latent_dim): the same grid rows at every step."""
    rng = torch.Generator().manual_seed(stream_seed(config.seed, _FIXED))
    return torch.randn(NUM_FIXED_SAMPLES, config.latent_dim, generator=rng)


# ----------------------------------------------------------------------------- the run
class TorchBackend:
    """gan_common.loop.Backend, one eager step at a time.

    The noise comes from `self.rng`, whose state is checkpointed; each epoch's data order
    comes from (seed, epoch) alone. So a resumed run draws exactly what the uninterrupted one would.
    """

    def __init__(self, config: Config, data_u8: np.ndarray):
        self.rank, self.world = parallel.init_distributed(config)
        self.is_primary = self.rank == 0
        self.gan = create(config)
        if self.world > 1:
            self.gan.g_sync, self.gan.d_sync = (torch.nn.parallel.DistributedDataParallel(m)
                                                for m in (self.gan.generator, self.gan.discriminator))
        self.step = 0
        self.data = torch.tensor(data_u8, dtype=torch.uint8)  # (N, 28, 28, 1), a copy: torch wants writable memory
        self.steps_per_epoch = self.data.shape[0] // config.batch_size  # the final partial batch is dropped
        self.rng = torch.Generator().manual_seed(stream_seed(config.seed, _NOISE))
        self.z_fixed = fixed_noise(config)
        self._perm_epoch, self._perm = -1, None

    def _batch(self) -> torch.Tensor:
        epoch, pos = divmod(self.step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm_epoch, self._perm = epoch, epoch_permutation(self.gan.config.seed, epoch, self.data.shape[0])
        batch = self.gan.config.batch_size
        idx = self._perm[pos * batch:(pos + 1) * batch][self._shard]  # this rank's slice of the global batch
        return scale_images(self.data[idx])  # (B / world, 28, 28, 1) in [-1, 1]

    @property
    def _shard(self) -> slice:
        local = self.gan.config.batch_size // self.world
        return slice(self.rank * local, (self.rank + 1) * local)

    def run(self, num_steps: int) -> torch.Tensor:
        config = self.gan.config
        rows = []
        for _ in range(num_steps):
            x = self._batch()
            # Every rank draws the global batch's noise (keeping the generators in step) and uses its slice.
            z_d = torch.randn(config.batch_size, config.latent_dim, generator=self.rng)[self._shard]
            z_g = torch.randn(config.batch_size, config.latent_dim, generator=self.rng)[self._shard]
            rows.append(train_step(self.gan, x, z_d, z_g))
            self.step += 1
        return parallel.mean_over_ranks(torch.stack(rows), self.world)  # (num_steps, 4), global-batch means

    def fetch(self, metrics: torch.Tensor) -> np.ndarray:
        return metrics.numpy().astype(np.float64)

    def sample(self) -> np.ndarray:
        return self.generate(self.z_fixed)

    def generate(self, z: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast(self.gan.config):
            return self.gan.generator(torch.from_numpy(np.asarray(z, np.float32))).float().numpy()

    def save_checkpoint(self) -> str:
        from gan_torch import checkpoint

        root = os.path.join(self.gan.config.out_dir, CHECKPOINT_DIR)
        # Ranks hold equal state (same updates, same generator): rank 0 writes it for all.
        folder = checkpoint.save(root, self.gan, self.step, self.rng) if self.is_primary else ""
        parallel.barrier(self.world)
        return folder


def _make_backend(config: Config, images: np.ndarray) -> TorchBackend:
    backend = TorchBackend(config, images)
    if config.resume:
        from gan_torch import checkpoint

        backend.step = checkpoint.restore_latest(os.path.join(config.out_dir, CHECKPOINT_DIR), backend.gan, backend.rng)
    return backend


def _load_evaluator():
    from gan_torch.evaluate import fid_and_coverage

    return fid_and_coverage


def train_and_evaluate(config: Config, workdir: str | None = None, given: Sequence[str] = ()) -> dict:
    """Train (or resume) the run described by `config` in `workdir`; return the last logged metrics."""
    torch.use_deterministic_algorithms(True)  # same seed, same machine: the same bits (and resume equals a full run)
    rank, _ = parallel.init_distributed(config)
    return run_training(config, workdir, given, _make_backend, "gan_torch", _load_evaluator, primary=rank == 0)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    config, given = parse_args(argv, "python -m gan_torch.train", __doc__.splitlines()[0] + " (PyTorch backend)")
    train_and_evaluate(config, given=given)
    return 0


if __name__ == "__main__":
    sys.exit(main())
