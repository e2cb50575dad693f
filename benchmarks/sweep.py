"""The step-throughput sweep: every selected variant of both backends at every batch size, timed in one process.

`run(args)` takes benchmarks.step_throughput's parsed flags and returns {'header', 'flops', 'rows', 'ratios'}.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gc
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import jax
import numpy as np
import torch

from benchmarks import flops as flops_lib
from benchmarks import report, torch_runners
from benchmarks.jax_runners import JaxAdam, JaxFused, JaxMatmuls, JaxStep
from benchmarks.machine import load_avg, machine_header, measure_peak, set_matmul_precision
from benchmarks.report import ALL_VARIANTS, FLOOR_VARIANTS, TORCH_VARIANTS
from benchmarks.timing import build, measure, row_of
from benchmarks.torch_runners import make_floor_runner, make_runner
from gan_common.config import Config
from gan_common.datasets import load_dataset
from gan_jax.layers import conv_impl

CPU_BATCH_SIZES = (1, 64, 256, 1024, 4096)
GPU_BATCH_SIZES = CPU_BATCH_SIZES + (16384, 65536)
KS = (1, 10, 100)
# --arch dcgan: ~14x the MLP's FLOPs a step, so fewer sizes and shorter calls keep a CPU run at a few minutes.
DCGAN_CPU_BATCH_SIZES = (64, 256)
DCGAN_GPU_BATCH_SIZES = (64, 256, 1024, 4096, 16384)
DCGAN_KS = (10,)
DCGAN_CPU_MAX_IMAGES = 1280  # K * B per fused call: K = 10 at batch 64, 5 at 256 (about 1 s a call)
QUICK = dict(batch_sizes=(1, 8), repeats=2, min_time=0.0, warmup=1, ks=(2,),
             variants=("step", "fused", "matmuls", "adam", "eager", "tuned", "tuned_cl"))
QUICK_CONFIG = {"mlp": dict(g_hidden="32", d_hidden="32", latent_dim=16),  # tiny nets: --quick checks structure,
                "dcgan": dict(g_channels=4, d_channels=4, latent_dim=16)}  # not speed


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


class DeviceData:
    """The (tiled) uint8 training set on each backend's device, copied once per size and reused across variants."""

    def __init__(self):
        self.jax_data = self.torch_data = None

    def jax(self, data: np.ndarray) -> jax.Array:
        if self.jax_data is None or self.jax_data.shape[0] != data.shape[0]:
            self.jax_data = jax.device_put(data)  # (N, 28, 28, 1) uint8
        return self.jax_data

    def torch(self, data: np.ndarray) -> torch.Tensor:
        if self.torch_data is None or self.torch_data.shape[0] != data.shape[0]:
            self.torch_data = torch_runners.to_device(data, torch_runners.default_device())
        return self.torch_data


def jax_fused_specs(config: Config, data: jax.Array, args, batch: int, suffix: str = "") -> list:
    """The fused rows of `config` at `batch`, one per K; with --conv-impls, one set per implementation
    (auto's rows unsuffixed, the others' ending +xla / +custom)."""
    specs = []
    impls = args.conv_impls if config.arch == "dcgan" else ("auto",)
    for impl in impls:
        cfg = dataclasses.replace(config, conv_impl=impl)
        tag = suffix + ("" if impl == "auto" else f"+{impl}")
        for k, nominal in fused_ks(args.ks, batch, args.max_images_per_call):
            specs.append((f"jax fused_k{nominal}{tag} (K={k})",
                          functools.partial(JaxFused, cfg, data, k, nominal, tag)))
    return specs


def variant_specs(batch: int, config: Config, images_u8: np.ndarray, variants: Sequence[str], args,
                  cache: DeviceData) -> tuple[list, str]:
    """(label, constructor) for every selected runner at `batch`, and a note for its rows."""
    data = tile_to(images_u8, batch)
    note = f"data tiled to {data.shape[0]} images" if data.shape[0] != images_u8.shape[0] else ""
    specs = []
    if "bf16" in args.precisions:  # the production paths with --precision bf16; the data copies are shared
        bf16 = dataclasses.replace(config, precision="bf16")
        if "fused" in variants:
            specs += jax_fused_specs(bf16, cache.jax(data), args, batch, "+bf16")
        if "eager" in variants:
            specs.append(("torch eager+bf16", functools.partial(make_runner, "eager", bf16, cache.torch(data))))
        if "float32" not in args.precisions:
            return specs, note
    if "step" in variants:
        specs.append(("jax step", functools.partial(JaxStep, config, data)))
    if "fused" in variants:
        specs += jax_fused_specs(config, cache.jax(data), args, batch)
    if "matmuls" in variants:
        specs.append(("jax matmuls", functools.partial(JaxMatmuls, config)))
    if "adam" in variants:
        specs.append(("jax adam", functools.partial(JaxAdam, config)))
    torch_names = [v for v in TORCH_VARIANTS if v in variants]
    if torch_names:
        dev = torch_runners.default_device()
        if any(v.startswith("compiled") for v in torch_names):
            torch_runners.reset_compiler()
        for v in torch_names:
            if v.startswith("compiled") and args.compile_batch_sizes and batch not in args.compile_batch_sizes:
                continue
            if v in torch_runners.CUDA_ONLY and dev.type != "cuda":
                continue
            if v in torch_runners.CONV_ONLY and config.arch != "dcgan":
                continue
            specs.append((f"torch {v}", functools.partial(make_runner, v, config, cache.torch(data))))
    for v in (v for v in FLOOR_VARIANTS if v in variants):
        specs.append((f"torch {v}", functools.partial(make_floor_runner, v, config, torch_runners.default_device())))
    return specs, note


def default_variants(on_gpu: bool, dcgan: bool, recipe: str) -> list[str]:
    """Every variant the device and the nets support. The default recipe's R1 is a double backward, which
    torch.compile's AOTAutograd does not support (it raises, after years of silently wrong second derivatives:
    pytorch/pytorch#91469, #92348), on every 4th step only, which a captured CUDA graph (one fixed step) cannot
    replay: its torch rows are eager and tuned."""
    return [v for v in ALL_VARIANTS if (on_gpu or v not in torch_runners.CUDA_ONLY)
            and (dcgan or v not in torch_runners.CONV_ONLY)
            and (recipe == "tutorial" or not v.startswith(("compiled", "cuda_graph")))]


def run(args) -> dict:
    """The whole benchmark; returns {'header', 'flops', 'rows', 'ratios'} (also what --json writes)."""
    t_start = time.perf_counter()
    compile_cache = None
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        # A fresh inductor/triton cache: torch.compile's first call is a cold compile, like jit's. (Inductor
        # reads the variable when it first compiles, and importing torch does not set it.)
        compile_cache = tempfile.mkdtemp(prefix="bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = compile_cache
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(compile_cache, "triton"))
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    on_gpu = torch.cuda.is_available() or jax.default_backend() == "gpu"
    dcgan = args.arch == "dcgan"
    sizes = {(False, False): CPU_BATCH_SIZES, (True, False): GPU_BATCH_SIZES,
             (False, True): DCGAN_CPU_BATCH_SIZES, (True, True): DCGAN_GPU_BATCH_SIZES}
    batch_sizes = args.batch_sizes or sizes[on_gpu, dcgan]
    variants = args.variants or default_variants(on_gpu, dcgan, args.recipe)
    if args.max_images_per_call is None:
        args.max_images_per_call = 2**21 if on_gpu else DCGAN_CPU_MAX_IMAGES if dcgan else 16384
    config = flops_lib.arch_config(args.arch, args.recipe, **(QUICK_CONFIG[args.arch] if args.quick else {}))

    header = machine_header()
    header["precision"] = set_matmul_precision(args.matmul_precision)
    header["settings"] = {"batch_sizes": list(batch_sizes), "variants": list(variants), "ks": list(args.ks),
                          "repeats": args.repeats, "min_time_s": args.min_time, "warmup_calls": args.warmup,
                          "max_images_per_call": args.max_images_per_call, "quick": args.quick,
                          "precisions": list(args.precisions),
                          "model": ({"arch": "mlp", "latent_dim": config.latent_dim, "g_hidden": config.g_hidden,
                                     "d_hidden": config.d_hidden, "recipe": args.recipe, "beta1": config.beta1,
                                     "r1_weight": config.r1_weight, "r1_every": config.r1_every,
                                     "ema_decay": config.ema_decay} if not dcgan else
                                    {"arch": "dcgan", "latent_dim": config.latent_dim, "beta1": config.beta1,
                                     "g_channels": config.g_channels, "d_channels": config.d_channels,
                                     "conv_impls": list(args.conv_impls),
                                     "conv_impl_auto": conv_impl("auto")}),
                          "compile_batch_sizes": list(args.compile_batch_sizes or []),
                          "torch_compile_cache": "fresh temporary dir (cold compiles)" if compile_cache else
                          os.environ["TORCHINDUCTOR_CACHE_DIR"]}
    print("\n".join(report.header_lines(header)), flush=True)
    peak_n = args.peak_n or (256 if args.quick else (8192 if on_gpu else 2048))
    peak_start = measure_peak(on_gpu, peak_n, 3 if args.quick else 5)
    print(f"peak float32 matmul at start (n={peak_n}, GFLOP/s): {peak_start}", flush=True)

    train = load_dataset("mnist", "train")
    header["dataset"] = f"mnist train {tuple(train.images.shape)} uint8 ({train.source})"
    # XLA counts the DCGAN's convolutions only in its cost analysis, one extra compile per size: not by default.
    flops = flops_lib.flops_section(config, batch_sizes, xla=not (args.quick or args.no_xla or dcgan))
    print("\n".join(report.flops_lines(flops)) + "\n", flush=True)

    rows, cache = [], DeviceData()
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
            print(f"  {t.label:<28} {report.row_line(row)}", flush=True)
        del timeds, specs
        gc.collect()
    del cache

    peak_end = measure_peak(on_gpu, peak_n, 3 if args.quick else 5)
    peak = max(list(peak_start.values()) + list(peak_end.values()))
    header["peak"] = {"gflops": peak, "start": peak_start, "end": peak_end, "n": peak_n,
                      "method": f"max over numpy/jax/torch and over start/end of 2n^3 / best-of-reps time of one "
                                f"n x n float32 matmul (n={peak_n}) on the benchmark device"}
    report.add_rates(rows, peak)
    header["machine"]["load_avg_end"] = load_avg()
    header["total_s"] = round(time.perf_counter() - t_start, 1)
    header["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    if compile_cache:
        shutil.rmtree(compile_cache, ignore_errors=True)
    return {"header": header, "flops": flops, "rows": rows, "ratios": report.ratios(rows)}
