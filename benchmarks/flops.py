"""The analytic FLOP count of one training step: the minimum the algorithm needs, for GFLOP/s.

Counts only the layers' matrix products, 2*m*n*k each (a multiply and an add per term). A
convolution counts as the product it is per output position (its patches times the kernel, `layer_gemms`).
Elementwise work (biases, activations, BatchNorm, losses, the bias gradients' column sums) and
both Adam updates are ignored: O(rows * width) or O(params), against O(rows * width^2).

One step, B = batch (the MLP's layers or the DCGAN's, alike):
  D step: G forward on z_d (B rows, no backward: fakes are constants for D);
          D forward on real and fake (2B rows: one call on [real; fake], or two of B with D's BatchNorm);
          D backward: weight grads of every layer, input grads of every layer but the first (nothing
          needs d/dx of the images).
  G step: G forward on z_g (B rows); D forward through the updated D (B rows);
          D backward for input grads only, the first layer's included (it feeds G),
          no D weight grads; G backward: weight grads of every layer, input grads of
          every layer but the first (nothing needs d/dz).

    python -m benchmarks.flops --batch-size 64                # breakdown and XLA's count of the same step
    python -m benchmarks.flops --arch dcgan --batch-size 64   # the DCGAN's (analytic; XLA's cost analysis)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
import sys
from collections.abc import Sequence

import numpy as np

from gan_common.config import ARCHS, LABEL_EMBED_DIM, PRESETS, Config

IMAGE_SIZE = 28 * 28  # G's output and D's input, as in both backends' models


def widths(config: Config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Layer widths of the MLP's G (latent -> ... -> 784) and D (784 -> ... -> 1)."""
    g = (config.latent_dim, *config.g_hidden_sizes, IMAGE_SIZE)
    d = (IMAGE_SIZE, *config.d_hidden_sizes, 1)
    return g, d


def layer_gemms(config: Config) -> dict[str, list[tuple[int, int, int]]]:
    """Each layer of G ("g") and D ("d") as one matrix product per image: (positions, k, n), a
    (positions, k) @ (k, n) product per image, positions * k * n multiply-adds.

    A dense layer is (1, in, out). A 4x4 stride-2 convolution with I inputs and O outputs at P
    output positions is (P, 16 I, O): its patches times the kernel. A transposed one, the transpose
    of such a convolution, is (P_in, I, 16 O): each input pixel times the kernel, the products added
    into the output. Same multiply-adds as the convolutions themselves; the floors time these products.
    """
    if config.arch == "mlp":
        g, d = widths(config)
        return {"g": [(1, a, b) for a, b in zip(g[:-1], g[1:], strict=True)],
                "d": [(1, a, b) for a, b in zip(d[:-1], d[1:], strict=True)]}
    height, width, channels = config.image_shape
    n = config.dcgan_stages  # stride-2 layers: 2 for 28- and 32-pixel images
    gw = [config.g_channels * 2 ** (n - 1 - i) for i in range(n)] + [channels]  # G's channels: 2c, c, C
    dw = [channels] + [config.d_channels * 2**i for i in range(n)]  # D's: C, c, 2c
    start = (height >> n) * (width >> n)  # positions of G's first and D's last maps (7 x 7 for 28 pixels)
    latent = config.latent_dim + (LABEL_EMBED_DIM if config.conditional else 0)
    g = [(1, latent, start * gw[0])]  # fc
    g += [(start * 4 ** (i - 1), gw[i - 1], 16 * gw[i]) for i in range(1, n + 1)]  # deconv i: its input's positions
    d = [(start * 4 ** (n - i), 16 * dw[i - 1], dw[i]) for i in range(1, n + 1)]  # conv i: its output's positions
    return {"g": g, "d": d + [(1, start * dw[-1], 1)]}  # D's fc: the logit


def arch_config(arch: str, recipe: str = "tutorial", **fields) -> Config:
    """The benchmarks' config of --arch: the seed's MLP (Config.tutorial), or the dcgan preset's (beta1 0.5).
    recipe "default" (the MLP only): today's defaults, the MLP with lazy R1 and the EMA of G (--preset mlp's step;
    --preset best's adds only its lr schedule)."""
    if recipe == "default":
        return Config(**fields)
    return Config.tutorial(**{**(PRESETS["dcgan"] if arch == "dcgan" else {}), **fields})


def _macs(layers: Sequence[tuple[int, int, int]], skip_first: bool = False) -> int:
    """Multiply-adds per image of one pass over `layers` (optionally without the first layer)."""
    return sum(p * k * n for p, k, n in (layers[1:] if skip_first else layers))


def step_flops(config: Config, batch: int) -> dict[str, int]:
    """The breakdown of one step's matmul FLOPs at `batch`, in execution order; 'total' last."""
    gemms = layer_gemms(config)
    g, d = gemms["g"], gemms["d"]
    B = batch
    parts = {
        "d_step  G forward (B rows, no grad)": 2 * B * _macs(g),
        "d_step  D forward (2B rows)": 2 * 2 * B * _macs(d),
        "d_step  D weight grads (2B rows)": 2 * 2 * B * _macs(d),
        "d_step  D input grads, not layer 1 (2B rows)": 2 * 2 * B * _macs(d, skip_first=True),
        "g_step  G forward (B rows)": 2 * B * _macs(g),
        "g_step  D forward (B rows)": 2 * B * _macs(d),
        "g_step  D input grads, all layers (B rows)": 2 * B * _macs(d),
        "g_step  G weight grads (B rows)": 2 * B * _macs(g),
        "g_step  G input grads, not layer 1 (B rows)": 2 * B * _macs(g, skip_first=True),
    }
    parts["total"] = sum(parts.values())
    return parts


def matmul_plan(config: Config, batch: int) -> list[tuple[str, str, int, int]]:
    """The step's matrix products one by one, as `step_flops` counts them: (op, net, layer, rows).

    op: "fwd" (rows P, k) @ (k, n); "wgrad" x^T e -> (k, n); "igrad" e w^T -> (rows P, k), for
    layer `layer` (0-based) of net "g" or "d" ((P, k, n) from `layer_gemms`; rows images). The floor
    benchmarks time exactly this list in each backend; `plan_flops` recounts it (a test ties it to `step_flops`).
    """
    layers = {net: range(len(v)) for net, v in layer_gemms(config).items()}
    B = batch
    plan = [("fwd", "g", i, B) for i in layers["g"]]  # D step: G forward
    plan += [("fwd", "d", i, 2 * B) for i in layers["d"]]  # D forward on [real; fake]
    plan += [("wgrad", "d", i, 2 * B) for i in layers["d"]]  # D weight grads
    plan += [("igrad", "d", i, 2 * B) for i in layers["d"] if i > 0]  # D input grads, not layer 1
    plan += [("fwd", "g", i, B) for i in layers["g"]]  # G step: G forward
    plan += [("fwd", "d", i, B) for i in layers["d"]]  # D forward
    plan += [("igrad", "d", i, B) for i in layers["d"]]  # D input grads, all layers
    plan += [("wgrad", "g", i, B) for i in layers["g"]]  # G weight grads
    plan += [("igrad", "g", i, B) for i in layers["g"] if i > 0]  # G input grads, not layer 1
    return plan


def operands_of(op: str, x, e, w) -> tuple:
    """A plan product's two operands, in the order its op takes them, from the layer's activations
    x (rows P, k), back-propagated errors e (rows P, n) and weight w (k, n); works on shapes too."""
    return {"fwd": (x, w), "wgrad": (x, e), "igrad": (e, w)}[op]


def floor_operands(config: Config, plan, place) -> tuple[dict, dict, dict]:
    """Random float32 operands for `plan`, one set shared by every product that shares it in the step:
    weights per (net, layer) (k, n); activations (rows P, k) and back-propagated errors (rows P, n)
    per (net, layer, rows). `place` puts a numpy array on the backend's device."""
    gemms = layer_gemms(config)
    rng = np.random.default_rng(0)

    def normal(*shape: int):
        return place(rng.standard_normal(shape, dtype=np.float32))

    w = {(net, i): normal(*gemms[net][i][1:]) for net, i in sorted({(n, i) for _, n, i, _ in plan})}
    keys = sorted({(net, i, rows) for _, net, i, rows in plan})
    acts = {(net, i, rows): normal(rows * gemms[net][i][0], gemms[net][i][1]) for net, i, rows in keys}
    errs = {(net, i, rows): normal(rows * gemms[net][i][0], gemms[net][i][2]) for net, i, rows in keys}
    return w, acts, errs


def plan_flops(config: Config, plan: Sequence[tuple[str, str, int, int]]) -> int:
    gemms = layer_gemms(config)
    return sum(2 * rows * math.prod(gemms[net][i]) for _, net, i, rows in plan)


def flops_per_step(config: Config, batch: int) -> int:
    return step_flops(config, batch)["total"]


def flops_section(config: Config, batch_sizes: Sequence[int], xla: bool) -> dict:
    """The FLOPs part of a throughput result: analytic FLOPs per step at every batch size, the breakdown
    at 64, and (xla=True) XLA's counts of the same step."""
    out = {"note": "matmuls and convolutions only, 2*m*n*k each; elementwise ops and Adam ignored "
                   "(see benchmarks/flops.py)",
           "analytic_per_step": {str(b): flops_per_step(config, b) for b in batch_sizes},
           "breakdown_batch_64": step_flops(config, 64)}
    if xla:
        out["xla"] = {str(b): xla_step_flops(config, b) for b in sorted({64, *batch_sizes})}
    return out


def format_breakdown(parts: dict[str, int]) -> str:
    total = parts["total"]
    lines = [f"  {name:<46} {v / 1e9:10.6f} GFLOP  {100 * v / total:5.1f}%" for name, v in parts.items()]
    return "\n".join(lines)


def format_xla(xla: dict, analytic: int) -> str:
    def line(label: str, v: float | None, why: str) -> str:
        if v is None:
            return f"  {label:<38} (not counted: convolutions, or library calls on a GPU)"
        return f"  {label:<38} {v / 1e9:10.6f} GFLOP ({v / analytic:.4f} x analytic{why})"

    return "\n".join([
        line("dots JAX traces (before XLA):", xla["dots_traced"], ""),
        line("dots XLA runs (after optimisation):", xla["dots"], "; k=1 outer products become multiplies"),
        line("XLA cost_analysis flops (all ops):", xla["cost_analysis"], "; plus elementwise work and Adam"),
    ])


def xla_step_flops(config: Config, batch: int) -> dict[str, float]:
    """XLA's own counts for the compiled single `gan_jax.step.train_step` at `batch`.

    'dots_traced': 2 * out * contracted over the dots JAX hands to XLA (what autodiff asked for:
      the like-for-like check of the analytic count);
    'dots': the same over the dots left after XLA's optimisations (on GPUs these become library
      calls, so None there);
    'cost_analysis': XLA's total for the compiled step (elementwise ops and Adam included).
    The DCGAN's convolutions are not dots: for --arch dcgan both dot counts are None.
    """
    # jax in here, not at the top: the analytic count (and `python -m benchmarks.flops --no-xla`) needs no jax.
    import jax
    import jax.numpy as jnp

    from gan_jax.step import create, train_step

    gan, state = create(dataclasses.replace(config, batch_size=batch))
    x = jnp.zeros((batch, *config.image_shape), jnp.float32)
    z = jnp.zeros((batch, config.latent_dim), jnp.float32)
    lowered = jax.jit(functools.partial(train_step, gan), donate_argnums=0).lower(state, x, z, z)
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0]
    if config.arch != "mlp":
        return {"dots_traced": None, "dots": None, "cost_analysis": float(cost["flops"])}
    dots = hlo_dot_flops(compiled.as_text())
    return {"dots_traced": float(hlo_dot_flops(lowered.as_text(dialect="hlo"))),
            "dots": float(dots) if dots else None, "cost_analysis": float(cost["flops"])}


# "[ROOT] [%]name = f32[64,256]{1,0} op(operands...), attrs": optimised and unoptimised HLO text alike.
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]\S*\s+([\w\-]+)\((.*)")
_FIRST_OPERAND = re.compile(r"\s*(?:\w+\[[\d,]*\](?:\{[\d,]*\})?\s+)?%?([\w.\-]+)")


def hlo_dot_flops(hlo_text: str) -> int:
    """Sum of 2 * prod(output dims) * prod(contracted lhs dims) over the dot instructions of an HLO module's text."""
    shapes, dots = {}, []
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        name, dims, op, rest = m.groups()
        shapes[name] = [int(d) for d in dims.split(",") if d]
        if op == "dot":
            lhs = _FIRST_OPERAND.match(rest).group(1)
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
            dots.append((shapes[name], lhs, [int(c) for c in contracting.split(",") if c]))
    return sum(2 * math.prod(out) * math.prod(shapes[lhs][c] for c in cs) for out, lhs, cs in dots)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flops", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--arch", choices=ARCHS, default="mlp", help="the nets (dcgan: --preset dcgan's)")
    parser.add_argument("--no-xla", action="store_true", help="skip XLA's count (no jax needed)")
    args = parser.parse_args(argv)
    config = arch_config(args.arch, batch_size=args.batch_size)
    parts = step_flops(config, args.batch_size)
    print(f"analytic matmul FLOPs of one step at batch {args.batch_size}:")
    print(format_breakdown(parts))
    if not args.no_xla:
        print(format_xla(xla_step_flops(config, args.batch_size), parts["total"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
