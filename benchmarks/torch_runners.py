"""The torch runners the benchmarks time (benchmarks.timing's interface): the reference step, faster settings, floors.

Every runner does exactly gan_torch.step.train_step's algorithm (G(z_d) without grad; D on
[real; fake], or on each apart when D has BatchNorm; Adam on D; G's loss through the updated D;
Adam on G) and changes only how it executes. All of them keep the uint8 training set on the
device, gather each batch with a permutation drawn up front and draw the noise there, as the
JAX fused loop does inside its compiled call, so both sides time the same work: batch gather +
scale + noise + both updates.

  eager        gan_torch.step.train_step itself (default torch.optim.Adam).
  tuned        the same maths with fused Adam, gradients from torch.autograd.grad (only the
               tensors asked for: no D weight grads in G's step), no zero_grad pass; one D call
               on [real; fake] where BatchNorm allows (the MLP, the DCGAN without --d-norm batch).
               With the default recipe's levers (--recipe default): R1 from that one call's real
               logits (no second D call), and the reference's EMA update.
  tuned_cl     `tuned` with the convolution weights in channels_last memory format (--arch dcgan
               only): the activations already are (the nets permute NHWC images to NCHW views),
               so oneDNN's kernels get NHWC operands throughout, no weight reorders.
  compiled     `tuned` under torch.compile (default mode; inductor), with foreach Adam so that
               inductor compiles the update too (it does not trace into the fused kernel).
  compiled_ro  the same under torch.compile(mode="reduce-overhead") (CUDA graphs; CUDA only).
  cuda_graph   the whole step, batch gather and noise included, captured once in a CUDA graph
               with capturable Adam and replayed: one launch per step (CUDA only).
Floors (`make_floor_runner`), parts of a step timed alone: `matmuls` (its matrix products) and
`adam` (its two Adam updates).
Both makers return a `Runner`; with --precision bf16 a variant's name ends in +bf16.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import flops as flops_lib
from gan_common import schedules
from gan_common.config import Config
from gan_torch import losses
from gan_torch.step import Gan, TrainState, create, init_ema, scale_images, train_step, update_ema

VARIANTS = ("eager", "tuned", "tuned_cl", "compiled", "compiled_ro", "cuda_graph")
CONV_ONLY = ("tuned_cl",)  # variants that differ from `tuned` only for convolutions
CUDA_ONLY = ("compiled_ro", "cuda_graph")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CPU ops are synchronous already)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def adam_impl(device: torch.device) -> dict:
    """The fastest Adam kernel the device supports: fused if torch has it there, else foreach."""
    probe = torch.nn.Parameter(torch.zeros(1, device=device))
    try:
        torch.optim.Adam([probe], fused=True)
        return {"fused": True}
    except (RuntimeError, ValueError):
        return {"foreach": True}


def to_device(images_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    """The uint8 training set (N, 28, 28, 1) as a tensor on `device`, once per benchmark run."""
    return torch.from_numpy(np.array(images_u8, dtype=np.uint8)).to(device)  # np.array: a writable copy


class Batches:
    """Training batches straight from the uint8 set on the device, in the order of one permutation drawn up front."""

    def __init__(self, data_u8: torch.Tensor, batch: int, latent_dim: int, seed: int = 0):
        self.data = data_u8  # (N, 28, 28, 1) uint8, on the device
        n, self.device = data_u8.shape[0], data_u8.device
        self.perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(self.device)  # (N,)
        self.batch, self.latent_dim = batch, latent_dim
        self.steps_per_epoch = n // batch  # the final partial batch is dropped, as in both backends
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 28, 28, 1) in [-1, 1], z_d and z_g (B, latent_dim) ~ N(0, I)."""
        b = self.batch
        idx = self.perm[self.pos * b:(self.pos + 1) * b]  # (B,)
        self.pos = (self.pos + 1) % self.steps_per_epoch
        x = scale_images(self.data[idx])
        z_d = torch.randn(b, self.latent_dim, device=self.device)
        z_g = torch.randn(b, self.latent_dim, device=self.device)
        return x, z_d, z_g


def _models_on(config: Config, device: torch.device) -> tuple[Gan, TrainState]:
    """gan_torch's models and optimisers (its initialisation), moved to `device` in place."""
    gan, state = create(config)
    state.generator.to(device)  # moves parameter data in place: the optimisers keep the same Parameter objects
    state.discriminator.to(device)
    return gan, state


class TunedStep:
    """gan_torch.step.train_step's maths with faster execution: fused Adam, grads only where needed.

    Callable as step(x, z_d, z_g) -> metrics (4,), like the reference; updates the nets in place.
    """

    def __init__(self, config: Config, device: torch.device, impl: dict | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format):
        _, state = _models_on(config, device)
        self.G, self.D, self.kind = state.generator, state.discriminator, config.g_loss
        self.G.to(memory_format=memory_format)  # 4-d weights only; in place, before the optimisers see them
        self.D.to(memory_format=memory_format)
        self.separate_d = config.d_batch_norm
        self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())
        impl = adam_impl(device) if impl is None else impl  # e.g. {"fused": True} or {"foreach": True}
        kw = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=config.adam_eps, **impl)
        self.g_opt, self.d_opt = torch.optim.Adam(self.g_params, **kw), torch.optim.Adam(self.d_params, **kw)
        # The default recipe's levers (benchmarks.step_throughput --recipe default): lazy R1 and the EMA of G.
        unsupported = [f for f in ("augment", "conditional", "g_lr", "d_lr", "lr_decay_steps") if getattr(config, f)]
        if config.loss != "gan" or config.n_critic != 1:
            unsupported.append(f"--loss {config.loss} --n-critic {config.n_critic}")
        if unsupported:
            raise ValueError(f"the tuned torch step does the tutorial's step with R1 and the EMA only, not "
                             f"{', '.join(unsupported)}")
        self.config, self.step_count = config, 0
        self.ema = init_ema(config, self.G)
        # Only these levers read the step number: without them the step keeps no Python counter, which
        # torch.compile (the compiled variants) would otherwise guard on and recompile for at every step.
        self.counts_steps = bool(config.r1_weight) or self.ema is not None

    def __call__(self, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        with torch.no_grad():
            fake_d = self.G(z_d)  # (B, 28, 28, 1); no G backward in D's step

        # Update D: maximise log D(x) + log(1 - D(G(z_d))), one D call on [real; fake] where BatchNorm allows.
        config = self.config
        r1_now = config.r1_weight and schedules.r1_due(self.step_count, 1, 0, config.r1_every)
        if r1_now:
            x = x.detach().requires_grad_(True)  # R1 differentiates D at the real images
        if self.separate_d:  # D's BatchNorm normalises each batch by its own statistics, as the reference
            real_logits, fake_logits = self.D(x), self.D(fake_d)  # (B,), (B,)
        else:
            logits = self.D(torch.cat([x, fake_d]))  # (2B,)
            real_logits, fake_logits = logits[:batch], logits[batch:]
        d_loss = losses.d_loss_fn(real_logits, fake_logits)
        if r1_now:  # the reference calls D again on x; the real rows' logits of the one call give the same gradient
            (grad_x,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)  # (B, H, W, C)
            d_loss = d_loss + config.r1_weight * config.r1_every / 2 * grad_x.square().flatten(1).sum(1).mean()
        for p, g in zip(self.d_params, torch.autograd.grad(d_loss, self.d_params), strict=True):
            p.grad = g  # replaces, never accumulates: no zero_grad pass
        self.d_opt.step()

        # Update G: minimise -log D(G(z_g)) through the updated D; asking for G's grads only skips D's weight grads.
        g_loss = losses.g_loss_fn(self.D(self.G(z_g)), self.kind)
        for p, g in zip(self.g_params, torch.autograd.grad(g_loss, self.g_params), strict=True):
            p.grad = g
        self.g_opt.step()
        if self.ema is not None:
            update_ema(self.ema, self.G, *schedules.ema_weights(self.step_count, config.ema_decay, config.ema_rampup))
        if self.counts_steps:
            self.step_count += 1

        with torch.no_grad():
            return torch.stack([d_loss, g_loss, torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()])


class Runner:
    """One variant at one batch size: `call()` runs one full training step (batch included), or one floor;
    `sync()` waits for the device."""

    backend, steps_per_call = "torch", 1

    def __init__(self, name: str, device: torch.device, step_fn):
        self.name, self.device, self._step = name, device, step_fn

    def call(self) -> torch.Tensor:
        return self._step()

    def sync(self) -> None:
        synchronize(self.device)


def make_runner(name: str, config: Config, data_u8: torch.Tensor) -> Runner:
    """The runner for variant `name` (one of VARIANTS) with fresh models at config.batch_size, on data_u8's device."""
    runner = _make_runner(name, config, data_u8)
    runner.name += "+bf16" if config.precision == "bf16" else ""
    return runner


def _make_runner(name: str, config: Config, data_u8: torch.Tensor) -> Runner:
    device = data_u8.device
    if name not in VARIANTS:
        raise ValueError(f"unknown torch variant {name!r}; expected one of {', '.join(VARIANTS)}")
    if name in CUDA_ONLY and device.type != "cuda":
        raise ValueError(f"torch variant {name!r} needs CUDA")
    if name == "cuda_graph":
        return _cuda_graph_runner(config, data_u8)
    batches = Batches(data_u8, config.batch_size, config.latent_dim)
    if name == "eager":
        gan, state = _models_on(config, device)
        return Runner(name, device, lambda: train_step(gan, state, *batches.next())[1])  # metrics (4,)
    if name == "tuned":
        step = TunedStep(config, device)
    elif name == "tuned_cl":
        step = TunedStep(config, device, memory_format=torch.channels_last)
    else:
        # foreach Adam, not fused: torch.compile does not trace into the fused kernel (a graph break),
        # while it does compile the foreach update into its own fused loops.
        step = TunedStep(config, device, impl={"foreach": True})
        mode = "reduce-overhead" if name == "compiled_ro" else None
        compiled = torch.compile(step, mode=mode, dynamic=False)  # one specialised graph per batch size, as jit
        if name == "compiled_ro":
            def step(x, z_d, z_g):
                torch.compiler.cudagraph_mark_step_begin()  # a new training step: earlier outputs may be reused
                return compiled(x, z_d, z_g)
        else:
            step = compiled
    return Runner(name, device, lambda: step(*batches.next()))


# The plan's three products (benchmarks.flops.matmul_plan); transposes are stride views, no copies.
TORCH_PRODUCTS = {"fwd": lambda x, w: x @ w, "wgrad": lambda x, e: x.T @ e, "igrad": lambda e, w: e @ w.T}


def make_floor_runner(name: str, config: Config, device: torch.device) -> Runner:
    """A floor, not a training step: "matmuls", the step's products alone (benchmarks.flops.matmul_plan, operands
    from benchmarks.flops.floor_operands as in JAX's floor, one torch.mm each, transposes as stride views);
    "adam", gan_torch's two Adams (the fastest kernel, as `tuned`) stepping on fixed gradients."""
    if name == "matmuls":
        plan = flops_lib.matmul_plan(config, config.batch_size)
        w, acts, errs = flops_lib.floor_operands(config, plan, lambda a: torch.from_numpy(a).to(device))

        def products() -> list[torch.Tensor]:
            out = []
            for op, net, i, rows in plan:
                x, e, wi = acts[net, i, rows], errs[net, i, rows], w[net, i]
                out.append(TORCH_PRODUCTS[op](*flops_lib.operands_of(op, x, e, wi)))
            return out

        return Runner(name, device, products)
    if name == "adam":
        _, state = _models_on(config, device)
        kw = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=config.adam_eps, **adam_impl(device))
        gen = torch.Generator().manual_seed(0)
        opts = []
        for net in (state.generator, state.discriminator):
            params = list(net.parameters())
            for p in params:
                p.grad = (1e-3 * torch.randn(p.shape, generator=gen)).to(device)
            opts.append(torch.optim.Adam(params, **kw))

        def updates() -> None:
            for opt in opts:
                opt.step()

        return Runner(name, device, updates)
    raise ValueError(f"unknown floor {name!r}; expected matmuls or adam")


def reset_compiler() -> None:
    """Forget compiled graphs (call between batch sizes) so dynamo's per-function recompile limit is never hit."""
    torch._dynamo.reset()


def _cuda_graph_runner(config: Config, data_u8: torch.Tensor, warmup: int = 3) -> Runner:
    """The whole step (gather, scale, noise, both updates) captured once and replayed as one graph.

    The batch position is a device tensor advanced inside the graph, so a replay needs no
    host input at all. Capture follows torch.cuda.graphs' whole-network recipe: warm up on a
    side stream (Adam's state and the library workspaces get allocated), then capture.
    The `warmup` steps before capture are real training steps; the benchmark's own warm-up follows.
    """
    device = data_u8.device
    if config.r1_weight or config.ema_decay:
        raise ValueError("cuda_graph replays one captured step, but R1 every k-th step and the EMA's warm-up change "
                         "from step to step (time the default recipe with tuned)")
    # capturable: Adam's step counts live on the device, so a replay advances them without the host.
    step = TunedStep(config, device, impl={**adam_impl(device), "capturable": True})
    batches = Batches(data_u8, config.batch_size, config.latent_dim)
    b = config.batch_size
    pos = torch.zeros((), dtype=torch.long, device=device)  # () batch index within the epoch
    offsets = torch.arange(b, device=device)  # (B,)

    def body() -> torch.Tensor:
        idx = batches.perm[pos * b + offsets]  # (B,) gathered on the device: no host int
        x = scale_images(batches.data[idx])  # (B, 28, 28, 1) in [-1, 1]
        z_d = torch.randn(b, config.latent_dim, device=device)
        z_g = torch.randn(b, config.latent_dim, device=device)
        metrics = step(x, z_d, z_g)
        pos.add_(1).remainder_(batches.steps_per_epoch)
        return metrics

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        metrics = body()  # (4,) static output, rewritten by each replay

    def replay() -> torch.Tensor:
        graph.replay()
        return metrics

    return Runner("cuda_graph", device, replay)
