"""Checkpoints (orbax) and the neutral weight file, for the JAX backend.

Layout, shared with gan_torch: `<out>/checkpoints/<step>/` holds orbax's `state` (params,
BatchNorm running statistics and spectral norm's u, v, both Adam states, step, run key, and G's
EMA with --ema-decay) and `meta` (JSON), plus `weights.safetensors`, the neutral file either
backend can sample from. Orbax writes each step to a temporary folder and renames it when
complete, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from gan_common.errors import UserError
from gan_common.weights import (
    EMA_NET,
    WEIGHTS_FILE,
    latest_step_dir,
    load_weights,
    resolve_weights_file,
    sampling_tensors,
    save_weights,
)
from gan_jax import parallel
from gan_jax.step import Gan, TrainState, create

KEEP = 3  # newest checkpoints kept; older ones are deleted by orbax


def _manager(root: str, create: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=KEEP, create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(root), options=options, item_names=("state", "meta"))


# ----------------------------------------------------------------------------- neutral weights
# Flax's layouts are the neutral ones, so the names are all that changes: `generator.fc1.kernel`,
# `generator.bn0.scale` (an nnx.Param), `generator.bn0.mean` (an nnx.BatchStat), `discriminator.conv1.sn_u`
# (a SpectralVector, a BatchStat, held in torch's order: gan_jax.layers.SpectralNorm). Dense kernels are
# (in, out), Conv kernels HWIO, ConvTranspose kernels (transpose_kernel=True) the HWIO kernel of the
# convolution they transpose, (kh, kw, out, in).
def export_weights(g_params: nnx.State, d_params: nnx.State, g_stats: nnx.State | None = None,
                   d_stats: nnx.State | None = None, g_ema: nnx.State | None = None) -> dict[str, np.ndarray]:
    """Flax params (and running statistics, and G's EMA as `generator_ema.…`, when given) -> neutral tensors.

    The EMA holds parameters only: a sampler takes the running statistics from `generator.…`.
    """
    out = {}
    nets = (("generator", (g_params, g_stats)), ("discriminator", (d_params, d_stats)), (EMA_NET, (g_ema,)))
    for net, states in nets:
        for state in states:
            if state is not None:
                for name, value in _flat(nnx.to_pure_dict(state)).items():
                    out[f"{net}.{name}"] = parallel.to_host(value).astype(np.float32)
    return out


def import_weights(tensors: dict[str, np.ndarray], g_params: nnx.State, d_params: nnx.State, g_stats: nnx.State,
                   d_stats: nnx.State) -> tuple[nnx.State, nnx.State, nnx.State, nnx.State]:
    """Neutral tensors -> new (g_params, d_params, g_stats, d_stats) shaped like the given ones; every key
    must match."""
    result = []
    for net, state in (("generator", g_params), ("discriminator", d_params), ("generator", g_stats),
                       ("discriminator", d_stats)):
        pure = nnx.to_pure_dict(state)
        for name, value in _flat(pure).items():
            key = f"{net}.{name}"
            if key not in tensors or tensors[key].shape != value.shape:
                got = tensors[key].shape if key in tensors else "missing"
                raise UserError(f"weight file does not fit the model: {key} is {got}, expected {value.shape}")
            layer, leaf = name.rsplit(".", 1)
            _at(pure, layer)[leaf] = jax.numpy.asarray(tensors[key])
        nnx.replace_by_pure_dict(state, pure)
        result.append(state)
    return tuple(result)


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"bn0": {"mean": a}} -> {"bn0.mean": a}."""
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _at(tree: dict, dotted: str) -> dict:
    for k in dotted.split("."):
        tree = tree[k]
    return tree


# ----------------------------------------------------------------------------- checkpoints
def save(root: str, gan: Gan, state: TrainState) -> str:
    """Write the checkpoint of `state.step` under `root`; return its folder.

    Every process of a multi-process run calls this (orbax coordinates them); process 0 alone
    writes the neutral weight file.
    """
    step = int(parallel.to_host(state.step))
    with _manager(root, create=True) as mngr:
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_stored(state)),
            meta=ocp.args.JsonSave({"step": step, "backend": "gan_jax", "config": gan.config.to_json()}),
        ), force=True)
        mngr.wait_until_finished()
    folder = os.path.join(root, str(step))
    if parallel.is_primary():
        save_weights(os.path.join(folder, WEIGHTS_FILE),
                     export_weights(state.g_params, state.d_params, state.g_stats, state.d_stats, state.g_ema),
                     gan.config)
    return folder


def _stored(state) -> dict:
    """The state's fields orbax stores: all but those the config switches off (None: g_ema without
    --ema-decay), so a run without EMA writes, and resumes, checkpoints laid out as before EMA existed."""
    return {name: value for name, value in state._asdict().items() if value is not None}


def restore_latest(root: str, gan: Gan, state: TrainState) -> TrainState:
    """The newest checkpoint under `root`, as a state shaped (and placed) like `state`; `gan` as in `save`."""
    if not os.path.isdir(root):
        raise UserError(f"no checkpoints folder at {root}; --resume needs a run started with this --out-dir")
    folder = latest_step_dir(root)
    if not os.path.isdir(os.path.join(folder, "state")):
        raise UserError(f"checkpoint {folder} holds no orbax state (written by gan_torch?); "
                        f"resume a run with the backend that trained it")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _stored(state))
    try:
        with _manager(root, create=False) as mngr:
            restored = mngr.restore(int(os.path.basename(folder)),
                                    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"checkpoint {folder} is unreadable or corrupt ({type(e).__name__}: {first}); "
                        f"delete that step folder to resume from the one before, or start afresh") from None
    return state._replace(**restored["state"])


def load_state(path: str, ema: bool = True) -> tuple[Gan, TrainState]:
    """(gan, state) holding the nets (params and running statistics) of the neutral file that `path` leads
    to; its optimiser states are fresh. Its g_params are G's EMA when the run kept one (what sampling and
    evaluation use; ema=False: G's own), with G's own running statistics; its g_ema is None."""
    tensors, config = load_weights(resolve_weights_file(path))
    tensors = sampling_tensors(tensors, ema)
    gan, fresh = create(config)
    g_params, d_params, g_stats, d_stats = import_weights(tensors, fresh.g_params, fresh.d_params, fresh.g_stats,
                                                          fresh.d_stats)
    return gan, fresh._replace(g_params=g_params, d_params=d_params, g_stats=g_stats, d_stats=d_stats, g_ema=None)
