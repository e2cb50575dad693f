"""One adapter per backend, so every parity test is written once and run on any spec.

An adapter wraps one backend's real code (its models, its train_step, its optimiser
factory, its Backend, its sample loader) behind the same small NumPy interface. Weights
cross between adapters only as neutral tensors (`generator.fc1.kernel`, ...), never
re-drawn. A new architecture adds a `Spec` to SPECS, a new --loss setting one to LOSS_SPECS;
the tests stay as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Protocol

import numpy as np

from gan_common.config import Config

Tensors = dict[str, np.ndarray]  # neutral keys -> float32 arrays, dense kernels (in, out)


@dataclasses.dataclass(frozen=True)
class Spec:
    """A model and loss configuration both backends must agree on."""

    name: str
    config: Config


SPECS = (
    Spec("mlp_non_saturating", Config.tutorial()),
    Spec("mlp_minimax", Config.tutorial(g_loss="minimax")),
    Spec("mlp_narrow_3layer", Config.tutorial(latent_dim=16, g_hidden="32,64,128", d_hidden="96", leaky_slope=0.1)),
    # --arch dcgan at a tenth of the default widths: every layer kind (transposed convolutions, BatchNorm
    # in G and D, strided convolutions) at a cost of milliseconds per step. parity_tests/test_dcgan.py
    # adds what only it has: train-mode running statistics over a float64 trajectory, d_norm none.
    Spec("dcgan_small", Config.tutorial(arch="dcgan", latent_dim=16, g_channels=8, d_channels=8, batch_size=16)),
    # The same with --d-norm spectral: every D weight divided by u^T W v, u and v moved by each train-mode call.
    Spec("dcgan_spectral", Config.tutorial(arch="dcgan", latent_dim=16, g_channels=8, d_channels=8, batch_size=16,
                                  d_norm="spectral")),
)

# --arch dcgan at 64 pixels (parity_tests/test_dcgan64.py): one more stride-2 stage in G and D, at widths 4, so
# three BatchNorms in G and two in D (or every D weight spectrally normalised) at milliseconds per step. Their
# data is the user's own (folder:/npz:), so the shape is given as the run would record it.
_DCGAN64 = dict(arch="dcgan", dataset="npz:parity", image_size=64, channels=3, latent_dim=16, g_channels=4,
                d_channels=4, batch_size=8)
DCGAN64_SPECS = (
    Spec("dcgan64", Config.tutorial(**_DCGAN64)),
    Spec("dcgan64_spectral_conditional", Config.tutorial(**_DCGAN64, d_norm="spectral", conditional=True)),
)

# The --loss kinds beyond the default pair (parity_tests/test_losses.py). Their steps run D's
# backward twice (the penalties) or n_critic times: a narrower MLP at batch 32 keeps the
# 100-step float64 trajectories fast, and every layer kind (ReLU, LeakyReLU, tanh) is still in.
_SMALL = dict(latent_dim=32, g_hidden="64,128", d_hidden="128,64", batch_size=32)
LOSS_SPECS = (
    Spec("gan_r1", Config.tutorial(**_SMALL, r1_weight=5.0)),
    Spec("hinge", Config.tutorial(**_SMALL, loss="hinge")),
    Spec("lsgan", Config.tutorial(**_SMALL, loss="lsgan")),
    Spec("wgan_gp", Config.tutorial(**_SMALL, loss="wgan_gp")),
    Spec("wgan_gp_3critic", Config.tutorial(**_SMALL, loss="wgan_gp", n_critic=3, beta1=0.5)),
)
# G's moving average (parity_tests/test_ema.py): decay 0.9, a 10-step memory, so that over a short
# run the EMA sits well apart from both G's start and G's last step.
EMA_SPEC = Spec("ema_0.9", Config.tutorial(**_SMALL, ema_decay=0.9))


class Adapter(Protocol):
    """The interface every test uses; JaxAdapter and TorchAdapter implement it over real backend code."""

    name: str

    def __init__(self, config: Config, dtype=np.float32): ...
    def load(self, tensors: Tensors) -> None: ...  # these weights, fresh optimiser states (and EMA = G)
    def export(self) -> Tensors: ...  # with --ema-decay, G's EMA too (`generator_ema.…`)
    # labels: (B,) int classes, only for --conditional models.
    def generate(self, z: np.ndarray, labels=None) -> np.ndarray: ...  # (B, latent) -> (B, 28, 28, 1)
    def discriminate(self, x: np.ndarray, labels=None) -> np.ndarray: ...  # (B, 28, 28, 1) -> (B,) logits
    # eps: WGAN-GP's interpolation weights (n_critic B,), only for --loss wgan_gp (see `inputs`);
    # labels: (y_real, y_d, y_g), only for --conditional (see `class_labels`; labelss: each (T, ...));
    # augment: (real, fake, g) AugmentDraws of NumPy arrays, only for --augment (see `augment_draws`).
    def step(self, x, z_d, z_g, eps=None, labels=None, augment=None) -> np.ndarray: ...  # one train_step -> (4,)
    def steps(self, xs, z_ds, z_gs, epss=None, labelss=None, augments=None) -> np.ndarray: ...  # T steps -> (T, 4)
    # The gradients are those the real train_step hands its optimisers (D's of its last update), in its dtype.
    def step_with_grads(self, x, z_d, z_g, eps=None, labels=None,
                        augment=None) -> tuple[np.ndarray, Tensors, Tensors]: ...
    def params(self) -> Tensors: ...  # G's and D's parameters in the state's dtype (export rounds to float32)
    def penalty_with_grads(self, kind, x, fake, eps=None) -> tuple[float, Tensors]: ...  # "gp" / "r1", D's grads
    # Static: the backend's Adam factory, its Backend, its run and sample entry points.
    adam_run: Callable[..., Tensors]
    backend: Callable[..., object]
    backend_generate: Callable[..., np.ndarray]
    recorded_inputs: Callable[..., tuple[np.ndarray, ...]]
    trained_run: Callable[..., tuple[dict, object]]  # train_and_evaluate, keeping the Backend it trained
    backend_export: Callable[..., Tensors]
    load_generator: Callable[..., tuple]


# ----------------------------------------------------------------------------- JAX
class JaxAdapter:
    name = "jax"

    def __init__(self, config: Config, dtype=np.float32):
        """Fresh models of `config`; dtype float64 needs `with float64():` around all use (JAX's x64 mode)."""
        import jax

        from gan_jax import step

        self.train = step
        self.config = config
        self.dtype = dtype
        self.gan, self.state = step.create(config)
        self._step = jax.jit(functools.partial(step.train_step, self.gan))
        self._recording_step = None  # train_step with `_recording` optimisers: built by step_with_grads
        self._scan = jax.jit(lambda state, xs, z_ds, z_gs, epss, labelss, augments: jax.lax.scan(
            lambda s, inputs: self._step(s, *inputs), state, (xs, z_ds, z_gs, epss, labelss, augments)))

    def load(self, tensors: Tensors) -> None:
        """Take these weights, with fresh (zero) Adam states and, with --ema-decay, an EMA starting at G."""
        from gan_jax.checkpoint import import_weights

        _, fresh = self.train.create(self.config)
        tensors = {k: np.asarray(v, self.dtype) for k, v in tensors.items()}
        g, d, g_stats, d_stats = import_weights(tensors, fresh.g_params, fresh.d_params, fresh.g_stats, fresh.d_stats)
        self.state = fresh._replace(g_params=g, d_params=d, g_stats=g_stats, d_stats=d_stats,
                                    g_opt=self.gan.g_tx.init(g), d_opt=self.gan.d_tx.init(d),
                                    g_ema=self.train.init_ema(self.config, g))

    def export(self) -> Tensors:
        """Parameters and BatchNorm running statistics (and with --ema-decay G's EMA, `generator_ema.…`)."""
        from gan_jax.checkpoint import export_weights

        s = self.state
        return export_weights(s.g_params, s.d_params, s.g_stats, s.d_stats, g_ema=s.g_ema)

    def generate(self, z: np.ndarray, labels=None) -> np.ndarray:
        """Eval mode (running statistics), as sampling."""
        return np.asarray(_jit(self.gan.generate)(self.state.g_params, self.state.g_stats, z, labels), np.float32)

    def discriminate(self, x: np.ndarray, labels=None) -> np.ndarray:
        return np.asarray(_jit(self.gan.discriminate)(self.state.d_params, self.state.d_stats, x, labels))

    def step_with_grads(self, x, z_d, z_g, eps=None, labels=None, augment=None) -> tuple[np.ndarray, Tensors, Tensors]:
        """One real gan_jax.step.train_step on these inputs: its metrics, and the gradients that step handed its
        optimisers (D's of its last D update, G's), in the step's dtype (float64 runs: not rounded to float32).

        The step runs with each optimiser wrapped by `_recording`: Adam's own update passes through unchanged,
        and the gradient it was given is kept in the optimiser state, where it is read. Nothing is recomputed.
        """
        import jax

        if self._recording_step is None:
            recording = dataclasses.replace(self.gan, g_tx=_recording(self.gan.g_tx), d_tx=_recording(self.gan.d_tx))
            self._recording_step = jax.jit(functools.partial(self.train.train_step, recording))
        s = self.state
        state = s._replace(g_opt=(s.g_opt, _zeros_like(s.g_params)), d_opt=(s.d_opt, _zeros_like(s.d_params)))
        state, metrics = self._recording_step(state, x, z_d, z_g, eps, labels, augment)
        (g_opt, g_grads), (d_opt, d_grads) = state.g_opt, state.d_opt
        self.state = state._replace(g_opt=g_opt, d_opt=d_opt)
        return np.asarray(metrics), _jax_neutral(d_grads, "discriminator"), _jax_neutral(g_grads, "generator")

    def params(self) -> Tensors:
        """G's and D's parameters (no running statistics) in the state's own dtype; `export` rounds to float32."""
        return {**_jax_neutral(self.state.g_params, "generator"), **_jax_neutral(self.state.d_params, "discriminator")}

    def penalty_with_grads(self, kind: str, x, fake, eps=None) -> tuple[float, Tensors]:
        """gan_jax.step.gradient_penalty ("gp", weight gp_weight) or r1_penalty ("r1", weight r1_weight) on
        the current D: its value and its gradient w.r.t. D's parameters (a double backpropagation)."""
        import jax

        from gan_jax import losses
        from gan_jax.checkpoint import export_weights

        gan, step, config = self.gan, self.train, self.config

        def penalty(d_params):  # D called as the step calls it (with spectral norm, one power iteration first)
            discriminate, _ = step.penalty_discriminator(gan, d_params, self.state.d_stats)
            if kind == "gp":
                return losses.gradient_penalty(discriminate, x, fake, eps, config.gp_weight)
            return losses.r1_penalty(discriminate, x, config.r1_weight)

        value, d_grads = jax.jit(jax.value_and_grad(penalty))(self.state.d_params)
        return float(value), _net(export_weights(self.state.g_params, d_grads), "discriminator")

    def step(self, x, z_d, z_g, eps=None, labels=None, augment=None) -> np.ndarray:
        """One real gan_jax.step.train_step; returns metrics (4,)."""
        self.state, metrics = self._step(self.state, x, z_d, z_g, eps, labels, augment)
        return np.asarray(metrics)

    def steps(self, xs, z_ds, z_gs, epss=None, labelss=None, augments=None) -> np.ndarray:
        """len(xs) real train_steps in one lax.scan over pre-drawn inputs; returns metrics (T, 4)."""
        self.state, metrics = self._scan(self.state, xs, z_ds, z_gs, epss, labelss, augments)
        return np.asarray(metrics)

    @staticmethod
    def adam_run(config: Config, params: Tensors, grads: Callable[[int], Tensors], num_steps: int) -> Tensors:
        """gan_jax.step.adam(config) fed grads(0), grads(1), ... from `params`."""
        import jax
        import optax

        from gan_jax.step import adam

        tx = adam(config)

        @jax.jit
        def update(params, opt, g):
            updates, opt = tx.update(g, opt, params)
            return optax.apply_updates(params, updates), opt

        params = {k: jax.numpy.asarray(v) for k, v in params.items()}
        opt = tx.init(params)
        for t in range(num_steps):
            params, opt = update(params, opt, grads(t))
        return {k: np.asarray(v) for k, v in params.items()}

    @staticmethod
    def backend(config: Config, data_u8: np.ndarray, labels: np.ndarray | None = None):
        from gan_jax.backend import JaxBackend

        return JaxBackend(config, data_u8, labels=labels)

    @staticmethod
    def backend_generate(backend, z: np.ndarray) -> np.ndarray:
        return np.asarray(_jit(backend.gan.generate)(backend.state.g_params, backend.state.g_stats, z))

    @staticmethod
    def recorded_inputs(config: Config, data_u8: np.ndarray, num_steps: int,
                        labels: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """What JaxBackend feeds train_step over its first steps: xs, z_ds, z_gs (and eps for wgan_gp;
        y_real, y_d, y_g for --conditional, given the data's `labels`; --augment's draws, the leaves of
        (real, fake, g) in AugmentDraws' order), each (T, ...).

        The step runs inside the compiled scan, so a wrapper sends its inputs to the host with an
        ordered jax.debug.callback; the maths of the step is untouched.
        """
        import jax

        from gan_jax.backend import JaxBackend
        from gan_jax.step import train_step

        seen = []

        def recording_step(gan, state, x, z_d, z_g, eps=None, labels=None, augment=None):
            fed = [a for a in (x, z_d, z_g, eps, *(labels or ())) if a is not None] + jax.tree.leaves(augment)
            jax.debug.callback(lambda *a: seen.append([np.asarray(v) for v in a]), *fed, ordered=True)
            return train_step(gan, state, x, z_d, z_g, eps, labels, augment)

        backend = JaxBackend(config, data_u8, labels=labels, step_fn=recording_step)
        backend.fetch(backend.run(num_steps))
        jax.effects_barrier()
        return tuple(np.stack(a) for a in zip(*seen, strict=True))

    @staticmethod
    def trained_run(config: Config, workdir: str) -> tuple[dict, object]:
        """gan_jax.backend.train_and_evaluate(config, workdir), what `python -m gan_jax.train` runs, keeping the
        JaxBackend it trained: (last logged metrics, backend), make_backend wrapped to keep it, so a test can
        compare the run's files with the state the run ended with."""
        from gan_jax import backend

        kept = []

        def make_backend(*args):
            kept.append(backend.make_backend(*args))
            return kept[-1]

        return backend.train_and_evaluate(config, workdir, make=make_backend), kept[0]

    @staticmethod
    def backend_export(backend) -> Tensors:
        """A Backend's current weights as neutral tensors (gan_jax.checkpoint.export_weights of its state)."""
        from gan_jax.checkpoint import export_weights

        s = backend.state
        return export_weights(s.g_params, s.d_params, s.g_stats, s.d_stats, g_ema=s.g_ema)

    @staticmethod
    def load_generator(path: str):
        from gan_jax.backend import load_generator

        return load_generator(path)


def _recording(tx):
    """`tx` whose state also keeps the last gradient it was given, (tx's state, gradient); its updates are tx's."""
    import optax

    def init(params):
        return tx.init(params), _zeros_like(params)

    def update(grads, state, params=None):
        updates, inner = tx.update(grads, state[0], params)
        return updates, (inner, grads)

    return optax.GradientTransformation(init, update)


def _zeros_like(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.zeros_like, tree)


def _jax_neutral(state, net: str) -> Tensors:
    """An nnx.State of `net` (params, or gradients shaped like them) -> neutral tensors in their own dtype:
    gan_jax.checkpoint.export_weights's keys (flax's layouts are the neutral ones) without its float32 cast."""
    from flax import nnx

    def flat(tree: dict, prefix: str) -> Tensors:
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": np.asarray(v)})
        return out

    return flat(nnx.to_pure_dict(state), net + ".")


@functools.cache
def _jit(fn):
    import jax

    return jax.jit(fn)


# ----------------------------------------------------------------------------- PyTorch
class TorchAdapter:
    name = "torch"

    def __init__(self, config: Config, dtype=np.float32):
        from gan_torch import step

        self.train = step
        self.config = config
        self.dtype = dtype
        self.gan, self.state = self._create()

    def _create(self):
        import torch

        gan, state = self.train.create(self.config)
        # in place: the optimisers keep the same parameters
        for net in (state.generator, state.discriminator, state.g_ema):
            if net is not None:
                net.to({np.float32: torch.float32, np.float64: torch.float64}[self.dtype])
        return gan, state

    def load(self, tensors: Tensors) -> None:
        """Take these weights, with fresh (empty) Adam states and, with --ema-decay, an EMA starting at G."""
        from gan_torch.checkpoint import import_weights

        self.gan, self.state = self._create()
        import_weights(tensors, self.state.generator, self.state.discriminator)
        self.state.g_ema = self.train.init_ema(self.config, self.state.generator)

    def export(self) -> Tensors:
        from gan_torch.checkpoint import export_weights

        return export_weights(self.state.generator, self.state.discriminator, G_ema=self.state.g_ema)

    def generate(self, z: np.ndarray, labels=None) -> np.ndarray:
        """Eval mode (running statistics), as sampling."""
        import torch

        G = self.state.generator
        with torch.no_grad(), self.train.autocast(self.config), _eval_mode(G):  # the step's precision
            return G(torch.from_numpy(z), _torch_or_none(labels)).float().numpy()

    def discriminate(self, x: np.ndarray, labels=None) -> np.ndarray:
        import torch

        D = self.state.discriminator
        with torch.no_grad(), self.train.autocast(self.config), _eval_mode(D):
            return D(torch.from_numpy(x), _torch_or_none(labels)).float().numpy()

    def step_with_grads(self, x, z_d, z_g, eps=None, labels=None, augment=None) -> tuple[np.ndarray, Tensors, Tensors]:
        """One real gan_torch.step.train_step on these inputs: its metrics, and the .grad it leaves on each net
        (D's of its last D update, G's), in the step's dtype (float64 runs: not rounded to float32)."""
        metrics = self.step(x, z_d, z_g, eps, labels, augment)
        grads = _torch_neutral(self.state.generator, self.state.discriminator, grads=True)
        return metrics, _net(grads, "discriminator"), _net(grads, "generator")

    def params(self) -> Tensors:
        """G's and D's parameters (no running statistics) in the state's own dtype; `export` rounds to float32."""
        return _torch_neutral(self.state.generator, self.state.discriminator)

    def penalty_with_grads(self, kind: str, x, fake, eps=None) -> tuple[float, Tensors]:
        """gan_torch.losses.gradient_penalty ("gp") or r1_penalty ("r1") on the current D: value, D's .grad."""
        import torch

        from gan_torch import losses
        from gan_torch.checkpoint import export_weights

        G, D, config = self.state.generator, self.state.discriminator, self.config
        x, fake = torch.from_numpy(x), torch.from_numpy(fake)
        D.zero_grad()
        if kind == "gp":
            value = losses.gradient_penalty(D, x, fake, torch.from_numpy(eps), config.gp_weight)
        else:
            value = losses.r1_penalty(D, x, config.r1_weight)
        value.backward()
        for param in (*G.parameters(), *D.parameters()):
            if param.grad is None:  # what the penalty does not reach (D's output bias) has gradient 0, as in JAX
                param.grad = torch.zeros_like(param)
        return value.item(), _net(export_weights(G, D, grads=True), "discriminator")

    def step(self, x, z_d, z_g, eps=None, labels=None, augment=None) -> np.ndarray:
        """One real gan_torch.step.train_step (it updates self.state in place); returns metrics (4,)."""
        from gan_common.augment import AugmentDraws

        tensors = [_torch_or_none(a) for a in (x, z_d, z_g, eps)]
        labels = None if labels is None else tuple(_torch_or_none(y) for y in labels)
        augment = None if augment is None else tuple(AugmentDraws(*map(_torch_or_none, d)) for d in augment)
        self.state, metrics = self.train.train_step(self.gan, self.state, *tensors, labels, augment)
        return metrics.numpy()

    def steps(self, xs, z_ds, z_gs, epss=None, labelss=None, augments=None) -> np.ndarray:
        epss = [None] * len(xs) if epss is None else epss
        labelss = [None] * len(xs) if labelss is None else list(zip(*labelss, strict=True))  # T (y_real, y_d, y_g)
        augments = [None] * len(xs) if augments is None else [_step_of(augments, t) for t in range(len(xs))]
        return np.stack([self.step(*inputs) for inputs in zip(xs, z_ds, z_gs, epss, labelss, augments, strict=True)])

    @staticmethod
    def adam_run(config: Config, params: Tensors, grads: Callable[[int], Tensors], num_steps: int) -> Tensors:
        """gan_torch.step.adam(...) fed grads(0), grads(1), ... from `params`."""
        import torch

        from gan_torch.step import adam

        tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
        opt = adam(list(tensors.values()), config)
        for t in range(num_steps):
            g = grads(t)
            for k, p in tensors.items():
                p.grad = torch.from_numpy(g[k])
            opt.step()
        return {k: p.detach().numpy() for k, p in tensors.items()}

    @staticmethod
    def backend(config: Config, data_u8: np.ndarray, labels: np.ndarray | None = None):
        from gan_torch.backend import TorchBackend

        return TorchBackend(config, data_u8, labels=labels)

    @staticmethod
    def backend_generate(backend, z: np.ndarray) -> np.ndarray:
        return backend.generate(z)

    @staticmethod
    def recorded_inputs(config: Config, data_u8: np.ndarray, num_steps: int,
                        labels: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """What TorchBackend feeds train_step over its first steps: xs, z_ds, z_gs (and eps for wgan_gp;
        y_real, y_d, y_g for --conditional, given the data's `labels`), each (T, ...). (--augment's draws
        are not among them: torch's train_step draws them itself, from the same generator, after these.)"""
        from gan_torch.backend import TorchBackend
        from gan_torch.step import train_step

        seen = []

        def recording_step(gan, state, x, z_d, z_g, eps=None, labels=None, augment=None):
            seen.append([a.numpy().copy() for a in (x, z_d, z_g, eps, *(labels or ())) if a is not None])
            return train_step(gan, state, x, z_d, z_g, eps, labels, augment)

        backend = TorchBackend(config, data_u8, labels=labels, step_fn=recording_step)
        backend.fetch(backend.run(num_steps))
        return tuple(np.stack(a) for a in zip(*seen, strict=True))

    @staticmethod
    def trained_run(config: Config, workdir: str) -> tuple[dict, object]:
        """gan_torch.backend.train_and_evaluate(config, workdir), what `python -m gan_torch.train` runs, keeping
        the TorchBackend it trained: (last logged metrics, backend), make_backend wrapped to keep it."""
        from gan_torch import backend

        kept = []

        def make_backend(*args):
            kept.append(backend.make_backend(*args))
            return kept[-1]

        return backend.train_and_evaluate(config, workdir, make=make_backend), kept[0]

    @staticmethod
    def backend_export(backend) -> Tensors:
        """A Backend's current weights as neutral tensors (gan_torch.checkpoint.export_weights of its nets)."""
        from gan_torch.checkpoint import export_weights

        s = backend.state
        return export_weights(s.generator, s.discriminator, G_ema=s.g_ema)

    @staticmethod
    def load_generator(path: str):
        from gan_torch.backend import load_generator

        return load_generator(path)


def _torch_neutral(G, D, grads: bool = False) -> Tensors:
    """G's and D's parameters (or their .grad) -> neutral tensors in their own dtype: gan_torch.checkpoint's
    export_weights(G, D, grads=True) (its keys and layouts, from its own helpers) without its float32 cast."""
    from gan_torch.checkpoint import _neutral_items, _to_neutral_layout

    out = {}
    for key, tensor in _neutral_items(G, D, params_only=True):
        value = (tensor.grad if grads else tensor).detach()
        out[key] = (_to_neutral_layout(value) if key.endswith(".kernel") else value).numpy().copy()
    return out


def _torch_or_none(a: np.ndarray | None):
    import torch

    return None if a is None else torch.from_numpy(np.asarray(a))


def _step_of(augments: tuple, t: int) -> tuple:
    """Step t's (real, fake, g) AugmentDraws of `augment_draws`' (T, ...) ones."""
    return tuple(type(d)(*(None if a is None else a[t] for a in d)) for d in augments)


ADAPTERS: tuple[type[Adapter], ...] = (JaxAdapter, TorchAdapter)


def loaded_pair(config: Config, weights: Tensors, dtype=np.float32) -> tuple[JaxAdapter, TorchAdapter]:
    """Both adapters of `config` holding `weights` with fresh optimisers (float64: inside `with float64():`)."""
    jax_a, torch_a = JaxAdapter(config, dtype), TorchAdapter(config, dtype)
    jax_a.load(weights)
    torch_a.load(weights)
    return jax_a, torch_a


@contextlib.contextmanager
def _eval_mode(module):
    """`module.eval()` for the block, then back to train mode (the mode a training step needs)."""
    module.eval()
    try:
        yield
    finally:
        module.train()


@contextlib.contextmanager
def float64():
    """Both backends in float64: JAX needs its x64 mode on while arrays are made and functions traced."""
    import jax

    with jax.enable_x64(True):
        yield


# ----------------------------------------------------------------------------- inputs and comparisons
def _net(tensors: Tensors, net: str) -> Tensors:
    return {k: v for k, v in tensors.items() if k.startswith(net + ".")}


def _batch_rows(config: Config, num_train: int, num_steps: int, seed: int):
    """`inputs`'s generator after drawing the rows (T, n_critic B) of the T real batches, and those rows."""
    rng = np.random.default_rng(seed)
    n = config.images_per_step
    return rng, rng.permutation(num_train)[: num_steps * n].reshape(num_steps, n)


def inputs(config: Config, images_u8: np.ndarray, num_steps: int, seed: int = 0):
    """Real batches xs (T, n_critic B, 28, 28, 1) in [-1, 1] and noise z_ds (T, n_critic B, latent),
    z_gs (T, B, latent), drawn once in NumPy: train_step's inputs (D update k takes the k-th B rows)."""
    b, n, t = config.batch_size, config.images_per_step, num_steps
    rng, idx = _batch_rows(config, len(images_u8), num_steps, seed)
    xs = images_u8[idx].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    z_ds = rng.standard_normal((t, n, config.latent_dim), dtype=np.float32)
    z_gs = rng.standard_normal((t, b, config.latent_dim), dtype=np.float32)
    return xs, z_ds, z_gs


def class_labels(config: Config, labels: np.ndarray, num_steps: int, seed: int = 0):
    """--conditional's train_step inputs for `inputs(config, images, num_steps, seed)`: (y_reals, y_ds, y_gs),
    the real batches' own labels (T, n_critic B) and the fakes' classes (T, n_critic B), (T, B), int32."""
    _, idx = _batch_rows(config, len(labels), num_steps, seed)
    rng = np.random.default_rng([seed, 2])
    n, b = config.images_per_step, config.batch_size
    return (labels[idx].astype(np.int32), rng.integers(0, 10, (num_steps, n), dtype=np.int32),
            rng.integers(0, 10, (num_steps, b), dtype=np.int32))


@dataclasses.dataclass(frozen=True)
class Run:
    """One backend's side of `float64_runs`."""

    metrics: np.ndarray  # (T, 4) float64: each step's [d_loss, g_loss, d_real, d_fake]
    images: np.ndarray  # (64, H, W, C): the final G's eval-mode samples of one fixed z
    final: Tensors  # the final parameters and running statistics (and G's EMA), exported (float32)


def float64_runs(config: Config, images_u8: np.ndarray, num_steps: int, eps: np.ndarray | None = None,
                 augments: tuple | None = None):
    """Both backends' real train_steps in float64, from the same (torch-drawn) weights on the same `inputs`
    (and WGAN-GP's eps, --augment's `augment_draws`): (jax Run, torch Run)."""
    xs, z_ds, z_gs = (a.astype(np.float64) for a in inputs(config, images_u8, num_steps))
    eps = None if eps is None else eps.astype(np.float64)
    weights = TorchAdapter(config).export()
    z = np.random.default_rng(7).standard_normal((64, config.latent_dim))
    runs = []
    with float64():
        for adapter in loaded_pair(config, weights, np.float64):
            metrics = adapter.steps(xs, z_ds, z_gs, eps, augments=augments)
            runs.append(Run(metrics, adapter.generate(z), adapter.export()))
    return tuple(runs)


def interpolation_eps(config: Config, num_steps: int, seed: int = 0) -> np.ndarray | None:
    """WGAN-GP's eps (T, n_critic B) ~ U(0, 1), drawn once in NumPy; None for the losses that take none."""
    if config.loss != "wgan_gp":
        return None
    return np.random.default_rng([seed, 1]).random((num_steps, config.images_per_step), dtype=np.float32)


def augment_draws(config: Config, num_steps: int, seed: int = 0) -> tuple | None:
    """--augment's train_step inputs for T steps, drawn once in NumPy within gan_common.augment's ranges:
    (real, fake, g) AugmentDraws with rows (T, n_critic B, ...), (T, n_critic B, ...), (T, B, ...); None
    without --augment. Integers are int32, colors float32, as gan_jax draws them."""
    from gan_common.augment import AugmentDraws, cutout_centres, max_shift, policy

    kinds = policy(config.augment)
    if not kinds:
        return None
    rng = np.random.default_rng([seed, 3])
    height, width = config.image_shape[:2]
    s = np.array([max_shift(height), max_shift(width)])
    centres = np.array([cutout_centres(height), cutout_centres(width)])

    def one(rows: int) -> AugmentDraws:
        shape = (num_steps, rows, 2)
        return AugmentDraws(
            color=rng.random((num_steps, rows, 3), dtype=np.float32) if "color" in kinds else None,
            shift=rng.integers(-s, s + 1, shape).astype(np.int32) if "translation" in kinds else None,
            cutout=rng.integers(0, centres, shape).astype(np.int32) if "cutout" in kinds else None,
        )

    return one(config.images_per_step), one(config.images_per_step), one(config.batch_size)


def max_rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: relative to the tensor's scale, so near-zero entries do not blow it up."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_tensors_close(got: Tensors, want: Tensors, *, rel: float | None = None, abs: float | None = None,
                         what: str = "") -> None:
    """Same keys and shapes; each tensor within `rel` (max_rel_err) or `abs` (max |a - b|); names the worst one."""
    assert sorted(got) == sorted(want), f"{what}: keys differ: {sorted(set(got) ^ set(want))}"
    errors = {}
    for k in want:
        assert got[k].shape == want[k].shape, f"{what}: {k} has shape {got[k].shape}, expected {want[k].shape}"
        errors[k] = max_rel_err(got[k], want[k]) if rel is not None else float(np.max(np.abs(got[k] - want[k])))
    worst = max(errors, key=errors.get)
    limit = rel if rel is not None else abs
    assert errors[worst] <= limit, (f"{what}: {worst} differs by {errors[worst]:.3g} "
                                    f"({'relative' if rel is not None else 'absolute'}), tolerance {limit:g}")


def assert_weights_end_together(got: Tensors, want: Tensors, initial: Tensors, *, rel: float, moved_rel: float,
                                what: str = "") -> None:
    """Weights after the same trajectory from `initial` in two backends, tensor by tensor: max_rel_err(got, want)
    <= rel (each entry against the tensor's scale), and RMS(got - want) <= moved_rel * RMS of how far the tensor
    moved (the larger of the two backends' moves, so a backend that left a tensor alone fails). A tensor neither
    moved is held to `rel` alone. Names the worst tensor of each."""
    assert sorted(got) == sorted(want) == sorted(initial), f"{what}: keys differ"
    errors, moved = {}, {}
    for k in want:
        a, b, start = (np.asarray(t[k], np.float64) for t in (got, want, initial))
        errors[k] = max_rel_err(a, b)
        travel = max(np.sqrt(np.mean((a - start) ** 2)), np.sqrt(np.mean((b - start) ** 2)))
        if travel > 0:
            moved[k] = float(np.sqrt(np.mean((a - b) ** 2)) / travel)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rel, f"{what}: {worst} differs by {errors[worst]:.3g} of its scale, tolerance {rel:g}"
    assert moved, f"{what}: no tensor moved from its initial value: the trajectory trained nothing"
    worst = max(moved, key=moved.get)
    assert moved[worst] <= moved_rel, (f"{what}: {worst} differs by {moved[worst]:.3g} (RMS) of how far it moved, "
                                       f"tolerance {moved_rel:g}")

