"""Layers that compute exactly what torch's do, for gan_jax.models.

- `Linear`, `Conv`, `ConvTranspose`, `Embed`: flax's layers (their parameters, initialisers and
  layouts, which are the neutral weight file's) computing as torch.autocast's kernels do under
  a compute dtype: inputs cast, products summed and the bias added in float32, one rounding.
- `SpectralNorm`: torch.nn.utils.parametrizations.spectral_norm's maths, a mixin of the three.
- `BatchNorm`: torch.nn.BatchNorm2d's (momentum 0.1, unbiased running variance).
- `conv`, `deconv`: the DCGAN's 4x4 stride-2 (transposed) convolutions with hand-written kernel
  gradients, which XLA:CPU computes slowly inside loops (measured below); `xla_conv`, `xla_deconv`:
  lax's own, with autodiff's gradients, for GPUs and TPUs (`conv_impl` picks per platform).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def torch_linear_init(fan_in: int):
    """nn.Linear's default for weights and biases alike: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init



def leaky_relu(x: jax.Array, slope: float) -> jax.Array:
    """torch's LeakyReLU, gradient included: at exactly 0 the slope (torch), not 1 (jax.nn.leaky_relu).

    Exact zeros are not rare: DiffAugment's cutout and zero padding meet a DCGAN's zero initial biases, and
    R1's gradient of D then differed by ~2% between the backends at step 0 (parity_tests/test_levers.py)."""
    return jnp.where(x > 0, x, slope * x)


def _accumulator(x: jax.Array):
    """Where products of x's dtype are summed: float32 for bfloat16 (one rounding at the end, as torch's
    autocast kernels), the dtype itself for float32 and float64."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.matmul(x, kernel, preferred_element_type=_accumulator(x))


# ----------------------------------------------------------------------------- spectral normalisation
SN_EPS = 1e-12  # torch's spectral_norm default: F.normalize's floor on a vector's norm
SN_INIT_ITERATIONS = 15  # torch runs 15 power iterations when it registers the parametrization


class SpectralVector(nnx.BatchStat):
    """u or v of one spectrally normalised weight: state that train mode moves and eval mode reads, as
    BatchNorm's running statistics (a BatchStat, so it travels with them: split apart from the parameters,
    returned by the train-mode calls, checkpointed, in the neutral file); never differentiated."""


def _normalize(x: jax.Array) -> jax.Array:
    """torch's F.normalize of a vector: x / max(|x|, eps)."""
    return x / jnp.maximum(jnp.linalg.norm(x), SN_EPS)


def power_iterations(w: jax.Array, u: jax.Array, v: jax.Array, n: int = 1) -> tuple[jax.Array, jax.Array]:
    """n rounds of u <- normalize(W v), v <- normalize(W^T u): torch's _power_method. W (out, -1), u (out,), v (-1,)."""
    for _ in range(n):
        u = _normalize(w @ v)
        v = _normalize(w.T @ u)
    return u, v


class SpectralNorm:
    """Mixin of Conv, Linear and Embed: the layer's weight divided by its largest singular value (Miyato et al.
    2018), when built with spectral=True; torch.nn.utils.parametrizations.spectral_norm's maths exactly.

    sigma = u^T W v, where W is the weight as torch holds it, reshaped to (out, -1) (`torch_matrix`: a
    convolution's HWIO kernel goes back to OIHW first, so that u and v mean what they mean in torch, and
    cross the neutral file as they are), and u (out,), v (-1,) estimate W's first singular vectors. A
    train-mode call first moves u, v by one power iteration on the current W (outside the gradient), then
    normalises; eval mode normalises with u, v as they are. The gradient flows through W in u^T W v, not
    through u or v. Without spectral norm sn_u and sn_v are None and the weight is used as it is.
    """

    sn_u: SpectralVector | None
    sn_v: SpectralVector | None
    weight_name = "kernel"  # the flax layer's weight attribute

    def __init__(self, *args, spectral: bool = False, rngs: nnx.Rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)  # the flax layer's own
        self._init_spectral(spectral, rngs)

    def _weight(self) -> jax.Array:
        return getattr(self, self.weight_name)[...]

    @staticmethod
    def torch_matrix(weight: jax.Array) -> jax.Array:
        """The weight as torch's spectral_norm (dim 0) sees it, (out, -1)."""
        raise NotImplementedError

    def _init_spectral(self, spectral: bool, rngs: nnx.Rngs) -> None:
        """u, v ~ N(0, I) normalised, then 15 power iterations on the initial weight, as torch does."""
        if not spectral:
            self.sn_u = self.sn_v = None
            return
        w = self.torch_matrix(self._weight())
        u = _normalize(jax.random.normal(rngs.params(), (w.shape[0],), w.dtype))
        v = _normalize(jax.random.normal(rngs.params(), (w.shape[1],), w.dtype))
        u, v = power_iterations(w, u, v, SN_INIT_ITERATIONS)
        self.sn_u, self.sn_v = SpectralVector(u), SpectralVector(v)

    def power_iteration(self) -> None:
        """What train mode does to u and v: one power iteration on the current weight, outside the gradient."""
        w = jax.lax.stop_gradient(self.torch_matrix(self._weight()))
        self.sn_u[...], self.sn_v[...] = power_iterations(w, self.sn_u[...], self.sn_v[...])

    def spectral_weight(self, train: bool) -> jax.Array:
        """The weight to compute with: W / (u^T W v) under spectral norm (train: after `power_iteration`), else W."""
        weight = self._weight()
        if self.sn_u is None:
            return weight
        if train:
            self.power_iteration()
        sigma = self.sn_u[...] @ (self.torch_matrix(weight) @ self.sn_v[...])  # ()
        return weight / sigma


def spectral_step(module: nnx.Module) -> None:
    """What a train-mode forward does to spectral norm's state, without the forward: one power iteration of
    every spectrally normalised weight in `module` (it depends on the weights only, never on the input)."""
    for _, layer in module.iter_modules():
        if isinstance(layer, SpectralNorm) and layer.sn_u is not None:
            layer.power_iteration()



class Linear(SpectralNorm, nnx.Linear):
    """nnx.Linear computing as torch.autocast's fused linear does: inputs, kernel and bias cast to
    the compute dtype, products accumulated and the bias added in float32, the sum rounded once.

    Rounding once matters in bfloat16: with a bf16 sum, D's last bias gradient (a sum over the
    batch of terms that nearly cancel) came out 40% off its float32 value (torch's: 0.06%).
    Without a compute dtype it is plain nnx.Linear. With spectral=True (the DCGAN's D), its kernel is
    spectrally normalised (in float32) before the cast.
    """

    @staticmethod
    def torch_matrix(weight: jax.Array) -> jax.Array:
        return weight.T  # (in, out) -> torch's (out, in)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.sn_u is not None:
            return _apply(self, x, _matmul, self.spectral_weight(train))
        y = super().__call__(x)
        return y if self.dtype is None else y.astype(self.dtype)



class Embed(SpectralNorm, nnx.Embed):
    """A label's row of the table, in the table's own dtype (nnx.Embed casts to the dtype it was built
    with, float32, which would round the float64 parity runs); the first Linear casts for --precision bf16.
    With spectral=True (a projection discriminator's table under --d-norm spectral), the table is spectrally
    normalised."""

    weight_name = "embedding"

    @staticmethod
    def torch_matrix(weight: jax.Array) -> jax.Array:
        return weight  # (classes, dim): nn.Embedding's own layout

    def __call__(self, labels: jax.Array, train: bool = False) -> jax.Array:
        return jnp.take(self.spectral_weight(train), labels, axis=0)  # (B,) int -> (B, dim)



# ----------------------------------------------------------------------------- BatchNorm
DCGAN_INIT = nnx.initializers.normal(0.02)  # Radford et al.: kernels ~ N(0, 0.02), biases 0
BN_MOMENTUM = 0.1  # torch's convention: running = (1 - 0.1) running + 0.1 batch (flax's momentum 0.9)
BN_EPS = 1e-5  # torch's and flax's default


class BatchNorm(nnx.Module):
    """torch.nn.BatchNorm2d's maths over the last (channel) axis, NHWC.

    train=True normalises with the batch's mean and biased variance and moves the running
    statistics by BN_MOMENTUM towards the batch mean and the *unbiased* variance (n / (n - 1)
    times the biased one, n = B H W), as torch does; flax's own nnx.BatchNorm would keep the
    biased one. train=False normalises with the running statistics. Statistics and the
    normalisation are float32 (or wider) whatever the compute dtype; the output is rounded once to
    the input's dtype (torch's CPU batch_norm on a bfloat16 input under autocast does the same).
    """

    def __init__(self, features: int, rngs: nnx.Rngs):
        self.scale = nnx.Param(1.0 + DCGAN_INIT(rngs.params(), (features,)))  # N(1, 0.02), as the paper
        self.bias = nnx.Param(jnp.zeros((features,)))
        self.mean = nnx.BatchStat(jnp.zeros((features,)))
        self.var = nnx.BatchStat(jnp.ones((features,)))

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dtype, x = x.dtype, x.astype(_accumulator(x))
        if train:
            axes = tuple(range(x.ndim - 1))  # all but channels
            n = math.prod(x.shape[:-1])
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: what normalises the batch
            m = BN_MOMENTUM
            self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
            self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(var) * (n / (n - 1))
        else:
            mean, var = self.mean[...], self.var[...]
        return ((x - mean) / jnp.sqrt(var + BN_EPS) * self.scale[...] + self.bias[...]).astype(dtype)



# ----------------------------------------------------------------------------- convolutions
# The DCGAN's two resampling layers, torch Conv2d(k=4, s=2, p=1) and ConvTranspose2d(k=4, s=2, p=1),
# in lax terms. The transposed one is the transpose of the plain one, whose stride-dilated input is
# padded by k - 1 - p = 2 on each side.
#
# Two implementations of the same sums, chosen per platform (--conv-impl, `conv_impl`):
# - xla: lax's convolutions differentiated by autodiff; on GPUs and TPUs, the platform's own kernels
#   (cuDNN's) for the forward pass and both gradients.
# - custom (CPUs): lax's forward convolutions with a hand-written kernel gradient. XLA:CPU computes
#   autodiff's kernel gradients (convolutions with batch and feature dimensions swapped) on a slow path:
#   inside the fused loop's while loop, D's second convolution's took 1,951 ms against 22 ms outside it,
#   and the transposed one's 174 ms even outside (B = 64, 2-core Xeon); on a 2-core EPYC, 575-1,850 ms
#   of CPU time against 11-12 ms for the one below. Written as four matmuls, the kernel gradient is the
#   same sum in another order and runs at matmul speed in and out of loops. XLA:CPU's own forward and
#   input-gradient convolutions are kept: patch extraction plus one matmul was no faster
#   (benchmarks/RESULTS.md).
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_CONV_PADDING = ((1, 1), (1, 1))
_DECONV_PADDING = ((2, 2), (2, 2))
CONV_IMPLS = ("xla", "custom")


def conv_impl(name: str, platform: str | None = None) -> str:
    """What --conv-impl `name` runs on `platform` (default: JAX's default backend): auto is custom on CPUs, where
    XLA's kernel gradients are slow, and xla elsewhere, where the platform's convolution kernels are fast."""
    if name != "auto":
        return name
    return "custom" if (platform or jax.default_backend()) == "cpu" else "xla"


def xla_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(B, 2H, 2W, I) -> (B, H, W, O), kernel (4, 4, I, O): lax's convolution. bfloat16 inputs give a float32
    output (`_accumulator`), as every op here."""
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), _CONV_PADDING, dimension_numbers=_DIMENSION_NUMBERS,
                                        preferred_element_type=_accumulator(x))


def xla_deconv(h: jax.Array, kernel: jax.Array) -> jax.Array:
    """(B, H, W, I) -> (B, 2H, 2W, O), kernel (4, 4, O, I), HWIO of the `xla_conv` it transposes:
    lax.conv_transpose(transpose_kernel=True)."""
    return jax.lax.conv_transpose(h, kernel, (2, 2), _DECONV_PADDING, dimension_numbers=_DIMENSION_NUMBERS,
                                  transpose_kernel=True, preferred_element_type=_accumulator(h))


def conv_kernel_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """d<g, conv(x, k)>/dk for conv(k=4, s=2, p=1): x (B, 2H, 2W, I), g (B, H, W, O) -> (4, 4, I, O).

    conv(x, k)[b, h, w, o] = sum_{i, j, c} x_pad[b, 2h + i, 2w + j, c] k[i, j, c, o]. With i = 2u + a and
    j = 2v + e (all four in {0, 1}), x_pad viewed as (B, H + 1, 2, W + 1, 2, I) (a reshape: no copy) holds
    x_pad[b, 2h + i, 2w + j] at [b, h + u, a, w + v, e]: the gradient of the four k[2u + a, 2v + e] of one
    (u, v) is one product of g with the window [:, u:u + H, :, v:v + W] over (b, h, w): four (O, BHW) x
    (BHW, 4I) matmuls, each window runs of whole rows. (16 stride-2 slices, stacked and copied again
    transposed for one matmul, took 17 ms of CPU time at D's second convolution, batch 64; this 11.)
    """
    batch, height, width, out = g.shape
    x_pad = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(batch, height + 1, 2, width + 1, 2, x.shape[-1])
    grads = [jnp.einsum("bhwo,bhawec->oaec", g, x_pad[:, u:u + height, :, v:v + width],
                        preferred_element_type=_accumulator(x)) for u in (0, 1) for v in (0, 1)]  # 4 x (O, 2, 2, I)
    grad = jnp.stack(grads).reshape(2, 2, out, 2, 2, x.shape[-1])  # (u, v, O, a, e, I)
    return grad.transpose(0, 3, 1, 4, 5, 2).reshape(4, 4, x.shape[-1], out).astype(jnp.result_type(x, g))


@jax.custom_vjp
def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`xla_conv`, kernel gradient by hand (`conv_kernel_grad`)."""
    return xla_conv(x, kernel)


def _conv_fwd(x: jax.Array, kernel: jax.Array):
    return conv(x, kernel), (x, kernel)


def _conv_bwd(residuals, g: jax.Array):
    x, kernel = residuals
    g = g.astype(x.dtype)  # the cotangent in the compute dtype, as the inputs
    return deconv(g, kernel).astype(x.dtype), conv_kernel_grad(x, g)  # conv's transpose: deconv, same kernel


conv.defvjp(_conv_fwd, _conv_bwd)


@jax.custom_vjp
def deconv(h: jax.Array, kernel: jax.Array) -> jax.Array:
    """`xla_deconv`, kernel gradient by hand. By adjointness, <g, deconv(h, k)> = <conv(g, k), h>, so its
    kernel gradient is conv's at input g with cotangent h."""
    return xla_deconv(h, kernel)


def _deconv_fwd(h: jax.Array, kernel: jax.Array):
    return deconv(h, kernel), (h, kernel)


def _deconv_bwd(residuals, g: jax.Array):
    h, kernel = residuals
    g = g.astype(h.dtype)
    return conv(g, kernel).astype(h.dtype), conv_kernel_grad(g, h)


deconv.defvjp(_deconv_fwd, _deconv_bwd)

# impl -> (conv, deconv): the same maths up to float rounding
CONV_OPS = {"xla": (xla_conv, xla_deconv), "custom": (conv, deconv)}


def _apply(layer: nnx.Module, x: jax.Array, op: Callable, kernel: jax.Array) -> jax.Array:
    """What flax's layer computes, with `op` (conv, deconv or a matmul) in place of its lax call and `kernel`
    (the layer's own, or spectrally normalised) in place of its kernel. With a compute dtype (bfloat16),
    as torch's autocast kernels: inputs cast to it, the sum and the bias in float32, one rounding."""
    bias = layer.bias[...] if layer.bias is not None else None
    x, kernel, bias = layer.promote_dtype((x, kernel, bias), dtype=layer.dtype)
    y = op(x, kernel)  # float32 for bfloat16 inputs
    y = y if bias is None else y + bias
    return y if layer.dtype is None else y.astype(layer.dtype)


class Conv(SpectralNorm, nnx.Conv):
    """nnx.Conv (its parameters, initialisation and layout) computing `conv` or `xla_conv` (impl, one of
    CONV_IMPLS): 4x4, stride 2, padding 1; with spectral=True, its kernel spectrally normalised."""

    def __init__(self, *args, impl: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.impl = impl  # a static attribute: part of the graph definition, not of the state

    @staticmethod
    def torch_matrix(weight: jax.Array) -> jax.Array:
        # HWIO (kh, kw, I, O) -> torch's OIHW, flattened as torch's weight.flatten(1): (O, I kh kw)
        return jnp.transpose(weight, (3, 2, 0, 1)).reshape(weight.shape[3], -1)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return _apply(self, x, CONV_OPS[self.impl][0], self.spectral_weight(train))


class ConvTranspose(nnx.ConvTranspose):
    """nnx.ConvTranspose (its parameters, initialisation and layout) computing `deconv` or `xla_deconv`."""

    def __init__(self, *args, impl: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.impl = impl

    def __call__(self, h: jax.Array) -> jax.Array:
        return _apply(self, h, CONV_OPS[self.impl][1], self.kernel[...])



def strided_conv(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True, spectral: bool = False,
                 dtype=None, impl: str = "auto") -> Conv:
    """torch Conv2d(k=4, s=2, p=1): halves H and W. Kernel (4, 4, in, out), HWIO as the neutral file.
    impl: --conv-impl (auto, xla or custom; `conv_impl`)."""
    return Conv(n_in, n_out, (4, 4), strides=(2, 2), padding=_CONV_PADDING, use_bias=use_bias,
                kernel_init=DCGAN_INIT, spectral=spectral, dtype=dtype, impl=conv_impl(impl), rngs=rngs)


def strided_deconv(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True, dtype=None,
                   impl: str = "auto") -> ConvTranspose:
    """torch ConvTranspose2d(k=4, s=2, p=1): doubles H and W.

    The transpose (gradient) of a stride-2 convolution whose kernel is this layer's, HWIO of
    *that* convolution: (4, 4, n_out, n_in), flax's layout with transpose_kernel=True and the
    neutral file's.
    """
    return ConvTranspose(n_in, n_out, (4, 4), strides=(2, 2), padding=_DECONV_PADDING, transpose_kernel=True,
                         use_bias=use_bias, kernel_init=DCGAN_INIT, dtype=dtype, impl=conv_impl(impl), rngs=rngs)


def dcgan_linear(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True, spectral: bool = False,
                  dtype=None) -> Linear:
    return Linear(n_in, n_out, use_bias=use_bias, kernel_init=DCGAN_INIT, param_dtype=jnp.float32, dtype=dtype,
                  preferred_element_type=None if dtype is None else jnp.float32, spectral=spectral, rngs=rngs)

