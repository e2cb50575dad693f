"""Data-parallel scaling of the fused JAX step: 1, 2, 4, ... devices at a fixed global batch.

    python -m benchmarks.scaling                                  # CPU: 1,2,4 simulated devices
    python -m benchmarks.scaling --devices 1,2,4,8 --batch-sizes 256,4096 --json out.json
    python -m benchmarks.scaling --arch dcgan --k 10 --batch-sizes 256,4096   # the DCGAN (dcgan preset)

Rows, per global batch B and device count N (the production path, gan_jax.fused.make_train_chunk
on a mesh of N devices, K steps per call, as `python -m gan_jax.train --devices N` runs it):
  fused           data replicated on every device (what gan_jax does); each device gathers its B/N rows
  fused_data_shd  the training set sharded over the devices instead (each holds 1/N of it): a row a
                  device needs may live on another, so the compiler moves rows every step
  allreduce       the step's collectives alone: one all-reduce of a G- and a D-gradient-sized tree
                  (what the partitioner adds to a data-parallel step), timed as K calls of a psum

On a CPU, the N devices are simulated (`jax_num_cpu_devices`): they share the machine's cores
and memory, so N devices cannot run faster than one; what the rows do show is the cost of
partitioning the step, of the collectives (in-memory copies here, not a network) and of each
data placement. On a GPU machine, N real devices.

Timing as in benchmarks.step_throughput (benchmarks/timing.py): built and called once (compile), warmed up,
then interleaved repeats of >= --min-time, one synchronisation per repeat; medians reported. The runners
are benchmarks.jax_runners' MeshFused and AllReduce.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence

import jax

from benchmarks import report
from benchmarks.flops import arch_config
from benchmarks.jax_runners import AllReduce, MeshFused
from benchmarks.machine import load_avg, machine_header
from benchmarks.timing import build, measure, row_of
from gan_common.config import ARCHS
from gan_common.datasets import load_dataset

QUICK_CONFIG = {"mlp": dict(g_hidden="32", d_hidden="32", latent_dim=16),  # --quick: tiny nets, as step_throughput's
                "dcgan": dict(g_channels=4, d_channels=4, latent_dim=16)}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of positive integers") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of positive integers")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--devices", type=_ints, default=None, help="device counts (default 1,2,4; GPU: 1,2,4,.. up to all)")
    p.add_argument("--batch-sizes", type=_ints, default=(64, 256, 1024),
                   help="global batch sizes (default 64,256,1024)")
    p.add_argument("--k", type=int, default=100, help="steps per compiled call (default 100)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5)")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds each repeat lasts at least (default 0.3)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls after the first (default 2)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32", help="--precision of the runs")
    p.add_argument("--arch", choices=ARCHS, default="mlp", help="the nets (dcgan: the dcgan preset's)")
    p.add_argument("--quick", action="store_true", help="smoke-test size: tiny nets, B 8, K 2, 2 repeats")
    p.add_argument("--json", help="write the header and rows here")
    p.add_argument("--markdown", help="write the table as Markdown here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.k, args.repeats, args.min_time, args.warmup = (8,), 2, 2, 0.0, 1
    return args


def device_counts(requested: tuple[int, ...] | None) -> tuple[int, ...]:
    """The device counts to time. On a CPU, simulates max(requested) devices (default 4); this must run
    before JAX's backends start. On GPUs (nothing requested): 1, 2, 4, ... all of them."""
    counts = requested or (1, 2, 4)
    jax.config.update("jax_num_cpu_devices", max(counts))
    if jax.default_backend() != "cpu" and requested is None:
        total = len(jax.devices())
        counts = tuple(sorted({2**i for i in range(total.bit_length()) if 2**i <= total} | {total}))
    if max(counts) > len(jax.devices()):
        sys.exit(f"error: --devices {max(counts)} but JAX sees {len(jax.devices())} {jax.default_backend()} devices")
    return counts


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    counts = device_counts(args.devices)
    images = load_dataset("mnist", "train").images
    header = machine_header()
    header["settings"] = {**{k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
                          "devices": list(counts), "simulated_cpu_devices": jax.default_backend() == "cpu"}
    print("\n".join(report.scaling_header_lines(header)), flush=True)
    rows = []
    for batch in args.batch_sizes:
        config = arch_config(args.arch, batch_size=batch, precision=args.precision,
                             **(QUICK_CONFIG[args.arch] if args.quick else {}))
        specs = []
        for n in counts:
            if batch % n:
                continue
            specs.append((f"jax fused N={n}", functools.partial(MeshFused, config, images, n, args.k, False)))
            if n > 1:
                specs.append((f"jax fused_data_shd N={n}", functools.partial(MeshFused, config, images, n, args.k,
                                                                              True)))
                specs.append((f"jax allreduce N={n}", functools.partial(AllReduce, config, n, args.k)))
        print(f"batch {batch}:", flush=True)
        timeds = build(specs, args.warmup, args.min_time)
        measure(timeds, args.repeats)
        for t in timeds:
            row = row_of(t, batch, "")
            row["devices"] = int(t.label.rsplit("N=", 1)[1])
            rows.append(row)
            print(f"  {t.label:<26} " + (f"{row['step_ms_median']:9.3f} ms/step" if row["steps_per_s"]
                                         else f"FAILED {row['error']}"), flush=True)
    report.add_speedups(rows)
    header["date"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    header["machine"]["load_avg_end"] = load_avg()
    result = {"header": header, "rows": rows}
    print("\n" + "\n".join(report.scaling_table(result)))
    if args.json:
        report.write_text(args.json, json.dumps(result, indent=1))
    if args.markdown:
        report.write_text(args.markdown, report.scaling_markdown(result))
    return result


if __name__ == "__main__":
    main()
