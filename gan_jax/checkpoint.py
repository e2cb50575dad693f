"""Checkpoints (orbax) and the neutral weight file, for the JAX backend.

Layout, shared with gan_torch: `<out>/checkpoints/<step>/` holds orbax's `state` (params,
BatchNorm running statistics and spectral norm's u, v, both Adam states, step, run key, and G's
EMA with --ema-decay) and `meta` (JSON), plus `weights.safetensors`, the neutral file either
backend can sample from. gan_common.checkpoints makes it crash-safe: orbax and the neutral file
write into a scratch folder, a manifest of their checksums comes last, and the folder is renamed
when complete; readers check the manifest before orbax reads a byte, and skip a broken newest one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from gan_common.checkpoints import newest_checkpoint, save_step
from gan_common.errors import UserError
from gan_common.weights import (
    EMA_NET,
    WEIGHTS_FILE,
    load_weights,
    resolve_weights_file,
    sampling_tensors,
    save_weights,
)
from gan_jax import parallel
from gan_jax.step import Gan, TrainState, create


def _checkpointer() -> ocp.Checkpointer:
    """Orbax's synchronous checkpointer of a step's two items: `state` (the TrainState) and `meta` (JSON:
    step, backend, config). It writes into the scratch folder it is given; that folder's name and life are
    gan_common.checkpoints'."""
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


@contextlib.contextmanager
def _orbax_quietly():
    """Orbax's worker threads log each failure with a traceback (absl's logger), and its failed coroutines
    print "Exception ignored in coroutine" when collected: the caller turns the failure into one line instead."""
    logger, hook = logging.getLogger("absl"), sys.unraisablehook
    disabled, logger.disabled = logger.disabled, True
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    except BaseException:
        gc.collect()  # the failed coroutines are reported when collected: now, while the hook is quiet
        raise
    finally:
        logger.disabled = disabled
        sys.unraisablehook = hook


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
    """Write the checkpoint of `state.step` under `root` (gan_common.checkpoints.save_step: crash-safe, the
    newest KEEP kept, a full disk one UserError); return its folder.

    Every process of a multi-process run calls this (orbax coordinates them); process 0 alone
    writes the neutral weight file and the manifest.
    """
    step = int(parallel.to_host(state.step))

    def write(folder: str) -> None:
        with _orbax_quietly():
            _checkpointer().save(os.path.abspath(folder), args=ocp.args.Composite(
                state=ocp.args.StandardSave(_stored(state)),
                meta=ocp.args.JsonSave({"step": step, "backend": "gan_jax", "config": gan.config.to_json()}),
            ))
        if parallel.is_primary():
            save_weights(os.path.join(folder, WEIGHTS_FILE),
                         export_weights(state.g_params, state.d_params, state.g_stats, state.d_stats, state.g_ema),
                         gan.config)

    return save_step(root, step, write, "gan_jax", primary=parallel.is_primary())


def _stored(state) -> dict:
    """The state's fields orbax stores: all but those the config switches off (None: g_ema without
    --ema-decay), so a run without EMA writes, and resumes, checkpoints laid out as before EMA existed."""
    return {name: value for name, value in state._asdict().items() if value is not None}


def restore_latest(root: str, gan: Gan, state: TrainState) -> TrainState:
    """The newest complete checkpoint under `root`, as a state shaped (and placed) like `state`; `gan` as in
    `save`. Its files match their manifest before orbax reads them (gan_common.checkpoints.newest_checkpoint,
    which skips broken newer ones)."""
    if not os.path.isdir(root):
        raise UserError(f"no checkpoints folder at {root}; --resume needs a run started with this --out-dir")
    folder = newest_checkpoint(root, required=("state", WEIGHTS_FILE), backend="gan_jax", warn=parallel.is_primary())
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _stored(state))
    try:
        with _orbax_quietly():
            restored = _checkpointer().restore(os.path.abspath(folder),
                                               args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # intact files (checked above) that orbax cannot restore into this run's state
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"checkpoint {folder} does not fit this run's models ({type(e).__name__}: {first}); "
                        f"resume it with the flags it was trained with, or start afresh") from None
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
