"""The machine beside every table: CPU, devices, versions, load; its matmul peak; the TF32 setting."""

from __future__ import annotations

import os
import platform

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
import torch

from benchmarks.timing import elapsed_s


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg() -> list[float] | None:
    """1, 5, 15-minute load averages: a busy machine makes every timing here slower and noisier."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_header() -> dict:
    """{'machine', 'device', 'versions'} of this process: what every result file starts with."""
    jax_dev = jax.devices()[0]
    return {
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "platform": platform.platform(), "load_avg_start": load_avg()},
        "device": {"jax": f"{jax_dev.platform}: {jax_dev.device_kind}",
                   "torch": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                   "torch_threads": torch.get_num_threads(), "xla_flags": os.environ.get("XLA_FLAGS", "")},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "flax": flax.__version__, "optax": optax.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
    }


def measure_peak(on_gpu: bool, n: int, reps: int) -> dict:
    """Best float32 n x n matmul rate (GFLOP/s) of each library on the benchmark's device, best of `reps`."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3

    def best(fn) -> float:
        fn()  # warm-up (and compile)
        return flop / 1e9 / min(elapsed_s(fn) for _ in range(reps))

    out = {}
    if not on_gpu:  # numpy computes on the CPU: a peak only for a CPU run
        out["numpy"] = best(lambda: np.matmul(a, b))
    ja, jb = jax.device_put(a), jax.device_put(b)
    jmm = jax.jit(jnp.matmul)
    out["jax"] = best(lambda: jmm(ja, jb).block_until_ready())
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)

    def torch_mm() -> None:
        torch.mm(ta, tb)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    out["torch"] = best(torch_mm)
    return {k: round(v, 2) for k, v in out.items()}


def set_matmul_precision(precision: str) -> dict:
    """float32: TF32 off in both backends (true float32 products); tf32: both allowed to use TF32."""
    tf32 = precision == "tf32"
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "torch_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
