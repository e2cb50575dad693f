"""Datasets as uint8 arrays (N, H, W, C): read once here, scaled to [-1, 1] by each backend.

Sources:
- package: MNIST's four original IDX files ship inside gan_common (no network), checked
  against their published SHA-256 before use.
- idx: the same four files from a folder (`--data-dir`); Debian's `dataset-fashion-mnist`
  installs Fashion-MNIST's in /usr/share/datasets/fashion-mnist, looked at by default.
- tfds: tensorflow-datasets' array_record data via `tfds.data_source` (needs TensorFlow
  only to prepare a dataset, not to read a prepared one).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from importlib import resources

import numpy as np

from gan_common.errors import UserError

IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
# Where an IDX copy of each dataset may already be on disk, without any network.
DEFAULT_IDX_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
TFDS_FIX = (
    "install the tfds extra (pip install -e '.[tfds]', which brings tensorflow-cpu to prepare datasets) on a "
    "machine with internet once, or pass --data-source idx --data-dir DIR with the four IDX files"
)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    images: np.ndarray  # (N, H, W, C) uint8 in [0, 255]
    labels: np.ndarray  # (N,) int64
    source: str  # where the arrays came from, for the log and config.json


def package_mnist_dir() -> str:
    return str(resources.files("gan_common") / "data" / "mnist")


def _read_bytes(path: str) -> bytes:
    """The decompressed bytes of `path` or `path.gz`."""
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            try:
                with open(candidate, "rb") as f:
                    raw = f.read()
                return gzip.decompress(raw) if candidate.endswith(".gz") else raw
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise UserError(f"cannot read {candidate}: {e}; expected a (gzipped) IDX file") from None
    raise UserError(f"missing data file {path}[.gz]; expected the four IDX files {', '.join(IDX_FILES.values())}")


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse an IDX file (big-endian uint8 arrays with a dims header), as in LeCun's spec."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{name} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise UserError(f"{name} is truncated or corrupt: header says {dims}, file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_split(folder: str, split: str, checksums: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28, 1) uint8 and labels (N,) int64 of one split in an IDX folder."""
    arrays = []
    for kind in ("images", "labels"):
        base = IDX_FILES[(split, kind)]
        raw = _read_bytes(os.path.join(folder, base))
        if checksums is not None:
            digest = hashlib.sha256(raw).hexdigest()
            if digest != checksums[base]:
                raise UserError(
                    f"checksum mismatch for {os.path.join(folder, base)}: sha256 {digest[:16]}..., "
                    f"expected {checksums[base][:16]}... (the original MNIST file); reinstall the package"
                )
        arrays.append(parse_idx(raw, os.path.join(folder, base)))
    images, labels = arrays
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise UserError(f"IDX files in {folder} disagree: images {images.shape}, labels {labels.shape}")
    return images[..., None], labels.astype(np.int64)


def _read_checksums(folder: str) -> dict[str, str]:
    with open(os.path.join(folder, "SHA256SUMS")) as f:
        return {name: digest for digest, name in (line.split() for line in f if line.strip())}


def _load_tfds(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(f"--data-source tfds needs tensorflow-datasets, which is not installed; {TFDS_FIX}") from None
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        n = len(source)
        examples = [source[i] for i in range(n)]
    except Exception as e:  # tfds raises many types here (no TF, no network, not prepared)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"tensorflow-datasets could not provide {name}/{split} ({type(e).__name__}: {first}); {TFDS_FIX}"
        ) from None
    images = np.stack([np.asarray(ex["image"], dtype=np.uint8) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], dtype=np.int64)
    if images.ndim == 3:
        images = images[..., None]
    return images, labels


def load_dataset(name: str = "mnist", split: str = "train", source: str = "auto", data_dir: str = "") -> Dataset:
    """Load one split of a dataset as uint8 arrays; `source` as in Config.data_source."""
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}; expected train or test")
    if source == "auto":
        if data_dir:
            source = "idx"
        elif name == "mnist":
            source = "package"
        elif os.path.isdir(DEFAULT_IDX_DIRS.get(name, "")):
            source, data_dir = "idx", DEFAULT_IDX_DIRS[name]
        else:
            source = "tfds"
    if source == "package":
        if name != "mnist":
            raise UserError(f"--data-source package ships only mnist, not {name}; use idx or tfds")
        folder = package_mnist_dir()
        images, labels = read_idx_split(folder, split, _read_checksums(folder))
        where = "package:gan_common/data/mnist (sha256 verified)"
    elif source == "idx":
        folder = data_dir or DEFAULT_IDX_DIRS.get(name, "")
        if not folder:
            raise UserError(f"--data-source idx needs --data-dir DIR holding the four IDX files of {name}")
        if not os.path.isdir(folder):
            raise UserError(f"--data-dir {folder!r} is not a folder; expected one holding the four IDX files")
        images, labels = read_idx_split(folder, split)
        where = f"idx:{folder}"
    elif source == "tfds":
        images, labels = _load_tfds(name, split, data_dir)
        where = f"tfds:{name}/{split}"
    else:
        raise UserError(f"unknown data source {source!r}; expected one of auto, package, idx, tfds")
    return Dataset(name=name, images=np.ascontiguousarray(images), labels=labels, source=where)
