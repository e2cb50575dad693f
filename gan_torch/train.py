"""Training: losses on logits, an eager `train_step`, and the Backend the shared loop drives.

One step is Goodfellow et al. (2014), Algorithm 1, with k = --n-critic D updates, exactly as gan_jax.train:
  1. for each of the n_critic D updates, its own real batch x and fresh noise z_d; D descends
     its --loss on D(x) and D(G(z_d)) (gan: ascends log D(x) + log(1 - D(G(z_d)))), plus the
     gradient penalty (wgan_gp) or R1 (--r1-weight) where the config asks for one;
  2. fresh noise z_g; G descends its loss on D(G(z_g)) (gan: -log D(G(z_g)) non-saturating or
     log(1 - D(G(z_g))) minimax), through the D just updated;
  3. with --ema-decay d, the moving average of G's weights takes the new G: ema <- d ema + (1 - d) G.
With --conditional, D scores (image, label) pairs: real images with their own labels, fakes
G(z_d, y_d) and G(z_g, y_g) with labels drawn uniformly from the ten classes.
Written plainly, one step at a time: this backend is the reference gan_jax is checked against.

    python -m gan_torch.train --help
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gan_common.config import NUM_CLASSES, Config, parse_args
from gan_common.errors import UserError, cli_entry
from gan_common.loop import CHECKPOINT_DIR, run_training
from gan_torch import parallel
from gan_torch.models import build_discriminator, build_generator

NUM_FIXED_SAMPLES = 64  # the sample grid: 8 x 8 digits from one noise batch fixed for the run


# ----------------------------------------------------------------------------- losses
def d_loss_fn(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str = "gan") -> torch.Tensor:
    """D's loss on its logits of a real and a fake batch (batch means summed), for --loss `loss`."""
    if loss == "gan":  # -log sigma(D(x)) - log(1 - sigma(D(G(z)))): -log sigma(l) = softplus(-l), stable
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if loss == "hinge":  # max(0, 1 - D(x)) + max(0, 1 + D(G(z)))
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if loss == "lsgan":  # (D(x) - 1)^2 / 2 + D(G(z))^2 / 2: targets 1 for real, 0 for fake
        return 0.5 * torch.square(real_logits - 1).mean() + 0.5 * torch.square(fake_logits).mean()
    if loss == "wgan_gp":  # D(G(z)) - D(x): minus the critic's Wasserstein estimate (the penalty is added apart)
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown loss {loss!r}")


def g_loss_fn(fake_logits: torch.Tensor, g_loss: str, loss: str = "gan") -> torch.Tensor:
    """G's loss on D's logits of fresh fakes; for --loss gan, `g_loss` picks non_saturating or minimax."""
    if loss == "gan" and g_loss == "non_saturating":  # -log sigma(l)
        return F.softplus(-fake_logits).mean()
    if loss == "gan" and g_loss == "minimax":  # log(1 - sigma(l))
        return -F.softplus(fake_logits).mean()
    if loss in ("hinge", "wgan_gp"):  # -D(G(z)): raise the critic's score of the fakes
        return -fake_logits.mean()
    if loss == "lsgan":  # (D(G(z)) - 1)^2 / 2: pull the fakes to the real target
        return 0.5 * torch.square(fake_logits - 1).mean()
    raise ValueError(f"unknown loss {loss!r} / g_loss {g_loss!r}")


def mean_d_output(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """The d_real / d_fake metrics: mean sigma(D) for gan (a probability); the mean raw output otherwise,
    the value the loss acts on (hinge: margin +-1; lsgan: targets 1 / 0; wgan_gp: their gap estimates W)."""
    return torch.sigmoid(logits).mean() if loss == "gan" else logits.mean()


def _input_grads(discriminate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(B, 784): grad_x D(x) per sample, as the gradient of the batch sum (D treats samples independently).

    create_graph=True keeps the graph of this gradient, so a penalty on it back-propagates to D's parameters.
    """
    x = x.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(discriminate(x).sum(), x, create_graph=True)
    return grads.reshape(x.shape[0], -1)


def gradient_penalty(discriminate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor, weight: float) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): weight * mean((|grad D(x_hat)|_2 - 1)^2), x_hat = eps x + (1 - eps) fake.

    eps: (B,) ~ U(0, 1), one per sample. Its gradient w.r.t. D's parameters is a double backpropagation.
    """
    e = eps.reshape(-1, 1, 1, 1)
    norms = torch.sqrt(torch.square(_input_grads(discriminate, e * x + (1 - e) * fake)).sum(dim=1))  # (B,)
    return weight * torch.square(norms - 1).mean()


def r1_penalty(discriminate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, weight: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): weight / 2 * mean(|grad D(x)|^2) on real images x."""
    return weight / 2 * torch.square(_input_grads(discriminate, x)).sum(dim=1).mean()


# ----------------------------------------------------------------------------- state
@dataclasses.dataclass(eq=False)
class Gan:
    """Both nets and their optimisers. `train_step` updates them in place (gan_jax's returns new state)."""

    config: Config
    generator: torch.nn.Module  # gan_torch.models.build_generator(config)
    discriminator: torch.nn.Module
    g_opt: torch.optim.Adam
    d_opt: torch.optim.Adam
    # The modules whose backward updates a net: the nets themselves, or under torchrun their
    # DistributedDataParallel wrappers, whose backward averages the gradients over ranks.
    g_sync: torch.nn.Module | None = None
    d_sync: torch.nn.Module | None = None
    g_ema: torch.nn.Module | None = None  # the EMA of G's weights (--ema-decay); None when the run keeps none

    def __post_init__(self) -> None:
        self.g_sync = self.generator if self.g_sync is None else self.g_sync
        self.d_sync = self.discriminator if self.d_sync is None else self.d_sync


# Independent random streams derived from the run seed (the same roles as gan_jax's fold_in streams).
_INIT, _NOISE, _DATA, _FIXED = 0, 1, 2, 3  # eps and --conditional's fake labels: drawn from _NOISE's generator


def stream_seed(seed: int, *path: int) -> int:
    """A 32-bit seed for the stream `path` of run `seed`, so streams are unrelated even for equal seeds."""
    return int(np.random.SeedSequence([seed % 2**64, *path]).generate_state(1)[0])


def adam(params, config: Config) -> torch.optim.Adam:
    """Adam with the config's settings; eps is added outside the square root, as in optax."""
    return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.adam_eps)


def autocast(config: Config, device: str = "cpu"):
    """--precision bf16: bfloat16 matmuls and activations in the forward passes on `device`; params stay float32."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=config.precision == "bf16")


def create(config: Config) -> Gan:
    """Fresh models and optimisers for `config`, initialised from its seed (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(config.seed, _INIT))
        generator, discriminator = build_generator(config), build_discriminator(config)
    return Gan(config, generator, discriminator, adam(generator.parameters(), config),
               adam(discriminator.parameters(), config), g_ema=init_ema(config, generator))


# ----------------------------------------------------------------------------- G's moving average
def init_ema(config: Config, generator: torch.nn.Module) -> torch.nn.Module | None:
    """The EMA at its start: a copy of G (no warm-up or bias correction), outside autograd and in eval
    mode (it only samples); None without --ema-decay."""
    return copy.deepcopy(generator).requires_grad_(False).eval() if config.ema_decay else None


@torch.no_grad()
def update_ema(ema: torch.nn.Module, generator: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * generator, parameter by parameter, in place.

    Buffers (a DCGAN G's BatchNorm running statistics) are copied, not averaged: the EMA samples
    with G's live running statistics, as gan_jax's `sampling_params` with `state.g_stats`."""
    for e, p in zip(ema.parameters(), generator.parameters()):
        e.copy_(decay * e + (1 - decay) * p)
    for e, b in zip(ema.buffers(), generator.buffers()):
        e.copy_(b)


def sampling_generator(gan: Gan) -> torch.nn.Module:
    """The G that draws samples and evaluations: the EMA when the run keeps one, else G itself.
    The EMA holds G's running statistics as of its last update (`update_ema`)."""
    return gan.generator if gan.g_ema is None else gan.g_ema


# ----------------------------------------------------------------------------- one step
def _loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Losses are taken in float32 (or wider: float64 in tests) whatever the compute dtype (--precision bf16)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def d_objective(gan: Gan, x: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None,
                labels: tuple[torch.Tensor, torch.Tensor] | None = None):
    """D's loss on one real batch x and one fake batch, plus its penalty; and D's real and fake logits.

    labels (--conditional): (y_real, y_fake), each (B,) int, the classes D is told; the penalties
    take D at the real labels (WGAN-GP's interpolates too: D's gradient in x at a fixed class).
    """
    config, batch = gan.config, x.shape[0]
    y_real, y_both = (None, None) if labels is None else (labels[0], torch.cat(labels))  # (B,), (2B,)

    def discriminate(images: torch.Tensor) -> torch.Tensor:  # the penalties' D calls
        return _loss_dtype(gan.discriminator(images, y_real))

    with autocast(config, x.device.type):
        if config.d_batch_norm:
            # Real and fake batches go through D separately, each normalised by its own statistics (the
            # DCGAN recipe; one call on [real; fake] would mix them). Running statistics: real's, then fake's.
            y_fake = None if labels is None else labels[1]
            real_logits = _loss_dtype(gan.d_sync(x, y_real))  # (B,)
            fake_logits = _loss_dtype(gan.d_sync(fake, y_fake))  # (B,)
        else:
            # One D call on [real; fake], as in gan_jax; through DDP's wrapper under torchrun (the
            # penalties' calls share its parameters, so their gradients are averaged with it).
            logits = _loss_dtype(gan.d_sync(torch.cat([x, fake]), y_both))  # (2B,)
            real_logits, fake_logits = logits[:batch], logits[batch:]
        loss = d_loss_fn(real_logits, fake_logits, config.loss)
        if config.loss == "wgan_gp":
            loss = loss + gradient_penalty(discriminate, x, fake, eps, config.gp_weight)
        if config.r1_weight:
            loss = loss + r1_penalty(discriminate, x, config.r1_weight)
    return loss, real_logits, fake_logits


def g_objective(gan: Gan, z_g: torch.Tensor, y_g: torch.Tensor | None = None) -> torch.Tensor:
    """G's loss on D's logits of G(z_g) (of (G(z_g, y_g), y_g) with --conditional); plain D: under
    torchrun only G's gradients are averaged over ranks."""
    with autocast(gan.config, z_g.device.type):
        logits = _loss_dtype(gan.discriminator(gan.g_sync(z_g, y_g), y_g))  # (B,)
    return g_loss_fn(logits, gan.config.g_loss, gan.config.loss)


def d_update(gan: Gan, x: torch.Tensor, z_d: torch.Tensor, eps: torch.Tensor | None,
             y_real: torch.Tensor | None = None, y_d: torch.Tensor | None = None) -> torch.Tensor:
    """One D update on real batch x (B, ...) and fakes G(z_d), in place; returns [d_loss, d_real, d_fake].

    y_real, y_d (--conditional): x's labels and the fakes' drawn labels, each (B,) int.
    """
    with torch.no_grad(), autocast(gan.config, z_d.device.type):
        # (B, 28, 28, 1); no G backward in D's step (train mode: G's running stats move)
        fake = gan.generator(z_d, y_d)
    loss, real_logits, fake_logits = d_objective(gan, x, fake, eps, None if y_real is None else (y_real, y_d))
    gan.d_opt.zero_grad()
    loss.backward()
    gan.d_opt.step()
    with torch.no_grad():
        kind = gan.config.loss
        return torch.stack([loss, mean_d_output(real_logits, kind), mean_d_output(fake_logits, kind)])


def train_step(gan: Gan, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor,
               eps: torch.Tensor | None = None,
               labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """n_critic D updates then one G step on given inputs, updating `gan` in place.

    x: (n_critic * B, 28, 28, 1) real images in [-1, 1] and z_d: (n_critic * B, latent_dim) noise,
    D update k taking rows [k B, (k + 1) B) of each (with n_critic 1, simply a batch);
    z_g: (B, latent_dim) noise; eps: (n_critic * B,) interpolation weights in [0, 1], wgan_gp only;
    labels (--conditional only): (y_real, y_d, y_g) int, x's labels and the fakes' drawn classes,
    y_real and y_d (n_critic * B,) in the rows of x and z_d, y_g (B,) with z_g.
    Returns metrics (4,) = [d_loss, g_loss, d_real, d_fake], D's three averaged over its updates;
    d_loss includes the penalty, d_real / d_fake are `mean_d_output`.
    After the call each parameter's .grad holds the gradient of its own net's last update.
    """
    batch = z_g.shape[0]
    y_real, y_d, y_g = (None, None, None) if labels is None else labels

    def rows_of(a: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
        return None if a is None else a[rows]

    d_metrics = torch.stack([
        d_update(gan, x[rows], z_d[rows], *(rows_of(a, rows) for a in (eps, y_real, y_d)))
        for rows in (slice(k * batch, (k + 1) * batch) for k in range(gan.config.n_critic))
    ]).mean(dim=0)

    # Update G: descend its loss on D(G(z_g)) through the updated D; D's parameters are constants here
    # (its running statistics move: both nets stay in train mode for every forward of a step).
    D = gan.discriminator
    D.requires_grad_(False)  # backward stops at D's input: D's .grad keeps D's own step
    g_loss = g_objective(gan, z_g, y_g)
    gan.g_opt.zero_grad()
    g_loss.backward()
    gan.g_opt.step()
    D.requires_grad_(True)
    if gan.g_ema is not None:
        update_ema(gan.g_ema, gan.generator, gan.config.ema_decay)

    with torch.no_grad():
        return torch.stack([d_metrics[0], g_loss, d_metrics[1], d_metrics[2]])


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

    def __init__(self, config: Config, data_u8: np.ndarray, labels: np.ndarray | None = None):
        from gan_common.sampling import class_grid_inputs

        self.rank, self.world = parallel.init_distributed(config)
        self.is_primary = self.rank == 0
        self.gan = create(config)
        if self.world > 1:
            for net in (self.gan.generator, self.gan.discriminator):
                parallel.global_batch_norm(net)  # statistics of the global batch, not of each rank's slice
            self.gan.g_sync, self.gan.d_sync = (torch.nn.parallel.DistributedDataParallel(m)
                                                for m in (self.gan.generator, self.gan.discriminator))
        self.step = 0
        self.data = torch.tensor(data_u8, dtype=torch.uint8)  # (N, 28, 28, 1), a copy: torch wants writable memory
        self.steps_per_epoch = config.steps_per_epoch(self.data.shape[0])  # the final partial step is dropped
        self.rng = torch.Generator().manual_seed(stream_seed(config.seed, _NOISE))
        self.z_fixed = fixed_noise(config)
        self.labels = self.grid_labels = None  # --conditional: the training labels, the grid's rows' classes
        if config.conditional:
            if labels is None:
                raise ValueError("a --conditional run needs the training set's labels")
            self.labels = torch.tensor(np.asarray(labels), dtype=torch.int64)  # (N,)
            z_grid, grid_labels = class_grid_inputs(self.z_fixed.numpy())
            self.z_fixed, self.grid_labels = torch.from_numpy(z_grid), grid_labels
        self._perm_epoch, self._perm = -1, None

    def _batch(self) -> torch.Tensor:
        """The step's n_critic * B real images: positions [t n_critic B, (t + 1) n_critic B) of the epoch's
        permutation at step t of an epoch, D update k taking the k-th B (as gan_jax.train.make_train_chunk)."""
        return scale_images(self.data[self._batch_rows()])  # (n_critic B / world, 28, 28, 1) in [-1, 1]

    def _batch_labels(self) -> torch.Tensor:
        """--conditional: the labels of `_batch()`'s images, row for row."""
        return self.labels[self._batch_rows()]

    def _batch_rows(self) -> torch.Tensor:
        """The training-set indices of the step's images (this rank's slice), as `_batch` describes."""
        epoch, pos = divmod(self.step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm_epoch, self._perm = epoch, epoch_permutation(self.gan.config.seed, epoch, self.data.shape[0])
        n = self.gan.config.images_per_step
        idx = self._perm[pos * n:(pos + 1) * n]  # (n_critic B,): the global step's images
        return self._local(idx)

    def _local(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's slice of each global batch B in `rows` (n_critic B, ...): all of it on one rank."""
        if self.world == 1:
            return rows
        batch, local = self.gan.config.batch_size, self.gan.config.batch_size // self.world
        per_batch = rows.reshape(-1, batch, *rows.shape[1:])  # (n_critic, B, ...)
        return per_batch[:, self.rank * local:(self.rank + 1) * local].reshape(-1, *rows.shape[1:])

    def run(self, num_steps: int) -> torch.Tensor:
        config = self.gan.config
        rows = []
        for _ in range(num_steps):
            x = self._batch()
            # Every rank draws the global batch's noise (keeping the generators in step) and uses its slice.
            z_d = self._local(torch.randn(config.images_per_step, config.latent_dim, generator=self.rng))
            z_g = self._local(torch.randn(config.batch_size, config.latent_dim, generator=self.rng))
            # WGAN-GP's interpolation weights come last from the same generator: other losses draw what they did.
            eps = torch.rand(config.images_per_step, generator=self.rng) if config.loss == "wgan_gp" else None
            labels = None
            if config.conditional:  # the fakes' classes come after all of the above: unconditional runs draw as before
                y_d = torch.randint(NUM_CLASSES, (config.images_per_step,), generator=self.rng)
                y_g = torch.randint(NUM_CLASSES, (config.batch_size,), generator=self.rng)
                labels = (self._batch_labels(), self._local(y_d), self._local(y_g))
            rows.append(train_step(self.gan, x, z_d, z_g, None if eps is None else self._local(eps), labels))
            self.step += 1
        return parallel.mean_over_ranks(torch.stack(rows), self.world)  # (num_steps, 4), global-batch means

    def fetch(self, metrics: torch.Tensor) -> np.ndarray:
        return metrics.numpy().astype(np.float64)

    def sample(self) -> np.ndarray:
        return self.generate(self.z_fixed, self.grid_labels)

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        y = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
        G = sampling_generator(self.gan)
        training = G.training
        G.eval()  # sampling: BatchNorm's running statistics, which it leaves alone
        try:
            with torch.no_grad(), autocast(self.gan.config):
                return G(torch.from_numpy(np.asarray(z, np.float32)), y).float().numpy()
        finally:
            G.train(training)

    def save_checkpoint(self) -> str:
        from gan_torch import checkpoint

        root = os.path.join(self.gan.config.out_dir, CHECKPOINT_DIR)
        # Ranks hold equal state (same updates, same generator): rank 0 writes it for all.
        folder = checkpoint.save(root, self.gan, self.step, self.rng) if self.is_primary else ""
        parallel.barrier(self.world)
        return folder


def _make_backend(config: Config, images: np.ndarray, labels: np.ndarray | None = None) -> TorchBackend:
    backend = TorchBackend(config, images, labels)
    if config.resume:
        from gan_torch import checkpoint

        backend.step = checkpoint.restore_latest(os.path.join(config.out_dir, CHECKPOINT_DIR), backend.gan, backend.rng)
    return backend


def _load_evaluator(dataset: str, data_source: str, data_dir: str):
    from gan_torch.evaluate import evaluator

    return evaluator(dataset, data_source, data_dir)


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
