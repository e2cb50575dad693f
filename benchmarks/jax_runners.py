"""The JAX runners the benchmarks time (the interface is benchmarks.timing's): training steps, floors, meshes.

  JaxStep     jit(train_step), one step per call, x/z_d/z_g fed as numpy from the host each call
  JaxFused    the production path: make_train_chunk's compiled K-step call on the device-resident uint8 set
  JaxMatmuls  a floor: the step's matrix products alone (benchmarks.flops.matmul_plan), one jitted call
  JaxAdam     a floor: the step's two Adam updates alone, K per compiled call
  MeshFused   JaxFused on a mesh of N devices, the data replicated or sharded (benchmarks.scaling)
  AllReduce   the data-parallel step's collectives alone (benchmarks.scaling)

(benchmarks/__init__.py imports gan_jax, and with it its XLA:CPU flags, before this module imports jax.)
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
from jax import lax, shard_map
from jax.sharding import Mesh, PartitionSpec

from benchmarks import flops as flops_lib
from gan_common.config import Config
from gan_jax import parallel
from gan_jax.fused import StepFn, make_train_chunk
from gan_jax.step import create, train_step


class JaxStep:
    """jit(step_fn) with numpy inputs from the host: what a plain per-step loop pays per call."""

    backend, steps_per_call = "jax", 1

    def __init__(self, config: Config, images_u8: np.ndarray, pool: int = 2, step_fn: StepFn = train_step):
        self.name = "step"
        self.gan, self.state = create(config)
        self.fn = jax.jit(functools.partial(step_fn, self.gan), donate_argnums=0)
        b, rng = config.batch_size, np.random.default_rng(0)
        # A small pool of ready host batches: the host's own RNG and gather stay out of the timing,
        # the per-call host->device copy and dispatch stay in.
        idx = rng.choice(images_u8.shape[0], size=(pool, b), replace=pool * b > images_u8.shape[0])
        self.x = images_u8[idx].astype(np.float32) / 127.5 - 1.0  # (pool, B, 28, 28, 1) in [-1, 1]
        self.z = rng.standard_normal((pool, 2, b, config.latent_dim), dtype=np.float32)  # z_d, z_g
        self.i, self.out = 0, None

    def call(self) -> None:
        i = self.i % len(self.x)
        self.i += 1
        self.state, self.out = self.fn(self.state, self.x[i], self.z[i, 0], self.z[i, 1])

    def sync(self) -> None:
        jax.block_until_ready((self.state, self.out))


class JaxFused:
    """The production path: make_train_chunk's compiled K-step call on the device-resident uint8 set."""

    backend = "jax"

    def __init__(self, config: Config, data_u8: jax.Array, k: int, nominal_k: int, suffix: str = "",
                 step_fn: StepFn = train_step):
        self.name, self.steps_per_call, self.data = f"fused_k{nominal_k}{suffix}", k, data_u8
        self.note = f"K capped from {nominal_k} (--max-images-per-call)" if k != nominal_k else ""
        self.gan, self.state = create(config)
        self.chunk = make_train_chunk(self.gan, data_u8.shape[0], step_fn)
        self.out = None

    def call(self) -> None:
        self.state, self.out = self.chunk(self.state, self.data, num_steps=self.steps_per_call)  # metrics (K, 4)

    def sync(self) -> None:
        jax.block_until_ready((self.state, self.out))


def jax_products() -> dict:
    """The plan's three products in JAX, as autodiff emits them (operands in the order the op names them)."""
    return {"fwd": lambda x, w: x @ w,  # (rows, in) @ (in, out)
            "wgrad": lambda x, e: lax.dot_general(x, e, (((0,), (0,)), ((), ()))),  # x^T e: (in, out)
            "igrad": lambda e, w: lax.dot_general(e, w, (((1,), (1,)), ((), ())))}  # e w^T: (rows, in)


class JaxMatmuls:
    """A floor, not a training step: only the step's matrix products (benchmarks/flops.py's `matmul_plan`),
    same shapes and transposes as autodiff emits, in one jitted call. What XLA's dots alone need."""

    backend, steps_per_call = "jax", 1

    def __init__(self, config: Config):
        self.name = "matmuls"
        plan = flops_lib.matmul_plan(config, config.batch_size)
        ops = jax_products()

        def products(w, acts, errs):
            out = []
            for op, net, i, rows in plan:
                x, e, wi = acts[net, i, rows], errs[net, i, rows], w[net, i]
                out.append(ops[op](*flops_lib.operands_of(op, x, e, wi)))
            return out

        self.args = flops_lib.floor_operands(config, plan, jax.device_put)  # (weights, activations, errors)
        self.fn = jax.jit(products)
        self.out = None

    def call(self) -> None:
        self.out = self.fn(*self.args)

    def sync(self) -> None:
        jax.block_until_ready(self.out)


class JaxAdam:
    """A floor, not a training step: the step's two Adam updates alone (gan_jax's optax Adams on G's
    and D's parameters, gradients fixed), K per compiled call in a lax.scan with the state donated,
    as the fused path runs them. What XLA's elementwise Adam passes over the 1.09 M parameters need."""

    backend = "jax"

    def __init__(self, config: Config, k: int = 100):
        self.name, self.steps_per_call = "adam", k
        gan, state = create(config)
        rng = np.random.default_rng(0)
        grads = jax.tree.map(lambda p: jax.device_put(1e-3 * rng.standard_normal(p.shape, dtype=np.float32)),
                             (state.g_params, state.d_params))

        def updates(carry):
            def body(carry, _):
                (g_p, d_p), (g_o, d_o) = carry
                g_u, g_o = gan.g_tx.update(grads[0], g_o, g_p)
                d_u, d_o = gan.d_tx.update(grads[1], d_o, d_p)
                return ((optax.apply_updates(g_p, g_u), optax.apply_updates(d_p, d_u)), (g_o, d_o)), None

            return lax.scan(body, carry, length=k)[0]

        self.fn = jax.jit(updates, donate_argnums=0)
        self.carry = ((state.g_params, state.d_params), (state.g_opt, state.d_opt))

    def call(self) -> None:
        self.carry = self.fn(self.carry)

    def sync(self) -> None:
        jax.block_until_ready(self.carry)


def first_devices(n: int) -> Mesh:
    """A one-axis (parallel.AXIS) mesh of the first `n` devices."""
    return Mesh(np.asarray(jax.devices()[:n]), (parallel.AXIS,))


class MeshFused:
    """make_train_chunk on a mesh of the first `n` devices, data replicated (as gan_jax runs) or sharded."""

    backend = "jax"

    def __init__(self, config: Config, images_u8: np.ndarray, n: int, k: int, shard_data: bool):
        mesh = first_devices(n)
        self.name = "fused_data_shd" if shard_data else "fused"
        self.steps_per_call = k
        self.gan, state = create(config, mesh)
        self.state = parallel.replicate(state, mesh)
        data = images_u8[: len(images_u8) // n * n]  # sharding needs N | rows
        self.data = (jax.device_put(data, parallel.batch_sharded(mesh)) if shard_data
                     else parallel.replicate(data, mesh))
        self.chunk = make_train_chunk(self.gan, data.shape[0])
        self.out = None

    def call(self) -> None:
        self.state, self.out = self.chunk(self.state, self.data, num_steps=self.steps_per_call)

    def sync(self) -> None:
        jax.block_until_ready((self.state, self.out))


class AllReduce:
    """The data-parallel step's collectives alone: psum of per-device G and D gradient trees, K per call."""

    backend = "jax"

    def __init__(self, config: Config, n: int, k: int):
        mesh = first_devices(n)
        self.name, self.steps_per_call = "allreduce", k
        _, state = create(config)
        # One gradient tree per device, stacked on a leading device axis and sharded over it.
        grads = (state.g_params, state.d_params)
        stacked = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (n, *x.shape)).copy(), grads)
        self.grads = jax.device_put(stacked, parallel.batch_sharded(mesh))
        spec = PartitionSpec(parallel.AXIS)
        psum = shard_map(lambda g: lax.psum(g, parallel.AXIS), mesh=mesh, in_specs=spec, out_specs=spec)

        @jax.jit
        def k_reductions(g):
            return lax.fori_loop(0, k, lambda _, g: jax.tree_util.tree_map(lambda x: x * 0.5, psum(g)), g)

        self.fn, self.out = k_reductions, None

    def call(self) -> None:
        self.out = self.fn(self.grads)

    def sync(self) -> None:
        jax.block_until_ready(self.out)
