"""The shared config and CLI: flags come from the dataclass, bad values end in one clear line."""

import dataclasses
import subprocess
import sys

import pytest

from gan_common.cli import build_parser, parse_args
from gan_common.config import PRESET_SUMMARIES, PRESETS, Config, resume_config
from gan_common.errors import UserError


def parse(*argv):
    return parse_args(list(argv), "test", "test")


def test_every_field_is_a_flag_with_a_reason():
    parser = build_parser("test", "test")
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    for f in dataclasses.fields(Config):
        assert f.name in flags, f.name
        assert len(f.metadata["help"]) > 15, f"{f.name} needs a one-line reason"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_sets_its_flags_and_typed_flags_override_it(name):
    preset = PRESETS[name]
    assert len(PRESET_SUMMARIES[name]) > 20  # --help's line for it
    c, given = parse("--preset", name)
    assert {k: getattr(c, k) for k in preset} == preset and given == set(preset)
    # A preset changes something, but for `mlp`, which pins today's defaults by name (they may move on).
    assert name == "mlp" or any(getattr(Config, k) != v for k, v in preset.items()), "a preset must change something"
    assert name != "mlp" or Config.from_preset("mlp") == dataclasses.replace(Config(), preset="mlp")
    c, _ = parse("--preset", name, "--seed", "3", "--beta1", "0.25")
    assert (c.seed, c.beta1) == (3, 0.25)
    # Resuming a preset run with the same --preset changes nothing it computes: no refusal.
    saved, _ = parse("--preset", name)
    again, given = parse("--preset", name, "--steps", "10")
    assert resume_config(saved, again, given).arch == saved.arch
    with pytest.raises(UserError, match="--preset"):
        parse("--preset", "no-such-preset")


def test_defaults_are_the_measured_recipe():
    """No flags: the recipe benchmarks/QUALITY.md measured (the seed's MLP with lazy R1, beta1 0.5, an EMA of G
    with its warm-up, at constant learning rates); --preset best's changes from them."""
    c, given = parse()
    assert given == set() and c.preset == ""
    assert (c.arch, c.latent_dim, c.g_hidden_sizes, c.d_hidden_sizes, c.leaky_slope) == (
        "mlp", 100, (256, 512), (512, 256), 0.2)
    assert (c.loss, c.g_loss, c.lr, c.beta1, c.beta2, c.adam_eps, c.batch_size) == (
        "gan", "non_saturating", 2e-4, 0.5, 0.999, 1e-8, 64)
    assert (c.r1_weight, c.r1_every, c.ema_decay, c.ema_rampup, c.lr_decay_steps, c.augment) == (
        5.0, 4, 0.999, True, 0, "")
    assert (c.g_channels, c.d_channels, c.d_norm, c.dataset) == (64, 64, "spectral", "mnist")  # --arch dcgan's
    assert c.total_steps(60000) == round(c.epochs * 937)  # epochs count whole batches only: 60000 // 64 = 937
    assert c.with_run_length(5000) == c  # no decay: nothing to settle
    best, _ = parse("--preset", "best")  # -1: the decay ends at the run's last step
    assert best.with_run_length(5000).lr_decay_steps == 5000
    # best: the default's recipe with D twice as wide, 60 epochs (benchmarks/QUALITY.md)
    assert (best.d_hidden_sizes, best.g_hidden_sizes, best.total_steps(60000)) == ((1024, 512), (256, 512), 60 * 937)
    assert dataclasses.replace(best, d_hidden="512,256", epochs=c.epochs, lr_decay_steps=0, preset="") == c


def test_the_tutorial_preset_is_the_seed_spec():
    """--preset tutorial: the seed tutorial's GAN exactly, whatever the defaults become."""
    c, _ = parse("--preset", "tutorial")
    assert (c.arch, c.latent_dim, c.g_hidden_sizes, c.d_hidden_sizes, c.leaky_slope) == (
        "mlp", 100, (256, 512), (512, 256), 0.2)
    assert (c.lr, c.g_lr, c.d_lr, c.beta1, c.beta2, c.adam_eps, c.batch_size) == (2e-4, 0, 0, 0.9, 0.999, 1e-8, 64)
    assert (c.loss, c.g_loss, c.n_critic, c.r1_weight, c.r1_every, c.conditional) == (
        "gan", "non_saturating", 1, 0.0, 1, False)
    assert (c.ema_decay, c.lr_decay_steps, c.augment, c.precision) == (0.0, 0, "", "float32")
    assert c.total_steps(60000) == 25 * 937
    assert Config.tutorial() == dataclasses.replace(c, preset="")


def test_flags_parse_into_the_dataclass():
    c, given = parse("--steps", "600", "--g-loss", "minimax", "--beta1", "0.5", "--batch-size", "128")
    assert (c.steps, c.g_loss, c.beta1, c.batch_size) == (600, "minimax", 0.5, 128)
    assert given == {"steps", "g_loss", "beta1", "batch_size"}
    assert c.total_steps(60000) == 600


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--batch-size", "-3"], "--batch-size must be a positive integer"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--lr=-1e-3"], "--lr must be > 0"),
        (["--beta1", "1.0"], "--beta1 must be in [0, 1)"),
        (["--beta2", "-0.1"], "--beta2 must be in [0, 1)"),
        (["--ema-decay", "1.0"], "--ema-decay must be in [0, 1)"),
        (["--ema-decay=-0.5"], "--ema-decay must be in [0, 1)"),
        (["--dataset", "cifar100"], "invalid choice: 'cifar100'"),
        (["--g-loss", "wasserstein"], "invalid choice: 'wasserstein'"),
        (["--steps", "-5"], "--steps must be >= 0"),
        (["--steps", "ten"], "invalid int value"),
        (["--g-hidden", "256,x"], "--g-hidden"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--precision", "fp8"], "invalid choice: 'fp8'"),
        (["--devices", "-1"], "--devices and --num-processes must be >= 0"),
        (["--num-processes", "2", "--process-id", "2"], "--process-id 2 must be below --num-processes 2"),
    ],
)
def test_bad_flags_raise_one_clear_error(argv, fragment):
    with pytest.raises(UserError, match=None) as e:
        parse(*argv)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_eval_every_is_accepted_for_every_dataset():
    # mnist and fashion_mnist are scored with their classifiers, the others with random features
    # (docs/evaluation.md, "Data without a shipped classifier").
    for dataset in ("mnist", "fashion_mnist", "kmnist", "cifar10"):
        c, _ = parse("--dataset", dataset, "--eval-every", "100")
        assert (c.dataset, c.eval_every) == (dataset, 100)


def test_resume_keeps_the_saved_spec_and_takes_only_length_and_interval_overrides():
    saved = Config.tutorial(steps=400, lr=1e-3, out_dir="a")
    current, given = parse("--steps", "600", "--log-every", "50", "--out-dir", "a", "--resume")
    c = resume_config(saved, current, given)
    assert (c.steps, c.log_every, c.lr, c.resume) == (600, 50, 1e-3, True)
    current, given = parse("--lr", "5e-4", "--resume")
    with pytest.raises(UserError, match="--resume cannot change --lr"):
        resume_config(saved, current, given)


def test_cli_help_explains_every_flag_and_bad_flag_exits_2_without_traceback():
    out = subprocess.run([sys.executable, "-m", "gan_jax.train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in out.stdout
    bad = subprocess.run([sys.executable, "-m", "gan_jax.train", "--lr", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --lr must be > 0, got -1.0"


def test_gan_common_imports_neither_framework():
    code = (
        "import sys, gan_common, gan_common.config, gan_common.datasets, gan_common.outputs, gan_common.cli, "
        "gan_common.loop, gan_common.weights, gan_common.sampling, gan_common.c2st, gan_common.evaluation\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('gan_common.metrics'): import gan_common.metrics\n"
        "bad = [m for m in ('jax', 'torch', 'flax', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loss_flags_parse_and_default_to_the_seed_game():
    c, _ = parse()
    assert (c.loss, c.n_critic, c.gp_weight, c.r1_weight) == ("gan", 1, 10.0, 5.0)
    c, _ = parse("--loss", "wgan_gp", "--n-critic", "5", "--gp-weight", "5", "--epochs", "25", "--r1-weight", "0")
    assert (c.loss, c.n_critic, c.gp_weight, c.images_per_step) == ("wgan_gp", 5, 5.0, 320)
    assert c.total_steps(60000) == 25 * 187  # an epoch is one pass of D: 60000 // (64 * 5) steps
    c, _ = parse("--r1-weight", "10", "--g-loss", "minimax")
    assert (c.loss, c.r1_weight, c.g_loss) == ("gan", 10.0, "minimax")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--loss", "wasserstein"], "invalid choice: 'wasserstein'"),
        (["--n-critic", "0"], "--n-critic must be a positive integer"),
        (["--loss", "wgan_gp"], "--loss wgan_gp has its own gradient penalty; R1 "),
        (["--r1-weight=-1"], "--r1-weight must be >= 0"),
        (["--loss", "hinge", "--gp-weight", "5"], "--gp-weight applies only to --loss wgan_gp"),
        (["--loss", "wgan_gp", "--gp-weight", "0"], "--gp-weight must be > 0"),
        (["--loss", "lsgan", "--g-loss", "minimax"], "--g-loss minimax applies only to --loss gan"),
    ],
)
def test_loss_flags_reject_combinations_they_do_not_apply_to(argv, fragment):
    with pytest.raises(UserError) as e:
        parse(*argv)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_resume_cannot_change_the_loss():
    saved = Config.tutorial(steps=400, out_dir="a")
    current, given = parse("--loss", "hinge", "--resume")
    with pytest.raises(UserError, match="--resume cannot change --loss"):
        resume_config(saved, current, given)


def test_resume_takes_this_launchs_layout_but_not_a_new_precision():
    """Devices and multi-host flags describe where a run executes, so a resume may change them
    (given or not: process 1 must not inherit process 0's saved id); --precision is what it computes."""
    saved = Config.tutorial(devices=4, num_processes=2, process_id=0, coordinator_address="h0:1", out_dir="a")
    current, given = parse("--resume", "--out-dir", "a", "--devices", "2")
    c = resume_config(saved, current, given)
    assert (c.devices, c.num_processes, c.process_id, c.coordinator_address) == (2, 1, -1, "")
    current, given = parse("--resume", "--out-dir", "a", "--precision", "bf16")
    with pytest.raises(UserError, match="--resume cannot change --precision"):
        resume_config(saved, current, given)


def test_dcgan_takes_conditional_and_spectral_norm_and_spectral_norm_takes_the_penalties():
    """A projection discriminator conditions the DCGAN; spectral norm has no batch statistics, so the per-sample
    penalties combine with it (BatchNorm still refuses them)."""
    assert parse("--arch", "dcgan", "--conditional")[0].conditional
    for penalty in (("--loss", "wgan_gp", "--r1-weight", "0"), ("--r1-weight", "1")):
        config = parse("--arch", "dcgan", "--d-norm", "spectral", "--conditional", *penalty)[0]
        assert config.d_norm == "spectral" and not config.d_batch_norm
        with pytest.raises(UserError, match="use --d-norm spectral or none"):
            parse("--arch", "dcgan", "--d-norm", "batch", *penalty)
