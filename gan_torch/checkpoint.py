"""Checkpoints (torch.save of plain tensors) and the neutral weight file, for the PyTorch backend.

Layout, shared with gan_jax: `<out>/checkpoints/<step>/` holds `state.pt` (both nets with their
BatchNorm running statistics and spectral norm's u, v, both Adam states, the step, the noise
generator's state and G's EMA with --ema-decay: only tensors and plain Python values, so it loads
with `weights_only=True`) and `weights.safetensors`, the neutral file either backend can sample from.
gan_common.checkpoints makes it crash-safe: the parts are written into a scratch folder, a manifest
of their checksums last, and the folder renamed when complete; readers skip a broken newest one.

`save`, `restore_latest` and `load_state` are gan_common.loop.Checkpointer, with gan_jax.checkpoint's
signatures; `restore_latest` fills the given state in place (gan_jax's returns a new one) and returns it.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan_common.checkpoints import newest_checkpoint, save_step
from gan_common.errors import UserError
from gan_common.outputs import write_atomically
from gan_common.weights import (
    EMA_NET,
    WEIGHTS_FILE,
    load_weights,
    resolve_weights_file,
    sampling_tensors,
    save_weights,
)
from gan_torch.step import Gan, TrainState, create

STATE_FILE = "state.pt"
FORMAT = "gan_torch-checkpoint-v1"


# ----------------------------------------------------------------------------- neutral weights
# torch attribute -> neutral name, per layer kind. BatchNorm's running statistics are buffers, not
# parameters: they cross the bridge too (`.mean`, `.var`), but have no gradient. An nn.Embedding's
# weight (classes, dim) is `.embedding`, in the same layout as flax's. A spectrally normalised weight
# crosses as its raw `original` (in the layout above) with its buffers u and v as `.sn_u`, `.sn_v`
# (no gradient either; torch's (out,) and (-1,) vectors of the (out, -1) matrix, as they are).
_WEIGHTS = {"weight": "kernel", "bias": "bias"}
_BATCH_NORM = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_EMBEDDING = {"weight": "embedding"}
_SPECTRAL = {"_u": "sn_u", "_v": "sn_v"}


def _neutral_items(G: nn.Module, D: nn.Module, params_only: bool = False, G_ema: nn.Module | None = None):
    """(neutral key, torch tensor) pairs: `fc1.weight` of G is `generator.fc1.kernel`, `bn0.running_var`
    `generator.bn0.var`, and so on; G's EMA (when given) as `generator_ema.…`, its parameters only
    (a sampler takes the running statistics from `generator.…`)."""
    nets = (("generator", G, params_only), ("discriminator", D, params_only), (EMA_NET, G_ema, True))
    for net, module, only_params in nets:
        if module is None:
            continue
        for layer_name, layer in module.named_modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                names = _WEIGHTS
            elif isinstance(layer, nn.BatchNorm2d):
                names = {k: v for k, v in _BATCH_NORM.items() if not (only_params and k.startswith("running_"))}
            elif isinstance(layer, nn.Embedding):
                names = _EMBEDDING
            else:
                continue
            for attr, neutral in names.items():
                tensor = _stored(layer, attr)
                if tensor is not None:
                    yield f"{net}.{layer_name}.{neutral}", tensor
            if parametrize.is_parametrized(layer, "weight") and not only_params:
                spectral_norm = layer.parametrizations.weight[0]
                for attr, neutral in _SPECTRAL.items():
                    yield f"{net}.{layer_name}.{neutral}", getattr(spectral_norm, attr)


def _stored(layer: nn.Module, attr: str) -> torch.Tensor | None:
    """The tensor the layer stores under `attr`: for a spectrally normalised weight its raw `original`, never
    the parametrized `weight`, whose every read in train mode would run a power iteration."""
    if attr == "weight" and parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return getattr(layer, attr)


def _to_neutral_layout(t: torch.Tensor) -> torch.Tensor:
    """Kernels: nn.Linear (out, in) -> (in, out); Conv2d (out, in, kh, kw) -> HWIO (kh, kw, in, out);
    ConvTranspose2d (in, out, kh, kw) -> (kh, kw, out, in), the HWIO kernel of the convolution it is
    the transpose of (flax's ConvTranspose layout with transpose_kernel=True)."""
    return t.permute(2, 3, 1, 0) if t.ndim == 4 else t.T


def _from_neutral_layout(t: torch.Tensor) -> torch.Tensor:
    """The inverse of `_to_neutral_layout`."""
    return t.permute(3, 2, 0, 1) if t.ndim == 4 else t.T


def export_weights(G: nn.Module, D: nn.Module, grads: bool = False,
                   G_ema: nn.Module | None = None) -> dict[str, np.ndarray]:
    """Torch params and running statistics (or with grads=True the params' .grad) -> neutral tensors
    (`generator_ema.…` too for an EMA); kernels go to the neutral layout (an embedding's table does not)."""
    out = {}
    for key, tensor in _neutral_items(G, D, params_only=grads, G_ema=G_ema):
        value = (tensor.grad if grads else tensor).detach()
        out[key] = np.array(_to_neutral_layout(value).numpy() if key.endswith(".kernel") else value.numpy(), np.float32)
    return out


def import_weights(tensors: dict[str, np.ndarray], G: nn.Module, D: nn.Module) -> None:
    """Neutral tensors -> the params and running statistics of G and D, in place; every key must be there
    with the right shape."""
    with torch.no_grad():
        for key, tensor in _neutral_items(G, D):
            is_kernel = key.endswith(".kernel")
            expected = tuple(_to_neutral_layout(tensor).shape) if is_kernel else tuple(tensor.shape)
            if key not in tensors or tuple(tensors[key].shape) != expected:
                got = tuple(tensors[key].shape) if key in tensors else "missing"
                raise UserError(f"weight file does not fit the model: {key} is {got}, expected {expected}")
            value = torch.tensor(np.asarray(tensors[key], np.float32))  # a copy: safetensors arrays are read-only
            tensor.copy_(_from_neutral_layout(value) if is_kernel else value)


# ----------------------------------------------------------------------------- checkpoints
def save(root: str, gan: Gan, state: TrainState) -> str:
    """Write the checkpoint of `state.step` under `root` (gan_common.checkpoints.save_step: crash-safe, the
    newest KEEP kept, a full disk one UserError); return its folder."""
    stored = {
        "format": FORMAT,
        "config": gan.config.to_json(),
        "step": torch.tensor(state.step, dtype=torch.int64),
        "rng": state.rng.get_state(),  # (5056,) uint8: the noise generator's Mersenne Twister state
        "generator": state.generator.state_dict(),
        "discriminator": state.discriminator.state_dict(),
        "g_opt": state.g_opt.state_dict(),
        "d_opt": state.d_opt.state_dict(),
    }
    if state.g_ema is not None:
        stored["generator_ema"] = state.g_ema.state_dict()

    def write(folder: str) -> None:
        os.makedirs(folder)
        buffer = io.BytesIO()  # serialised in memory: a full disk is then an OSError of our own write, not torch's
        torch.save(stored, buffer)
        write_atomically(os.path.join(folder, STATE_FILE), lambda f: f.write(buffer.getvalue()))
        save_weights(os.path.join(folder, WEIGHTS_FILE),
                     export_weights(state.generator, state.discriminator, G_ema=state.g_ema), gan.config)

    return save_step(root, state.step, write, "gan_torch")


def restore_latest(root: str, gan: Gan, state: TrainState) -> TrainState:
    """Load the newest complete checkpoint under `root` into `state` in place (nets, optimisers, EMA, step and
    the noise generator's state) and return it; `gan` as in `save`. Its files match their manifest before
    torch reads them (gan_common.checkpoints.newest_checkpoint, which skips broken newer ones)."""
    if not os.path.isdir(root):
        raise UserError(f"no checkpoints folder at {root}; --resume needs a run started with this --out-dir")
    primary = not (torch.distributed.is_initialized() and torch.distributed.get_rank() != 0)
    folder = newest_checkpoint(root, required=(STATE_FILE, WEIGHTS_FILE), backend="gan_torch", warn=primary)
    path = os.path.join(folder, STATE_FILE)
    fix = "delete that step folder to resume from the one before, or start afresh"
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle and zip errors of many types: a file written damaged, its checksum of that
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"checkpoint {path} is unreadable or corrupt ({type(e).__name__}: {first}); {fix}") from None
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a gan_torch checkpoint (no {FORMAT} marker); {fix}")
    try:
        state.generator.load_state_dict(stored["generator"])
        state.discriminator.load_state_dict(stored["discriminator"])
        state.g_opt.load_state_dict(stored["g_opt"])
        state.d_opt.load_state_dict(stored["d_opt"])
        if state.g_ema is not None:
            state.g_ema.load_state_dict(stored["generator_ema"])
        state.rng.set_state(stored["rng"])
        state.step = int(stored["step"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(
            f"checkpoint {path} does not fit this run's models ({type(e).__name__}: {first}); {fix}"
        ) from None
    return state


def load_state(path: str, ema: bool = True) -> tuple[Gan, TrainState]:
    """(gan, state) for sampling and evaluation: a fresh `create(config)` holding the nets (parameters, BatchNorm
    running statistics, spectral norm's u, v) of the neutral file that `path` leads to (a run folder, a step
    folder or the file), both in eval mode; its optimisers and noise generator are fresh, its step 0.
    Its generator is G's EMA when the run kept one (what sampling and evaluation use; ema=False: G's own),
    with G's own running statistics; its g_ema is None (gan_jax.checkpoint.load_state alike)."""
    tensors, config = load_weights(resolve_weights_file(path))
    gan, state = create(config)  # its initial draw is overwritten; the global RNG is left as it was
    import_weights(sampling_tensors(tensors, ema), state.generator, state.discriminator)
    state.generator.eval()  # eval: BatchNorm uses the running statistics, spectral norm leaves u, v alone
    state.discriminator.eval()
    state.g_ema = None
    return gan, state
