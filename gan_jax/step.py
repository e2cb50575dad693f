"""One training step, pure: `train_step(gan, state, inputs...) -> (new_state, metrics)`.

One step is Goodfellow et al. (2014), Algorithm 1, with k = --n-critic D updates:
  1. for each of the n_critic D updates, its own real batch x and fresh noise z_d; D descends
     its --loss on D(x) and D(G(z_d)) (gan: ascends log D(x) + log(1 - D(G(z_d)))), plus the
     gradient penalty (wgan_gp) or R1 (--r1-weight) where the config asks for one;
  2. fresh noise z_g; G descends its loss on D(G(z_g)) (gan: -log D(G(z_g)) non-saturating or
     log(1 - D(G(z_g))) minimax), through the D just updated;
  3. with --ema-decay d, the moving average of G's weights takes the new G: ema <- d ema + (1 - d) G.
With --conditional, D scores (image, label) pairs: real images with their own labels, fakes
G(z_d, y_d) and G(z_g, y_g) with labels drawn uniformly from the ten classes.
The training levers, each off by default and each a function of the global step (gan_common.schedules):
--g-lr / --d-lr (TTUR) and --lr-decay-steps scale each net's Adam step; --ema-rampup warms the EMA's decay
up; --r1-every k puts R1 (times k) on every k-th D update only; --augment transforms every image D sees
(gan_jax.augment), with its random parameters drawn like the noise and passed in.
Also here: the state (`TrainState`, `create`), G's moving average, and the random streams that
make every draw a function of (run key, step) alone, so a resumed run draws what a whole one would.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gan_common import schedules
from gan_common.augment import AugmentDraws
from gan_common.config import NUM_CLASSES, Config
from gan_jax import parallel
from gan_jax.augment import augment as diff_augment
from gan_jax.augment import draw as draw_augment
from gan_jax.layers import spectral_step
from gan_jax.losses import d_loss_fn, g_loss_fn, gradient_penalty, mean_d_output, r1_penalty
from gan_jax.models import build_discriminator, build_generator

NUM_FIXED_SAMPLES = 64  # the sample grid: 8 x 8 images from one noise batch fixed for the run


# ----------------------------------------------------------------------------- state
class TrainState(NamedTuple):
    """Everything a step reads and writes; a pytree, donated to the compiled loop."""

    g_params: nnx.State
    d_params: nnx.State
    g_stats: nnx.State  # BatchNorm running statistics (nnx.BatchStat); empty for the MLP
    d_stats: nnx.State  # the same, and with --d-norm spectral its weights' u, v (SpectralVector, a BatchStat)
    g_opt: optax.OptState
    d_opt: optax.OptState
    step: jax.Array  # () int32: global steps done; with `key` it fixes the noise and data order
    key: jax.Array  # (2,) uint32: the run key, jax.random.PRNGKey(seed)
    # The EMA of G's params (--ema-decay), shaped like g_params; None (a pytree with no leaves:
    # nothing to trace, donate or checkpoint) when the run keeps none.
    g_ema: nnx.State | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Gan:
    """The static half: graph definitions, optimisers and the device mesh. Hashed by identity, closed over by jit."""

    config: Config
    g_def: nnx.GraphDef
    d_def: nnx.GraphDef
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh | None = None  # the batch is split over it (gan_jax.parallel); None: one device

    # Eval mode (sampling, evaluation, the penalties' D after `d_power_iteration`): running statistics.
    # labels (B,) int: the classes for --conditional; None otherwise.
    def generate(self, g_params: nnx.State, g_stats: nnx.State, z: jax.Array,
                 labels: jax.Array | None = None) -> jax.Array:
        # (B, H, W, C) in [-1, 1], compute dtype
        return nnx.merge(self.g_def, g_params, g_stats)(z, labels, train=False)

    def discriminate(self, d_params: nnx.State, d_stats: nnx.State, x: jax.Array,
                     labels: jax.Array | None = None) -> jax.Array:
        return _loss_dtype(nnx.merge(self.d_def, d_params, d_stats)(x, labels, train=False))  # (B,)

    # Train mode (every forward of a training step, as torch's modules in .train()): batch statistics,
    # and the running statistics moved by this batch come back with the output.
    def generate_train(self, g_params: nnx.State, g_stats: nnx.State, z: jax.Array,
                       labels: jax.Array | None = None) -> tuple[jax.Array, nnx.State]:
        g = nnx.merge(self.g_def, g_params, g_stats, copy=True)  # fresh Variables: mutable at this trace level
        return g(z, labels, train=True), nnx.state(g, nnx.BatchStat)

    def discriminate_train(self, d_params: nnx.State, d_stats: nnx.State, x: jax.Array,
                           labels: jax.Array | None = None) -> tuple[jax.Array, nnx.State]:
        d = nnx.merge(self.d_def, d_params, d_stats, copy=True)
        return _loss_dtype(d(x, labels, train=True)), nnx.state(d, nnx.BatchStat)

    def d_power_iteration(self, d_params: nnx.State, d_stats: nnx.State) -> nnx.State:
        """D's state after what a train-mode call does to it apart from batch statistics: with --d-norm spectral,
        one power iteration of every u, v (it depends on the weights, not on the input); unchanged otherwise."""
        d = nnx.merge(self.d_def, d_params, d_stats, copy=True)
        spectral_step(d)
        return nnx.state(d, nnx.BatchStat)


def _loss_dtype(logits: jax.Array) -> jax.Array:
    """Losses are taken in float32 (or wider) whatever the compute dtype (--precision bf16)."""
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


# Streams derived from the run key with fold_in: resuming needs only (key, step).
_INIT, _NOISE, _DATA, _FIXED, _INTERP, _LABELS, _AUGMENT = 0, 1, 2, 3, 4, 5, 6


def adam(config: Config, lr: float | None = None) -> optax.GradientTransformation:
    """torch.optim.Adam's update: eps outside the square root, bias-corrected moments; lr None: --lr."""
    return optax.adam(config.lr if lr is None else lr, b1=config.beta1, b2=config.beta2, eps=config.adam_eps)


def optimiser_lr(config: Config, net: str) -> float:
    """The lr `net`'s optax Adam is built with: its constant one; 1 with --lr-decay-steps, whose `decayed`
    multiplies Adam's step by the step's lr instead (the same product, rounded once, as optax.adam(lr) makes)."""
    return 1.0 if config.lr_decay_steps else schedules.base_lr(config, net)


def decayed(config: Config, net: str, updates: nnx.State, step: jax.Array) -> nnx.State:
    """With --lr-decay-steps, Adam's lr-1 updates of `net` in step `step` times that step's `learning_rate`: the
    schedule without an optimiser state of its own, so checkpoints are laid out as without it. Unchanged
    (nothing traced) otherwise."""
    if not config.lr_decay_steps:
        return updates
    lr = learning_rate(config, net, step)
    return jax.tree.map(lambda u: u * lr.astype(u.dtype), updates)


def learning_rate(config: Config, net: str, step: jax.Array) -> jax.Array:
    """`net`'s lr in step `step` under --lr-decay-steps T: gan_common.schedules.learning_rate, computed on the
    host in float64 for each of the T + 1 steps and rounded once. So it is exactly torch's (float64) lr rounded to
    float32; computing lr (T - t) / T in float32 on the device instead was 1 ulp off in ~1/3 of the steps (XLA
    turns / T into * (1 / T)). A table of T + 1 floats (400 kB at T = 100k), indexed by the traced step."""
    table = jnp.asarray(_lr_table(config, net, np.dtype(_float())))
    return table[jnp.minimum(step, config.lr_decay_steps)]


@functools.cache
def _lr_table(config: Config, net: str, dtype: np.dtype) -> np.ndarray:
    return np.array([schedules.learning_rate(config, net, t) for t in range(config.lr_decay_steps + 1)], dtype)


def _float() -> jnp.dtype:
    """The schedules' float: float32, float64 in JAX's x64 mode (the parity tests' float64 runs), as torch's
    Python floats are; an int32 array divided by an int would be float32 even there."""
    return jnp.result_type(float)


def create(config: Config, mesh: jax.sharding.Mesh | None = None) -> tuple[Gan, TrainState]:
    """Fresh models and optimisers for `config`, initialised from its seed (on the default device)."""
    key = jax.random.PRNGKey(config.seed)
    init_key = jax.random.fold_in(key, _INIT)
    g_key, d_key = jax.random.split(init_key)
    # Parameters (what Adam updates) apart from BatchNorm's running statistics (what train mode moves).
    g_def, g_params, g_stats = nnx.split(build_generator(config, nnx.Rngs(params=g_key)), nnx.Param, nnx.BatchStat)
    d_def, d_params, d_stats = nnx.split(build_discriminator(config, nnx.Rngs(params=d_key)), nnx.Param,
                                         nnx.BatchStat)
    gan = Gan(config, g_def, d_def, adam(config, optimiser_lr(config, "g")), adam(config, optimiser_lr(config, "d")),
              mesh)
    state = TrainState(
        g_params=g_params,
        d_params=d_params,
        g_stats=g_stats,
        d_stats=d_stats,
        g_opt=gan.g_tx.init(g_params),
        d_opt=gan.d_tx.init(d_params),
        step=jnp.zeros((), jnp.int32),
        key=key,
        g_ema=init_ema(config, g_params),
    )
    return gan, state


# ----------------------------------------------------------------------------- G's moving average
def init_ema(config: Config, g_params: nnx.State) -> nnx.State | None:
    """The EMA at its start: a copy of G's params (--ema-rampup then forgets it fast); None without --ema-decay.

    A copy, not the same arrays: the state is donated, and one buffer must not be donated twice.
    """
    return jax.tree.map(jnp.copy, g_params) if config.ema_decay else None


def update_ema(ema: nnx.State, g_params: nnx.State, decay: float | jax.Array, take: float | jax.Array | None = None
               ) -> nnx.State:
    """ema <- decay * ema + take * g_params, leaf by leaf, take = 1 - decay unless given (gan_torch.step.update_ema's
    formula); decay and take are floats or traced scalars (`ema_weights`)."""
    take = 1 - decay if take is None else take
    return jax.tree.map(lambda e, p: decay * e + take * p, ema, g_params)


def ema_weights(config: Config, step: jax.Array) -> tuple:
    """(keep, take) after step `step`'s G update: gan_common.schedules.ema_weights, traced. Each warm-up value is
    one division of two integers, rounded once as the host's float64 value rounds to float32."""
    decay = config.ema_decay
    if not config.ema_rampup:
        return decay, 1 - decay
    ramp = step < schedules.ema_rampup_end(decay)  # an integer compare: both backends switch at the same step
    t = step.astype(_float())  # exact
    ramp_keep, ramp_take = (1 + t) / (schedules.EMA_RAMP + t), (schedules.EMA_RAMP - 1) / (schedules.EMA_RAMP + t)
    return jnp.where(ramp, ramp_keep, decay), jnp.where(ramp, ramp_take, 1 - decay)


def sampling_params(state: TrainState) -> nnx.State:
    """G's params that draw samples and evaluations: the EMA when the run keeps one, else G's own.

    The EMA averages parameters only (nnx.Param: kernels, biases, BatchNorm scales and biases); a
    DCGAN G samples in eval mode with the EMA's weights and G's live running statistics, `state.g_stats`.
    """
    return state.g_params if state.g_ema is None else state.g_ema



# ----------------------------------------------------------------------------- one step
def d_objective(gan: Gan, d_params: nnx.State, d_stats: nnx.State, x: jax.Array, fake: jax.Array,
                eps: jax.Array | None, labels: tuple[jax.Array, jax.Array] | None = None,
                r1_now: jax.Array | None = None):
    """D's loss on one real batch x and one fake batch, plus its penalty; aux: D's real and fake logits, new d_stats.

    labels (--conditional): (y_real, y_fake), each (B,) int, the classes D is told; the penalties
    take D at the real labels (WGAN-GP's interpolates too: D's gradient in x at a fixed class).
    r1_now (--r1-every k > 1): () bool, whether this D update carries R1 (`schedules.r1_due`).
    """
    config = gan.config
    y_real, y_fake = (None, None) if labels is None else labels
    if config.d_batch_norm:
        # Real and fake batches go through D separately, each normalised by its own statistics (the
        # DCGAN recipe; one call on [real; fake] would mix them). Running statistics: real's, then fake's.
        real, d_stats = gan.discriminate_train(d_params, d_stats, x, y_real)  # (B,)
        fake_logits, d_stats = gan.discriminate_train(d_params, d_stats, fake, y_fake)  # (B,)
    else:
        # One D call on [real; fake] (same maths, one matmul; on a mesh, concatenated per device so no row moves).
        y_both = None if labels is None else parallel.concat_batches(y_real, y_fake, gan.mesh)  # (2B,)
        logits, d_stats = gan.discriminate_train(d_params, d_stats, parallel.concat_batches(x, fake, gan.mesh),
                                                 y_both)  # (2B,)
        real, fake_logits = parallel.split_batches(logits, gan.mesh)  # (B,), (B,)
    loss = d_loss_fn(real, fake_logits, config.loss)
    # Python branches on the config: the default (gan, r1 0) traces no penalty at all.
    if config.loss == "wgan_gp":
        discriminate, d_stats = penalty_discriminator(gan, d_params, d_stats, y_real)
        loss = loss + gradient_penalty(discriminate, x, fake, eps, config.gp_weight)
    if config.r1_weight:
        penalty, d_stats = lazy_r1(gan, d_params, d_stats, x, y_real, r1_now)
        loss = loss + penalty
    return loss, (real, fake_logits, d_stats)


def lazy_r1(gan: Gan, d_params: nnx.State, d_stats: nnx.State, x: jax.Array, y_real: jax.Array | None,
            r1_now: jax.Array | None) -> tuple[jax.Array, nnx.State]:
    """R1 at real images x and D's state after it: every update with --r1-every 1; with k > 1, weight k x
    --r1-weight where r1_now, else 0 with d_stats untouched (no penalty D call, as in torch's step).

    A lax.cond, so the skipped updates run no double backward pass at all. Computing R1 every update and
    masking it costs what R1 every update does: on the 2-core CPU at --r1-every 4, CPU time a step (min of 6)
    was 11.4 ms (cond) against 13.6 ms (mask) and 13.5 ms (every update) for the default MLP, 55 against 65
    and 65 ms for a 32-channel DCGAN (docs/models.md).
    """
    def r1(stats: nnx.State, weight: float) -> tuple[jax.Array, nnx.State]:
        discriminate, stats = penalty_discriminator(gan, d_params, stats, y_real)
        return r1_penalty(discriminate, x, weight), stats

    every = gan.config.r1_every
    if every == 1:
        return r1(d_stats, gan.config.r1_weight)
    skip = jnp.zeros((), jnp.promote_types(x.dtype, jnp.float32))  # the penalty's dtype: a loss (_loss_dtype)
    return jax.lax.cond(r1_now, lambda s: r1(s, gan.config.r1_weight * every), lambda s: (skip, s), d_stats)


def penalty_discriminator(gan: Gan, d_params: nnx.State, d_stats: nnx.State, labels: jax.Array | None = None
                          ) -> tuple[Callable[[jax.Array], jax.Array], nnx.State]:
    """The D a penalty differentiates, x -> logits (B,), and D's state after its call.

    A penalty's D call is a train-mode call, as every D call of torch's step. D has no batch statistics here
    (config.validate), so that call is `Gan.d_power_iteration` (spectral norm's u, v move; nothing else does)
    followed by eval mode at the moved state, which is a function of x alone.
    """
    d_stats = gan.d_power_iteration(d_params, d_stats)
    return functools.partial(gan.discriminate, d_params, d_stats, labels=labels), d_stats


def g_objective(gan: Gan, g_params: nnx.State, g_stats: nnx.State, d_params: nnx.State, d_stats: nnx.State,
                z_g: jax.Array, y_g: jax.Array | None = None, augment: AugmentDraws | None = None
                ) -> tuple[jax.Array, tuple[nnx.State, nnx.State]]:
    """G's loss on D's logits of G(z_g) (of (G(z_g, y_g), y_g) with --conditional), both nets in train mode;
    D's parameters are constants here. With --augment, D sees G(z_g) augmented by `augment`'s draws, and G's
    gradient flows back through the augmentation. aux: the new (g_stats, d_stats), each net's running
    statistics moved by this forward."""
    fake, g_stats = gan.generate_train(g_params, g_stats, z_g, y_g)
    if augment is not None:
        fake = diff_augment(fake, augment)
    logits, d_stats = gan.discriminate_train(d_params, d_stats, fake, y_g)
    return g_loss_fn(logits, gan.config.g_loss, gan.config.loss), (g_stats, d_stats)


def d_update(gan: Gan, state: TrainState, x: jax.Array, z_d: jax.Array, eps: jax.Array | None,
             y_real: jax.Array | None = None, y_d: jax.Array | None = None,
             augment: tuple[AugmentDraws, AugmentDraws] | None = None, update: jax.Array | int = 0
             ) -> tuple[TrainState, jax.Array]:
    """One D update on real batch x (B, ...) and fakes G(z_d); returns the new state and [d_loss, d_real, d_fake].

    G runs in train mode (its running statistics move, as in torch's no-grad forward) but is not updated.
    y_real, y_d (--conditional): x's labels and the fakes' drawn labels, each (B,) int.
    augment (--augment): the draws of x's and of the fakes' augmentations; D, and its penalties, see only
    augmented images. update: this update's index in the step, 0 .. n_critic - 1 (for --r1-every).
    """
    # On a mesh, each D update's slice of an n_critic > 1 step is split over the devices anew.
    x, z_d, eps, y_real, y_d, augment = (jax.tree.map(lambda a: parallel.shard_batch(a, gan.mesh), a)
                                         for a in (x, z_d, eps, y_real, y_d, augment))
    fake, g_stats = gan.generate_train(state.g_params, state.g_stats, z_d, y_d)  # (B, H, W, C); outside grad
    if augment is not None:  # D's inputs, constants of its gradient: augmented outside it
        x, fake = diff_augment(x, augment[0]), diff_augment(fake, augment[1])
    labels = None if y_real is None else (y_real, y_d)
    config = gan.config
    r1_now = schedules.r1_due(state.step, config.n_critic, update, config.r1_every) if config.r1_every > 1 else None
    (loss, (real_logits, fake_logits, d_stats)), grads = jax.value_and_grad(
        lambda p: d_objective(gan, p, state.d_stats, x, fake, eps, labels, r1_now), has_aux=True)(state.d_params)
    updates, d_opt = gan.d_tx.update(grads, state.d_opt, state.d_params)
    updates = decayed(config, "d", updates, state.step)
    metrics = jnp.stack([loss, mean_d_output(real_logits, gan.config.loss),
                         mean_d_output(fake_logits, gan.config.loss)])
    state = state._replace(d_params=optax.apply_updates(state.d_params, updates), d_opt=d_opt, g_stats=g_stats,
                           d_stats=d_stats)
    return state, metrics


def train_step(
    gan: Gan, state: TrainState, x: jax.Array, z_d: jax.Array, z_g: jax.Array, eps: jax.Array | None = None,
    labels: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    augment: tuple[AugmentDraws, AugmentDraws, AugmentDraws] | None = None,
) -> tuple[TrainState, jax.Array]:
    """n_critic D updates then one G step on given inputs; pure, so parity tests can feed both backends alike.

    x: (n_critic * B, H, W, C) real images in [-1, 1] and z_d: (n_critic * B, latent_dim) noise,
    D update k taking rows [k B, (k + 1) B) of each (with n_critic 1, simply a batch);
    z_g: (B, latent_dim) noise; eps: (n_critic * B,) interpolation weights in [0, 1], wgan_gp only;
    labels (--conditional only): (y_real, y_d, y_g) int, x's labels and the fakes' drawn classes,
    y_real and y_d (n_critic * B,) in the rows of x and z_d, y_g (B,) with z_g.
    augment (--augment only): (real, fake, g) `AugmentDraws`, the draws of x's rows, of the D fakes' rows
    (n_critic * B each) and of G's fakes (B,) (`step_augment`).
    Returns the new state and metrics (4,) = [d_loss, g_loss, d_real, d_fake], D's three
    averaged over its updates; d_loss includes the penalty, d_real / d_fake are `mean_d_output`.
    """
    config = gan.config
    n_critic, batch = config.n_critic, z_g.shape[0]
    y_real, y_d, y_g = (None, None, None) if labels is None else labels
    d_augment, g_augment = (None, None) if augment is None else (augment[:2], augment[2])
    if n_critic == 1:
        state, d_metrics = d_update(gan, state, x, z_d, eps, y_real, y_d, d_augment)
    else:  # one scan over the n_critic (B, ...) slices, so the compiled step does not grow with n_critic
        slices = jax.tree.map(lambda a: a.reshape(n_critic, batch, *a.shape[1:]), (x, z_d, eps, y_real, y_d,
                                                                                   d_augment))
        state, d_metrics = jax.lax.scan(lambda s, inputs: d_update(gan, s, *inputs[0], update=inputs[1]), state,
                                        (slices, jnp.arange(n_critic)))
        d_metrics = jnp.mean(d_metrics, axis=0)

    # Update G: descend its loss on D(G(z_g)) through the updated D.
    g_augment = jax.tree.map(lambda a: parallel.shard_batch(a, gan.mesh), g_augment)
    (g_loss, (g_stats, d_stats)), g_grads = jax.value_and_grad(
        lambda p: g_objective(gan, p, state.g_stats, state.d_params, state.d_stats, z_g, y_g, g_augment),
        has_aux=True)(state.g_params)
    g_updates, g_opt = gan.g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, decayed(config, "g", g_updates, state.step))
    # A Python branch on the config: without --ema-decay the step traces no EMA at all.
    g_ema = update_ema(state.g_ema, g_params, *ema_weights(config, state.step)) if config.ema_decay else None

    metrics = jnp.stack([d_metrics[0], g_loss, d_metrics[1], d_metrics[2]])
    new_state = state._replace(g_params=g_params, g_opt=g_opt, g_stats=g_stats, d_stats=d_stats, step=state.step + 1,
                               g_ema=g_ema)
    return new_state, metrics


def step_noise(key: jax.Array, step: jax.Array, batch: int, latent_dim: int,
               n_critic: int = 1) -> tuple[jax.Array, jax.Array]:
    """z_d (n_critic * B, latent_dim), z_g (B, latent_dim) ~ N(0, I) for global step `step`, from (key, step) only."""
    k_d, k_g = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, _NOISE), step))
    return jax.random.normal(k_d, (n_critic * batch, latent_dim)), jax.random.normal(k_g, (batch, latent_dim))


def step_interpolation(key: jax.Array, step: jax.Array, num: int) -> jax.Array:
    """eps (num,) ~ U(0, 1): WGAN-GP's interpolation weights for global step `step`, a stream of its own."""
    return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, _INTERP), step), (num,))


def step_labels(key: jax.Array, step: jax.Array, batch: int, n_critic: int = 1) -> tuple[jax.Array, jax.Array]:
    """--conditional: the fakes' classes y_d (n_critic * B,), y_g (B,) int32, uniform over the ten, for global
    step `step`: a stream of its own, so the noise and data order are those of the unconditional run."""
    k_d, k_g = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, _LABELS), step))
    return (jax.random.randint(k_d, (n_critic * batch,), 0, NUM_CLASSES, jnp.int32),
            jax.random.randint(k_g, (batch,), 0, NUM_CLASSES, jnp.int32))


def step_draws(key: jax.Array, step: jax.Array, config: Config) -> tuple[jax.Array | None, ...]:
    """What step `step` draws but the augmentation (`step_augment`): (z_d, z_g, eps, y_d, y_g), None where the
    config draws no such thing.

    eps only with wgan_gp; y_d, y_g only with --conditional. Each from its own stream of (key, step).
    """
    batch = config.batch_size
    z_d, z_g = step_noise(key, step, batch, config.latent_dim, config.n_critic)
    eps = step_interpolation(key, step, config.images_per_step) if config.loss == "wgan_gp" else None
    y_d, y_g = step_labels(key, step, batch, config.n_critic) if config.conditional else (None, None)
    return z_d, z_g, eps, y_d, y_g


def step_augment(key: jax.Array, step: jax.Array, config: Config
                 ) -> tuple[AugmentDraws, AugmentDraws, AugmentDraws] | None:
    """--augment: train_step's `augment` for global step `step`, (real, fake, g): the draws of the n_critic B
    real images, of as many D fakes and of G's B fakes, from a stream of their own (None without --augment)."""
    if not config.augment:
        return None
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, _AUGMENT), step), 3)
    rows = (config.images_per_step, config.images_per_step, config.batch_size)
    return tuple(draw_augment(k, n, config.augment, config.image_shape) for k, n in zip(keys, rows, strict=True))


def epoch_permutation(key: jax.Array, epoch: jax.Array, num_train: int) -> jax.Array:
    """The order of the training set in epoch `epoch`: a fresh permutation each epoch."""
    return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, _DATA), epoch), num_train)


def scale_images(images_u8: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1], the range of G's tanh.

    (u - 127.5) / 127.5 rather than u / 127.5 - 1: XLA turns the division into a multiply by a
    rounded 1/127.5, which the first form keeps exactly inside [-1, 1] (255 -> 1.0, not 1.0000001).
    """
    return (images_u8.astype(jnp.float32) - 127.5) / 127.5



def fixed_noise(config: Config) -> jax.Array:
    """The run's sample-grid noise (64, latent_dim): the same grid rows at every step, in both backends' runs."""
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(config.seed), _FIXED),
                             (NUM_FIXED_SAMPLES, config.latent_dim))

