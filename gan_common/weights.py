"""The neutral weight file: what crosses between the backends (never an import).

safetensors, float32, one tensor per parameter, keys `generator.<layer>.kernel|bias` and
`discriminator.<layer>.kernel|bias`, dense kernels in (in, out) layout, convolution kernels
HWIO, a transposed convolution's kernel the HWIO kernel of the convolution it is the transpose
of, (kh, kw, out, in); BatchNorm layers `.scale`, `.bias` and their running statistics `.mean`,
`.var` (torch's unbiased running variance). Label tables (--conditional) are `.embedding`, (classes,
dim): `generator.label_embed.embedding` (10, 10) in both architectures, the MLP's
`discriminator.label_embed.embedding` (10, 10), the DCGAN's projection `discriminator.projection.embedding`
(10, features), features = H/4 * W/4 * 2 d_channels in D's (h, w, c) flattening order. A spectrally
normalised layer (--d-norm spectral: D's conv1, conv2, fc and projection) stores its raw weight as above
plus the power iteration's vectors `.sn_u` (out,) and `.sn_v` (in * kh * kw,) for a convolution, (in,) for
`fc`, (features,) for the projection (out: 10): torch's u and v of the weight reshaped to (out, -1) in its
own layout (OIHW for a convolution; (out, in) for a dense layer; (classes, dim) for a table), which
gan_jax reshapes alike, so they load as they are. Images are NHWC. A run with --ema-decay adds the
moving average of G's parameters as `generator_ema.<layer>.kernel|bias|scale`, which sampling
and evaluation then use (`sampling_tensors`); the EMA averages parameters only, so a BatchNorm
G samples with its live running statistics, `generator.<layer>.mean|var`. The run's config
rides along as metadata so that a reader can rebuild the models without the run folder.
Each backend converts to and from its own layout at its boundary.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from gan_common.config import Config
from gan_common.errors import UserError

WEIGHTS_FILE = "weights.safetensors"
EMA_NET = "generator_ema"  # the neutral name of G's EMA: keys generator_ema.<layer>.kernel|bias


def mlp_layer_names(num_hidden: int) -> tuple[str, ...]:
    """The MLP's layers, fc1 .. fc{num_hidden + 1}, the same attribute names in both backends."""
    return tuple(f"fc{i + 1}" for i in range(num_hidden + 1))


def save_weights(path: str, tensors: dict[str, np.ndarray], config: Config) -> None:
    """Write the neutral file atomically (a crash leaves the old file or none, never half of one)."""
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    tmp = path + ".tmp"
    save_file(arrays, tmp, metadata={"format": "gan-neutral-v1", "config": config.to_json()})
    os.replace(tmp, path)


def load_weights(path: str) -> tuple[dict[str, np.ndarray], Config]:
    """Read a neutral file: its tensors and the config of the run that wrote it."""
    if not os.path.isfile(path):
        raise UserError(f"no weight file at {path}; expected a {WEIGHTS_FILE} from a checkpoint of either backend")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta.get("format") != "gan-neutral-v1" or "config" not in meta:
        raise UserError(f"{path} is a safetensors file but not a gan neutral weight file (no gan-neutral-v1 metadata)")
    raw = json.loads(meta["config"])
    names = {f.name for f in dataclasses.fields(Config)}
    return tensors, Config(**{k: v for k, v in raw.items() if k in names})


def sampling_tensors(tensors: dict[str, np.ndarray], ema: bool = True) -> dict[str, np.ndarray]:
    """The weights to sample and evaluate with: G's EMA in place of `generator.*` when the file holds one.

    The EMA holds parameters only: keys it lacks (a BatchNorm's running `.mean`, `.var`) stay G's own.
    ema=False: G's own weights even so (benchmarks.quality scores a run both ways).
    """
    prefix = EMA_NET + "."
    ema_tensors = {"generator." + k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)} if ema else {}
    return {**{k: v for k, v in tensors.items() if not k.startswith(prefix)}, **ema_tensors}


# ----------------------------------------------------------------------------- checkpoint folders
# Both backends lay checkpoints out as <out>/checkpoints/<step>/ holding WEIGHTS_FILE, so
# finding the newest one, or the neutral file a user points at, is framework-free.
def step_dirs(root: str) -> list[int]:
    """Steps of the complete checkpoint folders under `root`, newest first (temporary folders ignored)."""
    if not os.path.isdir(root):
        return []
    return sorted((int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n))),
                  reverse=True)


def latest_step_dir(root: str) -> str:
    """The newest complete checkpoint folder under `root`."""
    steps = step_dirs(root)
    if not steps:
        raise UserError(f"no checkpoint in {root}; expected step folders written by a training run")
    return os.path.join(root, str(steps[0]))


def resolve_weights_file(path: str) -> str:
    """A run folder, its checkpoints folder, one step folder, or a weights file -> the neutral file."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise UserError(f"--checkpoint {path!r} does not exist; expected a run folder, a checkpoint folder "
                        f"or a {WEIGHTS_FILE}")
    for candidate in (path, os.path.join(path, "checkpoints")):
        if os.path.isfile(os.path.join(candidate, WEIGHTS_FILE)):
            return os.path.join(candidate, WEIGHTS_FILE)
        if step_dirs(candidate):
            return os.path.join(latest_step_dir(candidate), WEIGHTS_FILE)
    raise UserError(f"--checkpoint {path!r} holds no checkpoint; expected a run folder, a checkpoint folder "
                    f"or a {WEIGHTS_FILE}")
