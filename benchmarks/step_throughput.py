"""Throughput of the full GAN training step (D update + G update, two Adams), JAX against PyTorch.

    python -m benchmarks.step_throughput                         # CPU sweep 1,64,256,1024,4096 (GPU adds 16384,65536)
    python -m benchmarks.step_throughput --batch-sizes 64 --variants fused,eager --json out.json --plot out.png

Variants (rows are `backend` x `variant` x batch size):
  jax   step         jit(train_step), one step per call, x/z_d/z_g fed as numpy from the host each call
  jax   fused_kK     make_train_chunk: K steps per call (lax.scan), uint8 data on the device, batch
                     gather and noise inside the compiled call; K shrinks for big batches (--max-images-per-call)
  torch eager        gan_torch.train.train_step; tuned / compiled / compiled_ro / cuda_graph: see torch_variants
Floors, timed in both backends (parts of a step alone, not training steps; left out of the ratios):
  matmuls            the step's matrix products (benchmarks.flops.matmul_plan): one jitted call / torch.mm each
  adam               the step's two Adam updates on fixed gradients: gan_jax's optax Adams, K per
                     compiled call as in fused_kK / gan_torch's Adams with the fused kernel, as tuned
Every torch variant also gathers its batch on the device and draws its noise there, as fused_kK does.
--precisions float32,bf16 adds `+bf16` rows of the two production paths, jax fused_kK and torch eager,
with --precision bf16 (bfloat16 matmuls and activations, float32 parameters, Adam and losses).

How it times (one process): each runner is built and called once (`first_call_s`: compile + first run),
then warmed up; repeats of >= --min-time each run interleaved, rotating over the runners of one batch
size, so machine noise hits every variant alike. A repeat is `calls` back-to-back calls and one
synchronisation at its end (block_until_ready / cuda.synchronize): nothing syncs inside it.
GFLOP/s uses benchmarks.flops (matmuls only); the peak is the best n x n float32 matmul rate of
numpy, jax and torch on the same device, measured at the start and the end of this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

import gan_jax  # noqa: F401  (first: it sets the production XLA:CPU flags before jax starts)
from benchmarks import flops as flops_lib
from gan_common.config import Config

CPU_BATCH_SIZES = (1, 64, 256, 1024, 4096)
GPU_BATCH_SIZES = CPU_BATCH_SIZES + (16384, 65536)
KS = (1, 10, 100)
JAX_VARIANTS = ("step", "fused")
TORCH_VARIANTS = ("eager", "tuned", "compiled", "compiled_ro", "cuda_graph")
FLOOR_VARIANTS = ("matmuls", "adam")  # parts of a step timed alone, in both backends: not training steps
ALL_VARIANTS = JAX_VARIANTS + TORCH_VARIANTS + FLOOR_VARIANTS
QUICK = dict(batch_sizes=(1, 8), repeats=2, min_time=0.0, warmup=1, ks=(2,),
             variants=("step", "fused", "matmuls", "adam", "eager", "tuned"))
QUICK_CONFIG = dict(g_hidden="32", d_hidden="32", latent_dim=16)  # tiny nets: the smoke test checks structure, not speed
ROW_KEYS = ("backend", "variant", "batch_size", "steps_per_call", "steps_per_s", "images_per_s", "step_ms_median",
            "step_ms_p25", "step_ms_p75", "step_ms_min", "step_ms_max", "repeats", "calls_per_repeat",
            "first_call_s", "setup_s", "warmup_s", "flops_per_step", "gflops_per_s", "frac_of_peak", "note", "error")


# ----------------------------------------------------------------------------- runners
class JaxStep:
    """jit(train_step) with numpy inputs from the host: what a plain per-step loop pays per call."""

    backend, steps_per_call = "jax", 1

    def __init__(self, config: Config, images_u8: np.ndarray, pool: int = 2):
        import jax

        from gan_jax import train

        self.name = "step"
        self.gan, self.state = train.create(config)
        self.fn = jax.jit(functools.partial(train.train_step, self.gan), donate_argnums=0)
        b, rng = config.batch_size, np.random.default_rng(0)
        # A small pool of ready host batches: the host's own RNG and gather stay out of the timing,
        # the per-call host->device copy and dispatch stay in.
        idx = rng.choice(images_u8.shape[0], size=(pool, b), replace=False if pool * b <= images_u8.shape[0] else True)
        self.x = images_u8[idx].astype(np.float32) / 127.5 - 1.0  # (pool, B, 28, 28, 1) in [-1, 1]
        self.z = rng.standard_normal((pool, 2, b, config.latent_dim), dtype=np.float32)  # z_d, z_g
        self.i, self.out = 0, None

    def call(self) -> None:
        i = self.i % len(self.x)
        self.i += 1
        self.state, self.out = self.fn(self.state, self.x[i], self.z[i, 0], self.z[i, 1])

    def sync(self) -> None:
        import jax

        jax.block_until_ready((self.state, self.out))


class JaxFused:
    """The production path: make_train_chunk's compiled K-step call on the device-resident uint8 set."""

    backend = "jax"

    def __init__(self, config: Config, data_u8, k: int, nominal_k: int, suffix: str = ""):
        from gan_jax import train

        self.name, self.steps_per_call, self.data = f"fused_k{nominal_k}{suffix}", k, data_u8
        self.note = f"K capped from {nominal_k} (--max-images-per-call)" if k != nominal_k else ""
        self.gan, self.state = train.create(config)
        self.chunk = train.make_train_chunk(self.gan, data_u8.shape[0])
        self.out = None

    def call(self) -> None:
        self.state, self.out = self.chunk(self.state, self.data, num_steps=self.steps_per_call)  # metrics (K, 4)

    def sync(self) -> None:
        import jax

        jax.block_until_ready((self.state, self.out))


class JaxMatmuls:
    """A floor, not a training step: only the step's matrix products (benchmarks/flops.py's `matmul_plan`),
    same shapes and transposes as autodiff emits, in one jitted call. What XLA's dots alone need."""

    backend, steps_per_call = "jax", 1

    def __init__(self, config: Config):
        import jax

        self.name = "matmuls"
        plan = flops_lib.matmul_plan(config, config.batch_size)
        w, acts, errs = floor_operands(config, plan, lambda a: jax.device_put(a))
        ops = jax_products()

        def products(w, acts, errs):
            out = []
            for op, net, i, rows in plan:
                x, e, wi = acts[net, i, rows], errs[net, i, rows], w[net, i]
                out.append(ops[op](*flops_lib.operands_of(op, x, e, wi)))
            return out

        self.args = (w, acts, errs)
        self.fn = jax.jit(products)
        self.out = None

    def call(self) -> None:
        self.out = self.fn(*self.args)

    def sync(self) -> None:
        import jax

        jax.block_until_ready(self.out)


def jax_products() -> dict:
    """The plan's three products in JAX, as autodiff emits them (operands in the order the op names them)."""
    from jax import lax

    return {"fwd": lambda x, w: x @ w,  # (rows, in) @ (in, out)
            "wgrad": lambda x, e: lax.dot_general(x, e, (((0,), (0,)), ((), ()))),  # x^T e: (in, out)
            "igrad": lambda e, w: lax.dot_general(e, w, (((1,), (1,)), ((), ())))}  # e w^T: (rows, in)


def floor_operands(config: Config, plan, place) -> tuple[dict, dict, dict]:
    """Random float32 operands for `plan`, one set shared by every product that shares it in the step:
    weights per (net, layer) (in, out); activations (rows, in) and back-propagated errors (rows, out)
    per (net, layer, rows). `place` puts a numpy array on the backend's device."""
    ws = dict(zip("gd", flops_lib.widths(config)))
    rng = np.random.default_rng(0)
    normal = lambda *shape: place(rng.standard_normal(shape, dtype=np.float32))  # noqa: E731
    w = {(net, i): normal(ws[net][i], ws[net][i + 1]) for net, i in {(n, i) for _, n, i, _ in plan}}
    keys = sorted({(net, i, rows) for _, net, i, rows in plan})
    acts = {(net, i, rows): normal(rows, ws[net][i]) for net, i, rows in keys}
    errs = {(net, i, rows): normal(rows, ws[net][i + 1]) for net, i, rows in keys}
    return w, acts, errs


class JaxAdam:
    """A floor, not a training step: the step's two Adam updates alone (gan_jax's optax Adams on G's
    and D's parameters, gradients fixed), K per compiled call in a lax.scan with the state donated,
    as the fused path runs them. What XLA's elementwise Adam passes over the 1.09 M parameters need."""

    backend = "jax"

    def __init__(self, config: Config, k: int = 100):
        import jax
        import optax

        from gan_jax import train

        self.name, self.steps_per_call = "adam", k
        gan, state = train.create(config)
        rng = np.random.default_rng(0)
        grads = jax.tree.map(lambda p: jax.device_put(1e-3 * rng.standard_normal(p.shape, dtype=np.float32)),
                             (state.g_params, state.d_params))

        def updates(carry):
            def body(carry, _):
                (g_p, d_p), (g_o, d_o) = carry
                g_u, g_o = gan.g_tx.update(grads[0], g_o, g_p)
                d_u, d_o = gan.d_tx.update(grads[1], d_o, d_p)
                return ((optax.apply_updates(g_p, g_u), optax.apply_updates(d_p, d_u)), (g_o, d_o)), None

            return jax.lax.scan(body, carry, length=k)[0]

        self.fn = jax.jit(updates, donate_argnums=0)
        self.carry = ((state.g_params, state.d_params), (state.g_opt, state.d_opt))

    def call(self) -> None:
        self.carry = self.fn(self.carry)

    def sync(self) -> None:
        import jax

        jax.block_until_ready(self.carry)


class TorchRunner:
    """A torch_variants.Runner with the interface the timing loop drives."""

    backend, steps_per_call = "torch", 1

    def __init__(self, name: str, config: Config, data_u8):
        from benchmarks import torch_variants

        self.name = name + ("+bf16" if config.precision == "bf16" else "")
        self.runner = torch_variants.make_runner(name, config, data_u8)

    def call(self) -> None:
        self.runner.step()

    def sync(self) -> None:
        self.runner.sync()


class TorchFloor:
    """A torch floor (torch_variants.make_floor_runner) with the interface the timing loop drives."""

    backend, steps_per_call = "torch", 1

    def __init__(self, name: str, config: Config, device):
        import torch

        from benchmarks import torch_variants

        self.name = name
        operands = None
        if name == "matmuls":
            operands = floor_operands(config, flops_lib.matmul_plan(config, config.batch_size),
                                      lambda a: torch.from_numpy(a).to(device))
        self.runner = torch_variants.make_floor_runner(name, config, device, operands)

    def call(self) -> None:
        self.runner.step()

    def sync(self) -> None:
        self.runner.sync()


# ----------------------------------------------------------------------------- timing
@dataclasses.dataclass
class Timed:
    """One runner's timings; `per_step_s` holds one value per timed repeat."""

    runner: Any
    label: str = ""  # "backend variant ..."
    setup_s: float = 0.0
    first_call_s: float = 0.0
    warmup_s: float = 0.0
    calls: int = 1
    per_step_s: list[float] = dataclasses.field(default_factory=list)
    error: str = ""


def _timed_call(runner, n: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        runner.call()
    runner.sync()
    return time.perf_counter() - t0


def prepare(timed: Timed, warmup: int, min_time: float) -> None:
    """First call (compile + run) and warm-up, each synchronised; sizes a repeat to last >= min_time."""
    timed.first_call_s = _timed_call(timed.runner)
    per_call = [_timed_call(timed.runner) for _ in range(warmup)]
    timed.warmup_s = sum(per_call)
    typical = min(per_call) if per_call else timed.first_call_s
    timed.calls = max(1, math.ceil(min_time / max(typical, 1e-9)))


def measure(timeds: list[Timed], repeats: int) -> None:
    """Interleaved repeats: repeat r runs every runner once, in an order rotated by r."""
    live = [t for t in timeds if not t.error]
    for r in range(repeats):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for t in order:
            if t.error:
                continue
            try:
                dt = _timed_call(t.runner, t.calls)
            except Exception as e:  # a variant that breaks mid-run is reported, not fatal to the sweep
                t.error = f"{type(e).__name__}: {e}"
                continue
            t.per_step_s.append(dt / (t.calls * t.runner.steps_per_call))


# ----------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_header() -> dict:
    import flax
    import jax
    import jaxlib
    import optax
    import torch

    jax_dev = jax.devices()[0]
    return {
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "platform": platform.platform(), "load_avg_start": _load()},
        "device": {"jax": f"{jax_dev.platform}: {jax_dev.device_kind}",
                   "torch": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                   "torch_threads": torch.get_num_threads(), "xla_flags": os.environ.get("XLA_FLAGS", "")},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "flax": flax.__version__, "optax": optax.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
    }


def _load() -> list[float] | None:
    """1, 5, 15-minute load averages: a busy machine makes every timing here slower and noisier."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def measure_peak(on_gpu: bool, n: int, reps: int) -> dict:
    """Best float32 n x n matmul rate (GFLOP/s) of each library on the benchmark's device, and their max."""
    import jax
    import jax.numpy as jnp
    import torch

    from benchmarks import torch_variants

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3

    def best(fn) -> float:
        fn()  # warm-up (and compile)
        return flop / 1e9 / min(_elapsed(fn) for _ in range(reps))

    out = {}
    if not on_gpu:  # numpy computes on the CPU: a peak only for a CPU run
        out["numpy"] = best(lambda: np.matmul(a, b))
    ja, jb = jax.device_put(a), jax.device_put(b)
    jmm = jax.jit(jnp.matmul)
    out["jax"] = best(lambda: jmm(ja, jb).block_until_ready())
    dev = torch_variants.default_device()
    ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
    out["torch"] = best(lambda: (torch.mm(ta, tb), torch_variants.synchronize(dev)))
    return {k: round(v, 2) for k, v in out.items()}


def _elapsed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def set_matmul_precision(precision: str) -> dict:
    """float32: TF32 off in both backends (true float32 products); tf32: both allowed to use TF32."""
    import jax
    import torch

    tf32 = precision == "tf32"
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "torch_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


# ----------------------------------------------------------------------------- the sweep
def tile_to(images_u8: np.ndarray, batch: int) -> np.ndarray:
    """The training set, repeated whole as often as needed to hold one batch (only for batch > N)."""
    reps = max(1, math.ceil(batch / images_u8.shape[0]))
    return images_u8 if reps == 1 else np.concatenate([images_u8] * reps)


def fused_ks(ks: Sequence[int], batch: int, max_images: int) -> list[tuple[int, int]]:
    """(K actually run, nominal K) per fused variant at `batch`: K capped at max_images // batch, duplicates dropped.

    A capped K keeps the largest nominal K's name, so the fused_k100 line stays 'the longest chunk that fits'.
    """
    out, seen = [], set()
    for k in sorted(ks, reverse=True):
        real = max(1, min(k, max_images // batch))
        if real not in seen:
            seen.add(real)
            out.append((real, k))
    return sorted(out)


def build(variant_specs, warmup: int, min_time: float) -> list[Timed]:
    """Build and warm up each runner at one batch size; a runner that fails is kept as an error row."""
    timeds = []
    for label, make in variant_specs:
        print(f"  building {label} ...", end="", flush=True)
        t = Timed(runner=None, label=label)
        t0 = time.perf_counter()
        try:
            t.runner = make()
            t.setup_s = time.perf_counter() - t0
            prepare(t, warmup, min_time)
            print(f" first call {t.first_call_s:.2f} s, {t.calls} call(s)/repeat", flush=True)
        except Exception as e:  # e.g. a compiler missing on this machine: report it and go on
            t.error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            print(f" FAILED: {t.error}", flush=True)
        timeds.append(t)
    return timeds


def variant_specs(batch: int, config: Config, images_u8: np.ndarray, variants: Sequence[str], args, cache: dict):
    """(label, constructor) for every selected runner at `batch`; device copies of the data are made once."""
    import jax

    from benchmarks import torch_variants

    data = tile_to(images_u8, batch)
    note = f"data tiled to {data.shape[0]} images" if data.shape[0] != images_u8.shape[0] else ""
    specs = []
    if "bf16" in args.precisions:  # the production paths with --precision bf16; the data copies are shared
        bf16 = dataclasses.replace(config, precision="bf16")
        if "fused" in variants:
            if cache.get("jax_n") != data.shape[0]:
                cache["jax"], cache["jax_n"] = jax.device_put(data), data.shape[0]
            for k, nominal in fused_ks(args.ks, batch, args.max_images_per_call):
                specs.append((f"jax fused_k{nominal}+bf16 (K={k})",
                              functools.partial(JaxFused, bf16, cache["jax"], k, nominal, "+bf16")))
        if "eager" in variants:
            dev = torch_variants.default_device()
            if cache.get("torch_n") != data.shape[0]:
                cache["torch"], cache["torch_n"] = torch_variants.to_device(data, dev), data.shape[0]
            specs.append(("torch eager+bf16", functools.partial(TorchRunner, "eager", bf16, cache["torch"])))
        if "float32" not in args.precisions:
            return specs, note
    if "step" in variants:
        specs.append(("jax step", lambda: JaxStep(config, data)))
    if "fused" in variants:
        if cache.get("jax_n") != data.shape[0]:
            cache["jax"], cache["jax_n"] = jax.device_put(data), data.shape[0]  # (N, 28, 28, 1) uint8, once
        for k, nominal in fused_ks(args.ks, batch, args.max_images_per_call):
            specs.append((f"jax fused_k{nominal} (K={k})", functools.partial(JaxFused, config, cache["jax"], k, nominal)))
    if "matmuls" in variants:
        specs.append(("jax matmuls", lambda: JaxMatmuls(config)))
    if "adam" in variants:
        specs.append(("jax adam", lambda: JaxAdam(config)))
    torch_names = [v for v in TORCH_VARIANTS if v in variants]
    if torch_names:
        dev = torch_variants.default_device()
        if cache.get("torch_n") != data.shape[0]:
            cache["torch"], cache["torch_n"] = torch_variants.to_device(data, dev), data.shape[0]
        if any(v.startswith("compiled") for v in torch_names):
            torch_variants.reset_compiler()
        for v in torch_names:
            if v.startswith("compiled") and args.compile_batch_sizes and batch not in args.compile_batch_sizes:
                continue
            if v in torch_variants.CUDA_ONLY and dev.type != "cuda":
                continue
            specs.append((f"torch {v}", functools.partial(TorchRunner, v, config, cache["torch"])))
    for v in (v for v in FLOOR_VARIANTS if v in variants):
        specs.append((f"torch {v}", functools.partial(TorchFloor, v, config, torch_variants.default_device())))
    return specs, note


def row_of(t: Timed, batch: int, note: str) -> dict:
    backend, variant = t.label.split(" ")[:2]
    row = {k: None for k in ROW_KEYS}
    row.update(backend=backend, variant=variant, batch_size=batch, note=note, error=t.error or None,
               setup_s=round(t.setup_s, 4), first_call_s=round(t.first_call_s, 4), warmup_s=round(t.warmup_s, 4))
    if t.runner is not None:
        row.update(steps_per_call=t.runner.steps_per_call, calls_per_repeat=t.calls)
    if t.per_step_s:
        s = np.array(t.per_step_s)
        med = float(np.median(s))
        row.update(steps_per_s=1.0 / med, images_per_s=batch / med, repeats=len(s),
                   step_ms_median=1e3 * med, step_ms_p25=1e3 * float(np.percentile(s, 25)),
                   step_ms_p75=1e3 * float(np.percentile(s, 75)), step_ms_min=1e3 * float(s.min()),
                   step_ms_max=1e3 * float(s.max()), step_ms_all=[1e3 * float(v) for v in s])
    return row


def ratios(rows: list[dict]) -> list[dict]:
    """Per batch size: best JAX fused over torch eager and over the best torch variant, from this run's medians."""
    out = []
    for batch in sorted({r["batch_size"] for r in rows}):
        both = [r for r in rows if r["batch_size"] == batch and r["steps_per_s"]]
        ok = [r for r in both if not r["variant"].endswith("+bf16")]
        low = [r for r in both if r["variant"].endswith("+bf16")]
        fused = [r for r in ok if r["backend"] == "jax" and r["variant"].startswith("fused")]
        torch_rows = [r for r in ok if r["backend"] == "torch" and r["variant"] in TORCH_VARIANTS]
        eager = [r for r in torch_rows if r["variant"] == "eager"]
        step = [r for r in ok if r["backend"] == "jax" and r["variant"] == "step"]
        entry = {"batch_size": batch}
        floors = {f"{r['backend']} {r['variant']}": r["step_ms_median"] for r in ok if r["variant"] in FLOOR_VARIANTS}
        if floors:
            entry["floors_ms"] = floors
        if fused:
            bf = max(fused, key=lambda r: r["steps_per_s"])
            entry["jax_fused_best"] = f"{bf['variant']} (K={bf['steps_per_call']})"
            if eager:
                entry["jax_fused_over_torch_eager"] = bf["steps_per_s"] / eager[0]["steps_per_s"]
            if torch_rows:
                bt = max(torch_rows, key=lambda r: r["steps_per_s"])
                entry["torch_best"] = bt["variant"]
                entry["jax_fused_over_torch_best"] = bf["steps_per_s"] / bt["steps_per_s"]
        if step and eager:
            entry["jax_step_over_torch_eager"] = step[0]["steps_per_s"] / eager[0]["steps_per_s"]
        fused16 = [r for r in low if r["backend"] == "jax"]
        eager16 = [r for r in low if r["backend"] == "torch"]
        if fused16 and fused:
            entry["jax_fused_bf16_over_float32"] = (max(r["steps_per_s"] for r in fused16)
                                                    / max(r["steps_per_s"] for r in fused))
        if eager16 and eager:
            entry["torch_eager_bf16_over_float32"] = eager16[0]["steps_per_s"] / eager[0]["steps_per_s"]
        if fused16 and eager16:
            entry["jax_fused_bf16_over_torch_eager_bf16"] = (max(r["steps_per_s"] for r in fused16)
                                                             / eager16[0]["steps_per_s"])
        out.append(entry)
    return out


def run(args) -> dict:
    """The whole benchmark; returns {'header', 'flops', 'rows', 'ratios'} (also what --json writes)."""
    t_start = time.perf_counter()
    compile_cache = None
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        # A fresh inductor/triton cache: torch.compile's first call is a cold compile, like jit's.
        compile_cache = tempfile.mkdtemp(prefix="bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = compile_cache
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(compile_cache, "triton"))
    import jax
    import torch

    from gan_common.datasets import load_dataset

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    on_gpu = torch.cuda.is_available() or jax.default_backend() == "gpu"
    batch_sizes = args.batch_sizes or (GPU_BATCH_SIZES if on_gpu else CPU_BATCH_SIZES)
    variants = args.variants or [v for v in ALL_VARIANTS if on_gpu or v not in ("compiled_ro", "cuda_graph")]
    if args.max_images_per_call is None:
        args.max_images_per_call = 2**21 if on_gpu else 16384
    config = Config(**(QUICK_CONFIG if args.quick else {}))

    header = machine_header()
    header["precision"] = set_matmul_precision(args.matmul_precision)
    header["settings"] = {"batch_sizes": list(batch_sizes), "variants": list(variants), "ks": list(args.ks),
                          "repeats": args.repeats, "min_time_s": args.min_time, "warmup_calls": args.warmup,
                          "max_images_per_call": args.max_images_per_call, "quick": args.quick,
                          "precisions": list(args.precisions),
                          "model": {"latent_dim": config.latent_dim, "g_hidden": config.g_hidden,
                                    "d_hidden": config.d_hidden},
                          "compile_batch_sizes": list(args.compile_batch_sizes or []),
                          "torch_compile_cache": "fresh temporary dir (cold compiles)" if compile_cache else
                          os.environ["TORCHINDUCTOR_CACHE_DIR"]}
    print("\n".join(header_lines(header)), flush=True)
    peak_n = args.peak_n or (256 if args.quick else (8192 if on_gpu else 2048))
    peak_start = measure_peak(on_gpu, peak_n, 3 if args.quick else 5)
    print(f"peak float32 matmul at start (n={peak_n}, GFLOP/s): {peak_start}", flush=True)

    train = load_dataset("mnist", "train")
    header["dataset"] = f"mnist train {tuple(train.images.shape)} uint8 ({train.source})"
    flops = flops_section(config, batch_sizes, xla=not (args.quick or args.no_xla))
    print_flops(flops)

    rows, cache = [], {}
    for batch in batch_sizes:
        cfg = dataclasses.replace(config, batch_size=batch)
        print(f"batch {batch}:", flush=True)
        specs, note = variant_specs(batch, cfg, train.images, variants, args, cache)
        timeds = build(specs, args.warmup, args.min_time)
        measure(timeds, args.repeats)
        for t in timeds:
            row = row_of(t, batch, "; ".join(filter(None, [note, getattr(t.runner, "note", "")])))
            row["flops_per_step"] = flops["analytic_per_step"][str(batch)]
            rows.append(row)
            print(f"  {t.label:<28} " + (f"{row['steps_per_s']:12.2f} steps/s, median step "
                                         f"{row['step_ms_median']:.3f} ms" if row["steps_per_s"] else
                                         f"FAILED {row['error']}"), flush=True)
        del timeds, specs
        gc.collect()
    cache.clear()

    peak_end = measure_peak(on_gpu, peak_n, 3 if args.quick else 5)
    peak = max(list(peak_start.values()) + list(peak_end.values()))
    header["peak"] = {"gflops": peak, "start": peak_start, "end": peak_end, "n": peak_n,
                      "method": f"max over numpy/jax/torch and over start/end of 2n^3 / best-of-reps time of one "
                                f"n x n float32 matmul (n={peak_n}) on the benchmark device"}
    for row in rows:
        if row["steps_per_s"] and row["variant"] != "adam":  # Adam has no matmul FLOPs to count
            row["gflops_per_s"] = row["flops_per_step"] * row["steps_per_s"] / 1e9
            row["frac_of_peak"] = row["gflops_per_s"] / peak
    header["machine"]["load_avg_end"] = _load()
    header["total_s"] = round(time.perf_counter() - t_start, 1)
    header["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    if compile_cache:
        shutil.rmtree(compile_cache, ignore_errors=True)
    return {"header": header, "flops": flops, "rows": rows, "ratios": ratios(rows)}


def flops_section(config: Config, batch_sizes: Sequence[int], xla: bool) -> dict:
    """Analytic FLOPs per step at every batch size, the breakdown at 64, and XLA's counts of the same step."""
    out = {"note": "matmuls only, 2*m*n*k each; elementwise ops and Adam ignored (see benchmarks/flops.py)",
           "analytic_per_step": {str(b): flops_lib.flops_per_step(config, b) for b in batch_sizes},
           "breakdown_batch_64": flops_lib.step_flops(config, 64)}
    if xla:
        out["xla"] = {str(b): flops_lib.xla_step_flops(config, b) for b in sorted({64, *batch_sizes})}
    return out


# ----------------------------------------------------------------------------- reports
def header_lines(h: dict) -> list[str]:
    m, d = h["machine"], h["device"]
    lines = [f"machine: {m['cpu_model']}, {m['cpus_usable']} of {m['cpu_count']} cores usable; load average "
             f"{m['load_avg_start']} at start" + (f", {m['load_avg_end']} at end" if "load_avg_end" in m else ""),
             f"device: jax {d['jax']}; torch {d['torch']} ({d['torch_threads']} threads); precision {h['precision']}",
             "versions: " + ", ".join(f"{k} {val}" for k, val in h["versions"].items())]
    if "peak" in h:
        p = h["peak"]
        lines.append(f"peak: {p['gflops']:.1f} GFLOP/s ({p['method']}; start {p['start']}, end {p['end']})")
    return lines


def print_flops(f: dict) -> None:
    print("analytic FLOPs of one step at batch 64 (" + f["note"] + "):")
    print(flops_lib.format_breakdown(f["breakdown_batch_64"]))
    for b, x in f.get("xla", {}).items():
        analytic = f["analytic_per_step"].get(b) or f["breakdown_batch_64"]["total"]
        print(f" batch {b}: analytic {analytic / 1e9:.6f} GFLOP")
        print(flops_lib.format_xla(x, analytic))
    print(flush=True)


def table_lines(result: dict) -> list[str]:
    """The results as fixed-width text (also the body of the Markdown file)."""
    cols = ("backend", "variant", "B", "K", "steps/s", "images/s", "step ms median [p25, p75]", "min..max ms",
            "first call s", "GFLOP/s", "% peak")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in result["rows"]:
        if not r["steps_per_s"]:
            lines.append(" | ".join([r["backend"], r["variant"], str(r["batch_size"]), "", "FAILED",
                                     (r["error"] or "")[:80], "", "", "", "", ""]))
            continue
        lines.append(" | ".join([
            r["backend"], r["variant"], str(r["batch_size"]), str(r["steps_per_call"]),
            f"{r['steps_per_s']:.4g}", f"{r['images_per_s']:.4g}",
            f"{r['step_ms_median']:.4g} [{r['step_ms_p25']:.4g}, {r['step_ms_p75']:.4g}]",
            f"{r['step_ms_min']:.4g}..{r['step_ms_max']:.4g}", f"{r['first_call_s']:.3g}",
            _num(r["gflops_per_s"]), _num(r["frac_of_peak"] and 100 * r["frac_of_peak"], 3)]))
    lines += ["", "ratios of steps/s (same run) | " + " | ".join(("B", "best jax fused", "/ torch eager",
                                                                   "best torch", "/ best torch", "jax step / eager")),
              " | ".join("---" for _ in range(7))]
    for q in result["ratios"]:
        lines.append(" | ".join(["", str(q["batch_size"]), q.get("jax_fused_best", ""),
                                 _fmt(q.get("jax_fused_over_torch_eager")), q.get("torch_best", ""),
                                 _fmt(q.get("jax_fused_over_torch_best")), _fmt(q.get("jax_step_over_torch_eager"))]))
    if any("floors_ms" in q for q in result["ratios"]):
        names = [f"{b} {v}" for v in FLOOR_VARIANTS for b in ("jax", "torch")]
        lines += ["", "floors, ms a step (same run; parts of a step timed alone) | B | " + " | ".join(names),
                  " | ".join("---" for _ in range(len(names) + 2))]
        for q in result["ratios"]:
            f = q.get("floors_ms", {})
            lines.append(" | ".join(["", str(q["batch_size"])] + [f"{f[n]:.4g}" if n in f else "" for n in names]))
    if any("jax_fused_bf16_over_float32" in q or "torch_eager_bf16_over_float32" in q for q in result["ratios"]):
        lines += ["", "bf16 ratios (same run) | B | jax fused bf16 / float32 | torch eager bf16 / float32 | "
                      "jax fused bf16 / torch eager bf16", " | ".join("---" for _ in range(5))]
        for q in result["ratios"]:
            lines.append(" | ".join(["", str(q["batch_size"]), _fmt(q.get("jax_fused_bf16_over_float32")),
                                     _fmt(q.get("torch_eager_bf16_over_float32")),
                                     _fmt(q.get("jax_fused_bf16_over_torch_eager_bf16"))]))
    return lines


def _num(x, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def _fmt(x) -> str:
    return "" if x is None else f"{x:.3g}x"


def markdown(result: dict) -> str:
    h, f = result["header"], result["flops"]
    out = [f"## Step throughput ({h['date']})", ""] + [f"- {line}" for line in header_lines(h)] + [
           f"- settings: {h['settings']}", f"- data: {h['dataset']}", f"- total runtime: {h['total_s']} s",
           f"- FLOPs: {f['note']}; {f['breakdown_batch_64']['total'] / 1e9:.4f} GFLOP per step at batch 64", ""]
    body = table_lines(result)
    split = body.index("")
    out += ["| " + line + " |" for line in body[:split]]
    for line in body[split:]:  # the ratio tables: their first cell is a title, written above them
        if not line:
            out.append("")
        elif line.split(" | ", 1)[0] not in ("", "---"):
            title, rest = line.split(" | ", 1)
            out += [f"{title}:", "", "| " + rest + " |"]
        else:
            out.append("| " + line.split(" | ", 1)[1] + " |")
    return "\n".join(out) + "\n"


def plot(result: dict, path: str) -> None:
    """steps/s against batch size, log-log, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5.5))
    labels = []
    for r in result["rows"]:
        label = f"{r['backend']} {r['variant']}"
        if label not in labels:
            labels.append(label)
    for label in labels:
        pts = sorted((r["batch_size"], r["steps_per_s"]) for r in result["rows"]
                     if f"{r['backend']} {r['variant']}" == label and r["steps_per_s"])
        if pts:
            floor = label.split(" ")[1] in FLOOR_VARIANTS  # parts of a step, dotted
            ax.plot(*zip(*pts), marker="." if floor else "o", linestyle=":" if floor else "-" if label.startswith("jax")
                    else "--", label=label + (" (floor)" if floor else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = sorted({r["batch_size"] for r in result["rows"]})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("batch size")
    ax.set_ylabel("training steps / s (D + G update)")
    h = result["header"]
    ax.set_title(f"{h['device']['jax']} | {h['machine']['cpu_model'][:48]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_throughput", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--batch-sizes", type=_ints, help="comma list (default CPU 1,64,256,1024,4096; GPU adds 16384,65536)")
    p.add_argument("--variants", type=_variants,
                   help=f"comma list of {', '.join(ALL_VARIANTS)} (or jax / torch); default all the device supports")
    p.add_argument("--ks", type=_ints, help="steps per fused call (default 1,10,100)")
    p.add_argument("--repeats", type=int, help="timed repeats per variant and batch size (default 5)")
    p.add_argument("--min-time", type=float, help="seconds each repeat lasts at least (default 0.2)")
    p.add_argument("--warmup", type=int, help="synchronised warm-up calls after the first call (default 2)")
    p.add_argument("--max-images-per-call", type=int,
                   help="cap on K * batch for fused calls, keeping repeats short (default 16384 CPU, 2^21 GPU)")
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
                   help="tiny run for the smoke test: small nets, batch 1,8, K 2, 2 repeats, no torch.compile or XLA count")
    p.add_argument("--json", help="write header, FLOPs, rows and ratios here")
    p.add_argument("--plot", help="write a PNG of steps/s against batch size here")
    p.add_argument("--markdown", help="write the table with the machine header as Markdown here")
    args = p.parse_args(argv)
    defaults = dict(ks=KS, repeats=5, min_time=0.2, warmup=2, batch_sizes=None, variants=None)
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick and name in QUICK else default)
    if args.repeats < 1 or args.warmup < 0 or args.min_time < 0:
        p.error("--repeats must be >= 1, --warmup >= 0, --min-time >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark from a command line; returns the result dict (tests call this)."""
    args = parse_args(argv)
    result = run(args)
    print()
    print("\n".join(table_lines(result)))
    print(f"\ntotal runtime {result['header']['total_s']} s; peak {result['header']['peak']['gflops']:.1f} GFLOP/s")
    for path, write in ((args.json, lambda f: json.dump(result, f, indent=1)), (args.plot, None),
                        (args.markdown, lambda f: f.write(markdown(result)))):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if write is None:
                plot(result, path)
            else:
                with open(path, "w") as f:
                    write(f)
            print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
