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
from typing import Sequence

import numpy as np

import gan_jax  # noqa: F401  (first: it sets the production XLA:CPU flags before jax starts)
from benchmarks import flops as flops_lib
from gan_common.config import Config


def _median_s(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def products(config: Config, batch: int) -> list[tuple[str, tuple[int, int], tuple[int, int], int]]:
    """Distinct (op, lhs shape, rhs shape, times it occurs in a step) of the plan, lhs and rhs as the op takes them."""
    ws = dict(zip("gd", flops_lib.widths(config)))
    seen: dict = {}
    for op, net, i, rows in flops_lib.matmul_plan(config, batch):
        n_in, n_out = ws[net][i], ws[net][i + 1]
        key = (op, *flops_lib.operands_of(op, (rows, n_in), (rows, n_out), (n_in, n_out)))
        seen[key] = seen.get(key, 0) + 1
    return [(*k, n) for k, n in seen.items()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.matmul_kernels", description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64, help="the step's batch (default 64)")
    p.add_argument("--iters", type=int, default=100, help="products per timed call (default 100)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per product and backend (default 7)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch
    from jax import lax

    from benchmarks.step_throughput import jax_products
    from benchmarks.torch_variants import TORCH_PRODUCTS

    config = Config(batch_size=args.batch_size)
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
        f = jax_ops[op]

        @jax.jit
        def loop(a, b, f=f):
            def body(acc, i):
                y = f(a + i.astype(jnp.float32) * 1e-9, b)  # a fresh input each iteration: nothing hoisted
                return acc + y[0, 0], None

            return lax.scan(body, jnp.float32(0), jnp.arange(args.iters))[0]

        ja, jb = jnp.asarray(a), jnp.asarray(b)
        t_jax = _median_s(lambda: loop(ja, jb).block_until_ready(), args.repeats) / args.iters
        ta, tb, g = torch.from_numpy(a), torch.from_numpy(b), torch_ops[op]

        def torch_loop():
            for _ in range(args.iters):
                g(ta, tb)

        t_torch = _median_s(torch_loop, args.repeats) / args.iters
        print(f"{op:6s} {str(lhs_shape):>11s} {str(rhs_shape):>11s} {count:6d} {flop / t_jax / 1e9:12.4g} "
              f"{flop / t_torch / 1e9:14.4g} {t_jax / t_torch:10.3g}")
        step_ms["XLA"] += count * t_jax * 1e3
        step_ms["torch"] += count * t_torch * 1e3
    print(f"a step's products, summed: XLA {step_ms['XLA']:.3f} ms, torch {step_ms['torch']:.3f} ms "
          f"(XLA - torch: {step_ms['XLA'] - step_ms['torch']:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
