"""Where the fused JAX step's time goes, per XLA op: a jax.profiler trace of the production path.

    python -m benchmarks.profile_step --batch-size 64 --steps-per-call 100
    python -m benchmarks.profile_step --arch dcgan --steps-per-call 10 [--conv-impl xla|custom]

Times `gan_jax.fused.make_train_chunk` (the path `step_throughput` calls `fused_kK`), then traces one
call and sorts every executed op into: convolutions (an HLO fusion or instruction containing one: lax's
own, `--conv-impl xla`), matmul fusions (containing a dot: the MLP's layers, the custom convolutions'
products), parameter-shaped elementwise work (outputs shaped like a weight: Adam's updates, in the
main), and the rest. Ops of independent branches run concurrently on a multi-core CPU, so it reports both each
group's summed op time and the wall time it covers (the union of its ops' intervals), which is what
bounds the step: no removal of other work can make the step shorter than the matmul and Adam groups'
union. Run it on an idle machine; profiling adds a few percent.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from gan_common.config import ARCHS, CONV_IMPLS, PRECISIONS, Config
from gan_jax.fused import make_train_chunk
from gan_jax.step import create

_NOT_OPS = ("$", "ThunkExecutor", "Pjit", "Slinky", "end:", "Common")  # host frames and waits, not XLA ops


def _categories(hlo: str, param_shapes: set[str]) -> dict[str, str]:
    """XLA instruction name -> 'convolution' | 'matmul' | 'parameter-shaped' | 'other', from the compiled HLO."""
    bodies, current = {}, None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            current = m.group(1)
            bodies[current] = []
        elif current is not None:
            bodies[current].append(line)
    cats = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+?)(?:\{[\d,]*\})? (\w[\w\-]*)\(", line)
        if not m:
            continue
        name, shape, op = m.groups()
        # A multi-output fusion's shape is a tuple: parameter-shaped if any of its outputs is.
        shapes = set(re.findall(r"\w+\[[\d,]*\]", shape))
        called = re.search(r"calls=%?([\w.\-]+)", line)
        body = "\n".join(bodies.get(called.group(1), [])) if called else ""
        if op == "convolution" or " convolution(" in body:
            cats[name] = "convolution"
        elif op == "dot" or " dot(" in body:
            cats[name] = "matmul"
        elif (shapes if op == "fusion" else {shape}) & param_shapes:
            cats[name] = "parameter-shaped"
        else:
            cats[name] = "other"
    return cats


def _union_ms(intervals: list[tuple[float, float]]) -> float:
    total, start, end = 0.0, None, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += 0.0 if end is None else end - start
            start, end = s, e
        else:
            end = max(end, e)
    return (total + (0.0 if end is None else end - start)) / 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64, help="the step's batch")
    p.add_argument("--steps-per-call", type=int, default=100, help="K, steps per compiled call (the fused path)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls before the traced one (median reported)")
    p.add_argument("--top", type=int, default=15, help="ops listed one by one")
    p.add_argument("--arch", choices=ARCHS, default="mlp", help="the nets (dcgan: with the preset's beta1 0.5)")
    p.add_argument("--conv-impl", choices=CONV_IMPLS, default="auto", help="--arch dcgan's convolutions")
    p.add_argument("--precision", choices=PRECISIONS, default="float32", help="the compute dtype")
    args = p.parse_args(argv)

    model = {"arch": "dcgan", "beta1": 0.5, "conv_impl": args.conv_impl} if args.arch == "dcgan" else {}
    config = Config.tutorial(batch_size=args.batch_size, precision=args.precision, out_dir=tempfile.mkdtemp(), **model)
    gan, state = create(config)
    data = jnp.asarray(np.random.default_rng(0).integers(0, 256, (60000, *config.image_shape), np.uint8))
    chunk = make_train_chunk(gan, data.shape[0])
    k = args.steps_per_call
    for _ in range(2):
        state, metrics = chunk(state, data, k)
        metrics.block_until_ready()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        state, metrics = chunk(state, data, k)
        metrics.block_until_ready()
        times.append((time.perf_counter() - t) / k * 1e3)
    step_ms = float(np.median(times))

    shuffled = (data.reshape(data.shape[0], -1), None)  # the epoch's copy of the set: only its shape matters
    hlo = chunk.scan_steps.lower(state, shuffled, data, None, num_steps=k).compile().as_text()
    param_shapes = {f"f32[{','.join(map(str, x.shape))}]" for x in jax.tree.leaves((state.g_params, state.d_params))
                    if x.ndim >= 2}
    cats = _categories(hlo, param_shapes)

    trace_dir = tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir):
        state, metrics = chunk(state, data, k)
        metrics.block_until_ready()
    events = json.load(gzip.open(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]))["traceEvents"]
    ops = [e for e in events if e.get("ph") == "X" and not e["name"].startswith(_NOT_OPS)]

    print(f"jax {jax.__version__}, {args.arch} ({args.precision}, conv {args.conv_impl}), batch {args.batch_size}, "
          f"K {k}: step {step_ms:.3f} ms (median of {args.repeats} calls, untraced; load {os.getloadavg()[0]:.2f})")
    print(f"{'group':18s} {'op time ms/step':>16s} {'wall covered ms/step':>21s} {'share of step':>14s}")
    groups = {"convolution": ("convolution",), "matmul": ("matmul",), "parameter-shaped": ("parameter-shaped",),
              "other": ("other", None), "products+Adam": ("convolution", "matmul", "parameter-shaped"),
              "all ops": ("convolution", "matmul", "parameter-shaped", "other", None)}
    for label, members in groups.items():
        mine = [e for e in ops if cats.get(e["name"]) in members]
        op_ms = sum(e["dur"] for e in mine) / 1e3 / k
        wall_ms = _union_ms([(e["ts"], e["ts"] + e["dur"]) for e in mine]) / k
        print(f"{label:18s} {op_ms:16.3f} {wall_ms:21.3f} {100 * wall_ms / step_ms:13.1f}%")
    small = [e for e in ops if e["dur"] < 10]
    print(f"{len(ops) / k:.0f} ops a step; the {len(small) / k:.0f} under 10 us take "
          f"{sum(e['dur'] for e in small) / 1e3 / k:.3f} ms of op time a step")
    per_op = collections.Counter()
    for e in ops:
        per_op[e["name"]] += e["dur"]
    print(f"\ntop {args.top} ops (ms/step, group):")
    for name, dur in per_op.most_common(args.top):
        print(f"  {dur / 1e3 / k:7.3f}  {cats.get(name, 'other'):16s} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
