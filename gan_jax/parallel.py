"""Data parallelism on JAX's own runtime: one device mesh, the batch split along it.

The training step is written once. Parameters, optimiser state, the run key and the uint8
training set are replicated on every device of a one-axis mesh ("data"); each step's batch
indices, images and noise are sharded along that axis, so every device gathers, generates
and scores only its slice of the global batch, and XLA's SPMD partitioner inserts the
all-reduces that turn per-device gradient sums into the global batch's gradient. One
device is the special case of a one-device mesh: the same code, and constraints that
compile to nothing.

Across hosts, `init_runtime` starts `jax.distributed` first; the mesh then spans every
process's devices, every process runs the same program on its own devices (feeding its own
slice of each batch from its replica of the data), and only process 0 writes files.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gan_common.config import Config
from gan_common.errors import UserError

AXIS = "data"  # the mesh's one axis: the batch is split along it


def init_runtime(config: Config) -> None:
    """Start the multi-process runtime if asked to, and simulate `--devices` CPU devices.

    Must run before JAX computes anything: both settings are read when JAX's backends start.
    """
    if config.num_processes != 1:
        _init_distributed(config)
    if config.devices > 1 and _cpu_device_count_unset():
        # Affects only the CPU backend: on a GPU machine the mesh is built from GPUs and
        # these extra CPU devices are never used. On a CPU-only machine they simulate devices.
        try:
            jax.config.update("jax_num_cpu_devices", config.devices)
        except RuntimeError:  # JAX already computed in this process: too late; make_mesh says what to do
            pass


def _cpu_device_count_unset() -> bool:
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False  # the user chose the count with XLA's own flag
    return getattr(jax.config, "jax_num_cpu_devices", -1) in (-1, None)


def _init_distributed(config: Config) -> None:
    """jax.distributed.initialize from the flags, else JAX_* variables, else the cluster (SLURM, Open MPI)."""
    address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num = config.num_processes if config.num_processes > 0 else _env_int("JAX_NUM_PROCESSES")
    pid = config.process_id if config.process_id >= 0 else _env_int("JAX_PROCESS_ID")
    # CPU processes exchange collectives over gloo (TCP); GPUs use NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot start the multi-process runtime ({first}); give --coordinator-address HOST:PORT, "
            f"--num-processes N and --process-id I (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
            f"JAX_PROCESS_ID), or run under SLURM / Open MPI with --num-processes 0"
        ) from None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def make_mesh(config: Config) -> Mesh:
    """The one-axis mesh over `--devices` devices (0: every device JAX sees, on every process)."""
    devices = jax.devices()
    want = config.devices or len(devices)
    if jax.process_count() > 1 and want != len(devices):
        raise UserError(f"--devices {config.devices}: a multi-process run uses every device of every process "
                        f"({len(devices)} here); pass --devices 0")
    if want > len(devices):
        raise UserError(
            f"--devices {want}, but JAX sees {len(devices)} {devices[0].platform} device(s). On a CPU, pass "
            f"--devices on the command line of a fresh process (it simulates them), or set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={want} before starting Python"
        )
    if config.batch_size % want:
        raise UserError(f"--batch-size {config.batch_size} does not split evenly over {want} devices; "
                        f"choose a multiple of {want}")
    return Mesh(np.asarray(devices[:want]), (AXIS,))


def num_shards(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.size


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split along dimension `axis` over the mesh, replicated along the others."""
    return NamedSharding(mesh, P(*(None,) * axis, AXIS))


def replicate(tree, mesh: Mesh):
    """Host values (or single-device arrays) -> the same values on every device of `mesh`.

    Built from host copies with make_array_from_callback, which works whether or not every
    device of the mesh belongs to this process (each process fills its own devices).
    """
    sharding = replicated(mesh)

    def place(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x  # already in place (e.g. restored by orbax onto this mesh)
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            # The same devices and layout under another sharding type (a one-device array for a one-device
            # mesh): relabel it, no copy. The compiled loop returns `sharding`; an input of another type would
            # make its second call trace and compile the whole K-step program again.
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(place, tree)


def shard_batch(x: jax.Array | None, mesh: Mesh | None, axis: int = 0) -> jax.Array | None:
    """Inside jit: split `x` along its batch axis (`axis`) over the mesh (nothing on one device, or for None)."""
    if x is None or num_shards(mesh) == 1:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh, axis))


def concat_batches(a: jax.Array, b: jax.Array, mesh: Mesh | None) -> jax.Array:
    """[a; b] for one call of a network, (B, ...) + (B, ...) -> (2B, ...), without moving data.

    With S shards, device s holds rows s of a and of b; a plain concatenate would put all of
    a on the first half of the devices and force an all-to-all. Concatenating per shard
    instead ([a_0; b_0; a_1; b_1; ...]) keeps every row where it is. For S = 1 this is
    jnp.concatenate([a, b]); `split_batches` undoes it.
    """
    s = num_shards(mesh)
    if s == 1:
        return jnp.concatenate([a, b])
    a_, b_ = a.reshape(s, -1, *a.shape[1:]), b.reshape(s, -1, *b.shape[1:])  # (S, B/S, ...)
    return jnp.concatenate([a_, b_], axis=1).reshape(-1, *a.shape[1:])  # (2B, ...)


def split_batches(ab: jax.Array, mesh: Mesh | None) -> tuple[jax.Array, jax.Array]:
    """The inverse of `concat_batches`: (2B, ...) -> (B, ...), (B, ...)."""
    s = num_shards(mesh)
    if s == 1:
        half = ab.shape[0] // 2
        return ab[:half], ab[half:]
    ab_ = ab.reshape(s, 2, -1, *ab.shape[1:])  # (S, 2, B/S, ...)
    return ab_[:, 0].reshape(-1, *ab.shape[1:]), ab_[:, 1].reshape(-1, *ab.shape[1:])


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated array's value on this host (its local copy: other processes' copies are equal)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def is_primary() -> bool:
    """Only process 0 writes logs, sample grids and weight files (orbax coordinates checkpoints)."""
    return jax.process_index() == 0
