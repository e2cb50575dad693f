"""How every benchmark here times a runner, and the row each timing becomes.

A runner is any object with `backend` ("jax" / "torch"), `name`, `steps_per_call`, `call()` (queue one
call: `steps_per_call` training steps, or one floor) and `sync()` (wait for the device), and optionally a
`note`. The protocol, for every runner alike:
  1. build it (`setup_s`), call it once, synchronised (`first_call_s`: compile + first run);
  2. `warmup` more synchronised calls; a repeat is then sized to last >= `min_time`;
  3. interleaved repeats: repeat r runs every runner of one batch size once, in an order rotated by r,
     so machine noise hits every variant alike. A repeat is `calls` back-to-back calls and one
     synchronisation at its end: nothing syncs inside it.
Rows report medians and quartiles over the repeats, and the median process CPU time a step (all threads:
on a busy shared machine, wall times measure the other jobs too; CPU time measures mostly the work).
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# The keys of every row, in the order --json writes them (benchmarks.step_throughput fills the FLOP ones).
ROW_KEYS = ("backend", "variant", "batch_size", "steps_per_call", "steps_per_s", "images_per_s", "step_ms_median",
            "step_ms_p25", "step_ms_p75", "step_ms_min", "step_ms_max", "cpu_ms_median", "repeats", "calls_per_repeat",
            "first_call_s", "setup_s", "warmup_s", "flops_per_step", "gflops_per_s", "frac_of_peak", "note", "error")


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
    cpu_per_step_s: list[float] = dataclasses.field(default_factory=list)  # process CPU time, all threads
    error: str = ""


def elapsed_s(fn: Callable[[], Any]) -> float:
    """Wall time of one call of `fn` (which must synchronise itself)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_s() -> float:
    """CPU seconds this process has used, user and system, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_call(runner, n: int = 1) -> float:
    """n back-to-back calls and one synchronisation at the end: wall seconds."""
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


def build(specs: Sequence[tuple[str, Callable[[], Any]]], warmup: int, min_time: float) -> list[Timed]:
    """Build and warm up each (label, constructor) of one batch size; a runner that fails is kept as an error row."""
    timeds = []
    for label, make in specs:
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


def measure(timeds: list[Timed], repeats: int) -> None:
    """Interleaved repeats: repeat r runs every runner once, in an order rotated by r."""
    live = [t for t in timeds if not t.error]
    for r in range(repeats):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for t in order:
            if t.error:
                continue
            try:
                cpu = cpu_s()
                dt = _timed_call(t.runner, t.calls)
                cpu = cpu_s() - cpu
            except Exception as e:  # a variant that breaks mid-run is reported, not fatal to the sweep
                t.error = f"{type(e).__name__}: {e}"
                continue
            t.per_step_s.append(dt / (t.calls * t.runner.steps_per_call))
            t.cpu_per_step_s.append(cpu / (t.calls * t.runner.steps_per_call))


def row_of(t: Timed, batch: int, note: str) -> dict:
    """The row of one runner at `batch`: ROW_KEYS (None where not measured) and every repeat's step time."""
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
                   cpu_ms_median=1e3 * float(np.median(t.cpu_per_step_s)),
                   step_ms_max=1e3 * float(s.max()), step_ms_all=[1e3 * float(v) for v in s])
    return row
