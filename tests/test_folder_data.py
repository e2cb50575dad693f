"""--dataset folder:PATH and npz:PATH: the user's own images, decoded once into (N, S, S, C) uint8 and cached.

Every folder and file is made here with Pillow and NumPy; nothing is downloaded. The cache goes to a
temporary folder ($GAN_CACHE_DIR), never the user's.
"""

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from gan_common import datasets
from gan_common.config import Config, validate
from gan_common.datasets import load_dataset
from gan_common.errors import UserError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> str:
    folder = str(tmp_path / "cache")
    monkeypatch.setenv(datasets.CACHE_ENV, folder)
    return folder


def _save(path, array: np.ndarray, fmt: str | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, fmt)


def _colour(rng, h, w) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def classes(tmp_path) -> str:
    """cats/ (2 RGB PNGs, one 40x30, one nested a level deeper), dogs/ (a grey 32x32 JPEG, an RGB WebP) and a
    corrupt dogs/bad.png: four readable images of two classes, mixed sizes and modes."""
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    _save(root / "cats" / "a.png", _colour(rng, 30, 40))
    _save(root / "cats" / "deep" / "b.png", _colour(rng, 32, 32))
    _save(root / "dogs" / "c.jpg", rng.integers(0, 256, (32, 32), dtype=np.uint8))
    _save(root / "dogs" / "d.webp", _colour(rng, 48, 48))
    (root / "dogs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (root / "notes.txt").write_text("ignored: not an image suffix")  # also: an image-less file at the top
    return str(root)


def test_class_folders_become_sorted_labels_and_images_are_fitted(classes, capsys):
    data = load_dataset(f"folder:{classes}", image_size=16, channels=3)
    assert data.classes == ("cats", "dogs")
    assert data.images.shape == (4, 16, 16, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1])  # sorted paths: cats/a, cats/deep/b, dogs/c, dogs/d
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image files" in err and "bad.png" in err and err.count("\n") == 1
    # The grey JPEG became RGB by repeating its one channel.
    grey = data.images[2]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    # Resize and centre-crop: a 40x30 image whose left and right 5 columns are white, the middle black, becomes
    # black (the crop drops the white sides). Lanczos rings at the crop's edge: measured 13 of 255; a resize that
    # squashed instead of cropping would keep 2 of the 16 columns near 255.
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :5] = img[:, 35:] = 255
    _save(os.path.join(classes, "cats", "a.png"), img)
    os.utime(os.path.join(classes, "cats", "a.png"), ns=(1, 1))  # a new mtime: a cache miss
    again = load_dataset(f"folder:{classes}", image_size=16, channels=3)
    assert int(again.images[0].max()) <= 32, again.images[0].max()
    # "test" is the same images: there is no separate split.
    np.testing.assert_array_equal(load_dataset(f"folder:{classes}", "test", image_size=16, channels=3).images,
                                  again.images)


def test_defaults_come_from_the_first_image_and_the_cache_serves_the_second_load(classes, cache, monkeypatch):
    dcgan = load_dataset(f"folder:{classes}", sizes=(28, 32, 64))  # first image cats/a.png: RGB, 30 (short side)
    assert dcgan.images.shape == (4, 32, 32, 3)  # 30 rounds to the nearest DCGAN side, 32
    mlp = load_dataset(f"folder:{classes}")
    assert mlp.images.shape == (4, 30, 30, 3)  # any side for the MLP
    assert len(os.listdir(cache)) == 2 and all(f.endswith(".npz") for f in os.listdir(cache))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(datasets.Image, "open", refuse)
    hit = load_dataset(f"folder:{classes}", sizes=(28, 32, 64))
    np.testing.assert_array_equal(hit.images, dcgan.images)
    np.testing.assert_array_equal(hit.labels, dcgan.labels)
    assert hit.classes == dcgan.classes
    # Another shape is another key: it decodes (and here fails, Image.open refusing).
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(f"folder:{classes}", image_size=8, channels=1)


def test_a_grey_first_image_makes_a_grey_run_and_flat_folders_have_no_classes(tmp_path):
    root = tmp_path / "flat"
    rng = np.random.default_rng(1)
    _save(root / "0.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))  # mode L
    _save(root / "1.png", _colour(rng, 20, 20))
    data = load_dataset(f"folder:{root}")
    assert data.images.shape == (2, 20, 20, 1) and data.classes == ()
    np.testing.assert_array_equal(data.labels, [0, 0])
    with pytest.raises(UserError, match="--conditional needs one subfolder per class"):
        load_dataset(f"folder:{root}", num_classes=10)


def test_folder_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_bytes(b"nope")
    cases = {"empty": "holds no .png/.jpg/.jpeg/.webp files", "junk": "none of its 1 image files could be read",
             "missing": "no such folder"}
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as e:
            load_dataset(f"folder:{tmp_path / name}")
        assert "\n" not in str(e.value)
    many = tmp_path / "many"
    for k in range(11):
        _save(many / f"class{k:02d}" / "x.png", np.zeros((4, 4), np.uint8))
    assert load_dataset(f"folder:{many}").labels.max() == 10  # fine without --conditional
    with pytest.raises(UserError, match="11 class folders; --conditional supports at most 10"):
        load_dataset(f"folder:{many}", num_classes=10)


def test_npz_images_labels_and_each_error(tmp_path):
    rng = np.random.default_rng(2)
    path = str(tmp_path / "d.npz")
    np.savez(path, images=rng.integers(0, 256, (5, 8, 8), dtype=np.uint8), labels=np.arange(5))
    data = load_dataset(f"npz:{path}")
    assert data.images.shape == (5, 8, 8, 1)  # (N, H, W) is C = 1
    np.testing.assert_array_equal(data.labels, np.arange(5))
    assert load_dataset(f"npz:{path}", image_size=4, channels=3).images.shape == (5, 4, 4, 3)
    bad = {
        "float": (dict(images=np.zeros((2, 4, 4, 3), np.float32)), "images are float32 \\(2, 4, 4, 3\\)"),
        "rank": (dict(images=np.zeros((2, 4), np.uint8)), "images are uint8 \\(2, 4\\)"),
        "rgba": (dict(images=np.zeros((2, 4, 4, 4), np.uint8)), "images are uint8 \\(2, 4, 4, 4\\)"),
        "labels": (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2, np.float32)), "labels are float32"),
        "count": (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(3, int)), "labels are int64 \\(3,\\)"),
        "negative": (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, -1])), "labels hold -1"),
        "no_images": (dict(pictures=np.zeros((2, 4, 4), np.uint8)), "holds pictures, not `images`"),
        "objects": (dict(images=np.array([None, 1], dtype=object)), "cannot read"),  # pickled: refused
    }
    for name, (arrays, message) in bad.items():
        p = str(tmp_path / f"{name}.npz")
        np.savez(p, **arrays)
        with pytest.raises(UserError, match=message) as e:
            load_dataset(f"npz:{p}")
        assert "\n" not in str(e.value), name
    (tmp_path / "text.npz").write_text("not a zip")
    for p in ("text.npz", "missing.npz"):
        with pytest.raises(UserError, match="cannot read"):
            load_dataset(f"npz:{tmp_path / p}")
    # --conditional: labels needed, and within the nets' ten classes.
    np.savez(str(tmp_path / "nolabels.npz"), images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(UserError, match="holds no `labels` array"):
        load_dataset(f"npz:{tmp_path / 'nolabels.npz'}", num_classes=10)
    np.savez(str(tmp_path / "eleven.npz"), images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 10]))
    with pytest.raises(UserError, match="label 10 at index 1"):
        load_dataset(f"npz:{tmp_path / 'eleven.npz'}", num_classes=10)


def test_config_takes_own_data_and_checks_its_shape():
    own = validate(Config.tutorial(dataset="folder:/x"))
    with pytest.raises(UserError, match="known only once the data is read"):
        own.image_shape  # noqa: B018
    assert dataclasses.replace(own, image_size=20, channels=3).image_shape == (20, 20, 3)
    assert validate(Config.tutorial(dataset="cifar10")).image_shape == (32, 32, 3)  # named datasets as before
    refused = {
        "--dataset: invalid choice: 'folder:'; expected one of": dict(dataset="folder:"),
        "--dataset: invalid choice: 'pets'": dict(dataset="pets"),
        "apply only to --dataset folder:PATH": dict(image_size=32),
        "--channels 1, 3 or 0": dict(dataset="npz:x", channels=2),
        "--arch dcgan builds for 28, 32, 64-pixel images, not 48": dict(dataset="npz:x", arch="dcgan", image_size=48),
    }
    for message, fields in refused.items():
        with pytest.raises(UserError, match=message):
            validate(Config.tutorial(**fields))
    validate(Config.tutorial(dataset="npz:x", arch="dcgan", image_size=64, channels=1))


@pytest.fixture(scope="module")
def rgb64(tmp_path_factory) -> str:
    """16 RGB 64x64 PNGs in two class folders, flat colours with noise."""
    root = tmp_path_factory.mktemp("rgb64")
    rng = np.random.default_rng(3)
    for i in range(16):
        colour = np.array([200, 40, 40] if i % 2 else [40, 40, 200])
        img = np.clip(colour + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        _save(root / ("red" if i % 2 else "blue") / f"{i}.png", img)
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["gan_jax", "gan_torch"])
def test_tiny_64_pixel_run_on_a_folder_records_its_shape_and_samples(backend, rgb64, tmp_path):
    import importlib
    import json

    train, sample = (importlib.import_module(f"{backend}.{m}") for m in ("train", "sample"))
    out = str(tmp_path / "run")
    argv = ["--dataset", f"folder:{rgb64}", "--arch", "dcgan", "--g-channels", "4", "--d-channels", "4",
            "--latent-dim", "8", "--batch-size", "8", "--steps", "4", "--log-every", "2", "--steps-per-call", "2",
            "--sample-every", "4", "--checkpoint-every", "4", "--out-dir", out, "--no-tensorboard"]
    assert train.main(argv) == 0
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert (saved["image_size"], saved["channels"]) == (64, 3)  # settled from the first image
    npy = str(tmp_path / "s.npy")  # sample knows the shape from config.json alone
    assert sample.main(["--checkpoint", out, "--num", "3", "--out", npy]) == 0
    images = np.load(npy)
    assert images.shape == (3, 64, 64, 3) and np.all(np.abs(images) <= 1)
