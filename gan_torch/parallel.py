"""Data parallelism for the reference backend: DistributedDataParallel under torchrun.

    torchrun --nproc-per-node 2 -m gan_torch.train --batch-size 64 ...

The same global-batch semantics as gan_jax's mesh: --batch-size is the global batch. Every
rank draws the whole step's noise and the whole epoch's permutation from the same seeds and
keeps its own slice of the batch, so a run on W ranks feeds its nets exactly the rows one
process would; DDP averages the gradients of the per-rank means, which is the global
batch's mean gradient. CPU ranks talk over gloo.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from gan_common.config import Config
from gan_common.errors import UserError


def init_distributed(config: Config) -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, starting the process group; (0, 1) without torchrun."""
    if config.devices > 1 or config.num_processes != 1 or config.coordinator_address or config.process_id >= 0:
        raise UserError("gan_torch does not take --devices, --num-processes, --process-id or --coordinator-address; "
                        "launch it data parallel with torchrun --nproc-per-node N -m gan_torch.train ...")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    if config.batch_size % world:
        raise UserError(f"--batch-size {config.batch_size} does not split evenly over {world} ranks; "
                        f"choose a multiple of {world}")
    return dist.get_rank(), world


def mean_over_ranks(t: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of `t` over ranks (metrics: each rank's losses are its slice's means)."""
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= world
    return t


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
