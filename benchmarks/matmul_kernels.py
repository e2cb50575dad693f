"""Each matrix product of the step alone, XLA against torch: the kernels under the `matmuls` floors.

    python -m benchmarks.matmul_kernels --batch-size 64

For every distinct product of `benchmarks.flops.matmul_plan` (op and shapes), times XLA's kernel
(a jitted lax.scan of --iters products, each input nudged by the loop counter so that nothing is
hoisted; no per-call dispatch inside) and torch's (--iters back-to-back calls of the same torch.mm
form the `matmuls` floor uses), medians of --repeats, and prints GFLOP/s and torch / XLA. The last
line sums each kernel's time times its count in a step: one step's products run one at a time on
each backend's kernels (torch's times include its per-call dispatch).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

from benchmarks import flops as flops_lib
from benchmarks.jax_runners import jax_products
from benchmarks.torch_runners import TORCH_PRODUCTS
from gan_common.config import Config


def _median_s(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def xla_seconds(f, a: np.ndarray, b: np.ndarray, iters: int, repeats: int) -> float:
    """Median seconds of one product f(a, b) in XLA: a jitted lax.scan of `iters` of them, no dispatch inside."""

    @jax.jit
    def loop(a, b):
        def body(acc, i):
            y = f(a + i.astype(jnp.float32) * 1e-9, b)  # a fresh input each iteration: nothing hoisted
            return acc + y[0, 0], None

        return lax.scan(body, jnp.float32(0), jnp.arange(iters))[0]

    ja, jb = jnp.asarray(a), jnp.asarray(b)
    return _median_s(lambda: loop(ja, jb).block_until_ready(), repeats) / iters


def torch_seconds(g, a: np.ndarray, b: np.ndarray, iters: int, repeats: int) -> float:
    """Median seconds of one product g(a, b) in torch: `iters` back-to-back calls, each with its dispatch."""
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def loop() -> None:
        for _ in range(iters):
            g(ta, tb)

    return _median_s(loop, repeats) / iters


def products(config: Config, batch: int) -> list[tuple[str, tuple[int, int], tuple[int, int], int]]:
    """Distinct (op, lhs shape, rhs shape, times it occurs in a step) of the plan, lhs and rhs as the op takes them."""
    gemms = flops_lib.layer_gemms(config)
    seen: dict = {}
    for op, net, i, rows in flops_lib.matmul_plan(config, batch):
        positions, n_in, n_out = gemms[net][i]
        m = rows * positions
        key = (op, *flops_lib.operands_of(op, (m, n_in), (m, n_out), (n_in, n_out)))
        seen[key] = seen.get(key, 0) + 1
    return [(*k, n) for k, n in seen.items()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.matmul_kernels", description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64, help="the step's batch (default 64)")
    p.add_argument("--iters", type=int, default=100, help="products per timed call (default 100)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per product and backend (default 7)")
    args = p.parse_args(argv)

    config = Config.tutorial(batch_size=args.batch_size)
    jax_ops, torch_ops = jax_products(), TORCH_PRODUCTS
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); batch {args.batch_size}; medians of {args.repeats} x {args.iters}")
    print(f"{'op':6s} {'lhs':>11s} {'rhs':>11s} {'x/step':>6s} {'XLA GFLOP/s':>12s} {'torch GFLOP/s':>14s} "
          f"{'torch/XLA':>10s}")
    step_ms = {"XLA": 0.0, "torch": 0.0}  # one step's products, each kernel timed alone
    for op, lhs_shape, rhs_shape, count in products(config, args.batch_size):
        a = rng.standard_normal(lhs_shape, dtype=np.float32)
        b = rng.standard_normal(rhs_shape, dtype=np.float32)
        contracted = lhs_shape[0] if op == "wgrad" else lhs_shape[1]
        out = jax.eval_shape(jax_ops[op], a, b).shape
        flop = 2 * int(np.prod(out)) * contracted
        t_jax = xla_seconds(jax_ops[op], a, b, args.iters, args.repeats)
        t_torch = torch_seconds(torch_ops[op], a, b, args.iters, args.repeats)
        print(f"{op:6s} {str(lhs_shape):>11s} {str(rhs_shape):>11s} {count:6d} {flop / t_jax / 1e9:12.4g} "
              f"{flop / t_torch / 1e9:14.4g} {t_jax / t_torch:10.3g}")
        step_ms["XLA"] += count * t_jax * 1e3
        step_ms["torch"] += count * t_torch * 1e3
    print(f"a step's products, summed: XLA {step_ms['XLA']:.3f} ms, torch {step_ms['torch']:.3f} ms "
          f"(XLA - torch: {step_ms['XLA'] - step_ms['torch']:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
