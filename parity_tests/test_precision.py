"""--precision bf16: both backends compute the same bfloat16 step, and it is really bfloat16.

JAX casts in its models (gan_jax.layers.Linear, dtype bfloat16, float32 accumulation and
bias, one rounding); torch wraps the forward passes in torch.autocast. Parameters, Adam
states and losses stay float32 in both. Identical weights and inputs, as in the float32
parity tests; the tolerances are set by bfloat16's 8-bit significand (relative rounding
2^-9, a unit in the last place 2^-8..2^-7), not by float32's:

  forward (G's images, D's logits): within 2^-6 of the tensor's scale, two bf16 ulps
    (measured: 4.3e-3 and 6.5e-3);
  one step's losses: 1e-3 relative (measured 2e-5: a batch mean of many bf16 terms);
  one step's gradients, per tensor: 0.1 of the tensor's scale (measured max 0.029, G's
    first kernel, whose gradient is a long chain of bf16 products). For scale, the same
    gradients differ from their float32 values by up to 0.20, so the two backends agree
    with each other far better than either agrees with float32;
  20-step trajectory losses: 5e-3 relative (measured max 6.6e-4); the weights they end at,
    per tensor: 0.25 of its scale per entry, 0.15 of how far it moved in RMS (measured 0.070,
    0.082; see the test).
And the test that bf16 is on at all: each backend's bf16 step must differ from its own
float32 step by more than 1e-3 somewhere in the gradients (measured 0.20), so a --precision
flag that was silently ignored fails here.

The DCGAN (harness' dcgan_small; with BatchNorm in D, and with spectral norm): convolutions as
the linears (bf16 inputs, float32 sum and bias, one rounding), BatchNorm's statistics and
normalisation in float32 with one rounding of its output, as torch's CPU batch_norm on a bf16
input. Measured: forward 2.3e-3 / 4.1e-3; losses 6.3e-5; trajectory below. Its gradient tolerance
is 0.25, not 0.1: G's last bias (deconv2.bias) is a sum over 12,544 pixels that cancels ~71-fold,
and the backends' bf16 values of it differ by 0.14 of its scale (BatchNorm D) while each lies 0.56
(JAX) and 0.82 (torch) from its own float32 value, so a backend computing that layer in float32
would still fail; every other DCGAN tensor agrees within 0.06.
"""

import dataclasses

import numpy as np
import pytest

from gan_common.config import Config
from parity_tests.harness import SPECS, JaxAdapter, assert_weights_end_together, inputs, loaded_pair, max_rel_err

pytestmark = pytest.mark.slow  # make test only: bf16 steps and trajectories of the MLP and two DCGANs, both backends

_DCGAN = dataclasses.replace(next(s.config for s in SPECS if s.config.arch == "dcgan"), precision="bf16")
# name -> (bf16 config, gradient tolerance)
CASES = {
    "mlp": (Config.tutorial(precision="bf16"), 0.1),
    "dcgan": (_DCGAN, 0.25),
    "dcgan_spectral": (dataclasses.replace(_DCGAN, d_norm="spectral"), 0.25),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture(scope="module")
def bf16(case):
    return case[0]


@pytest.fixture(scope="module")
def weights(bf16):
    return JaxAdapter(dataclasses.replace(bf16, precision="float32")).export()


@pytest.fixture(scope="module")
def batch(mnist, bf16):
    return inputs(bf16, mnist, 20)


def test_forward_agrees_in_bf16(bf16, weights, batch):
    xs, z_ds, _ = batch
    jx, th = loaded_pair(bf16, weights)
    assert max_rel_err(jx.generate(z_ds[0]), th.generate(z_ds[0])) <= 2**-6
    assert max_rel_err(jx.discriminate(xs[0]), th.discriminate(xs[0])) <= 2**-6


def test_step_losses_and_gradients_agree_in_bf16(case, weights, batch):
    bf16, grad_tol = case
    xs, z_ds, z_gs = batch
    results = {}
    for config in (bf16, dataclasses.replace(bf16, precision="float32")):
        for a in loaded_pair(config, weights):
            results[a.name, config.precision] = a.step_with_grads(xs[0], z_ds[0], z_gs[0])
    (mj, dj, gj), (mt, dt, gt) = results["jax", "bf16"], results["torch", "bf16"]
    np.testing.assert_allclose(mj[:2], mt[:2], rtol=1e-3)
    for got, want in ((dj, dt), (gj, gt)):
        errs = {k: max_rel_err(got[k], want[k]) for k in want}
        worst = max(errs, key=errs.get)
        assert errs[worst] <= grad_tol, f"{worst}: bf16 gradients of the backends differ by {errs[worst]:.3g}"
    for backend in ("jax", "torch"):
        _, d16, g16 = results[backend, "bf16"]
        _, d32, g32 = results[backend, "float32"]
        moved = max(max_rel_err(a[k], b[k]) for a, b in ((d16, d32), (g16, g32)) for k in b)
        assert moved > 1e-3, f"{backend}: --precision bf16 computes the float32 step (differs by {moved:.2g})"


def test_bf16_trajectory_agrees(bf16, weights, batch):
    jx, th = loaded_pair(bf16, weights)
    a, b = jx.steps(*batch), th.steps(*batch)
    rel = np.abs(a[:, :2] - b[:, :2]) / np.abs(b[:, :2])
    assert rel.max() <= 5e-3, f"bf16 losses differ by {rel.max():.3g} at step {rel.max(axis=1).argmax() + 1}"
    # The weights the 20 steps end at. In bf16 a gradient entry is known to ~0.03 of its tensor's scale (the
    # one-step test above), so far more entries than in float32 have a sign that rounding picks, and Adam
    # moves them +-lr: per entry, max_rel_err measured 0.070 (mlp, D's fc1 kernel), 0.050 (dcgan),
    # 0.046 (dcgan_spectral), and up to 0.13 over three other input draws; tolerance 0.25. As a share of
    # how far each tensor moved (RMS), measured 0.042 / 0.082 / 0.068 (at most 0.082 over the other draws);
    # tolerance 0.15. One backend at 0.8 lr gives 0.28-0.76 there, a tensor left alone 1.
    assert_weights_end_together(jx.export(), th.export(), weights, rel=0.25, moved_rel=0.15,
                                what=f"weights after {len(a)} bf16 steps")


def test_bf16_keeps_float32_parameters_and_optimiser_state(bf16, weights, batch):
    import jax
    import torch

    xs, z_ds, z_gs = batch
    jx, th = loaded_pair(bf16, weights)
    jx.step(xs[0], z_ds[0], z_gs[0])
    th.step(xs[0], z_ds[0], z_gs[0])
    leaves = jax.tree_util.tree_leaves((jx.state.g_params, jx.state.d_params, jx.state.g_opt, jx.state.d_opt))
    assert {str(x.dtype) for x in leaves if x.dtype != np.int32} == {"float32"}
    params = [*th.state.generator.parameters(), *th.state.discriminator.parameters()]
    adam = [v for opt in (th.state.g_opt, th.state.d_opt) for s in opt.state.values() for v in s.values()
            if torch.is_tensor(v) and v.dim() > 0]
    assert {p.dtype for p in params + adam} == {torch.float32}
