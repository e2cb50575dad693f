"""Datasets: the shipped MNIST is verified, IDX folders and tfds load offline, bad files say so."""

import gzip
import hashlib
import os
import shutil

import numpy as np
import pytest

from gan_common import datasets
from gan_common.datasets import IDX_FILES, load_dataset, package_mnist_dir
from gan_common.errors import UserError


def test_shipped_mnist_loads_with_known_shape_and_statistics():
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels).tolist()[:3] == [5923, 6742, 5958]  # published class counts
    # The published [0, 1]-scale mean 0.1307 and std 0.3081 (shared/data/mnist/README.md), to 4 digits.
    x = train.images.astype(np.float64) / 255
    assert abs(x.mean() - 0.1307) < 5e-5 and abs(x.std() - 0.3081) < 5e-5
    assert "sha256 verified" in train.source


def _write_idx(folder, split, images, labels, gz=True):
    os.makedirs(folder, exist_ok=True)
    n = len(images)
    blobs = {
        "images": bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + images.tobytes(),
        "labels": bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes(),
    }
    for kind, raw in blobs.items():
        path = os.path.join(folder, IDX_FILES[(split, kind)])
        if gz:
            with gzip.open(path + ".gz", "wb") as f:
                f.write(raw)
        else:
            with open(path, "wb") as f:
                f.write(raw)


def test_corrupted_package_copy_is_rejected_naming_the_file(tmp_path, monkeypatch):
    copy = tmp_path / "mnist"
    shutil.copytree(package_mnist_dir(), copy)
    name = IDX_FILES[("test", "labels")]
    raw = bytearray(gzip.decompress((copy / (name + ".gz")).read_bytes()))
    raw[100] ^= 1  # one flipped bit in a label
    (copy / (name + ".gz")).write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setattr(datasets, "package_mnist_dir", lambda: str(copy))
    with pytest.raises(UserError, match=f"checksum mismatch for .*{name}"):
        load_dataset("mnist", "test")


def test_idx_folder_round_trips_and_truncation_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 50)
    _write_idx(tmp_path / "ok", "train", images, labels, gz=False)
    ds = load_dataset("fashion_mnist", "train", source="auto", data_dir=str(tmp_path / "ok"))
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    path = tmp_path / "ok" / IDX_FILES[("train", "images")]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("fashion_mnist", "train", source="idx", data_dir=str(tmp_path / "ok"))
    with pytest.raises(UserError, match="missing data file"):
        load_dataset("mnist", "train", source="idx", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="is not a folder"):
        load_dataset("mnist", "train", source="idx", data_dir=str(tmp_path / "nope"))


@pytest.mark.skipif(not os.path.isdir(datasets.DEFAULT_IDX_DIRS["fashion_mnist"]),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_fashion_mnist_loads_offline_from_the_debian_package():
    ds = load_dataset("fashion_mnist", "test")
    assert ds.images.shape == (10000, 28, 28, 1) and ds.source.startswith("idx:/usr/share/datasets")
    assert np.bincount(ds.labels).tolist() == [1000] * 10


def test_tfds_path_offline_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset("kmnist", "train", source="tfds")
    assert ds.images.shape == (12, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (12,) and ds.source == "tfds:kmnist/train"


def test_tfds_that_cannot_prepare_says_how_to_fix(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    # An empty data_dir: tfds must download and prepare, which needs TensorFlow and the network.
    with pytest.raises(UserError, match="tensorflow-datasets could not provide kmnist/train.*--data-source idx"):
        load_dataset("kmnist", "train", source="tfds", data_dir=str(tmp_path))


def test_unknown_split_and_source():
    with pytest.raises(UserError, match="unknown split"):
        load_dataset("mnist", "validation")
    with pytest.raises(UserError, match="ships only mnist"):
        load_dataset("kmnist", "train", source="package")


def test_package_checksums_are_the_published_ones():
    sums = open(os.path.join(package_mnist_dir(), "SHA256SUMS")).read()
    raw = gzip.decompress(open(os.path.join(package_mnist_dir(), "train-labels-idx1-ubyte.gz"), "rb").read())
    assert hashlib.sha256(raw).hexdigest() in sums
    assert "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db" in sums  # train images, published


@pytest.mark.slow
@pytest.mark.parametrize("backend, arch", [("gan_jax", "dcgan"), ("gan_torch", "dcgan"), ("gan_jax", "mlp")])
def test_cifar10_trains_from_tfds_offline(backend, arch, tmp_path):
    """CIFAR-10 (32x32x3) comes only from tensorflow-datasets: mocked here (no network), trained a few steps."""
    import importlib
    import json

    from PIL import Image

    tfds = pytest.importorskip("tensorflow_datasets")
    train = importlib.import_module(f"{backend}.train")
    out = str(tmp_path / "run")
    size = ["--g-channels", "8", "--d-channels", "8"] if arch == "dcgan" else ["--g-hidden", "32", "--d-hidden", "32"]
    with tfds.testing.mock_data(num_examples=16):
        assert train.main(["--dataset", "cifar10", "--arch", arch, *size, "--batch-size", "4", "--latent-dim", "8",
                           "--steps", "4", "--log-every", "2", "--sample-every", "4", "--out-dir", out]) == 0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [2, 4]
    assert Image.open(os.path.join(out, "samples", "step_0000004.png")).mode == "RGB"


def test_cifar10_without_tfds_data_says_how_to_fix(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError, match="tensorflow-datasets could not provide cifar10/train"):
        load_dataset("cifar10", "train", source="tfds", data_dir=str(tmp_path))
