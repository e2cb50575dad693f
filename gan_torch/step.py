"""One training step, eager: `train_step(gan, state, inputs...) -> (state, metrics)`.

The same contract as gan_jax.step (keras 3's habit: same names, each backend's own semantics):
`create(config) -> (Gan, TrainState)`, and `train_step` with gan_jax's signature and return type.
The difference is ownership: gan_jax's step is pure and returns a new state; this one updates the
modules, optimisers and `state.step` in place and returns the same `state` object. Callers write
`state, metrics = train_step(gan, state, ...)` for either backend.

One step is Goodfellow et al. (2014), Algorithm 1, with k = --n-critic D updates, exactly as gan_jax.step:
  1. for each of the n_critic D updates, its own real batch x and fresh noise z_d; D descends
     its --loss on D(x) and D(G(z_d)) (gan: ascends log D(x) + log(1 - D(G(z_d)))), plus the
     gradient penalty (wgan_gp) or R1 (--r1-weight) where the config asks for one;
  2. fresh noise z_g; G descends its loss on D(G(z_g)) (gan: -log D(G(z_g)) non-saturating or
     log(1 - D(G(z_g))) minimax), through the D just updated;
  3. with --ema-decay d, the moving average of G's weights takes the new G: ema <- d ema + (1 - d) G.
With --conditional, D scores (image, label) pairs: real images with their own labels, fakes
G(z_d, y_d) and G(z_g, y_g) with labels drawn uniformly from the ten classes.
The training levers, each off by default and each a function of the global step (gan_common.schedules):
--g-lr / --d-lr (TTUR) and --lr-decay-steps set each net's Adam learning rate; --ema-rampup warms the EMA's
decay up; --r1-every k puts R1 (times k) on every k-th D update only; --augment transforms every image D
sees (gan_torch.augment), with random parameters passed in or, in a run, drawn from `state.rng`.
Also here: the state, G's moving average, and the seeded random streams (the noise generator in
`state.rng` is checkpointed, each epoch's order comes from (seed, epoch)), so a resumed run draws
what a whole one would. Written plainly, one step at a time: this backend is the reference gan_jax
is checked against.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from gan_common import schedules
from gan_common.augment import AugmentDraws
from gan_common.config import Config
from gan_torch.augment import augment as diff_augment
from gan_torch.augment import draw as draw_augment
from gan_torch.losses import d_loss_fn, g_loss_fn, gradient_penalty, mean_d_output, r1_penalty
from gan_torch.models import build_discriminator, build_generator

NUM_FIXED_SAMPLES = 64  # the sample grid: 8 x 8 images from one noise batch fixed for the run


# ----------------------------------------------------------------------------- state
@dataclasses.dataclass(frozen=True, eq=False)
class Gan:
    """The static half: what every step reads and none changes (gan_jax's also holds graph definitions,
    optimiser transformations and the mesh; torch keeps its optimisers in the state)."""

    config: Config


@dataclasses.dataclass(eq=False)
class TrainState:
    """Everything a step reads and writes, as live torch objects; `train_step` and `restore_latest` update it
    in place. Field names follow gan_jax.step.TrainState where the concept is the same."""

    generator: torch.nn.Module  # gan_torch.models.build_generator(config), in train mode
    discriminator: torch.nn.Module
    g_opt: torch.optim.Adam
    d_opt: torch.optim.Adam
    step: int  # global steps done; with `rng` and the seed it fixes the noise and the data order
    rng: torch.Generator  # the noise generator (z_d, z_g, eps, fake labels), its state checkpointed
    g_ema: torch.nn.Module | None = None  # the EMA of G's weights (--ema-decay); None when the run keeps none
    # The modules whose backward updates a net: the nets themselves, or under torchrun their
    # DistributedDataParallel wrappers, whose backward averages the gradients over ranks.
    g_sync: torch.nn.Module | None = None
    d_sync: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        self.g_sync = self.generator if self.g_sync is None else self.g_sync
        self.d_sync = self.discriminator if self.d_sync is None else self.d_sync


# Independent random streams derived from the run seed (the same roles as gan_jax's fold_in streams).
_INIT, _NOISE, _DATA, _FIXED = 0, 1, 2, 3  # eps and --conditional's fake labels: drawn from _NOISE's generator


def stream_seed(seed: int, *path: int) -> int:
    """A 32-bit seed for the stream `path` of run `seed`, so streams are unrelated even for equal seeds."""
    return int(np.random.SeedSequence([seed % 2**64, *path]).generate_state(1)[0])


def adam(params, config: Config, lr: float | None = None) -> torch.optim.Adam:
    """Adam with the config's settings (lr None: --lr); eps is added outside the square root, as in optax."""
    return torch.optim.Adam(params, lr=config.lr if lr is None else lr, betas=(config.beta1, config.beta2),
                            eps=config.adam_eps)


def set_lr(optimizer: torch.optim.Adam, config: Config, net: str, step: int) -> None:
    """With --lr-decay-steps, `net`'s learning rate for step `step` (gan_common.schedules, float64), set before its
    updates: a function of the step, so the optimiser's saved lr is never what a resumed run goes by."""
    if config.lr_decay_steps:
        for group in optimizer.param_groups:
            group["lr"] = schedules.learning_rate(config, net, step)


def autocast(config: Config, device: str = "cpu"):
    """--precision bf16: bfloat16 matmuls and activations in the forward passes on `device`; params stay float32."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=config.precision == "bf16")


def create(config: Config) -> tuple[Gan, TrainState]:
    """Fresh models, optimisers and noise generator for `config`, initialised from its seed (torch's global
    RNG is left as it was); step 0, and with --ema-decay an EMA equal to G."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(config.seed, _INIT))
        generator, discriminator = build_generator(config), build_discriminator(config)
    state = TrainState(
        generator=generator,
        discriminator=discriminator,
        g_opt=adam(generator.parameters(), config, schedules.base_lr(config, "g")),
        d_opt=adam(discriminator.parameters(), config, schedules.base_lr(config, "d")),
        step=0,
        rng=torch.Generator().manual_seed(stream_seed(config.seed, _NOISE)),
        g_ema=init_ema(config, generator),
    )
    return Gan(config), state


# ----------------------------------------------------------------------------- G's moving average
def init_ema(config: Config, generator: torch.nn.Module) -> torch.nn.Module | None:
    """The EMA at its start: a copy of G (--ema-rampup then forgets it fast), outside autograd and in eval
    mode (it only samples); None without --ema-decay."""
    return copy.deepcopy(generator).requires_grad_(False).eval() if config.ema_decay else None


@torch.no_grad()
def update_ema(ema: torch.nn.Module, generator: torch.nn.Module, decay: float, take: float | None = None) -> None:
    """ema <- decay * ema + take * generator, parameter by parameter, in place; take = 1 - decay unless given
    (gan_common.schedules.ema_weights gives both).

    Buffers (a DCGAN G's BatchNorm running statistics) are copied, not averaged: the EMA samples
    with G's live running statistics, as gan_jax's `sampling_params` with `state.g_stats`."""
    take = 1 - decay if take is None else take
    for e, p in zip(ema.parameters(), generator.parameters(), strict=True):
        e.copy_(decay * e + take * p)
    for e, b in zip(ema.buffers(), generator.buffers(), strict=True):
        e.copy_(b)


def sampling_generator(state: TrainState) -> torch.nn.Module:
    """The G that draws samples and evaluations (gan_jax's `sampling_params`): the EMA when the run keeps
    one, else G itself. The EMA holds G's running statistics as of its last update (`update_ema`)."""
    return state.generator if state.g_ema is None else state.g_ema


# ----------------------------------------------------------------------------- one step
def _loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Losses are taken in float32 (or wider: float64 in tests) whatever the compute dtype (--precision bf16)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def d_objective(gan: Gan, state: TrainState, x: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None,
                labels: tuple[torch.Tensor, torch.Tensor] | None = None, r1_now: bool = True):
    """D's loss on one real batch x (B, H, W, C) and one fake batch (B, H, W, C), plus its penalty; and D's
    real and fake logits, each (B,).

    labels (--conditional): (y_real, y_fake), each (B,) int, the classes D is told; the penalties
    take D at the real labels (WGAN-GP's interpolates too: D's gradient in x at a fixed class).
    r1_now: whether this D update carries R1 (--r1-every k: every k-th, weighted k times; `schedules.r1_due`).
    """
    config, batch = gan.config, x.shape[0]
    y_real, y_both = (None, None) if labels is None else (labels[0], torch.cat(labels))  # (B,), (2B,)

    def discriminate(images: torch.Tensor) -> torch.Tensor:  # the penalties' D calls
        return _loss_dtype(state.discriminator(images, y_real))

    with autocast(config, x.device.type):
        if config.d_batch_norm:
            # Real and fake batches go through D separately, each normalised by its own statistics (the
            # DCGAN recipe; one call on [real; fake] would mix them). Running statistics: real's, then fake's.
            y_fake = None if labels is None else labels[1]
            real_logits = _loss_dtype(state.d_sync(x, y_real))  # (B,)
            fake_logits = _loss_dtype(state.d_sync(fake, y_fake))  # (B,)
        else:
            # One D call on [real; fake], as in gan_jax; through DDP's wrapper under torchrun (the
            # penalties' calls share its parameters, so their gradients are averaged with it).
            logits = _loss_dtype(state.d_sync(torch.cat([x, fake]), y_both))  # (2B,)
            real_logits, fake_logits = logits[:batch], logits[batch:]
        loss = d_loss_fn(real_logits, fake_logits, config.loss)
        if config.loss == "wgan_gp":
            loss = loss + gradient_penalty(discriminate, x, fake, eps, config.gp_weight)
        if config.r1_weight and r1_now:
            loss = loss + r1_penalty(discriminate, x, config.r1_weight * config.r1_every)
    return loss, real_logits, fake_logits


def g_objective(gan: Gan, state: TrainState, z_g: torch.Tensor, y_g: torch.Tensor | None = None,
                augment: AugmentDraws | None = None) -> torch.Tensor:
    """G's loss on D's logits of G(z_g) (of (G(z_g, y_g), y_g) with --conditional); plain D: under
    torchrun only G's gradients are averaged over ranks. With --augment, D sees G(z_g) augmented by
    `augment`'s draws, and G's gradient flows back through the augmentation."""
    with autocast(gan.config, z_g.device.type):
        fake = state.g_sync(z_g, y_g)  # (B, H, W, C)
        if augment is not None:
            fake = diff_augment(fake, augment)
        logits = _loss_dtype(state.discriminator(fake, y_g))  # (B,)
    return g_loss_fn(logits, gan.config.g_loss, gan.config.loss)


def d_update(gan: Gan, state: TrainState, x: torch.Tensor, z_d: torch.Tensor, eps: torch.Tensor | None,
             y_real: torch.Tensor | None = None, y_d: torch.Tensor | None = None,
             augment: tuple[AugmentDraws, AugmentDraws] | None = None, update: int = 0
             ) -> tuple[TrainState, torch.Tensor]:
    """One D update on real batch x (B, H, W, C) and fakes G(z_d), z_d (B, latent_dim), in place; returns
    `state` and [d_loss, d_real, d_fake] (3,) (gan_jax.step.d_update's signature; its state is a new one).

    y_real, y_d (--conditional): x's labels and the fakes' drawn labels, each (B,) int.
    augment (--augment): the draws of x's and of the fakes' augmentations; D, and its penalties, see only
    augmented images. update: this update's index in the step, 0 .. n_critic - 1 (for --r1-every).
    """
    config = gan.config
    with torch.no_grad(), autocast(config, z_d.device.type):
        # (B, H, W, C); no G backward in D's step (train mode: G's running stats move)
        fake = state.generator(z_d, y_d)
    if augment is not None:  # D's inputs, constants of its gradient
        x, fake = diff_augment(x, augment[0]), diff_augment(fake, augment[1])
    r1_now = schedules.r1_due(state.step, config.n_critic, update, config.r1_every)
    loss, real_logits, fake_logits = d_objective(gan, state, x, fake, eps,
                                                 None if y_real is None else (y_real, y_d), r1_now)
    state.d_opt.zero_grad()
    loss.backward()
    state.d_opt.step()
    with torch.no_grad():
        kind = gan.config.loss
        return state, torch.stack([loss, mean_d_output(real_logits, kind), mean_d_output(fake_logits, kind)])


def train_step(gan: Gan, state: TrainState, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor,
               eps: torch.Tensor | None = None,
               labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               augment: tuple[AugmentDraws, AugmentDraws, AugmentDraws] | None = None,
               ) -> tuple[TrainState, torch.Tensor]:
    """n_critic D updates then one G step on given inputs: gan_jax.step.train_step's signature and return type,
    but `state` is updated in place (nets, optimisers, EMA, step + 1) and returned itself, not a copy.

    x: (n_critic * B, H, W, C) real images in [-1, 1] and z_d: (n_critic * B, latent_dim) noise,
    D update k taking rows [k B, (k + 1) B) of each (with n_critic 1, simply a batch);
    z_g: (B, latent_dim) noise; eps: (n_critic * B,) interpolation weights in [0, 1], wgan_gp only;
    labels (--conditional only): (y_real, y_d, y_g) int, x's labels and the fakes' drawn classes,
    y_real and y_d (n_critic * B,) in the rows of x and z_d, y_g (B,) with z_g.
    augment (--augment only): (real, fake, g) `AugmentDraws`, the draws of x's rows, of the D fakes' rows
    (n_critic * B each) and of G's fakes (B,); None with --augment: drawn here from `state.rng`, after
    everything the caller drew (`draw_step_augment`).
    Returns (state, metrics (4,) = [d_loss, g_loss, d_real, d_fake]), D's three averaged over its
    updates; d_loss includes the penalty, d_real / d_fake are `mean_d_output`.
    After the call each parameter's .grad holds the gradient of its own net's last update.
    """
    config, batch = gan.config, z_g.shape[0]
    y_real, y_d, y_g = (None, None, None) if labels is None else labels
    if augment is None and config.augment:
        augment = draw_step_augment(config, state.rng, batch)
    d_augment, g_augment = (None, None) if augment is None else (augment[:2], augment[2])

    def rows_of(a, rows: slice):  # a tensor, a tuple of them (AugmentDraws, d_augment) or None: rows `rows`
        if isinstance(a, tuple):
            parts = [rows_of(b, rows) for b in a]
            return AugmentDraws(*parts) if isinstance(a, AugmentDraws) else tuple(parts)
        return None if a is None else a[rows]

    def d_metrics_of(k: int) -> torch.Tensor:  # D update k, on rows [k B, (k + 1) B) of every input
        rows = slice(k * batch, (k + 1) * batch)
        inputs = (rows_of(a, rows) for a in (eps, y_real, y_d, d_augment))
        return d_update(gan, state, x[rows], z_d[rows], *inputs, update=k)[1]

    set_lr(state.d_opt, config, "d", state.step)
    d_metrics = torch.stack([d_metrics_of(k) for k in range(config.n_critic)]).mean(dim=0)  # (3,)

    # Update G: descend its loss on D(G(z_g)) through the updated D; D's parameters are constants here
    # (its running statistics move: both nets stay in train mode for every forward of a step).
    D = state.discriminator
    D.requires_grad_(False)  # backward stops at D's input: D's .grad keeps D's own step
    g_loss = g_objective(gan, state, z_g, y_g, g_augment)
    state.g_opt.zero_grad()
    g_loss.backward()
    set_lr(state.g_opt, config, "g", state.step)  # gan_jax's `decayed`
    state.g_opt.step()
    D.requires_grad_(True)
    if state.g_ema is not None:
        update_ema(state.g_ema, state.generator, *schedules.ema_weights(state.step, config.ema_decay,
                                                                        config.ema_rampup))
    state.step += 1

    with torch.no_grad():
        return state, torch.stack([d_metrics[0], g_loss, d_metrics[1], d_metrics[2]])


def draw_step_augment(config: Config, rng: torch.Generator, batch: int
                      ) -> tuple[AugmentDraws, AugmentDraws, AugmentDraws]:
    """--augment: train_step's `augment` drawn from `rng`, (real, fake, g): n_critic * batch rows, as many, batch.
    Under torchrun each rank draws its own slice's from its copy of the generator (ranks' draws coincide)."""
    rows = (config.n_critic * batch, config.n_critic * batch, batch)
    return tuple(draw_augment(rng, n, config.augment, config.image_shape) for n in rows)


# ----------------------------------------------------------------------------- data and fixed noise
def epoch_permutation(seed: int, epoch: int, num_train: int) -> torch.Tensor:
    """The order of the training set in epoch `epoch`, (num_train,) int64: a fresh permutation each epoch,
    from (seed, epoch) only."""
    return torch.randperm(num_train, generator=torch.Generator().manual_seed(stream_seed(seed, _DATA, epoch)))


def scale_images(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range of G's tanh."""
    return (images_u8.to(torch.float32) - 127.5) / 127.5


def fixed_noise(config: Config) -> torch.Tensor:
    """The run's sample-grid noise (64, latent_dim): the same grid rows at every step."""
    rng = torch.Generator().manual_seed(stream_seed(config.seed, _FIXED))
    return torch.randn(NUM_FIXED_SAMPLES, config.latent_dim, generator=rng)
