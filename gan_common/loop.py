"""The host side of a training run, shared by both backends.

A backend only knows how to run steps, sample, and checkpoint. Everything a user sees
(the run folder, metrics.jsonl, the progress bar, sample grids, losses.png, Ctrl-C and
NaN handling) lives here once, so the two backends write the same files the same way. So does what keeps a
run folder usable after a crash: the lock (one process per folder), checks that refuse a run before anything
is written, SIGINT/SIGTERM handling, and one-line errors for a full disk (docs/reliability.md).
The backend's `run` may return device arrays without waiting for them; this loop fetches
them only at log, sample and checkpoint boundaries, so the device runs ahead in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from gan_common.checkpoints import has_step_folders, step_dirs
from gan_common.config import (
    DCGAN_STAGES,
    IMAGE_SHAPES,
    NUM_CLASSES,
    Config,
    check_decay,
    check_memory,
    out_dir_is_writable,
    resume_config,
    validate,
)
from gan_common.datasets import load_dataset
from gan_common.errors import UserError, os_error_text
from gan_common.outputs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOSSES_PLOT,
    METRICS_FILE,
    SAMPLES_DIR,
    SAMPLES_GIF,
    append_metrics,
    plot_losses,
    refuse_symlinks,
    save_grid,
    save_samples_gif,
    truncate_metrics,
    write_atomically,
)
from gan_common.runlock import RunLock
from gan_common.sampling import CLASS_GRID_COLUMNS, sample_labels, sample_noise
from gan_common.tracking import Tracker

METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")  # columns of a backend's per-step metrics


class TrainingDiverged(UserError):
    """The losses became NaN or inf; nothing of the diverged state is saved."""


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


def settle_config(config: Config, given: set[str], primary: bool = True) -> Config:
    """The run's config, reading only: a resumed run's saved one (with the overrides a resume may make), or
    a new run's own once --out-dir is known to hold no other run. Only the primary process checks the folder."""
    out = config.out_dir
    saved_path = os.path.join(out, CONFIG_FILE)
    if config.resume:
        if primary and not os.path.lexists(saved_path):
            if has_step_folders(os.path.join(out, CHECKPOINT_DIR)):
                raise UserError(f"--resume: {out!r} holds checkpoints but no {CONFIG_FILE}; put the run's "
                                f"{CONFIG_FILE} back, or move checkpoints/ away to start afresh")
            raise UserError(f"--resume: {out!r} holds no run (no {CONFIG_FILE}); start a run there without --resume")
        return resume_config(Config.from_json_file(saved_path), config, given)
    if primary and (os.path.lexists(saved_path) or os.path.isdir(os.path.join(out, CHECKPOINT_DIR))):
        raise UserError(f"--out-dir {out!r} already holds a run; pass --resume to continue it (from its newest "
                        f"checkpoint, or from step 0 if it has none) or choose another --out-dir")
    return config


def prepare_run(config: Config, given: set[str]) -> Config:
    """With the run folder locked: settle the config again (another run may have started there since), refuse
    symbolic links among the files the loop writes, and write config.json. The primary process only."""
    config = settle_config(config, given)
    out = config.out_dir
    refuse_symlinks(out)
    checkpoints = os.path.join(out, CHECKPOINT_DIR)
    if os.path.lexists(checkpoints) and not os.path.isdir(checkpoints):  # found now, not at the first save
        raise UserError(f"{checkpoints} is a file, where the run keeps its checkpoint folders; move it away")
    saved_path = os.path.join(out, CONFIG_FILE)
    with _writing(saved_path, out):
        write_atomically(saved_path, lambda f: f.write(config.to_json() + "\n"), binary=False)
    return config


@contextlib.contextmanager
def _writing(path: str, out: str):
    """A failed write of a run file (a full disk, a lost mount) as one line: what failed, and where the run
    can go on from."""
    try:
        yield
    except OSError as e:
        fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
        raise UserError(f"cannot write {path}: {os_error_text(e)}; {_what_survives(out, fix)}") from None


def _what_survives(out: str, fix: str) -> str:
    """The newest checkpoint of the run in `out`, and how to continue from it after `fix`."""
    root = os.path.join(out, CHECKPOINT_DIR)
    steps = step_dirs(root)
    if steps:
        return f"the last good checkpoint is step {steps[0]} in {root}: {fix}, then continue with --resume"
    return f"no checkpoint was written yet: {fix}, then --resume starts the run again from step 0"


class _StopFlag:
    """The first SIGINT (Ctrl-C) or SIGTERM (what SLURM and Kubernetes send before killing) asks the loop to
    checkpoint and stop; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = ""  # the name of the signal that asked

    def __enter__(self) -> _StopFlag:
        self._old = {}
        try:
            for sig in self.SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handlers, the signals behave as usual
            self._old = {}
        return self

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:  # one line, not KeyboardInterrupt's traceback; checkpoints are atomic, so none is torn
            raise UserError(f"a second {name} after {self.requested}: stopped at once, without the checkpoint the "
                            f"first asked for; --resume continues from the newest checkpoint in the run folder")
        self.requested = name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _next_boundary(step: int, every: int) -> int:
    return (step // every + 1) * every


def _duration(seconds: float) -> str:
    """A short human duration: 1h02m, 3m05s, 12s."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress_line(row: dict, total_steps: int) -> str:
    """What the progress bar shows, as one plain line for logs without a terminal (nohup, SLURM, CI):
    step, epoch, steps/s, the losses and D's outputs, and the time left at the interval's rate."""
    step, rate = row["step"], row["steps_per_s"]
    eta = _duration((total_steps - step) / rate) if rate > 0 else "?"
    return (f"step {step}/{total_steps} epoch {row['epoch']:.2f} {rate:.1f} steps/s d_loss {row['d_loss']:.4f} "
            f"g_loss {row['g_loss']:.4f} D(x) {row['d_real']:.3f} D(G(z)) {row['d_fake']:.3f} ETA {eta}")


def train_loop(config: Config, backend: Backend, total_steps: int, steps_per_epoch: int, backend_name: str,
               evaluator: Callable[..., dict] | None = None, plain_lines: bool | None = None,
               tracker: Tracker | None = None) -> dict:
    """Drive `backend` to `total_steps`, writing every run output; return the last logged metrics.

    `evaluator(images, labels) -> dict` (e.g. FID and coverage) runs every `config.eval_every`
    steps on `config.eval_samples` images from a fixed noise set; its keys join that log line.
    With --conditional the images are of classes 0..9 cycling (labels), and the evaluator adds
    their per-class accuracy (class_acc_0..9, class_acc_mean); otherwise labels is None.
    `plain_lines`: one progress_line per log instead of tqdm's bar (None: when stderr is not a terminal).
    `tracker`: where the log lines and grids also go (None: config's TensorBoard and wandb, gan_common.tracking).
    """
    out = config.out_dir
    primary = getattr(backend, "is_primary", True)
    metrics_path = os.path.join(out, METRICS_FILE)
    if primary:
        with _writing(metrics_path, out):
            if truncate_metrics(metrics_path, backend.step):
                print(f"{metrics_path}: dropped its cut-short last line (a run stopped mid-write)", file=sys.stderr)
    pending: list[tuple[int, Any]] = []  # (first step, metrics handle) not yet fetched
    last: dict = {}
    t_log, step_log = time.perf_counter(), backend.step
    t_start = time.time()
    if primary:
        print(f"[{backend_name}] training {config.dataset} from step {backend.step} to {total_steps} "
              f"({steps_per_epoch} steps/epoch, batch {config.batch_size}) -> {out}", file=sys.stderr)
    tracker = Tracker(config, backend.step, primary) if tracker is None else tracker
    plain_lines = not sys.stderr.isatty() if plain_lines is None else plain_lines
    bar = tqdm(total=total_steps, initial=backend.step, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=plain_lines or not primary)
    with _StopFlag() as stop_flag, bar, tracker:

        def log(step: int) -> None:
            """Fetch what the device has done since the last log, check it, and write one line."""
            nonlocal pending, last, t_log, step_log
            rows = _fetch_checked(backend, pending, out, config.lr)
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
            if primary:
                with _writing(metrics_path, out):
                    append_metrics(metrics_path, last)
                tracker.log(step, last)
                if plain_lines:
                    print(progress_line(last, total_steps), file=sys.stderr)
            bar.set_postfix(epoch=f"{last['epoch']:.2f}", d=f"{last['d_loss']:.3f}", g=f"{last['g_loss']:.3f}",
                            Dx=f"{last['d_real']:.2f}", DGz=f"{last['d_fake']:.2f}", refresh=False)

        eval_z = sample_noise(config.eval_samples, config.latent_dim, seed=config.seed + 1) if evaluator else None
        eval_labels = sample_labels(config.eval_samples) if evaluator and config.conditional else None
        saved_step = backend.step
        while backend.step < total_steps and not stop_flag.requested:
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
                    path = os.path.join(out, SAMPLES_DIR, f"step_{stop:07d}.png")
                    with _writing(path, out):
                        grid = save_grid(grid, path, nrow=CLASS_GRID_COLUMNS if config.conditional else None)
                    tracker.image(stop, grid)
            if do_ckpt:
                backend.save_checkpoint()
                saved_step = stop
        if stop_flag.requested and backend.step != saved_step:  # Ctrl-C or SIGTERM: keep everything done so far
            if pending:
                log(backend.step)
            backend.save_checkpoint()
    if not primary:
        return last
    with _writing(os.path.join(out, LOSSES_PLOT), out):
        plot_losses(metrics_path, os.path.join(out, LOSSES_PLOT), config.loss)
    with _writing(os.path.join(out, SAMPLES_GIF), out):  # the fixed-noise grids over training, in step order
        save_samples_gif(os.path.join(out, SAMPLES_DIR), os.path.join(out, SAMPLES_GIF), backend.step)
    if stop_flag.requested and backend.step < total_steps:
        print(f"\ninterrupted ({stop_flag.requested}): checkpoint written at step {backend.step}. Resume with:\n"
              f"  python -m {backend_name}.train --out-dir {out} --resume", file=sys.stderr)
    else:
        print(f"done: {backend.step} steps; outputs in {out}", file=sys.stderr)
    return last


def run_training(config: Config, workdir: str | None, given: set[str] | Sequence[str],
                 make_backend: Callable[[Config, np.ndarray, np.ndarray], Backend], backend_name: str,
                 load_evaluator: Callable[..., Any], primary: bool = True) -> dict:
    """Each backend's `train_and_evaluate`: settle the run's config, load and check the data, then, with the
    run folder locked for this run's whole life (gan_common.runlock), write config.json, build the backend
    (restoring the newest checkpoint when resuming, or starting afresh if the run never saved one;
    `make_backend(config, images, labels)`), and train to the end.
    With --eval-every, `load_evaluator(dataset, data_source, data_dir, image_size, channels)` gives the backend's
    gan_common.evaluation.Evaluator of the run's dataset, whose `fid_and_coverage` the loop logs
    (with --eval-c2st, its C2ST_KEYS too).
    `primary`: whether this process writes files (False on all but one process of a multi-process run)."""
    if workdir is not None:
        config = dataclasses.replace(config, out_dir=workdir)
    given = set(given)
    # Whatever can refuse the run does so before the run folder is touched: no config.json is left behind.
    config = settle_config(config, given, primary)
    dataset = load_dataset(config.dataset, "train", config.data_source, config.data_dir,
                           num_classes=NUM_CLASSES if config.conditional else None, image_size=config.image_size,
                           channels=config.channels, sizes=tuple(DCGAN_STAGES) if config.arch == "dcgan" else None)
    images = dataset.images  # (N, H, W, C) uint8
    if config.dataset not in IMAGE_SHAPES:  # folder:/npz: the shape it was decoded to, for config.json
        config = validate(dataclasses.replace(config, image_size=images.shape[1], channels=images.shape[3]))
    total_steps = config.total_steps(images.shape[0])
    config = config.with_run_length(total_steps)  # --lr-decay-steps -1: the number config.json records
    check_decay(config, total_steps)
    if config.images_per_step > images.shape[0]:
        per_step = f" x --n-critic {config.n_critic}" if config.n_critic > 1 else ""
        raise UserError(f"--batch-size {config.batch_size}{per_step} exceeds the {images.shape[0]} training images")
    check_memory(config)
    evaluator = None
    if config.eval_every:
        evaluator = load_evaluator(config.dataset, config.data_source, config.data_dir, config.image_size,
                                   config.channels)  # folder:/npz: real images decoded as the run trains on them
        evaluator.reference_outputs("test")  # an unreadable test split fails now, not at the first evaluation
    with contextlib.ExitStack() as held:
        if primary:
            out_dir_is_writable(config.out_dir)
            held.enter_context(RunLock(config.out_dir))  # until this run ends, however it ends
            config = prepare_run(config, given)
        # Resuming a run that died before its first checkpoint (killed, out of memory): start it over. A damaged
        # checkpoint is not "none": the backend's restore says what is wrong with it.
        if config.resume and not has_step_folders(os.path.join(config.out_dir, CHECKPOINT_DIR)):
            if primary:
                print(f"--resume: {config.out_dir} has no checkpoint yet (its run stopped before the first); "
                      f"starting it again from step 0 with its saved {CONFIG_FILE}", file=sys.stderr)
            config = dataclasses.replace(config, resume=False)  # make_backend builds a fresh state
        backend = make_backend(config, images, dataset.labels)
        evaluate = None
        if evaluator is not None:  # (images, labels) -> dict
            evaluate = functools.partial(evaluator.fid_and_coverage, c2st=config.eval_c2st)
        return train_loop(config, backend, total_steps,
                          config.steps_per_epoch(images.shape[0]), backend_name, evaluate)


def _fetch_checked(backend: Backend, pending: list[tuple[int, Any]], out: str, lr: float) -> np.ndarray:
    """Fetch pending metrics and stop at the first non-finite loss, naming its step and what the user can do:
    a resume would repeat the same steps (each step's randomness comes from the seed and the step), and
    cannot change --lr, so the way on is a new run with a lower --lr."""
    rows = []
    for first, handle in pending:
        block = backend.fetch(handle)
        bad = np.flatnonzero(~np.isfinite(block[:, :2]).all(axis=1))
        if bad.size:
            root = os.path.join(out, CHECKPOINT_DIR)
            saved = step_dirs(root)
            kept = (f"the last good checkpoint, step {saved[0]} in {root}, is kept (sample and evaluate can use it; "
                    f"a resume would repeat the divergence)" if saved else "no checkpoint was written before it")
            raise TrainingDiverged(
                f"losses became non-finite at step {first + int(bad[0]) + 1} (d_loss={block[bad[0], 0]}, "
                f"g_loss={block[bad[0], 1]}); stopped without saving; {kept}. Start a new run in another --out-dir "
                f"with a lower --lr, e.g. --lr {lr / 4:g}"
            )
        rows.append(block)
    return np.concatenate(rows)
