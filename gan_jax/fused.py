"""The hot loop: K training steps in one compiled call (`lax.scan`), the uint8 training set resident on
the device, the host asleep until the call returns."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from gan_jax import parallel
from gan_jax.step import Gan, TrainState, epoch_permutation, scale_images, step_augment, step_draws, train_step

StepFn = Callable[..., tuple[TrainState, jax.Array]]  # train_step's signature


def make_train_chunk(gan: Gan, num_train: int, step_fn: StepFn = train_step):
    """A `train_chunk(state, data, num_steps, data_labels=None) -> (state, metrics (num_steps, 4))`: K compiled steps.

    `data` is the whole uint8 training set (N, H, W, C) on the device. Each epoch starts by
    copying it in the order of the epoch's permutation (`epoch_permutation`); step t of the epoch
    then takes rows [t n_critic B, (t + 1) n_critic B) of that copy, D update k the k-th B of them,
    so an epoch is one pass of D over the data. (One gather of N rows an epoch, ~20 ms for MNIST on
    a CPU, and a contiguous slice a step, rather than n_critic B scattered rows a step: faster at
    batch 64, benchmarks/RESULTS.md; it costs a second copy of the set on the device.) Each step draws
    its noise from (key, step) and runs `step_fn` (`train_step`; tests pass one that records its
    inputs; with --augment it gets the step's `step_augment` draws as `augment=`). The state is donated: its
    buffers are reused, never copied. With --conditional,
    `data_labels` is the training set's (N,) int32 labels on the device, shuffled with the images;
    each step draws its fakes' classes from (key, step) (`step_labels`).
    On a mesh (`gan.mesh`), state and data are replicated and each device takes and draws only
    its slice of the batch: threefry's partitionable mode makes every slice of the noise equal to
    the same rows drawn on one device, so the run computes the same numbers on any number of
    devices, up to the order of the gradient sums.
    """
    config = gan.config
    images_per_step = config.images_per_step
    steps_per_epoch = config.steps_per_epoch(num_train)  # the final partial step's images are dropped
    mesh = gan.mesh
    out_shardings = None if mesh is None else parallel.replicated(mesh)

    def epoch_order(key: jax.Array, epoch: jax.Array, data: jax.Array, data_labels: jax.Array | None):
        """The training set in epoch `epoch`'s order: (images (N, H W C) uint8, labels (N,) or None)."""
        perm = epoch_permutation(key, epoch, num_train)
        rows = data.reshape(data.shape[0], -1)  # (N, H W C): gathered as rows, no layout change after the gather
        return rows[perm], None if data_labels is None else data_labels[perm]

    @functools.partial(jax.jit, static_argnames="num_steps", donate_argnums=(0, 1), out_shardings=out_shardings)
    def scan_steps(state: TrainState, shuffled: tuple, data: jax.Array, data_labels: jax.Array | None,
                   num_steps: int):
        # Every step's random draws at once, before the loop: each is still a function of (key, step)
        # alone, so the numbers are those of drawing step by step, but one threefry call over K steps
        # replaces 2-4 small ones per step (XLA:CPU runs threefry as a rolled loop, ~0.15 ms a
        # step at batch 64 drawn per step; benchmarks/RESULTS.md).
        steps = state.step + jnp.arange(num_steps, dtype=state.step.dtype)
        draws = jax.vmap(lambda step: (*step_draws(state.key, step, config), step_augment(state.key, step, config))
                         )(steps)
        draws = jax.tree.map(lambda d: parallel.shard_batch(d, mesh, axis=1), draws)  # (K, rows, ...)

        def body(carry, draw):
            state, shuffled = carry
            epoch, pos = state.step // steps_per_epoch, state.step % steps_per_epoch
            # A new epoch reshuffles; the shuffled copy rides in the carry between epoch starts.
            shuffled = jax.lax.cond(pos == 0, lambda: epoch_order(state.key, epoch, data, data_labels),
                                    lambda: shuffled)
            start = pos * images_per_step
            rows = jax.lax.dynamic_slice_in_dim(shuffled[0], start, images_per_step)  # (n_critic B, H W C) uint8
            x = parallel.shard_batch(scale_images(rows).reshape(-1, *data.shape[1:]), mesh)  # in [-1, 1]
            z_d, z_g, eps, y_d, y_g, augment = jax.tree.map(lambda d: parallel.shard_batch(d, mesh), draw)
            labels = None
            if config.conditional:  # x's own labels, then the fakes' classes: (n_critic B,), (n_critic B,), (B,)
                y_real = jax.lax.dynamic_slice_in_dim(shuffled[1], start, images_per_step)
                labels = (parallel.shard_batch(y_real, mesh), y_d, y_g)
            # --augment's draws as a keyword, only when there are some: step_fns written before it still fit.
            state, metrics = step_fn(gan, state, x, z_d, z_g, eps, labels,
                                     **({} if augment is None else {"augment": augment}))
            return (state, shuffled), metrics

        (state, shuffled), metrics = jax.lax.scan(body, (state, shuffled), draws, length=num_steps)
        return state, shuffled, metrics  # metrics (num_steps, 4)

    current_order = jax.jit(lambda key, step, *the_set: epoch_order(key, step // steps_per_epoch, *the_set),
                            out_shardings=out_shardings)
    carried: list = [None, None, None, None]  # the last state returned, its epoch's shuffled copy, the set copied

    def train_chunk(state: TrainState, data: jax.Array, num_steps: int, data_labels: jax.Array | None = None):
        # Sorting 60k keys and copying the set costs ~45 ms on a CPU: reuse the shuffled copy while
        # the caller passes back the state we returned; rebuild it for a fresh or restored state.
        if state is carried[0] and data is carried[2] and data_labels is carried[3]:
            shuffled = carried[1]
        else:
            shuffled = current_order(state.key, state.step, data, data_labels)
        state, shuffled, metrics = scan_steps(state, shuffled, data, data_labels, num_steps=num_steps)
        carried[:] = [state, shuffled, data, data_labels]
        return state, metrics

    # The compiled K-step function itself, for tools that lower it (benchmarks/profile_step.py):
    # scan_steps(state, (shuffled images (N, H W C), labels or None), data, data_labels, num_steps=K).
    train_chunk.scan_steps = scan_steps
    return train_chunk

