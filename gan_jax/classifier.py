"""The classifiers behind the sample-quality metrics (one per dataset, MNIST's and Fashion-MNIST's),
in Flax NNX: features for FID/KID/precision-recall, probabilities for the classifier score and
mode coverage.

The network, its weight files and their pinned SHA-256s are specified in
gan_common.classifier_spec (gan_torch.classifier builds the same network from the same files).
Inputs are on the GAN's scale, uint8 / 127.5 - 1 in [-1, 1]. Training lives here too.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from safetensors.numpy import save_file

from gan_common.classifier_spec import (  # file_sha256 re-exported: the name callers used before the spec moved
    FEATURE_DIM,
    FORMAT,
    LAYERS,
    NUM_CLASSES,
    classifier_spec,
    file_sha256,
    load_classifier_tensors,
)
from gan_common.datasets import load_dataset


class MnistClassifier(nnx.Module):
    """(B, 28, 28, 1) in [-1, 1] -> logits (B, 10); `features` is the 128-d penultimate layer.

    The MNIST-sized network of every dataset's classifier; `dataset` picks the input normalisation."""

    def __init__(self, rngs: nnx.Rngs, dataset: str = "mnist"):
        spec = classifier_spec(dataset)
        self.pixel_mean, self.pixel_std = spec.pixel_mean, spec.pixel_std  # Python floats: constants under jit
        self.conv1 = nnx.Conv(1, 32, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), padding="SAME", rngs=rngs)
        self.fc1 = nnx.Linear(7 * 7 * 64, FEATURE_DIM, rngs=rngs)
        self.fc2 = nnx.Linear(FEATURE_DIM, NUM_CLASSES, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        h = (x - self.pixel_mean) / self.pixel_std  # (B, 28, 28, 1), ~zero mean and unit variance
        h = nnx.max_pool(jax.nn.relu(self.conv1(h)), (2, 2), (2, 2))  # (B, 14, 14, 32)
        h = nnx.max_pool(jax.nn.relu(self.conv2(h)), (2, 2), (2, 2))  # (B, 7, 7, 64)
        return jax.nn.relu(self.fc1(h.reshape(h.shape[0], -1)))  # (B, 128), what fc2 sees

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.features(x))  # (B, 10) logits


def to_model_scale(images_u8: np.ndarray | jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1], the scaling the GAN trains on."""
    return jnp.asarray(images_u8, jnp.float32) / 127.5 - 1.0


# ------------------------------------------------------------------ weights on disk
def save_classifier(model: MnistClassifier, path: str, test_accuracy: float, dataset: str = "mnist") -> str:
    """Write the weights (kernels HWIO / (in, out), as the neutral file) atomically; returns the SHA-256."""
    tensors = {
        f"classifier.{layer}.{p}": np.ascontiguousarray(np.asarray(getattr(getattr(model, layer), p)[...]), np.float32)
        for layer in LAYERS
        for p in ("kernel", "bias")
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"format": FORMAT, "dataset": dataset, "test_accuracy": f"{test_accuracy:.4f}"})
    os.chmod(tmp, 0o644)  # safetensors writes 0600; the shipped file must be readable by every user
    os.replace(tmp, path)
    return file_sha256(path)


def load_classifier(dataset: str = "mnist", path: str | None = None, check_sha256: bool = True) -> MnistClassifier:
    """`dataset`'s shipped classifier (or the file at `path`), refused unless its SHA-256 is the one pinned."""
    # checked shapes, HWIO / (in, out) as flax keeps them
    tensors = load_classifier_tensors(dataset, path, check_sha256)
    # Built abstractly (shapes only): a real init would compile and run ~30 small initialisers just to be
    # overwritten, about a second of every evaluate call on a 2-core CPU.
    graphdef, state = nnx.split(nnx.eval_shape(lambda: MnistClassifier(nnx.Rngs(0), dataset)))
    weights = {layer: {p: jnp.asarray(tensors[f"classifier.{layer}.{p}"]) for p in ("kernel", "bias")}
               for layer in LAYERS}
    nnx.replace_by_pure_dict(state, weights)
    return nnx.merge(graphdef, state)


# ------------------------------------------------------------------ inference
def make_forward(
    model: MnistClassifier, batch_size: int = 500
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A host function images (N, 28, 28, 1) in [-1, 1] -> (feats (N, 128), probs (N, 10)) float32.

    One jitted forward at a fixed batch size (the last batch is padded), so any N compiles once.
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        m = nnx.merge(graphdef, state)
        feats = m.features(x)  # (B, 128)
        return feats, jax.nn.softmax(m.fc2(feats))  # (B, 10)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
            raise ValueError(f"expected images (N, 28, 28, 1), got {images.shape}")
        n = images.shape[0]
        feats, probs = np.empty((n, FEATURE_DIM), np.float32), np.empty((n, NUM_CLASSES), np.float32)
        for s in range(0, n, batch_size):
            batch = images[s : s + batch_size]
            pad = batch_size - batch.shape[0]
            if pad:
                batch = np.concatenate([batch, np.zeros((pad, 28, 28, 1), np.float32)])
            f, p = forward(state, batch)
            feats[s : s + batch_size], probs[s : s + batch_size] = (
                np.asarray(f)[: batch_size - pad],
                np.asarray(p)[: batch_size - pad],
            )
        return feats, probs

    return run


@functools.cache
def _shipped_forward(dataset: str) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return make_forward(load_classifier(dataset))


def features_and_probs(images: np.ndarray, dataset: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28, 1) float32 in [-1, 1] -> `dataset`'s shipped classifier's (feats (N, 128), probs (N, 10))."""
    return _shipped_forward(dataset)(images)


# ------------------------------------------------------------------ training
def _random_shift(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
    """Shift each image by up to `max_shift` pixels each way, filling with background (-1)."""
    b = x.shape[0]
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), constant_values=-1.0)
    offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)  # (B, 2)

    def crop(img, o):
        return jax.lax.dynamic_slice(img, (o[0], o[1], 0), (28, 28, 1))

    return jax.vmap(crop)(padded, offsets)  # (B, 28, 28, 1)


@functools.partial(nnx.jit, static_argnames="max_shift")
def _train_step(model, optimizer, images_u8, labels, key, max_shift: int):
    x = to_model_scale(images_u8)  # (B, 28, 28, 1) in [-1, 1]
    if max_shift:
        x = _random_shift(key, x, max_shift)

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def accuracy(model: MnistClassifier, images_u8: np.ndarray, labels: np.ndarray) -> float:
    _, probs = make_forward(model)(np.asarray(to_model_scale(images_u8)))
    return float((probs.argmax(1) == labels).mean())


def train_classifier(
    dataset: str = "mnist", epochs: int | None = None, batch_size: int = 128, lr: float = 1e-3, max_shift: int = 1,
    seed: int = 0, log=print,
) -> tuple[MnistClassifier, float]:
    """Train on `dataset`'s train split (epochs: its spec's unless given); returns (model, test accuracy).

    Adam with 200 warm-up steps, then a cosine decay to 0: without the warm-up, the first large
    steps leave about half of fc1's ReLUs dead, which costs accuracy and feature dimensions.
    """
    epochs = classifier_spec(dataset).epochs if epochs is None else epochs
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    steps_per_epoch = train.images.shape[0] // batch_size
    model = MnistClassifier(nnx.Rngs(seed), dataset)
    tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, 200, epochs * steps_per_epoch))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    for epoch in range(epochs):
        start, order = time.perf_counter(), rng.permutation(train.images.shape[0])
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            step_key = jax.random.fold_in(key, epoch * steps_per_epoch + i)
            losses.append(_train_step(model, optimizer, train.images[idx], train.labels[idx], step_key, max_shift))
        acc = accuracy(model, test.images, test.labels)
        log(f"epoch {epoch + 1}/{epochs}: loss {float(np.mean(losses)):.4f}, test accuracy {acc:.4f}, "
            f"{time.perf_counter() - start:.0f}s")
    return model, acc
