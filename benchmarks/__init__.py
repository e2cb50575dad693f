"""The evidence: side-by-side step throughput of gan_jax and gan_torch (imports both; nothing imports it).

A small library (timing, machine, flops, jax_runners, torch_runners, report, sweep) and thin CLIs
(step_throughput, scaling, flops, matmul_kernels, profile_step, quality); results/ holds their JSON and PNG.
"""

# Before any benchmark module imports jax: gan_jax sets the production XLA:CPU flags (XLA_FLAGS), which
# XLA reads once, when its backend starts; every benchmark times the flags a training run uses.
import gan_jax  # noqa: F401
