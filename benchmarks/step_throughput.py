"""Throughput of the full GAN training step (D update + G update, two Adams), JAX against PyTorch.

    python -m benchmarks.step_throughput                         # CPU sweep 1,64,256,1024,4096 (GPU adds 16384,65536)
    python -m benchmarks.step_throughput --batch-sizes 64 --variants fused,eager --json out.json --plot out.png
    python -m benchmarks.step_throughput --arch dcgan           # the DCGAN (dcgan preset): CPU sweep 64,256, K 10
    python -m benchmarks.step_throughput --recipe default --batch-sizes 64,256   # the default recipe's step (R1, EMA)

Variants (rows are `backend` x `variant` x batch size):
  jax   step         jit(train_step), one step per call, x/z_d/z_g fed as numpy from the host each call
  jax   fused_kK     make_train_chunk: K steps per call (lax.scan), uint8 data on the device, batch
                     gather and noise inside the compiled call; K shrinks for big batches (--max-images-per-call)
  torch eager        gan_torch.step.train_step; tuned / tuned_cl (dcgan) / compiled / compiled_ro / cuda_graph:
                     see torch_runners
Floors, timed in both backends (parts of a step alone, not training steps; left out of the ratios):
  matmuls            the step's matrix products (benchmarks.flops.matmul_plan; a convolution as its patches
                     times its kernel): one jitted call / torch.mm each
  adam               the step's two Adam updates on fixed gradients: gan_jax's optax Adams, K per
                     compiled call as in fused_kK / gan_torch's Adams with the fused kernel, as tuned
Every torch variant also gathers its batch on the device and draws its noise there, as fused_kK does.
--precisions float32,bf16 adds `+bf16` rows of the two production paths, jax fused_kK and torch eager,
with --precision bf16 (bfloat16 matmuls and activations, float32 parameters, Adam and losses).

How it times (one process): each runner is built and called once (`first_call_s`: compile + first run),
then warmed up; repeats of >= --min-time each run interleaved, rotating over the runners of one batch
size, so machine noise hits every variant alike. A repeat is `calls` back-to-back calls and one
synchronisation at its end (block_until_ready / cuda.synchronize): nothing syncs inside it.
GFLOP/s uses benchmarks.flops (matmuls and convolutions only); the peak is the best n x n float32 matmul rate of
numpy, jax and torch on the same device, measured at the start and the end of this run.

This file only parses flags; the sweep is benchmarks/sweep.py, the timing benchmarks/timing.py, the
runners benchmarks/jax_runners.py and torch_runners.py, the tables and plot benchmarks/report.py.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from benchmarks import report, sweep
from benchmarks.report import ALL_VARIANTS, FLOOR_VARIANTS, JAX_VARIANTS, TORCH_VARIANTS
from benchmarks.sweep import DCGAN_KS, KS, QUICK
from gan_common.config import ARCHS, CONV_IMPLS


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(s) for s in text.split(",") if s)
    except ValueError:
        vals = ()
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive integers, e.g. 1,64,1024")
    return vals


def _variants(text: str) -> tuple[str, ...]:
    names = []
    for name in text.split(","):
        expanded = {"jax": JAX_VARIANTS + FLOOR_VARIANTS, "torch": TORCH_VARIANTS + FLOOR_VARIANTS}.get(name, (name,))
        for n in expanded:
            if n not in ALL_VARIANTS:
                raise argparse.ArgumentTypeError(f"unknown variant {n!r}; choose from {', '.join(ALL_VARIANTS)}")
            names.append(n)
    return tuple(dict.fromkeys(names))


def _precisions(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or set(names) - {"float32", "bf16"}:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of float32, bf16")
    return names


def _conv_impls(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or set(names) - set(CONV_IMPLS):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {', '.join(CONV_IMPLS)}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_throughput", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="the nets: mlp (default) or dcgan (the dcgan preset's: --arch dcgan --beta1 0.5)")
    p.add_argument("--recipe", choices=("tutorial", "default"), default="tutorial",
                   help="--arch mlp: the step timed: tutorial (the seed's GAN step; the tables' rows) or default "
                        "(today's default recipe: lazy R1, gamma 5 every 4th D update, and the EMA of G; the step of "
                        "--preset mlp and best). FLOP rates count the plain step's products only")
    p.add_argument("--conv-impls", type=_conv_impls, default=("auto",),
                   help="--arch dcgan: comma list of auto, xla, custom (gan_jax's --conv-impl): fused rows for each; "
                        "rows of a named one end +xla / +custom (default auto: custom on CPUs, xla on GPUs)")
    p.add_argument("--batch-sizes", type=_ints,
                   help="comma list (default CPU 1,64,256,1024,4096; GPU adds 16384,65536; --arch dcgan: CPU 64,256, "
                        "GPU 64,256,1024,4096,16384)")
    p.add_argument("--variants", type=_variants,
                   help=f"comma list of {', '.join(ALL_VARIANTS)} (or jax / torch); default all the device supports")
    p.add_argument("--ks", type=_ints, help="steps per fused call (default 1,10,100; --arch dcgan: 10)")
    p.add_argument("--repeats", type=int, help="timed repeats per variant and batch size (default 5)")
    p.add_argument("--min-time", type=float, help="seconds each repeat lasts at least (default 0.2)")
    p.add_argument("--warmup", type=int, help="synchronised warm-up calls after the first call (default 2)")
    p.add_argument("--max-images-per-call", type=int,
                   help="cap on K * batch for fused calls, keeping repeats short (default 16384 CPU, 2^21 GPU; "
                        "--arch dcgan: 1280 CPU)")
    p.add_argument("--compile-batch-sizes", type=_ints, help="run torch.compile variants only at these sizes")
    p.add_argument("--precisions", type=_precisions, default=("float32",),
                   help="comma list of float32, bf16: bf16 adds +bf16 rows of jax fused and torch eager "
                        "(default float32)")
    p.add_argument("--matmul-precision", choices=("float32", "tf32"), default="float32",
                   help="float32: TF32 off in both backends (default); tf32: both may use TF32 on GPUs")
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--peak-n", type=int, default=0, help="matmul size for the peak (default 2048 CPU, 8192 GPU)")
    p.add_argument("--no-xla", action="store_true", help="skip XLA's FLOP counts (one extra compile per batch size)")
    p.add_argument("--quick", action="store_true",
                   help="tiny run for the smoke test: small nets, batch 1,8, K 2, 2 repeats, "
                        "no torch.compile or XLA count")
    p.add_argument("--json", help="write header, FLOPs, rows and ratios here")
    p.add_argument("--plot", help="write a PNG of steps/s against batch size here")
    p.add_argument("--markdown", help="write the table with the machine header as Markdown here")
    args = p.parse_args(argv)
    defaults = dict(ks=DCGAN_KS if args.arch == "dcgan" else KS, repeats=5, min_time=0.2, warmup=2, batch_sizes=None,
                    variants=None)
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick and name in QUICK else default)
    if args.recipe != "tutorial" and args.arch != "mlp":
        p.error("--recipe default is the MLP's recipe; with --arch dcgan leave --recipe out")
    if args.repeats < 1 or args.warmup < 0 or args.min_time < 0:
        p.error("--repeats must be >= 1, --warmup >= 0, --min-time >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark from a command line; returns the result dict (tests call this)."""
    args = parse_args(argv)
    result = sweep.run(args)
    print()
    print("\n".join(report.table_lines(result)))
    print(f"\ntotal runtime {result['header']['total_s']} s; peak {result['header']['peak']['gflops']:.1f} GFLOP/s")
    for path, write in ((args.json, lambda path: report.write_text(path, json.dumps(result, indent=1))),
                        (args.plot, lambda path: report.plot(result, path)),
                        (args.markdown, lambda path: report.write_text(path, report.markdown(result)))):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            write(path)
            print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
