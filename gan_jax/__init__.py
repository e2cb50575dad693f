"""The product: the MLP GAN in Flax NNX + Optax, trained by one fused, jit-compiled loop.

Command lines: gan_jax.train, gan_jax.sample, gan_jax.evaluate; the same as calls: gan_jax.api.
Importing the package itself only sets an XLA flag (below); what the API needs is imported by
gan_jax.api, so `python -m gan_jax.train` loads none of it.
"""

import os as _os


def _cpu_copy_insertion_flag() -> None:
    """Let XLA:CPU's copy insertion see through the training scan's loop regions.

    Without it XLA copies three of G's and D's weight matrices every step (loop-carried
    buffers it cannot prove dead): 7-8% of a batch-64 step on a 2-core CPU (4.54 -> 4.19 ms,
    benchmarks/RESULTS.md); arithmetic is unchanged. XLA reads XLA_FLAGS once, when its
    backend starts, so this must run before the first computation; a user's own setting of
    the flag wins. Set only on jaxlib 0.10, where the flag was verified: XLA aborts on a flag
    it does not know.
    """
    flag = "--xla_cpu_copy_insertion_use_region_analysis=true"
    current = _os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_copy_insertion_use_region_analysis" in current:
        return
    try:
        from importlib.metadata import version

        if not version("jaxlib").startswith("0.10."):
            return
    except Exception:  # jaxlib not installed as a distribution: leave XLA's defaults
        return
    _os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()


_cpu_copy_insertion_flag()
