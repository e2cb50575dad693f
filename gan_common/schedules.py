"""What changes with the global step, written once for both backends: each net's learning rate (TTUR and
linear decay), the EMA's decay with its warm-up, and which D updates carry lazy R1.

Each is a function of the step alone, so a resumed run needs nothing but the step to carry on exactly, and
no checkpoint holds a schedule's state. gan_torch calls these on the host in float64; gan_jax computes the
same formulas on the device inside its compiled step (gan_jax.step), and tests/test_levers.py checks that its
float32 values are these, rounded.
"""

from __future__ import annotations

from gan_common.config import Config

EMA_RAMP = 10  # the warm-up's constant: the decay at step t is at most (1 + t) / (10 + t), TensorFlow's rule


def base_lr(config: Config, net: str) -> float:
    """The Adam learning rate of `net` ("g" or "d") at step 0: its own --g-lr / --d-lr, else --lr."""
    own = {"g": config.g_lr, "d": config.d_lr}[net]
    return own or config.lr


def lr_factor(step: int, decay_steps: int) -> float:
    """--lr-decay-steps T: the learning rates times (T - step) / T, from 1 at step 0 down to 0 at step T (and 0
    after); 1 with T = 0 (no decay). `step` counts the steps done before this one, as TrainState.step does."""
    if not decay_steps:
        return 1.0
    if decay_steps < 0:  # a programming error, not a user's: the run settles -1 before it builds a step
        raise ValueError("--lr-decay-steps -1 is the run's length: settle it with Config.with_run_length first")
    return max(decay_steps - step, 0) / decay_steps


def learning_rate(config: Config, net: str, step: int) -> float:
    """`net`'s learning rate in step `step` (every one of its n_critic D updates takes the same), float64."""
    return base_lr(config, net) * lr_factor(step, config.lr_decay_steps)


def ema_rampup_end(decay: float) -> int:
    """The first step at which the warm-up's (1 + t) / (10 + t) reaches `decay`: from there on the EMA decays by
    `decay` itself. Both backends switch on this integer, so float rounding cannot make them switch apart."""
    t = max(0, int((EMA_RAMP * decay - 1) / (1 - decay)) - 1)  # the real root, then stepped to the integer
    while (1 + t) / (EMA_RAMP + t) < decay:
        t += 1
    return t


def ema_weights(step: int, decay: float, rampup: bool) -> tuple[float, float]:
    """(keep, take): after step `step`'s G update the EMA becomes keep * ema + take * G.

    Without the warm-up, (decay, 1 - decay). With it (--ema-rampup), until `ema_rampup_end(decay)`
    ((1 + t) / (10 + t), 9 / (10 + t)): each a quotient of two small integers, so the float32 value either backend
    rounds it to is the same (the complement is not computed as 1 - keep, which would round twice).
    """
    if rampup and step < ema_rampup_end(decay):
        return (1 + step) / (EMA_RAMP + step), (EMA_RAMP - 1) / (EMA_RAMP + step)
    return decay, 1 - decay


def r1_due(step, n_critic: int, update, every: int):
    """Whether D update `update` (0 .. n_critic - 1) of step `step` carries R1 under --r1-every k: every k-th D
    update of the run, counting from the first. Plain arithmetic, so it takes Python ints (gan_torch) or traced
    integer arrays (gan_jax) alike."""
    return (step * n_critic + update) % every == 0
