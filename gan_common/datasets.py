"""Datasets as uint8 arrays (N, H, W, C): read once here, scaled to [-1, 1] by each backend.

Sources:
- package: MNIST's four original IDX files ship inside gan_common (no network), checked
  against their published SHA-256 before use.
- idx: the same four files from a folder (`--data-dir`); Debian's `dataset-fashion-mnist`
  installs Fashion-MNIST's in /usr/share/datasets/fashion-mnist, looked at by default.
- tfds: tensorflow-datasets' array_record data via `tfds.data_source` (needs TensorFlow
  only to prepare a dataset, not to read a prepared one).
- folder:PATH: the user's PNG/JPEG/WebP files, found recursively; with every image inside a
  subfolder of PATH, each subfolder is a class (labels by sorted name). Decoded once, resized and
  centre-cropped to a square side, and cached as .npz (`cache_dir`), keyed by the file list, sizes
  and mtimes and the requested shape, so a second run starts at once.
- npz:PATH: uint8 `images` (N, H, W[, C]) and optional integer `labels` (N,).
folder:/npz: data has no test split: its "test" split is the training images themselves, so
evaluation compares samples with the data the run trained on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import math
import os
import sys
import tempfile
import zipfile
import zlib
from importlib import resources

import numpy as np
from PIL import Image, ImageOps

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
    classes: tuple[str, ...] = ()  # folder:PATH's class folders, label k named classes[k]; () for the others


def package_mnist_dir() -> str:
    return str(resources.files("gan_common") / "data" / "mnist")


def _idx_file(path: str) -> str:
    """`path` or `path.gz`, whichever exists."""
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            return candidate
    raise UserError(f"missing data file {path}[.gz]; expected the four IDX files {', '.join(IDX_FILES.values())}")


def _read_bytes(path: str) -> bytes:
    """The decompressed bytes of `path` or `path.gz`."""
    candidate = _idx_file(path)
    try:
        with open(candidate, "rb") as f:
            raw = f.read()
        return gzip.decompress(raw) if candidate.endswith(".gz") else raw
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:  # zlib.error: a damaged deflate stream
        raise UserError(f"cannot read {candidate}: {e}; expected a (gzipped) IDX file") from None


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse an IDX file (big-endian uint8 arrays with a dims header), as in LeCun's spec."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{name} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(dims):  # a Python int: no overflow for a damaged header
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


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Class labels index the nets' label tables: one outside 0..num_classes-1 would make JAX read a clipped
    row silently and torch fail deep in a step."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise UserError(f"{where} holds label {labels[bad[0]]} at index {bad[0]} ({bad.size} labels outside "
                        f"0..{num_classes - 1}); a --conditional run needs classes 0..{num_classes - 1}")


def _read_checksums(folder: str) -> dict[str, str]:
    with open(os.path.join(folder, "SHA256SUMS")) as f:
        return {name: digest for digest, name in (line.split() for line in f if line.strip())}


def _load_tfds(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # tfds itself, or a module it imports: then the tfds extra is not the fix
        missing = e.name if isinstance(e, ModuleNotFoundError) and e.name else "tensorflow_datasets"
        if missing.split(".")[0] != "tensorflow_datasets":
            raise UserError(f"tensorflow-datasets is installed but imports {missing!r}, which is not; install the "
                            f"package that provides that module, or pass --data-source idx --data-dir DIR with "
                            f"the four IDX files") from None
        raise UserError(f"--data-source tfds needs tensorflow-datasets, which is not installed; {TFDS_FIX}") from None
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        n = len(source)
        examples = [source[i] for i in range(n)]
    except Exception as e:  # tfds raises many types here (no TF, no network, not prepared)
        missing = e.name if isinstance(e, ModuleNotFoundError) and e.name else "tensorflow"  # the extra brings TF
        if missing.split(".")[0] != "tensorflow":  # a module tfds imports only now (array_record, ...)
            raise UserError(f"tensorflow-datasets could not provide {name}/{split}: it imports {missing!r}, which "
                            f"is not installed; install the package that provides that module, or pass "
                            f"--data-source idx --data-dir DIR with the four IDX files") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"tensorflow-datasets could not provide {name}/{split} ({type(e).__name__}: {first}); {TFDS_FIX}"
        ) from None
    images = np.stack([np.asarray(ex["image"], dtype=np.uint8) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], dtype=np.int64)
    if images.ndim == 3:
        images = images[..., None]
    return images, labels


# ----------------------------------------------------------------------------- the user's own images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "F")  # PIL modes taken as grey (and I;16 and friends, which start with "I;")
CACHE_ENV = "GAN_CACHE_DIR"  # overrides the cache folder
CACHE_VERSION = 1  # part of the key: a change to the decoding makes old entries misses


def cache_dir() -> str:
    """Where decoded folders are kept: $GAN_CACHE_DIR, else $XDG_CACHE_HOME/gan-jax, else ~/.cache/gan-jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get(CACHE_ENV) or os.path.join(base, "gan-jax")


def nearest_size(side: int, sizes: tuple[int, ...] | None) -> int:
    """`side`, or the nearest of `sizes` the nets build for (ties to the larger: less detail thrown away)."""
    return side if not sizes else min(sizes, key=lambda s: (abs(s - side), -s))


def _fit(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """One image as (size, size, channels) uint8: grey or RGB, its shorter side scaled to `size`, centre-cropped."""
    image = image.convert("L" if channels == 1 else "RGB")  # an alpha channel is dropped
    image = ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)  # crop to square around the centre, resize
    return np.asarray(image, np.uint8).reshape(size, size, channels)


def _image_files(root: str) -> tuple[list[str], list[str]]:
    """Image paths under `root` relative to it, sorted, and the class names: the top-level subfolders when no
    image sits in `root` itself (else none)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    found.sort()
    nested = found and all(os.sep in f for f in found)
    classes = sorted({f.split(os.sep, 1)[0] for f in found}) if nested else []
    return found, classes


def _cache_path(root: str, files: list[str], request: tuple) -> str:
    """The cache file of this file list (names, sizes, mtimes) decoded as `request`."""
    listing = []
    for f in files:
        st = os.stat(os.path.join(root, f))
        listing.append((f, st.st_size, st.st_mtime_ns))
    key = json.dumps([CACHE_VERSION, os.path.abspath(root), request, listing])
    return os.path.join(cache_dir(), hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")


def _save_cache(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache atomically (a unique temporary name, then os.replace); a cache that cannot be written
    only costs the next run the decoding, so that is a warning."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".tmp", delete=False) as f:
            tmp = f.name
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        print(f"warning: cannot write the decoded-image cache {path} ({e.strerror or e}); the next run decodes "
              f"again (set ${CACHE_ENV} to a writable folder)", file=sys.stderr)
        with contextlib.suppress(OSError, UnboundLocalError):
            os.remove(tmp)


def _load_folder(root: str, image_size: int, channels: int, sizes: tuple[int, ...] | None):
    """folder:PATH -> (images (N, S, S, C) uint8, labels (N,), class names), through the cache."""
    if not os.path.isdir(root):
        raise UserError(f"--dataset folder:{root}: no such folder; expected a folder of PNG/JPEG/WebP images")
    files, classes = _image_files(root)
    if not files:
        raise UserError(f"--dataset folder:{root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    cache = _cache_path(root, files, [image_size, channels, list(sizes or ())])
    with contextlib.suppress(OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError):  # a bad entry: decode
        with np.load(cache, allow_pickle=False) as f:
            return f["images"], f["labels"], tuple(str(c) for c in f["classes"])
    images, labels, skipped = [], [], []
    for f in files:
        try:
            with Image.open(os.path.join(root, f)) as image:
                if not image_size or not channels:  # the first readable image sets what was not given
                    image_size = image_size or nearest_size(min(image.size), sizes)
                    channels = channels or (1 if image.mode in GREY_MODES or image.mode.startswith("I;") else 3)
                images.append(_fit(image, image_size, channels))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's ways to fail
            skipped.append(f"{f} ({type(e).__name__})")
            continue
        labels.append(classes.index(f.split(os.sep, 1)[0]) if classes else 0)
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image files of {root}, e.g. {skipped[0]}", file=sys.stderr)
    if not images:
        raise UserError(f"--dataset folder:{root}: none of its {len(files)} image files could be read")
    arrays = {"images": np.stack(images), "labels": np.asarray(labels, np.int64), "classes": np.asarray(classes, str)}
    _save_cache(cache, arrays)
    return arrays["images"], arrays["labels"], tuple(classes)


def _load_npz(path: str, image_size: int, channels: int, sizes: tuple[int, ...] | None):
    """npz:PATH -> (images (N, S, S, C) uint8, labels (N,) or None), resized and converted only if asked to."""
    where = f"--dataset npz:{path}"
    try:
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f.files:
                raise UserError(f"{where} holds {', '.join(f.files) or 'no arrays'}, not `images`; expected uint8 "
                                f"images (N, H, W[, C]) and optional labels (N,)")
            images, labels = f["images"], f["labels"] if "labels" in f.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # missing, not a zip, object arrays
        raise UserError(f"cannot read {where} ({type(e).__name__}: {e}); expected an .npz of uint8 images "
                        f"(N, H, W[, C]) and optional integer labels (N,)") from None
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or not images.shape[0]:
        raise UserError(f"{where}: images are {images.dtype} {images.shape}; expected uint8 (N, H, W), "
                        f"(N, H, W, 1) or (N, H, W, 3), N >= 1")
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1]:
            raise UserError(f"{where}: labels are {labels.dtype} {labels.shape}; expected integers "
                            f"({images.shape[0]},), one per image")
        if labels.min() < 0:
            raise UserError(f"{where}: labels hold {labels.min()}; expected classes 0, 1, ...")
        labels = labels.astype(np.int64)
    _, height, width, have = images.shape
    size, channels = image_size or nearest_size(min(height, width), sizes), channels or have
    if (height, width, have) != (size, size, channels):
        mode = "L" if have == 1 else "RGB"
        images = np.stack([_fit(Image.fromarray(x[..., 0] if have == 1 else x, mode), size, channels) for x in images])
    return images, labels


def _load_own(spec: str, num_classes: int | None, image_size: int, channels: int,
              sizes: tuple[int, ...] | None) -> Dataset:
    """folder:PATH or npz:PATH as a Dataset; `num_classes` (--conditional): refuse data without classes or with
    more than the nets' label tables hold."""
    kind, path = spec.split(":", 1)
    if kind == "folder":
        images, labels, classes = _load_folder(path, image_size, channels, sizes)
        if num_classes is not None and len(classes) < 2:
            raise UserError(f"--conditional needs one subfolder per class in {path}, at least two; it holds "
                            f"{'one class folder' if classes else 'images outside class subfolders'}")
        if num_classes is not None and len(classes) > num_classes:
            raise UserError(f"{path} holds {len(classes)} class folders; --conditional supports at most "
                            f"{num_classes} (drop --conditional, or merge classes)")
    else:
        images, labels = _load_npz(path, image_size, channels, sizes)
        classes = ()
        if labels is None:
            if num_classes is not None:
                raise UserError(f"--conditional needs class labels, and {path} holds no `labels` array")
            labels = np.zeros(images.shape[0], np.int64)
        elif num_classes is not None:
            check_labels(labels, num_classes, f"{path}'s labels")
    return Dataset(name=spec, images=np.ascontiguousarray(images), labels=labels, source=spec, classes=classes)


def load_dataset(name: str = "mnist", split: str = "train", source: str = "auto", data_dir: str = "",
                 num_classes: int | None = None, image_size: int = 0, channels: int = 0,
                 sizes: tuple[int, ...] | None = None) -> Dataset:
    """Load one split of a dataset as uint8 arrays; `source` as in Config.data_source. `num_classes`: check
    that every label is a class 0..num_classes-1 (a --conditional run feeds them to its nets).
    folder:PATH / npz:PATH: `image_size` and `channels` as Config's (0: from the first image, its side rounded
    to the nearest of `sizes` when given); both splits are the same images."""
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}; expected train or test")
    if name.startswith(("folder:", "npz:")):
        if source != "auto" or data_dir:
            raise UserError(f"--data-source and --data-dir apply only to named datasets; --dataset {name} names "
                            f"its own path: drop them")
        return _load_own(name, num_classes, image_size, channels, sizes)
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
    if num_classes is not None:
        labels_file = _idx_file(os.path.join(folder, IDX_FILES[(split, "labels")])) if source != "tfds" else None
        check_labels(labels, num_classes, labels_file or f"tensorflow-datasets' {name}/{split}")
    return Dataset(name=name, images=np.ascontiguousarray(images), labels=labels, source=where)
