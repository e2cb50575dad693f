"""The PyTorch backend of the shared host loop: `TorchBackend` (gan_common.loop.Backend, one eager step at
a time), `train_and_evaluate`, and `load_generator`, what the sample and evaluate CLIs call."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from gan_common.augment import AugmentDraws
from gan_common.config import NUM_CLASSES, Config
from gan_common.evaluation import evaluators
from gan_common.loop import run_training
from gan_common.outputs import CHECKPOINT_DIR
from gan_common.sampling import class_grid_inputs
from gan_torch import checkpoint, parallel
from gan_torch.c2st import c2st
from gan_torch.classifier import features_and_probs
from gan_torch.step import (
    TrainState,
    autocast,
    create,
    draw_step_augment,
    epoch_permutation,
    fixed_noise,
    sampling_generator,
    scale_images,
    train_step,
)

evaluator = evaluators(features_and_probs, c2st)  # evaluator(dataset): one per process and dataset, references cached

StepFn = Callable[..., tuple[TrainState, torch.Tensor]]  # train_step's signature


class TorchBackend:
    """gan_common.loop.Backend, one eager step at a time (`run` returns computed metrics).

    The noise comes from `state.rng`, whose state is checkpointed; each epoch's data order
    comes from (seed, epoch) alone. So a resumed run draws exactly what the uninterrupted one would.
    Under torchrun every rank draws the global batch's noise and order and keeps its own slice.
    """

    def __init__(self, config: Config, data_u8: np.ndarray, labels: np.ndarray | None = None,
                 step_fn: StepFn = train_step):
        self.rank, self.world = parallel.init_distributed(config)
        self.is_primary = self.rank == 0
        self.gan, self.state = create(config)
        if self.world > 1:
            for net in (self.state.generator, self.state.discriminator):
                parallel.global_batch_norm(net)  # statistics of the global batch, not of each rank's slice
            self.state.g_sync, self.state.d_sync = (torch.nn.parallel.DistributedDataParallel(m)
                                                    for m in (self.state.generator, self.state.discriminator))
        self.step_fn = step_fn  # train_step; tests pass one that records its inputs
        self.data = torch.tensor(data_u8, dtype=torch.uint8)  # (N, H, W, C), a copy: torch wants writable memory
        self.steps_per_epoch = config.steps_per_epoch(self.data.shape[0])  # the final partial step is dropped
        self.z_fixed = fixed_noise(config)  # (64, latent_dim)
        self.labels = self.grid_labels = None  # --conditional: the training labels, the grid's rows' classes
        if config.conditional:
            if labels is None:
                raise ValueError("a --conditional run needs the training set's labels")
            self.labels = torch.tensor(np.asarray(labels), dtype=torch.int64)  # (N,)
            z_grid, grid_labels = class_grid_inputs(self.z_fixed.numpy())
            self.z_fixed, self.grid_labels = torch.from_numpy(z_grid), grid_labels
        self._perm_epoch, self._perm = -1, None

    @property
    def step(self) -> int:
        """Global steps done: the state's own count (`train_step` and `restore_latest` move it)."""
        return self.state.step

    def _batch(self) -> torch.Tensor:
        """The step's n_critic * B real images: positions [t n_critic B, (t + 1) n_critic B) of the epoch's
        permutation at step t of an epoch, D update k taking the k-th B (as gan_jax.fused.make_train_chunk)."""
        return scale_images(self.data[self._batch_rows()])  # (n_critic B / world, H, W, C) in [-1, 1]

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
            rng = self.state.rng
            x = self._batch()
            # Every rank draws the global batch's noise (keeping the generators in step) and uses its slice.
            z_d = self._local(torch.randn(config.images_per_step, config.latent_dim, generator=rng))
            z_g = self._local(torch.randn(config.batch_size, config.latent_dim, generator=rng))
            # WGAN-GP's interpolation weights come last from the same generator: other losses draw what they did.
            eps = torch.rand(config.images_per_step, generator=rng) if config.loss == "wgan_gp" else None
            labels = None
            if config.conditional:  # the fakes' classes come after all of the above: unconditional runs draw as before
                y_d = torch.randint(NUM_CLASSES, (config.images_per_step,), generator=rng)
                y_g = torch.randint(NUM_CLASSES, (config.batch_size,), generator=rng)
                labels = (self._batch_labels(), self._local(y_d), self._local(y_g))
            augment = None
            if config.augment:  # last from the generator, as train_step would draw them: the global batch's, sliced
                augment = tuple(AugmentDraws(*(None if t is None else self._local(t) for t in draws))
                                for draws in draw_step_augment(config, rng, config.batch_size))
            self.state, metrics = self.step_fn(self.gan, self.state, x, z_d, z_g,
                                               None if eps is None else self._local(eps), labels, augment=augment)
            rows.append(metrics)  # (4,)
        return parallel.mean_over_ranks(torch.stack(rows), self.world)  # (num_steps, 4), global-batch means

    def fetch(self, metrics: torch.Tensor) -> np.ndarray:
        return metrics.numpy().astype(np.float64)

    def sample(self) -> np.ndarray:
        return self.generate(self.z_fixed, self.grid_labels)

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        y = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
        G = sampling_generator(self.state)
        training = G.training
        G.eval()  # sampling: BatchNorm's running statistics, which it leaves alone
        try:
            with torch.no_grad(), autocast(self.gan.config):
                return G(torch.from_numpy(np.asarray(z, np.float32)), y).float().numpy()  # (N, H, W, C)
        finally:
            G.train(training)

    def save_checkpoint(self) -> str:
        root = os.path.join(self.gan.config.out_dir, CHECKPOINT_DIR)
        # Ranks hold equal state (same updates, same generator): rank 0 writes it for all.
        folder = checkpoint.save(root, self.gan, self.state) if self.is_primary else ""
        parallel.barrier(self.world)
        return folder


def make_backend(config: Config, images: np.ndarray, labels: np.ndarray | None = None) -> TorchBackend:
    """The backend of a fresh run, or of a resumed one at its newest checkpoint (restored into its state)."""
    backend = TorchBackend(config, images, labels)
    if config.resume:
        checkpoint.restore_latest(os.path.join(config.out_dir, CHECKPOINT_DIR), backend.gan, backend.state)
    return backend


def train_and_evaluate(config: Config, workdir: str | None = None, given: Sequence[str] = (),
                       make: Callable[..., TorchBackend] = make_backend) -> dict:
    """Train (or resume) the run described by `config` in `workdir`; return the last logged metrics.

    Under torchrun every rank calls this; only rank 0 writes.
    `make`: what builds the backend (`make_backend`; a test passes a wrapper that keeps it).
    """
    torch.use_deterministic_algorithms(True)  # same seed, same machine: the same bits (and resume equals a full run)
    rank, _ = parallel.init_distributed(config)
    return run_training(config, workdir, given, make, "gan_torch", evaluator, primary=rank == 0)


def load_generator(path: str, ema: bool = True) -> tuple[Callable[..., np.ndarray], Config]:
    """`generate(z (N, latent_dim) float32, labels (N,) int or None) -> (N, H, W, C) float32 in [-1, 1]`,
    and the run config; labels are the classes of a --conditional model (None otherwise).
    ema=False: G's own weights where the run also kept an EMA (which is otherwise what samples)."""
    gan, state = checkpoint.load_state(path, ema)
    G = state.generator  # eval mode: BatchNorm uses the running statistics

    @torch.no_grad()
    def generate(z: np.ndarray, labels: np.ndarray | None = None, batch: int = 4096) -> np.ndarray:
        z = torch.from_numpy(np.asarray(z, np.float32))
        y = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
        rows = [slice(i, i + batch) for i in range(0, len(z), batch)]
        with autocast(gan.config):  # a bf16 run samples as it trained
            return np.concatenate([G(z[r], None if y is None else y[r]).float().numpy() for r in rows])

    return generate, gan.config
