"""D's and G's losses on D's logits (never probabilities: log-sigmoid is stable), and the input-gradient
penalties. gan_torch.losses holds the same functions with the same names."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def d_loss_fn(real_logits: jax.Array, fake_logits: jax.Array, loss: str = "gan") -> jax.Array:
    """D's loss on its logits of a real and a fake batch (batch means summed), for --loss `loss`."""
    if loss == "gan":  # -log sigma(D(x)) - log(1 - sigma(D(G(z)))): -log sigma(l) = softplus(-l), stable
        return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
    if loss == "hinge":  # max(0, 1 - D(x)) + max(0, 1 + D(G(z)))
        return jnp.mean(jax.nn.relu(1 - real_logits)) + jnp.mean(jax.nn.relu(1 + fake_logits))
    if loss == "lsgan":  # (D(x) - 1)^2 / 2 + D(G(z))^2 / 2: targets 1 for real, 0 for fake
        return 0.5 * jnp.mean(jnp.square(real_logits - 1)) + 0.5 * jnp.mean(jnp.square(fake_logits))
    if loss == "wgan_gp":  # D(G(z)) - D(x): minus the critic's Wasserstein estimate (the penalty is added apart)
        return jnp.mean(fake_logits) - jnp.mean(real_logits)
    raise ValueError(f"unknown loss {loss!r}")


def g_loss_fn(fake_logits: jax.Array, g_loss: str, loss: str = "gan") -> jax.Array:
    """G's loss on D's logits of fresh fakes; for --loss gan, `g_loss` picks non_saturating or minimax."""
    if loss == "gan" and g_loss == "non_saturating":  # -log sigma(l)
        return jnp.mean(jax.nn.softplus(-fake_logits))
    if loss == "gan" and g_loss == "minimax":  # log(1 - sigma(l))
        return -jnp.mean(jax.nn.softplus(fake_logits))
    if loss in ("hinge", "wgan_gp"):  # -D(G(z)): raise the critic's score of the fakes
        return -jnp.mean(fake_logits)
    if loss == "lsgan":  # (D(G(z)) - 1)^2 / 2: pull the fakes to the real target
        return 0.5 * jnp.mean(jnp.square(fake_logits - 1))
    raise ValueError(f"unknown loss {loss!r} / g_loss {g_loss!r}")


def mean_d_output(logits: jax.Array, loss: str) -> jax.Array:
    """The d_real / d_fake metrics: mean sigma(D) for gan (a probability); the mean raw output otherwise,
    the value the loss acts on (hinge: margin +-1; lsgan: targets 1 / 0; wgan_gp: their gap estimates W)."""
    return jnp.mean(jax.nn.sigmoid(logits)) if loss == "gan" else jnp.mean(logits)


def _input_grads(discriminate: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """(B, H W C): grad_x D(x) per sample, as the gradient of the batch sum (D treats samples independently)."""
    return jax.grad(lambda x: jnp.sum(discriminate(x)))(x).reshape(x.shape[0], -1)


def gradient_penalty(discriminate: Callable[[jax.Array], jax.Array], x: jax.Array, fake: jax.Array, eps: jax.Array,
                     weight: float) -> jax.Array:
    """WGAN-GP (Gulrajani et al. 2017): weight * mean((|grad D(x_hat)|_2 - 1)^2), x_hat = eps x + (1 - eps) fake.

    eps: (B,) ~ U(0, 1), one per sample. `discriminate` closes over D's parameters, so their
    gradient of this penalty is a gradient of a gradient (double backpropagation).
    """
    e = eps.reshape(-1, 1, 1, 1)
    norms = jnp.sqrt(jnp.sum(jnp.square(_input_grads(discriminate, e * x + (1 - e) * fake)), axis=1))  # (B,)
    return weight * jnp.mean(jnp.square(norms - 1))


def r1_penalty(discriminate: Callable[[jax.Array], jax.Array], x: jax.Array, weight: float) -> jax.Array:
    """R1 (Mescheder et al. 2018): weight / 2 * mean(|grad D(x)|^2) on real images x."""
    return weight / 2 * jnp.mean(jnp.sum(jnp.square(_input_grads(discriminate, x)), axis=1))

