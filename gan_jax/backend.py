"""The JAX backend of the shared host loop: `JaxBackend` (gan_common.loop.Backend over the fused
loop), `train_and_evaluate`, and `load_generator`, what the sample and evaluate CLIs call."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gan_common.config import Config
from gan_common.evaluation import evaluators
from gan_common.loop import run_training
from gan_common.outputs import CHECKPOINT_DIR
from gan_common.sampling import class_grid_inputs
from gan_jax import checkpoint, parallel
from gan_jax.c2st import c2st
from gan_jax.classifier import features_and_probs
from gan_jax.fused import StepFn, make_train_chunk
from gan_jax.step import TrainState, create, fixed_noise, sampling_params, train_step

evaluator = evaluators(features_and_probs, c2st)  # evaluator(dataset): one per process and dataset, references cached


class JaxBackend:
    """gan_common.loop.Backend over the fused loop: `run` queues compiled calls, never waits."""

    def __init__(self, config: Config, data_u8: np.ndarray, state: TrainState | None = None,
                 mesh: jax.sharding.Mesh | None = None, labels: np.ndarray | None = None,
                 step_fn: StepFn = train_step):
        mesh = mesh if mesh is not None else parallel.make_mesh(config)
        self.gan, fresh = create(config, mesh)
        self.state = parallel.replicate(state if state is not None else fresh, mesh)
        self.step = int(parallel.to_host(self.state.step))
        self.data = parallel.replicate(data_u8, mesh)  # (N, H, W, C) uint8 on every device, once
        self.train_chunk = make_train_chunk(self.gan, data_u8.shape[0], step_fn)
        self.z_fixed = parallel.replicate(fixed_noise(config), mesh)
        self.labels = self.grid_labels = None  # --conditional: the training labels, the grid's rows' classes
        if config.conditional:
            if labels is None:
                raise ValueError("a --conditional run needs the training set's labels")
            self.labels = parallel.replicate(np.asarray(labels, np.int32), mesh)  # (N,) next to the images
            z_grid, grid_labels = class_grid_inputs(parallel.to_host(self.z_fixed))
            self.z_fixed, self.grid_labels = (parallel.replicate(a, mesh) for a in (z_grid, grid_labels))
        self._sample = jax.jit(lambda g, s, z, y: self.gan.generate(g, s, z, y).astype(jnp.float32),  # eval mode
                               out_shardings=parallel.replicated(mesh))
        self.is_primary = parallel.is_primary()

    def run(self, num_steps: int) -> jax.Array:
        self.state, metrics = self.train_chunk(self.state, self.data, num_steps=num_steps, data_labels=self.labels)
        self.step += num_steps
        return metrics

    def fetch(self, metrics: jax.Array) -> np.ndarray:
        return parallel.to_host(metrics).astype(np.float64)

    def sample(self) -> np.ndarray:
        return parallel.to_host(self._sample(sampling_params(self.state), self.state.g_stats, self.z_fixed,
                                             self.grid_labels))

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        z = parallel.replicate(np.asarray(z, np.float32), self.gan.mesh)
        labels = None if labels is None else parallel.replicate(np.asarray(labels, np.int32), self.gan.mesh)
        return parallel.to_host(self._sample(sampling_params(self.state), self.state.g_stats, z, labels))

    def save_checkpoint(self) -> str:
        return checkpoint.save(os.path.join(self.gan.config.out_dir, CHECKPOINT_DIR), self.gan, self.state)


def make_backend(config: Config, images: np.ndarray, labels: np.ndarray | None = None) -> JaxBackend:
    """The backend of a fresh run, or of a resumed one at its newest checkpoint."""
    mesh = parallel.make_mesh(config)
    state = None
    if config.resume:
        gan, fresh = create(config, mesh)
        state = checkpoint.restore_latest(os.path.join(config.out_dir, CHECKPOINT_DIR), gan,
                                          parallel.replicate(fresh, mesh))
    return JaxBackend(config, images, state, mesh, labels)


def train_and_evaluate(config: Config, workdir: str | None = None, given: Sequence[str] = (),
                       make: Callable[..., JaxBackend] = make_backend) -> dict:
    """Train (or resume) the run described by `config` in `workdir`; return the last logged metrics.

    Multi-process runs (--num-processes) call this in every process; only process 0 writes.
    `make`: what builds the backend (`make_backend`; a test passes a wrapper that keeps it).
    """
    parallel.init_runtime(config)
    parallel.make_mesh(config)  # a device count or batch split that cannot work fails before the run folder is written
    return run_training(config, workdir, given, make, "gan_jax", evaluator,
                        primary=parallel.is_primary())


def load_generator(path: str, ema: bool = True) -> tuple[Callable[..., np.ndarray], Config]:
    """`generate(z (N, latent_dim) float32, labels (N,) int or None) -> (N, H, W, C) float32 in [-1, 1]`,
    and the run config; labels are the classes of a --conditional model (None otherwise).
    ema=False: G's own weights where the run also kept an EMA (which is otherwise what samples)."""
    gan, state = checkpoint.load_state(path, ema)
    apply = jax.jit(gan.generate)  # eval mode: BatchNorm uses the running statistics

    def generate(z: np.ndarray, labels: np.ndarray | None = None, batch: int = 4096) -> np.ndarray:
        rows = [slice(i, i + batch) for i in range(0, len(z), batch)]
        return np.concatenate([np.asarray(apply(state.g_params, state.g_stats, z[r],
                                                None if labels is None else labels[r]), np.float32)
                               for r in rows])

    return generate, gan.config
