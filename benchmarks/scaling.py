"""Data-parallel scaling of the fused JAX step: 1, 2, 4, ... devices at a fixed global batch.

    python -m benchmarks.scaling                                  # CPU: 1,2,4 simulated devices
    python -m benchmarks.scaling --devices 1,2,4,8 --batch-sizes 256,4096 --json out.json

Rows, per global batch B and device count N (the production path, gan_jax.train.make_train_chunk
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

Timing as in benchmarks.step_throughput: built and called once (compile), warmed up, then
interleaved repeats of >= --min-time, one synchronisation per repeat; medians reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Sequence

import numpy as np


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
    p.add_argument("--batch-sizes", type=_ints, default=(64, 256, 1024), help="global batch sizes (default 64,256,1024)")
    p.add_argument("--k", type=int, default=100, help="steps per compiled call (default 100)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5)")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds each repeat lasts at least (default 0.3)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls after the first (default 2)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32", help="--precision of the runs")
    p.add_argument("--quick", action="store_true", help="smoke-test size: tiny nets, B 8, K 2, 2 repeats")
    p.add_argument("--json", help="write the header and rows here")
    p.add_argument("--markdown", help="write the table as Markdown here")
    return p.parse_args(argv)


def _start_jax(max_devices: int):
    """Simulate `max_devices` CPU devices; must run before JAX's backends start."""
    import gan_jax  # noqa: F401  (its XLA:CPU flags, as in production)
    import jax

    jax.config.update("jax_num_cpu_devices", max_devices)
    return jax


class MeshFused:
    """make_train_chunk on a mesh of the first `n` devices, data replicated or sharded."""

    backend = "jax"

    def __init__(self, config, images_u8: np.ndarray, n: int, k: int, shard_data: bool):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        from gan_jax import parallel, train

        mesh = Mesh(np.asarray(jax.devices()[:n]), (parallel.AXIS,))
        self.name = "fused_data_shd" if shard_data else "fused"
        self.steps_per_call = k
        self.gan, state = train.create(config, mesh)
        self.state = parallel.replicate(state, mesh)
        data = images_u8[: len(images_u8) // n * n]  # sharding needs N | rows
        self.data = (jax.device_put(data, NamedSharding(mesh, P(parallel.AXIS))) if shard_data
                     else parallel.replicate(data, mesh))
        self.chunk = train.make_train_chunk(self.gan, data.shape[0])
        self.out = None

    def call(self) -> None:
        self.state, self.out = self.chunk(self.state, self.data, num_steps=self.steps_per_call)

    def sync(self) -> None:
        import jax

        jax.block_until_ready((self.state, self.out))


class AllReduce:
    """The data-parallel step's collectives alone: psum of per-device G and D gradient trees."""

    backend = "jax"

    def __init__(self, config, n: int, k: int):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        from gan_jax import parallel, train

        try:
            from jax import shard_map
        except ImportError:  # jax < 0.7
            from jax.experimental.shard_map import shard_map
        mesh = Mesh(np.asarray(jax.devices()[:n]), (parallel.AXIS,))
        self.name, self.steps_per_call = "allreduce", k
        _, state = train.create(config)
        # One gradient tree per device, stacked on a leading device axis and sharded over it.
        grads = (state.g_params, state.d_params)
        stacked = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (n, *x.shape)).copy(), grads)
        self.grads = jax.device_put(stacked, NamedSharding(mesh, P(parallel.AXIS)))
        psum = shard_map(lambda g: jax.lax.psum(g, parallel.AXIS), mesh=mesh, in_specs=P(parallel.AXIS),
                         out_specs=P(parallel.AXIS))

        @jax.jit
        def k_reductions(g):
            return jax.lax.fori_loop(0, k, lambda _, g: jax.tree_util.tree_map(lambda x: x * 0.5, psum(g)), g)

        self.fn, self.out = k_reductions, None

    def call(self) -> None:
        self.out = self.fn(self.grads)

    def sync(self) -> None:
        import jax

        jax.block_until_ready(self.out)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    from benchmarks import step_throughput as st
    from gan_common.config import Config

    quick = dict(g_hidden="32", d_hidden="32", latent_dim=16) if args.quick else {}
    if args.quick:
        args.batch_sizes, args.k, args.repeats, args.min_time, args.warmup = (8,), 2, 2, 0.0, 1
    counts = args.devices or (1, 2, 4)
    jax = _start_jax(max(counts))
    if jax.default_backend() != "cpu" and args.devices is None:  # real devices: 1, 2, 4, ... all of them
        total = len(jax.devices())
        counts = tuple(sorted({2**i for i in range(total.bit_length()) if 2**i <= total} | {total}))
    if max(counts) > len(jax.devices()):
        sys.exit(f"error: --devices {max(counts)} but JAX sees {len(jax.devices())} {jax.default_backend()} devices")

    from gan_common.datasets import load_dataset

    images = load_dataset("mnist", "train").images
    header = st.machine_header()
    header["settings"] = {**{k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
                          "devices": list(counts), "simulated_cpu_devices": jax.default_backend() == "cpu"}
    print("\n".join(header_lines(header)), flush=True)
    rows = []
    for batch in args.batch_sizes:
        config = Config(batch_size=batch, precision=args.precision, **quick)
        specs = []
        for n in counts:
            if batch % n:
                continue
            specs.append((f"jax fused N={n}", lambda n=n: MeshFused(config, images, n, args.k, False)))
            if n > 1:
                specs.append((f"jax fused_data_shd N={n}", lambda n=n: MeshFused(config, images, n, args.k, True)))
                specs.append((f"jax allreduce N={n}", lambda n=n: AllReduce(config, n, args.k)))
        print(f"batch {batch}:", flush=True)
        timeds = st.build(specs, args.warmup, args.min_time)
        st.measure(timeds, args.repeats)
        for t in timeds:
            row = st.row_of(t, batch, "")
            row["devices"] = int(t.label.rsplit("N=", 1)[1])
            rows.append(row)
            print(f"  {t.label:<26} " + (f"{row['step_ms_median']:9.3f} ms/step" if row["steps_per_s"]
                                         else f"FAILED {row['error']}"), flush=True)
    for row in rows:  # each row against the 1-device fused row of its batch, from this run
        base = [r for r in rows if r["batch_size"] == row["batch_size"] and r["devices"] == 1 and r["steps_per_s"]]
        if base and row["steps_per_s"] and row["variant"] != "allreduce":
            row["speed_vs_1_device"] = row["steps_per_s"] / base[0]["steps_per_s"]
    header["date"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    header["machine"]["load_avg_end"] = st._load()
    result = {"header": header, "rows": rows}
    lines = table(result)
    print("\n" + "\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"## Data-parallel scaling ({header['date']})\n\n"
                    + "\n".join(f"- {line}" for line in header_lines(header)) + "\n\n"
                    + "\n".join("| " + line + " |" for line in lines) + "\n")
    return result


def header_lines(h: dict) -> list[str]:
    m, d = h["machine"], h["device"]
    return [f"machine: {m['cpu_model']}, {m['cpus_usable']} of {m['cpu_count']} cores usable; load average "
            f"{m['load_avg_start']} at start" + (f", {m['load_avg_end']} at end" if "load_avg_end" in m else ""),
            f"device: jax {d['jax']}" + (" (simulated CPU devices sharing these cores)"
                                         if h["settings"]["simulated_cpu_devices"] else ""),
            "versions: " + ", ".join(f"{k} {val}" for k, val in h["versions"].items()),
            f"settings: {h['settings']}"]


def table(result: dict) -> list[str]:
    cols = ("B", "devices", "variant", "step ms median [p25, p75]", "steps/s", "vs 1 device")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in result["rows"]:
        if not r["steps_per_s"]:
            lines.append(" | ".join([str(r["batch_size"]), str(r["devices"]), r["variant"], "FAILED", "", ""]))
            continue
        vs = r.get("speed_vs_1_device")
        lines.append(" | ".join([str(r["batch_size"]), str(r["devices"]), r["variant"],
                                 f"{r['step_ms_median']:.4g} [{r['step_ms_p25']:.4g}, {r['step_ms_p75']:.4g}]",
                                 f"{r['steps_per_s']:.4g}", "" if vs is None else f"{vs:.2f}x"]))
    return lines


if __name__ == "__main__":
    main()
