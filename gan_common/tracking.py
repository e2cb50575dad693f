"""Where a run's numbers go besides metrics.jsonl: TensorBoard event files and Weights & Biases.

TensorBoard events are written with tensorboardX, which writes the event-file format itself (protobuf records)
and needs neither TensorFlow nor torch; clu's writer needs TensorFlow and torch.utils.tensorboard needs torch and
the tensorboard package, and gan_common imports neither framework. wandb is optional and never a dependency:
asked for without it installed, the run says how to install it and goes on without it.

Both writers get the same things from the host loop (gan_common.loop), so both backends log the same tags:
  train/<name>  every log line's d_loss, g_loss, d_real, d_fake, steps_per_s and epoch
  eval/<name>   every --eval-every evaluation's keys (fid_mnist, classes_covered, ...)
  samples       each sample grid, (H, W, C) uint8
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
from typing import Any

import numpy as np

from gan_common.config import Config
from gan_common.errors import UserError
from gan_common.outputs import TENSORBOARD_DIR  # RUN/tensorboard: `tensorboard --logdir runs` finds every run

TRAIN_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "steps_per_s", "epoch")  # the rest of a row is evaluation
NOT_LOGGED = ("step", "wall_time", "elapsed_s")  # the event's own step and time say these
WANDB_MISSING = "--wandb: the wandb package is not installed (pip install wandb); this run logs without it"


def scalar_tags(row: dict) -> dict[str, float]:
    """A metrics.jsonl row as {tag: value}: train/<key> for the training numbers, eval/<key> for the rest."""
    tags = {}
    for key, value in row.items():
        if key in NOT_LOGGED or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):  # a NaN row never reaches here (the loop stops first); an eval may give inf
            tags[f"{'train' if key in TRAIN_KEYS else 'eval'}/{key}"] = float(value)
    return tags


def _optional(name: str) -> Any:
    """The module `name`, or None where it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _tensorboardx() -> Any:
    """tensorboardX, or None. Its writer imports torch whenever torch is installed (only to accept torch tensors,
    which this module never passes); hiding torch during the import keeps a gan_jax run free of it, as gan_common
    is. A process that has already imported torch (gan_torch) keeps its own."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError, which it catches
    try:
        return _optional("tensorboardX")
    finally:
        if hide:
            del sys.modules["torch"]


class Tracker:
    """The run's optional writers behind one interface; a no-op where none is on, and on non-primary processes.

    `tensorboardx` and `wandb` are the modules to use (None: not installed); tests pass None to stand for a
    missing package."""

    def __init__(self, config: Config, start_step: int, primary: bool = True,
                 tensorboardx: Any = "import", wandb: Any = "import") -> None:
        self.tb = self.wandb_run = None
        if not primary:
            return
        if config.tensorboard:
            tbx = _tensorboardx() if tensorboardx == "import" else tensorboardx
            if tbx is None:
                print("--tensorboard: the tensorboardX package is not installed (pip install tensorboardX); this run "
                      "writes no TensorBoard events", file=sys.stderr)
            else:
                # purge_step: a resumed run hides the events past its checkpoint, as metrics.jsonl drops those lines
                self.tb = tbx.SummaryWriter(os.path.join(config.out_dir, TENSORBOARD_DIR),
                                            purge_step=start_step or None, flush_secs=30)
        if config.wandb:
            wb = _optional("wandb") if wandb == "import" else wandb
            if wb is None:
                print(WANDB_MISSING, file=sys.stderr)
            else:
                try:
                    self.wandb_run = wb.init(project=config.wandb, config=dataclasses.asdict(config),
                                             name=os.path.basename(os.path.abspath(config.out_dir)))
                except wb.Error as e:  # not logged in, no network, a project it may not write
                    self.close()
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise UserError(f"--wandb {config.wandb}: wandb could not start ({reason}); log in with `wandb "
                                    f"login`, or log offline with WANDB_MODE=offline (then `wandb sync`)") from None
                self._wandb_image = wb.Image

    def log(self, step: int, row: dict) -> None:
        """One metrics.jsonl row at `step`."""
        tags = scalar_tags(row)
        if self.tb is not None:
            for tag, value in tags.items():
                self.tb.add_scalar(tag, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(tags, step=step)

    def image(self, step: int, grid: np.ndarray) -> None:
        """A sample grid, (H, W, C) uint8."""
        if self.tb is not None:
            self.tb.add_image("samples", grid, step, dataformats="HWC")
        if self.wandb_run is not None:
            self.wandb_run.log({"samples": self._wandb_image(grid)}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
