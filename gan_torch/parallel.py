"""Data parallelism for the reference backend: DistributedDataParallel under torchrun.

    torchrun --nproc-per-node 2 -m gan_torch.train --batch-size 64 ...

The same global-batch semantics as gan_jax's mesh: --batch-size is the global batch. Every
rank draws the whole step's noise and the whole epoch's permutation from the same seeds and
keeps its own slice of the batch, so a run on W ranks feeds its nets exactly the rows one
process would; DDP averages the gradients of the per-rank means, which is the global
batch's mean gradient. BatchNorm (--arch dcgan) normalises by the global batch's statistics
too (`GlobalBatchNorm2d`), as gan_jax does on a mesh. CPU ranks talk over gloo.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

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


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose train-mode statistics are the whole global batch's, over all ranks.

    torch's SyncBatchNorm does this on GPUs only. The same maths as one process's BatchNorm2d:
    the mean and the biased variance of the global batch normalise it; the running variance
    moves towards the unbiased one (n / (n - 1), n = global B H W). The sums go through
    autograd's all_reduce, whose backward sums the statistics' gradients over ranks, so after
    DDP's averaging every parameter gets the global batch's gradient.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B / W, C, H, W)
        if not self.training:
            return super().forward(x)
        axes = (0, 2, 3)
        n = x.numel() // x.shape[1] * dist.get_world_size()
        mean = dist_fn.all_reduce(x.sum(axes)) / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = dist_fn.all_reduce(centred.square().sum(axes)) / n  # biased, (C,)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
            self.num_batches_tracked.add_(1)
        scale = self.weight / torch.sqrt(var + self.eps)
        return centred * scale[None, :, None, None] + self.bias[None, :, None, None]


def global_batch_norm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d swapped, in place, for a GlobalBatchNorm2d holding the very same
    parameter and buffer tensors (so optimisers, the EMA and checkpoints are unaffected)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum)
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                setattr(replacement, key, getattr(child, key))
            setattr(module, name, replacement)
        else:
            global_batch_norm(child)
    return module
