"""The reference: the same MLP GAN in plain eager PyTorch, to check gan_jax against.

Same module and function names as gan_jax (models, train, checkpoint, sample); it never
imports gan_jax, so a user with only PyTorch installed can train and sample with it.
"""
