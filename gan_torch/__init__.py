"""The reference: the same GANs in plain eager PyTorch, to check gan_jax against.

Same module and function names as gan_jax, imports flowing one way: models -> losses -> step ->
checkpoint -> backend -> the CLIs (train, sample, evaluate); parallel (torchrun) and classifier
(the metrics' network) beside them. It never imports gan_jax, so a user with only PyTorch
installed can train, sample and evaluate with it.
"""
