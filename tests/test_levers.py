"""The training levers' own pieces (issue 16): the step schedules (gan_common.schedules and gan_jax's device copies
of them), DiffAugment's transformations and draws in both backends, the new flags, and a resumed run with the
levers on. What each backend's train_step makes of them, and the two backends against each other, is
parity_tests/test_levers.py.
"""

import importlib
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from gan_common import schedules
from gan_common.augment import AugmentDraws, cutout_centres, cutout_size, max_shift, policy
from gan_common.cli import parse_args
from gan_common.config import Config
from gan_common.errors import UserError
from gan_jax import augment as jax_augment
from gan_jax import step as jax_step
from gan_jax.fused import make_train_chunk
from gan_torch import augment as torch_augment

TINY = {"g_hidden": "8", "d_hidden": "8", "latent_dim": 4, "batch_size": 4}  # the maths of a step, not capacity


# ----------------------------------------------------------------------------- schedules
def test_learning_rates_ttur_and_linear_decay():
    off = Config.tutorial()
    assert schedules.base_lr(off, "g") == schedules.base_lr(off, "d") == 2e-4  # off: --lr for both
    config = Config.tutorial(g_lr=1e-4, d_lr=4e-4, lr_decay_steps=4)
    assert (schedules.base_lr(config, "g"), schedules.base_lr(config, "d")) == (1e-4, 4e-4)
    assert [schedules.lr_factor(t, 4) for t in range(7)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    assert schedules.lr_factor(10**6, 0) == 1.0  # no decay
    assert schedules.learning_rate(config, "d", 1) == 4e-4 * 0.75 and schedules.learning_rate(config, "g", 4) == 0


def test_jax_learning_rates_are_the_hosts_rounded_once():
    """gan_jax's lr of every step is exactly the float32 rounding of the host's float64 (what torch's Adam gets)."""
    config = Config.tutorial(g_lr=1e-4, d_lr=3e-4, lr_decay_steps=937)
    steps = jnp.arange(940, dtype=jnp.int32)
    for net in "gd":
        device = np.asarray(jax.jit(jax.vmap(lambda s, n=net: jax_step.learning_rate(config, n, s)))(steps))
        host = np.array([schedules.learning_rate(config, net, t) for t in range(940)], np.float32)
        np.testing.assert_array_equal(device, host, err_msg=net)


def test_decayed_adam_is_adam_at_the_steps_lr_bit_for_bit():
    """gan_jax's decay: Adam built with lr 1, its step times the table's lr, rounds as optax.adam(lr_t) itself; so
    a decayed run's step 0 is the constant-lr run's, bit for bit, and later steps are Adam at lr_t exactly."""
    config = Config.tutorial(d_lr=4e-4, lr_decay_steps=8)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((6, 5)), jnp.float32)}
    grads = [{"w": jnp.asarray(rng.standard_normal((6, 5)) * 10.0 ** -k, jnp.float32)} for k in range(4)]
    for t in (0, 3):
        decayed_tx = jax_step.adam(config, jax_step.optimiser_lr(config, "d"))
        plain_tx = jax_step.adam(config, schedules.learning_rate(config, "d", t))

        @jax.jit
        def both(g, s1, s2, t=t, decayed_tx=decayed_tx, plain_tx=plain_tx):
            u1, s1 = decayed_tx.update(g, s1, params)
            u2, s2 = plain_tx.update(g, s2, params)
            return jax_step.decayed(config, "d", u1, jnp.int32(t)), u2, s1, s2

        s1, s2 = decayed_tx.init(params), plain_tx.init(params)
        for g in grads:
            u1, u2, s1, s2 = both(g, s1, s2)
            np.testing.assert_array_equal(np.asarray(u1["w"]), np.asarray(u2["w"]), err_msg=f"step {t}")


def test_ema_warmup_values_and_switch():
    assert schedules.ema_weights(5, 0.999, False) == (0.999, 1 - 0.999)  # off: the decay from step 0
    assert schedules.ema_weights(0, 0.999, True) == (0.1, 0.9)  # (1 + 0) / 10: G's first update weighs 90%
    assert schedules.ema_weights(1, 0.999, True) == (2 / 11, 9 / 11)
    for decay in (0.9, 0.99, 0.999):
        end = schedules.ema_rampup_end(decay)  # 80, 890, 8990: where (1 + t) / (10 + t) reaches the decay
        assert end == round((10 * decay - 1) / (1 - decay))
        assert schedules.ema_weights(end - 1, decay, True)[0] < decay
        assert schedules.ema_weights(end, decay, True) == (decay, 1 - decay)
    assert schedules.ema_rampup_end(0.05) == 0  # a decay below the ramp's start: the ramp never applies


def test_jax_ema_weights_are_the_hosts_rounded_once():
    config = Config.tutorial(ema_decay=0.999, ema_rampup=True)
    steps = jnp.arange(9100, dtype=jnp.int32)  # past the switch at 8990
    keep, take = jax.jit(jax.vmap(lambda s: jax_step.ema_weights(config, s)))(steps)
    host = np.array([schedules.ema_weights(t, 0.999, True) for t in range(9100)], np.float32)
    np.testing.assert_array_equal(np.asarray(keep), host[:, 0])
    np.testing.assert_array_equal(np.asarray(take), host[:, 1])


def test_lazy_r1_counts_d_updates_across_steps():
    due = [(step, k) for step in range(4) for k in range(2) if schedules.r1_due(step, 2, k, 3)]
    assert due == [(0, 0), (1, 1), (3, 0)]  # D updates 0, 3, 6 of the run, two a step
    assert all(schedules.r1_due(step, 1, 0, 1) for step in range(5))  # --r1-every 1: every update


# ----------------------------------------------------------------------------- DiffAugment
@jax.jit
def _jax_augment_and_grad(x, d: AugmentDraws, w):
    """gan_jax.augment.augment(x, d) and the gradient of sum(w * augment(x)) in x: one compiled call."""
    out, vjp = jax.vjp(lambda v: jax_augment.augment(v, d), x)
    return out, vjp(w)[0]


def augment_and_grad(backend: str, x: np.ndarray, d: AugmentDraws, w: np.ndarray | None = None):
    """`backend`'s augment(x) under draws d, and the gradient of sum(w * augment(x)) with respect to x, in NumPy."""
    w = np.ones_like(x) if w is None else w
    if backend == "jax":
        out, grad = _jax_augment_and_grad(x, AugmentDraws(*(None if a is None else jnp.asarray(a) for a in d)), w)
        return np.asarray(out), np.asarray(grad)
    xt = torch.tensor(x, requires_grad=True)
    out = torch_augment.augment(xt, AugmentDraws(*(None if a is None else torch.tensor(a) for a in d)))
    (out * torch.tensor(w)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


def augmented(backend: str, x: np.ndarray, d: AugmentDraws) -> np.ndarray:
    return augment_and_grad(backend, x, d)[0]


BACKENDS = ("jax", "torch")


def _images(shape=(3, 28, 28, 1), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_policy_and_the_papers_sizes():
    assert policy("") == () and policy("cutout,translation") == ("translation", "cutout")  # applied in KINDS order
    assert policy("translation, color") == ("color", "translation")
    assert (max_shift(28), max_shift(32), cutout_size(28), cutout_size(32)) == (4, 4, 14, 16)  # 1/8, 1/2
    assert cutout_centres(28) == 29 and cutout_centres(6) == 6  # [0, 28] for an even square, [0, 6) for 6's 3 x 3
    for bad in ("flip", "cutout,cutout", ","):
        with pytest.raises(UserError, match="--augment"):
            policy(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_translation_moves_pixels_by_the_offset_and_shifts_in_zeros(backend):
    x = _images()
    shift = np.array([[2, -3], [-4, 4], [0, 0]], np.int32)  # (dy, dx): down 2 and left 3; up 4 and right 4; none
    out = augmented(backend, x, AugmentDraws(shift=shift))
    np.testing.assert_array_equal(out[0, 2:, :25], x[0, :26, 3:])
    assert not out[0, :2].any() and not out[0, :, 25:].any()
    np.testing.assert_array_equal(out[1, :24, 4:], x[1, 4:, :24])
    assert not out[1, 24:].any() and not out[1, :, :4].any()
    np.testing.assert_array_equal(out[2], x[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cutout_zeroes_exactly_its_square(backend):
    x = _images()
    centre = np.array([[5, 20], [28, 28], [14, 0]], np.int32)  # the square is 14 x 14, starting 7 before the centre
    out = augmented(backend, x, AugmentDraws(cutout=centre))
    want = x.copy()
    want[0, 0:12, 13:27] = 0  # rows -2..11 clipped to 0..11
    want[1, 21:28, 21:28] = 0  # centred on the corner just off the image: a quarter of the square
    want[2, 7:21, 0:7] = 0
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_color_is_the_papers_three_maps(backend):
    x = _images((2, 8, 8, 3))
    u = np.array([[0.9, 0.25, 0.1], [0.3, 0.75, 0.8]], np.float32)
    out = augmented(backend, x, AugmentDraws(color=u)).astype(np.float64)
    want = x.astype(np.float64) + (u[:, None, None, 0:1] - 0.5)  # brightness U(-0.5, 0.5)
    mean = want.mean(3, keepdims=True)
    want = (want - mean) * 2 * u[:, None, None, 1:2] + mean  # saturation U(0, 2)
    mean = want.mean((1, 2, 3), keepdims=True)
    want = (want - mean) * (u[:, None, None, 2:3] + 0.5) + mean  # contrast U(0.5, 1.5)
    # float32 arithmetic on values <= 3 against float64: a few ulps (~1e-6).
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_flow_back_through_every_kind(backend):
    """DiffAugment is differentiable in the image: G learns through it. Translation and cutout send each output
    pixel's gradient back to its source pixel (none from a zero); color (grey images: brightness and contrast
    c = u2 + 0.5) gives c (w - mean w) + mean w per image."""
    x, w = _images((2, 28, 28, 1)), _images((2, 28, 28, 1), seed=1)
    shift, centre = np.array([[2, -3], [0, 4]], np.int32), np.array([[5, 20], [27, 1]], np.int32)
    _, grad = augment_and_grad(backend, x, AugmentDraws(shift=shift, cutout=centre), w)
    want = augmented(backend, augmented(backend, w, AugmentDraws(cutout=centre)), AugmentDraws(shift=-shift))
    np.testing.assert_array_equal(grad, want)  # w with each square zeroed, moved back: each entry one w or 0
    assert np.count_nonzero(grad) > 0.5 * grad.size
    u = np.array([[0.4, 0.5, 0.2], [0.6, 0.5, 0.9]], np.float32)
    _, grad = augment_and_grad(backend, x, AugmentDraws(color=u), w)
    c, mean_w = u[:, 2, None, None, None] + 0.5, w.mean((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(grad, c * (w - mean_w) + mean_w, rtol=0, atol=1e-6)  # float32 sums of 784 terms


def test_translation_and_cutout_are_bit_identical_across_backends():
    x, w = _images((16, 28, 28, 1), seed=2), _images((16, 28, 28, 1), seed=3)
    rng = np.random.default_rng(4)
    d = AugmentDraws(shift=rng.integers(-4, 5, (16, 2)).astype(np.int32),
                     cutout=rng.integers(0, 29, (16, 2)).astype(np.int32))
    (out_j, grad_j), (out_t, grad_t) = (augment_and_grad(b, x, d, w) for b in BACKENDS)
    np.testing.assert_array_equal(out_j, out_t)
    np.testing.assert_array_equal(grad_j, grad_t)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_draws_cover_their_ranges(backend, shape):
    num = 4000
    if backend == "jax":
        d = jax_augment.draw(jax.random.PRNGKey(0), num, "color,translation,cutout", shape)
    else:
        d = torch_augment.draw(torch.Generator().manual_seed(0), num, "color,translation,cutout", shape)
    color, shift, centre = (np.asarray(a) for a in d)
    assert color.shape == (num, 3) and shift.shape == centre.shape == (num, 2)
    assert 0 <= color.min() and color.max() < 1
    s, n = max_shift(shape[0]), cutout_centres(shape[0])
    # Every integer of each range, both ends included, turns up in 4000 draws (9 or 29-33 values: each missed
    # with probability < (1 - 1/33)^4000 ~ 1e-53).
    for axis in range(2):
        assert set(shift[:, axis]) == set(range(-s, s + 1)) and set(centre[:, axis]) == set(range(n))
    assert policy("translation") and torch_augment.draw(torch.Generator(), 3, "translation", shape).color is None


@pytest.mark.slow  # 5 s of compiles: make test only
def test_jax_draws_are_a_function_of_key_and_step_fed_by_the_fused_loop():
    """What the fused loop feeds train_step as `augment` is step_augment(key, step): so a resumed run augments
    as a whole one would. Reals, D's fakes and G's fakes each get their own draws. (The step here only records
    and counts: the loop's feeding is under test, and a real step's compile would cost seconds.)"""
    config = Config.tutorial(**TINY, augment="translation,cutout", seed=3)
    gan, state = jax_step.create(config)
    key = np.asarray(state.key)  # the chunk donates the state
    fed = []

    def recording_step(gan, state, x, z_d, z_g, eps=None, labels=None, augment=None):
        jax.debug.callback(lambda *a: fed.append([np.asarray(v) for v in a]), state.step, *jax.tree.leaves(augment),
                           ordered=True)
        return state._replace(step=state.step + 1), jnp.zeros(4)

    data = jnp.asarray(np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8))
    make_train_chunk(gan, len(data), step_fn=recording_step)(state, data, num_steps=3)
    jax.effects_barrier()
    assert [int(f[0]) for f in fed] == [0, 1, 2]
    for step, *leaves in fed:
        want = jax.tree.leaves(jax_step.step_augment(jnp.asarray(key), jnp.int32(step), config))
        assert len(leaves) == len(want) == 6  # (shift, cutout) of the reals, D's fakes and G's fakes
        for got, w in zip(leaves, want, strict=True):
            np.testing.assert_array_equal(got, np.asarray(w))
        assert not np.array_equal(leaves[0], leaves[2])  # the reals' shifts are not the fakes'
    assert not np.array_equal(fed[0][1], fed[1][1])  # fresh each step


# ----------------------------------------------------------------------------- flags
def test_levers_flags_and_bad_values_are_one_clear_line():
    c, _ = parse_args(["--preset", "tutorial"], "t", "t")
    assert (c.g_lr, c.d_lr, c.lr_decay_steps, c.ema_rampup, c.r1_every, c.augment) == (0.0, 0.0, 0, False, 1, "")
    c, _ = parse_args([], "t", "t")  # the default recipe: EMA with its warm-up, lazy R1, no decay
    assert (c.g_lr, c.d_lr, c.lr_decay_steps, c.ema_rampup, c.r1_every, c.augment) == (0.0, 0.0, 0, True, 4, "")
    assert parse_args(["--ema-decay", "0"], "t", "t")[0].ema_rampup  # harmless without an EMA: no refusal
    c, _ = parse_args(["--g-lr", "1e-4", "--d-lr", "4e-4", "--lr-decay-steps", "600", "--steps", "600",
                       "--ema-decay", "0.99", "--no-ema-rampup", "--r1-weight", "1", "--r1-every", "4",
                       "--augment", "translation,cutout"], "t", "t")
    assert (c.g_lr, c.d_lr, c.lr_decay_steps, c.ema_rampup, c.r1_every, c.augment) == (
        1e-4, 4e-4, 600, False, 4, "translation,cutout")
    refused = {("--d-lr", "-1"): "--d-lr must be >= 0", ("--lr-decay-steps", "-2"): "--lr-decay-steps must be >= -1",
               ("--r1-every", "0"): "--r1-every must be a positive integer",
               ("--augment", "flip"): "--augment 'flip'",
               ("--lr-decay-steps", "100", "--steps", "200"): "ends the decay before the run's 200 steps"}
    for argv, fragment in refused.items():
        with pytest.raises(UserError, match=fragment) as e:
            parse_args(list(argv), "t", "t")
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- resume
# The CLI runs of tests/test_cli.py and tests/test_ema_cli.py, with every lever that depends on the step: the lr
# decay, lazy R1, the EMA's warm-up and the augmentation's draws must all carry on from the checkpoint exactly.
LEVERS = ["--preset", "tutorial",
          "--g-hidden", "32,64", "--d-hidden", "64,32", "--batch-size", "16", "--log-every", "4", "--sample-every",
          "8", "--checkpoint-every", "4", "--steps-per-call", "2", "--lr-decay-steps", "8", "--r1-weight", "1",
          "--r1-every", "3", "--ema-decay", "0.99", "--ema-rampup", "--augment", "translation,cutout"]


def _train(backend: str, *argv: str) -> None:
    assert importlib.import_module(f"{backend}.train").main(list(argv)) == 0


def _weights(run: str, step: int) -> dict:
    return load_file(os.path.join(run, "checkpoints", str(step), "weights.safetensors"))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("backend", ["gan_jax", "gan_torch"])
def test_resume_with_the_levers_equals_uninterrupted(backend, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _train(backend, "--out-dir", a, "--steps", "8", *LEVERS)
    shutil.copytree(a, b)
    shutil.rmtree(os.path.join(b, "checkpoints", "8"))  # as if the run had died after step 4's checkpoint
    _train(backend, "--out-dir", b, "--resume")  # from step 4, mid-decay, to the saved --steps 8
    wa, wb = _weights(a, 8), _weights(b, 8)
    assert sorted(wa) == sorted(wb) and any(k.startswith("generator_ema.") for k in wa)
    for k in wa:  # bit-identical, the EMA included: every schedule is a function of the restored step
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    start = _weights(b, 4)
    assert max(np.max(np.abs(wa[k] - start[k])) for k in wa) > 1e-4  # steps 5-8 trained (lr 4/8 .. 1/8 of 2e-4)
