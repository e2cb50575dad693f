"""The evidence: side-by-side step throughput of gan_jax and gan_torch (imports both; nothing imports it)."""
