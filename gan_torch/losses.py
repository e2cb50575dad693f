"""D's and G's losses on D's logits (never probabilities: log-sigmoid is stable), and the input-gradient
penalties. gan_jax.losses holds the same functions with the same names."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def d_loss_fn(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str = "gan") -> torch.Tensor:
    """D's loss on its logits of a real and a fake batch (batch means summed), for --loss `loss`."""
    if loss == "gan":  # -log sigma(D(x)) - log(1 - sigma(D(G(z)))): -log sigma(l) = softplus(-l), stable
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if loss == "hinge":  # max(0, 1 - D(x)) + max(0, 1 + D(G(z)))
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if loss == "lsgan":  # (D(x) - 1)^2 / 2 + D(G(z))^2 / 2: targets 1 for real, 0 for fake
        return 0.5 * torch.square(real_logits - 1).mean() + 0.5 * torch.square(fake_logits).mean()
    if loss == "wgan_gp":  # D(G(z)) - D(x): minus the critic's Wasserstein estimate (the penalty is added apart)
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown loss {loss!r}")


def g_loss_fn(fake_logits: torch.Tensor, g_loss: str, loss: str = "gan") -> torch.Tensor:
    """G's loss on D's logits of fresh fakes; for --loss gan, `g_loss` picks non_saturating or minimax."""
    if loss == "gan" and g_loss == "non_saturating":  # -log sigma(l)
        return F.softplus(-fake_logits).mean()
    if loss == "gan" and g_loss == "minimax":  # log(1 - sigma(l))
        return -F.softplus(fake_logits).mean()
    if loss in ("hinge", "wgan_gp"):  # -D(G(z)): raise the critic's score of the fakes
        return -fake_logits.mean()
    if loss == "lsgan":  # (D(G(z)) - 1)^2 / 2: pull the fakes to the real target
        return 0.5 * torch.square(fake_logits - 1).mean()
    raise ValueError(f"unknown loss {loss!r} / g_loss {g_loss!r}")


def mean_d_output(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """The d_real / d_fake metrics: mean sigma(D) for gan (a probability); the mean raw output otherwise,
    the value the loss acts on (hinge: margin +-1; lsgan: targets 1 / 0; wgan_gp: their gap estimates W)."""
    return torch.sigmoid(logits).mean() if loss == "gan" else logits.mean()


def _input_grads(discriminate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(B, H*W*C): grad_x D(x) per sample, as the gradient of the batch sum (D treats samples independently).

    create_graph=True keeps the graph of this gradient, so a penalty on it back-propagates to D's parameters.
    """
    x = x.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(discriminate(x).sum(), x, create_graph=True)
    return grads.reshape(x.shape[0], -1)


def gradient_penalty(discriminate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor, weight: float) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): weight * mean((|grad D(x_hat)|_2 - 1)^2), x_hat = eps x + (1 - eps) fake.

    x, fake: (B, H, W, C); eps: (B,) ~ U(0, 1), one per sample. Its gradient w.r.t. D's parameters is a
    double backpropagation.
    """
    e = eps.reshape(-1, 1, 1, 1)
    norms = torch.sqrt(torch.square(_input_grads(discriminate, e * x + (1 - e) * fake)).sum(dim=1))  # (B,)
    return weight * torch.square(norms - 1).mean()


def r1_penalty(discriminate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, weight: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): weight / 2 * mean(|grad D(x)|^2) on real images x (B, H, W, C)."""
    return weight / 2 * torch.square(_input_grads(discriminate, x)).sum(dim=1).mean()
