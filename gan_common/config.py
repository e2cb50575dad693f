"""The one spec both backends train: a frozen dataclass, and the CLI generated from it.

Every field carries a one-line reason (its `help`); `build_parser` turns the fields into
flags, so `gan_jax.train` and `gan_torch.train` accept exactly the same command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from gan_common.classifier_spec import EVAL_DATASETS
from gan_common.errors import UserError

DATASETS = ("mnist", "fashion_mnist", "kmnist", "cifar10")
DATA_SOURCES = ("auto", "package", "idx", "tfds")
G_LOSSES = ("non_saturating", "minimax")
PRECISIONS = ("float32", "bf16")
# How a run is laid out on hardware, not what it computes: a resumed run takes these from
# its own command line (a multi-host job may come back on other hosts or device counts).
LAUNCH_FIELDS = frozenset({"devices", "coordinator_address", "num_processes", "process_id"})
LOSSES = ("gan", "hinge", "lsgan", "wgan_gp")
ARCHS = ("mlp", "dcgan")
D_NORMS = ("batch", "spectral", "none")
# (H, W, C) of each dataset's images: the models are built for the run's shape.
IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "kmnist": (28, 28, 1), "cifar10": (32, 32, 3)}
NUM_CLASSES = 10  # every dataset here (MNIST, Fashion-MNIST, KMNIST) has ten classes, labelled 0..9
LABEL_EMBED_DIM = 10  # --conditional: a learned vector per class; 10-d can keep 10 classes apart, small next to z's 100


def _field(default: Any, help: str, **extra: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass(frozen=True)
class Config:
    # --- the model ---
    arch: str = _field(
        "mlp",
        "the nets: mlp (Goodfellow et al. 2014, as in the seed tutorial) or dcgan (Radford et al. 2016: "
        "transposed-convolution G with BatchNorm, strided-convolution D)",
        choices=ARCHS,
    )
    # The MLP (--arch mlp).
    latent_dim: int = _field(100, "size of the noise vector z ~ N(0, I) fed to G (the seed's 100)")
    g_hidden: str = _field("256,512", "G's hidden widths, comma separated (the seed's 256,512)")
    d_hidden: str = _field("512,256", "D's hidden widths, comma separated (the seed's 512,256)")
    # The DCGAN (--arch dcgan): G projects z to (H/4, W/4, 2 g_channels), then two stride-2 transposed convolutions.
    g_channels: int = _field(64, "--arch dcgan: channels of G's last hidden layer; the one before has twice as many")
    d_channels: int = _field(64, "--arch dcgan: channels of D's first convolution; the second has twice as many")
    d_norm: str = _field(
        "batch",
        "--arch dcgan: D's normalisation: batch (BatchNorm after its second convolution, the DCGAN paper's "
        "choice), spectral (every weight divided by its largest singular value, Miyato et al. 2018; no batch "
        "statistics, so it takes --loss wgan_gp and --r1-weight) or none",
        choices=D_NORMS,
    )
    leaky_slope: float = _field(0.2, "negative slope of D's LeakyReLU (the seed's 0.2)")
    conditional: bool = _field(
        False, "class-conditional G and D (Mirza & Osindero 2014): a learned label embedding is concatenated to z "
        "and, for --arch mlp, to D's flattened image (--arch dcgan: a projection discriminator, Miyato & Koyama "
        "2018), and `sample --label K` draws class K (off: the unconditional GAN)"
    )
    # --- the game ---
    g_loss: str = _field(
        "non_saturating",
        "G's loss: non_saturating -log D(G(z)) (strong early gradients) or minimax log(1 - D(G(z))) "
        "(the original formula)",
        choices=G_LOSSES,
    )
    loss: str = _field(
        "gan",
        "the game's losses on D's logits: gan (log-loss; G's form from --g-loss), hinge (SNGAN's), "
        "lsgan (least squares, targets 1 real / 0 fake) or wgan_gp (Wasserstein critic with gradient penalty)",
        choices=LOSSES,
    )
    n_critic: int = _field(1, "D updates per G update, each on its own real batch and noise (WGAN-GP uses 5)")
    gp_weight: float = _field(
        10.0, "WGAN-GP's lambda: weight of mean((|grad D(x_hat)| - 1)^2) on real/fake interpolates (--loss wgan_gp)"
    )
    r1_weight: float = _field(
        0.0, "R1's gamma: weight/2 * mean(|grad D(x)|^2) on real images, added to D's loss (--loss gan; 0: off)"
    )
    # --- the optimisers: two independent Adams, the seed's settings ---
    lr: float = _field(2e-4, "Adam learning rate of both G and D (the seed's 2e-4)")
    beta1: float = _field(0.9, "Adam beta1 of both nets (the seed's 0.9; DCGAN recommends 0.5)")
    beta2: float = _field(0.999, "Adam beta2 of both nets (PyTorch's default 0.999)")
    adam_eps: float = _field(1e-8, "Adam epsilon, added to sqrt(v) as PyTorch and optax both do")
    batch_size: int = _field(64, "images per step for D's real half; G and D's fake half draw as many noise vectors")
    ema_decay: float = _field(
        0.0, "decay of an exponential moving average of G's weights, which then draws the samples and evaluations "
        "(smoother than G's last step; 0: off; typical 0.999)"
    )
    # --- the run ---
    steps: int = _field(0, "total training steps of the run, counted from step 0 (0: use --epochs)")
    epochs: float = _field(
        25.0, "total length in passes over the training set when --steps is 0 (25 epochs: about 23k steps at batch 64)"
    )
    seed: int = _field(0, "run seed: weights, noise and the data order all derive from it")
    dataset: str = _field(
        "mnist", "training set: 28x28 grey images, or cifar10's 32x32 colour ones (from tensorflow-datasets only)",
        choices=DATASETS)
    data_source: str = _field(
        "auto",
        "where images come from: package (MNIST shipped in gan_common), idx (four IDX files in --data-dir), "
        "tfds (tensorflow-datasets), auto (package for mnist, idx if found, else tfds)",
        choices=DATA_SOURCES,
    )
    data_dir: str = _field("", "folder of the four IDX files (idx) or tfds data_dir (tfds); empty: the default")
    out_dir: str = _field("runs/mnist", "where config.json, metrics.jsonl, samples/, losses.png and checkpoints/ go")
    log_every: int = _field(200, "steps between metrics.jsonl lines (losses are averaged over the interval)")
    sample_every: int = _field(2000, "steps between sample grids, drawn from one fixed noise batch")
    checkpoint_every: int = _field(5000, "steps between checkpoints (one is also written at the end and on Ctrl-C)")
    eval_every: int = _field(
        0, "steps between FID and class-coverage evaluations logged to metrics.jsonl, with the dataset's classifier "
        "(0: off; mnist and fashion_mnist only)"
    )
    eval_samples: int = _field(2000, "generated images per --eval-every evaluation (more: less noisy, slower)")
    eval_c2st: bool = _field(
        False, "also log a classifier two-sample test (c2st_* keys) at each --eval-every; off by default because it "
        "trains a fresh convnet each time (2,000 images: 3-6 s in JAX on a 2-core CPU, against FID's ~0.2 s)"
    )
    steps_per_call: int = _field(
        100, "training steps per call of the backend between host wake-ups (gan_jax: one compiled lax.scan of "
        "this many steps; gan_torch: that many eager steps); logging, grids and checkpoints happen between calls"
    )
    resume: bool = _field(False, "continue the run in --out-dir from its newest checkpoint")
    # --- the hardware: numerics and layout ---
    precision: str = _field(
        "float32",
        "compute dtype: float32, or bf16 (bfloat16 matmuls and activations; parameters, optimiser state "
        "and losses stay float32)",
        choices=PRECISIONS,
    )
    devices: int = _field(
        0,
        "devices the global batch is split over, data parallel (0: every device JAX sees; on a CPU, N > 1 "
        "simulates N devices). gan_torch: launch with torchrun instead",
    )
    coordinator_address: str = _field(
        "", "multi-host: HOST:PORT of process 0's coordinator (empty: $JAX_COORDINATOR_ADDRESS or the cluster's)"
    )
    num_processes: int = _field(
        1, "multi-host: processes in the job (1: single process; 0: detect from SLURM / Open MPI or $JAX_NUM_PROCESSES)"
    )
    process_id: int = _field(-1, "multi-host: this process's index, 0..N-1 (-1: $JAX_PROCESS_ID or the cluster's)")

    # ---------------------------------------------------------------- derived views
    @property
    def g_hidden_sizes(self) -> tuple[int, ...]:
        return _widths(self.g_hidden, "--g-hidden")

    @property
    def d_hidden_sizes(self) -> tuple[int, ...]:
        return _widths(self.d_hidden, "--d-hidden")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the dataset's images: what G draws and D reads."""
        return IMAGE_SHAPES[self.dataset]

    @property
    def d_batch_norm(self) -> bool:
        """Whether D normalises over the batch: then real and fake batches go through D separately."""
        return self.arch == "dcgan" and self.d_norm == "batch"

    @property
    def images_per_step(self) -> int:
        """Real images one step consumes: a batch for each of its n_critic D updates."""
        return self.batch_size * self.n_critic

    def steps_per_epoch(self, num_train: int) -> int:
        """Steps in one pass over the training set; the final partial step's images are dropped."""
        return num_train // self.images_per_step

    def total_steps(self, num_train: int) -> int:
        """The run's length in steps: --steps, else --epochs full (partial-batch-free) epochs."""
        if self.steps > 0:
            return self.steps
        return max(1, round(self.epochs * self.steps_per_epoch(num_train)))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str) -> Config:
        try:
            with open(path) as f:
                raw = json.load(f)
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in names})
        except (OSError, ValueError, TypeError) as e:
            raise UserError(
                f"cannot read run config {path}: {e}; expected a config.json written by a training run"
            ) from None


def _widths(text: str, flag: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        raise UserError(f"{flag} {text!r} is not a list of positive widths; expected e.g. 256,512")
    return sizes


# Fields a resumed run may change: they set how long and how chattily it runs, not what it computes.
RESUMABLE_OVERRIDES = frozenset(
    {"steps", "epochs", "log_every", "sample_every", "checkpoint_every", "eval_every", "eval_samples", "eval_c2st",
     "steps_per_call", "resume", "data_dir"}
) | LAUNCH_FIELDS


def validate(config: Config) -> Config:
    """Reject values no run can use, with one message naming the flag and what it accepts."""
    c = config
    positive_ints = ("batch_size", "latent_dim", "log_every", "sample_every", "checkpoint_every", "steps_per_call",
                     "n_critic", "g_channels", "d_channels")
    for name in positive_ints:
        if getattr(c, name) <= 0:
            raise UserError(f"--{flag_name(name)} must be a positive integer, got {getattr(c, name)}")
    if c.eval_every < 0 or c.eval_samples < 10:
        raise UserError(f"--eval-every must be >= 0 and --eval-samples >= 10, got {c.eval_every}, {c.eval_samples}")
    if c.eval_c2st and not c.eval_every:
        raise UserError("--eval-c2st adds to the --eval-every evaluations; give --eval-every N as well")
    if c.eval_every and c.dataset not in EVAL_DATASETS:
        raise UserError(f"--eval-every scores samples with a classifier of their dataset, shipped only for "
                        f"{' and '.join(EVAL_DATASETS)}; drop it for --dataset {c.dataset}")
    if c.devices < 0 or c.num_processes < 0 or c.process_id < -1:
        raise UserError(f"--devices and --num-processes must be >= 0 and --process-id >= -1, got "
                        f"{c.devices}, {c.num_processes}, {c.process_id}")
    if c.num_processes > 0 and c.process_id >= c.num_processes:
        raise UserError(f"--process-id {c.process_id} must be below --num-processes {c.num_processes}")
    if c.steps < 0:
        raise UserError(f"--steps must be >= 0 (0 means use --epochs), got {c.steps}")
    if c.steps == 0 and not c.epochs > 0:
        raise UserError(f"--epochs must be > 0 when --steps is 0, got {c.epochs}")
    if not c.lr > 0:
        raise UserError(f"--lr must be > 0, got {c.lr}")
    if not c.adam_eps > 0:
        raise UserError(f"--adam-eps must be > 0, got {c.adam_eps}")
    for name in ("beta1", "beta2", "ema_decay"):
        if not 0.0 <= getattr(c, name) < 1.0:
            raise UserError(f"--{flag_name(name)} must be in [0, 1), got {getattr(c, name)}")
    if not c.leaky_slope >= 0:
        raise UserError(f"--leaky-slope must be >= 0, got {c.leaky_slope}")
    _validate_losses(c)
    c.g_hidden_sizes, c.d_hidden_sizes  # noqa: B018 -- parse them now so a bad list fails before training
    for f in dataclasses.fields(c):
        choices = f.metadata.get("choices")
        if choices and getattr(c, f.name) not in choices:
            raise UserError(f"--{flag_name(f.name)} {getattr(c, f.name)!r} is not one of {', '.join(choices)}")
    _validate_arch(c)
    return c


def _validate_losses(c: Config) -> None:
    """Each loss flag applies to one --loss: a value set for another loss would be silently ignored."""
    if not c.gp_weight > 0:
        raise UserError(f"--gp-weight must be > 0, got {c.gp_weight}")
    if not c.r1_weight >= 0:
        raise UserError(f"--r1-weight must be >= 0 (0: off), got {c.r1_weight}")
    if c.loss != "wgan_gp" and c.gp_weight != Config.gp_weight:
        raise UserError(f"--gp-weight applies only to --loss wgan_gp, got --loss {c.loss}; drop it or use wgan_gp")
    if c.loss != "gan" and c.r1_weight:
        raise UserError(f"--r1-weight applies only to --loss gan (the log-loss), got --loss {c.loss}; "
                        "drop it or use --loss gan")
    if c.loss != "gan" and c.g_loss != Config.g_loss:
        raise UserError(f"--g-loss {c.g_loss} applies only to --loss gan; --loss {c.loss} has its own G loss")


def _validate_arch(c: Config) -> None:
    """Each model flag applies to one --arch; and the DCGAN's BatchNorm rules out per-sample penalties."""
    own = {"mlp": ("g_hidden", "d_hidden"), "dcgan": ("g_channels", "d_channels", "d_norm")}
    for arch, names in own.items():
        for name in names:
            if c.arch != arch and getattr(c, name) != getattr(Config, name):
                raise UserError(f"--{flag_name(name)} applies only to --arch {arch}, got --arch {c.arch}; drop it")
    if c.arch != "dcgan":
        return
    height, width, _ = c.image_shape
    if height % 4 or width % 4:
        raise UserError(f"--arch dcgan upsamples twice by 2: --dataset {c.dataset}'s {height}x{width} images "
                        f"must have sides divisible by 4")
    if c.d_batch_norm and (c.loss == "wgan_gp" or c.r1_weight):
        raise UserError("--loss wgan_gp and --r1-weight penalise each sample's input gradient, which D's BatchNorm "
                        "couples across the batch; add --d-norm spectral or none")


def flag_name(name: str) -> str:
    return name.replace("_", "-")


# Named bundles of flags (--preset NAME): each a configuration benchmarks/QUALITY.md measured, so a
# user can ask for it by name. Flags typed next to --preset override its values.
PRESETS: dict[str, dict[str, Any]] = {
    # The best setting of benchmarks/QUALITY_DCGAN.md on MNIST and Fashion-MNIST alike: the DCGAN with
    # Radford et al.'s beta1 and the non-saturating loss (the default), without an EMA of G.
    "dcgan": {"arch": "dcgan", "beta1": 0.5},
}


def resume_config(saved: Config, current: Config, given: set[str]) -> Config:
    """The config of a resumed run: the saved one, with the overrides a resume may make."""
    changed = sorted(
        n for n in given if n not in RESUMABLE_OVERRIDES and n != "out_dir" and getattr(saved, n) != getattr(current, n)
    )
    if changed:
        flags = ", ".join("--" + flag_name(n) for n in changed)
        raise UserError(
            f"--resume cannot change {flags}: they define what the run computes; "
            f"resume may change only {', '.join('--' + flag_name(n) for n in sorted(RESUMABLE_OVERRIDES - {'resume'}))}"
        )
    overrides = {n: getattr(current, n) for n in given if n in RESUMABLE_OVERRIDES - {"resume"}}
    overrides.update({n: getattr(current, n) for n in LAUNCH_FIELDS})  # this launch's layout, given or not
    if "steps" in given and "epochs" not in given:
        overrides["epochs"] = saved.epochs
    out = dataclasses.replace(saved, out_dir=current.out_dir, **overrides, resume=True)
    return validate(out)


def out_dir_is_writable(path: str) -> None:
    """Fail now, not after an hour of training, if the output folder cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_probe")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"--out-dir {path!r} is not writable ({e.strerror or e}); choose a folder you can write to"
        ) from None
