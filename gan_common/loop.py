"""The host side of a training run, shared by both backends.

A backend only knows how to run steps, sample, and checkpoint. Everything a user sees
(the run folder, metrics.jsonl, the progress bar, sample grids, losses.png, Ctrl-C and
NaN handling) lives here once, so the two backends write the same files the same way.
The backend's `run` may return device arrays without waiting for them; this loop fetches
them only at log, sample and checkpoint boundaries, so the device runs ahead in between.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from gan_common.config import Config, out_dir_is_writable, resume_config
from gan_common.datasets import load_dataset
from gan_common.errors import UserError
from gan_common.outputs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOSSES_PLOT,
    METRICS_FILE,
    SAMPLES_DIR,
    plot_losses,
    save_grid,
    truncate_metrics,
)
from gan_common.sampling import CLASS_GRID_COLUMNS, sample_labels, sample_noise

METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")  # columns of a backend's per-step metrics


class TrainingDiverged(UserError):
    """The losses became NaN or inf; the last good checkpoint is kept."""


class Backend(Protocol):
    step: int  # global steps done so far (host int, advanced by `run`)
    is_primary: bool  # the process that writes files; in a multi-process run every process runs this loop

    def run(self, num_steps: int) -> Any:
        """Queue `num_steps` training steps; return their metrics, (num_steps, 4), possibly not yet computed."""

    def fetch(self, metrics: Any) -> np.ndarray:
        """Wait for and return `run`'s metrics as a float64 (num_steps, 4) array (METRIC_NAMES)."""

    def sample(self) -> np.ndarray:
        """Images (64, H, W, C) in [-1, 1] from the run's fixed noise batch; with --conditional (80, H, W, C),
        gan_common.sampling.class_grid_inputs: ten rows of 8, row k class k, one fixed z per column."""

    def save_checkpoint(self) -> str:
        """Write a checkpoint at `self.step` atomically; return its path."""

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Images (N, H, W, C) in [-1, 1] from noise z (N, latent_dim) (and classes (N,), --conditional),
        for --eval-every."""


class Checkpointer(Protocol):
    """What each backend's `checkpoint` module provides, with these signatures in both. `gan` is the
    backend's static half (`step.Gan`), `state` its `step.TrainState`; a checkpoint folder is
    `<root>/<step>/`, and always holds the neutral weight file (gan_common.weights)."""

    def save(self, root: str, gan: Any, state: Any) -> str:
        """Write the checkpoint of `state`'s step under `root` atomically; return its folder."""

    def restore_latest(self, root: str, gan: Any, state: Any) -> Any:
        """The newest checkpoint under `root`, as a TrainState like `state` (the torch one fills `state` in place
        and returns it); a UserError if there is none or it cannot be read."""

    def load_state(self, path: str, ema: bool = True) -> tuple[Any, Any]:
        """(gan, state) built from the neutral weight file `path` leads to (a run folder, a step folder or the
        file): nets and running statistics from the file, fresh optimisers. ema: G's params are its EMA
        when the run kept one (what samples); False: G's own."""


def prepare_run(config: Config, given: set[str], primary: bool = True) -> Config:
    """Check the output folder and settle the run's config (a resumed run keeps its saved one).

    Only the primary process checks and writes; the others only read (a shared --out-dir).
    """
    out = config.out_dir
    saved_path = os.path.join(out, CONFIG_FILE)
    if not primary:
        return resume_config(Config.from_json_file(saved_path), config, given) if config.resume else config
    if config.resume:
        if not os.path.isfile(saved_path):
            raise UserError(f"--resume: {out!r} holds no run (no {CONFIG_FILE}); start a run there without --resume")
        config = resume_config(Config.from_json_file(saved_path), config, given)
    elif os.path.exists(saved_path) or os.path.isdir(os.path.join(out, CHECKPOINT_DIR)):
        raise UserError(
            f"--out-dir {out!r} already holds a run; pass --resume to continue it or choose another --out-dir"
        )
    out_dir_is_writable(out)
    tmp = saved_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json() + "\n")
    os.replace(tmp, saved_path)
    return config


class _SigintFlag:
    """First Ctrl-C asks the loop to checkpoint and stop; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _SigintFlag:
        self._old = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _next_boundary(step: int, every: int) -> int:
    return (step // every + 1) * every


def train_loop(config: Config, backend: Backend, total_steps: int, steps_per_epoch: int, backend_name: str,
               evaluator: Callable[..., dict] | None = None) -> dict:
    """Drive `backend` to `total_steps`, writing every run output; return the last logged metrics.

    `evaluator(images, labels) -> dict` (e.g. FID and coverage) runs every `config.eval_every`
    steps on `config.eval_samples` images from a fixed noise set; its keys join that log line.
    With --conditional the images are of classes 0..9 cycling (labels), and the evaluator adds
    their per-class accuracy (class_acc_0..9, class_acc_mean); otherwise labels is None.
    """
    out = config.out_dir
    primary = getattr(backend, "is_primary", True)
    metrics_path = os.path.join(out, METRICS_FILE) if primary else os.devnull
    if primary:
        truncate_metrics(metrics_path, backend.step)
    pending: list[tuple[int, Any]] = []  # (first step, metrics handle) not yet fetched
    last: dict = {}
    t_log, step_log = time.perf_counter(), backend.step
    t_start = time.time()
    if primary:
        print(f"[{backend_name}] training {config.dataset} from step {backend.step} to {total_steps} "
              f"({steps_per_epoch} steps/epoch, batch {config.batch_size}) -> {out}", file=sys.stderr)
    bar = tqdm(total=total_steps, initial=backend.step, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=None if primary else True)
    with _SigintFlag() as sigint, bar, open(metrics_path, "a") as metrics_file:

        def log(step: int) -> None:
            """Fetch what the device has done since the last log, check it, and write one line."""
            nonlocal pending, last, t_log, step_log
            rows = _fetch_checked(backend, pending, checkpoint_dir=os.path.join(out, CHECKPOINT_DIR))
            now = time.perf_counter()  # after the fetch: the device has finished these steps
            pending = []
            rate = (step - step_log) / max(now - t_log, 1e-9)
            t_log, step_log = now, step
            last = {"step": step, "epoch": step / steps_per_epoch,
                    **{k: float(v) for k, v in zip(METRIC_NAMES, rows.mean(axis=0), strict=True)},
                    "steps_per_s": rate, "wall_time": time.time(), "elapsed_s": time.time() - t_start}
            if evaluator is not None and config.eval_every and step % config.eval_every == 0:
                last.update(evaluator(backend.generate(eval_z, eval_labels), eval_labels))
                t_log = time.perf_counter()  # evaluation time is not training time
            metrics_file.write(json.dumps(last) + "\n")
            metrics_file.flush()
            bar.set_postfix(epoch=f"{last['epoch']:.2f}", d=f"{last['d_loss']:.3f}", g=f"{last['g_loss']:.3f}",
                            Dx=f"{last['d_real']:.2f}", DGz=f"{last['d_fake']:.2f}", refresh=False)

        eval_z = sample_noise(config.eval_samples, config.latent_dim, seed=config.seed + 1) if evaluator else None
        eval_labels = sample_labels(config.eval_samples) if evaluator and config.conditional else None
        saved_step = backend.step
        while backend.step < total_steps and not sigint.requested:
            step = backend.step
            intervals = (config.log_every, config.sample_every, config.checkpoint_every,
                         config.eval_every or total_steps)
            stop = min(total_steps, step + config.steps_per_call, *(_next_boundary(step, e) for e in intervals))
            pending.append((step, backend.run(stop - step)))
            bar.update(stop - step)
            at_end = stop >= total_steps
            do_ckpt = stop % config.checkpoint_every == 0 or at_end
            do_eval = evaluator is not None and config.eval_every and stop % config.eval_every == 0
            if stop % config.log_every == 0 or stop % config.sample_every == 0 or do_ckpt or do_eval:
                log(stop)  # also the NaN guard: no sample or checkpoint of a diverged state
            if stop % config.sample_every == 0 or at_end:
                grid = backend.sample()  # every process: sampling is one program over the whole mesh
                if primary:
                    save_grid(grid, os.path.join(out, SAMPLES_DIR, f"step_{stop:07d}.png"),
                              nrow=CLASS_GRID_COLUMNS if config.conditional else None)
            if do_ckpt:
                backend.save_checkpoint()
                saved_step = stop
        if sigint.requested and backend.step != saved_step:  # Ctrl-C: keep everything done so far
            if pending:
                log(backend.step)
            backend.save_checkpoint()
    if not primary:
        return last
    plot_losses(metrics_path, os.path.join(out, LOSSES_PLOT), config.loss)
    if sigint.requested and backend.step < total_steps:
        print(f"\ninterrupted: checkpoint written at step {backend.step}. Resume with:\n"
              f"  python -m {backend_name}.train --out-dir {out} --resume", file=sys.stderr)
    else:
        print(f"done: {backend.step} steps; outputs in {out}", file=sys.stderr)
    return last


def run_training(config: Config, workdir: str | None, given: set[str] | Sequence[str],
                 make_backend: Callable[[Config, np.ndarray, np.ndarray], Backend], backend_name: str,
                 load_evaluator: Callable[[str, str, str], Any], primary: bool = True) -> dict:
    """Each backend's `train_and_evaluate`: settle the run folder, load the data, build the
    backend (restoring the newest checkpoint when resuming; `make_backend(config, images, labels)`),
    and train to the end.
    With --eval-every, `load_evaluator(dataset, data_source, data_dir)` gives the backend's
    gan_common.evaluation.Evaluator of the run's dataset, whose `fid_and_coverage` the loop logs
    (with --eval-c2st, its C2ST_KEYS too).
    `primary`: whether this process writes files (False on all but one process of a multi-process run)."""
    if workdir is not None:
        config = dataclasses.replace(config, out_dir=workdir)
    config = prepare_run(config, set(given), primary)
    dataset = load_dataset(config.dataset, "train", config.data_source, config.data_dir)
    images = dataset.images
    if config.images_per_step > images.shape[0]:
        per_step = f" x --n-critic {config.n_critic}" if config.n_critic > 1 else ""
        raise UserError(f"--batch-size {config.batch_size}{per_step} exceeds the {images.shape[0]} training images")
    evaluator = None
    if config.eval_every:
        evaluator = load_evaluator(config.dataset, config.data_source, config.data_dir)
        evaluator.reference_outputs("test")  # an unreadable test split fails now, not at the first evaluation
    backend = make_backend(config, images, dataset.labels)
    evaluate = None
    if evaluator is not None:
        evaluate = functools.partial(evaluator.fid_and_coverage, c2st=config.eval_c2st)  # (images, labels) -> dict
    return train_loop(config, backend, config.total_steps(images.shape[0]), config.steps_per_epoch(images.shape[0]),
                      backend_name, evaluate)


def _fetch_checked(backend: Backend, pending: list[tuple[int, Any]], checkpoint_dir: str) -> np.ndarray:
    """Fetch pending metrics and stop at the first non-finite loss, naming its step."""
    rows = []
    for first, handle in pending:
        block = backend.fetch(handle)
        bad = np.flatnonzero(~np.isfinite(block[:, :2]).all(axis=1))
        if bad.size:
            raise TrainingDiverged(
                f"losses became non-finite at step {first + int(bad[0]) + 1} (d_loss={block[bad[0], 0]}, "
                f"g_loss={block[bad[0], 1]}); stopped without saving, the last good checkpoint in "
                f"{checkpoint_dir} is kept. Try a lower --lr."
            )
        rows.append(block)
    return np.concatenate(rows)
