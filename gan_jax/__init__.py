"""The product: the MLP GAN in Flax NNX + Optax, trained by one fused, jit-compiled loop."""
