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

import hashlib
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from gan_common.checkpoints import check_named_file, has_step_folders, newest_checkpoint
from gan_common.config import Config, typed_fields, validate
from gan_common.errors import UserError
from gan_common.outputs import write_atomically

WEIGHTS_FILE = "weights.safetensors"
DIGEST_KEY = "tensors_sha256"  # metadata: tensors_digest of the file's tensors, checked on load
EMA_NET = "generator_ema"  # the neutral name of G's EMA: keys generator_ema.<layer>.kernel|bias


def mlp_layer_names(num_hidden: int) -> tuple[str, ...]:
    """The MLP's layers, fc1 .. fc{num_hidden + 1}, the same attribute names in both backends."""
    return tuple(f"fc{i + 1}" for i in range(num_hidden + 1))


def save_weights(path: str, tensors: dict[str, np.ndarray], config: Config) -> None:
    """Write the neutral file atomically (a crash leaves the old file or none, never half of one)."""
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    metadata = {"format": "gan-neutral-v1", "config": config.to_json(), DIGEST_KEY: tensors_digest(arrays)}
    data = save(arrays, metadata=metadata)  # bytes
    write_atomically(path, lambda f: f.write(data))  # an ordinary file: 0644 under umask 022


def load_weights(path: str) -> tuple[dict[str, np.ndarray], Config]:
    """Read a neutral file: its tensors (all finite) and the config of the run that wrote it."""
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
    config = _metadata_config(path, meta["config"])
    if DIGEST_KEY in meta and tensors_digest(tensors) != meta[DIGEST_KEY]:  # files from before it have none
        raise UserError(f"{path} is damaged: its tensors do not match the sha256 recorded in it; use another "
                        f"checkpoint")
    for key, value in tensors.items():
        if not np.all(np.isfinite(value)):
            raise UserError(f"{path} holds NaN or inf in {key}; the file is damaged, use another checkpoint")
    return tensors, config


def _metadata_config(path: str, text: str) -> Config:
    """The run config in a neutral file's metadata, each field of the type Config gives it, and validated."""
    try:
        fields = typed_fields(text)
    except UserError as e:
        raise UserError(f"{path}: metadata config {e}") from None
    try:
        return validate(Config(**fields))
    except UserError as e:
        raise UserError(f"{path}: metadata config is not a valid run config: {e}") from None


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 of every tensor's name, shape and float32 bytes, in name order: recorded in the file's own
    metadata, so a lone weight file (no checkpoint manifest beside it) still shows a flipped byte."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key], dtype=np.float32)
        h.update(f"{key}:{value.shape};".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def sampling_tensors(tensors: dict[str, np.ndarray], ema: bool = True) -> dict[str, np.ndarray]:
    """The weights to sample and evaluate with: G's EMA in place of `generator.*` when the file holds one.

    The EMA holds parameters only: keys it lacks (a BatchNorm's running `.mean`, `.var`) stay G's own.
    ema=False: G's own weights even so (benchmarks.quality scores a run both ways).
    """
    prefix = EMA_NET + "."
    ema_tensors = {"generator." + k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)} if ema else {}
    return {**{k: v for k, v in tensors.items() if not k.startswith(prefix)}, **ema_tensors}


# ----------------------------------------------------------------------------- what --checkpoint names
def resolve_weights_file(path: str) -> str:
    """A run folder, its checkpoints folder, one step folder, or a weights file -> the neutral file.

    A run or checkpoints folder leads to its newest complete checkpoint (gan_common.checkpoints: newer broken
    ones are skipped, saying so); a step folder or file named directly is used as it is, once it matches its
    checkpoint's manifest (when it has one).
    """
    if os.path.isfile(path):
        return _checked(path)
    if not os.path.isdir(path):
        raise UserError(f"--checkpoint {path!r} does not exist; expected a run folder, a checkpoint folder "
                        f"or a {WEIGHTS_FILE}")
    for candidate in (path, os.path.join(path, "checkpoints")):
        if os.path.isfile(os.path.join(candidate, WEIGHTS_FILE)):
            return _checked(os.path.join(candidate, WEIGHTS_FILE))
        if has_step_folders(candidate):
            return os.path.join(newest_checkpoint(candidate, required=(WEIGHTS_FILE,)), WEIGHTS_FILE)
    raise UserError(f"--checkpoint {path!r} holds no checkpoint; expected a run folder, a checkpoint folder "
                    f"or a {WEIGHTS_FILE}")


def _checked(path: str) -> str:
    why = check_named_file(path)
    if why is not None:
        raise UserError(f"{path} is {why}; name the run folder to use its newest good checkpoint")
    return path
