"""The one spec both backends train: a frozen dataclass, and the CLI generated from it.

Every field carries a one-line reason (its `help`); `build_parser` turns the fields into
flags, so `gan_jax.train` and `gan_torch.train` accept exactly the same command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

from gan_common.augment import policy as augment_policy
from gan_common.errors import UserError

DATASETS = ("mnist", "fashion_mnist", "kmnist", "cifar10")
DATA_SOURCES = ("auto", "package", "idx", "tfds")
G_LOSSES = ("non_saturating", "minimax")
PRECISIONS = ("float32", "bf16")
CONV_IMPLS = ("auto", "xla", "custom")
# How a run is laid out on hardware, not what it computes: a resumed run takes these from
# its own command line (a multi-host job may come back on other hosts or device counts).
LAUNCH_FIELDS = frozenset({"devices", "coordinator_address", "num_processes", "process_id"})
LOSSES = ("gan", "hinge", "lsgan", "wgan_gp")
ARCHS = ("mlp", "dcgan")
D_NORMS = ("batch", "spectral", "none")
# (H, W, C) of each dataset's images: the models are built for the run's shape.
IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "kmnist": (28, 28, 1), "cifar10": (32, 32, 3)}
DATA_PREFIXES = ("folder:", "npz:")  # --dataset folder:PATH / npz:PATH: the user's own images (gan_common.datasets)
DCGAN_STAGES = {28: 2, 32: 2, 64: 3}  # --arch dcgan: image side -> stride-2 (de)convolutions; 64 adds one
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
        "spectral",
        "--arch dcgan: D's normalisation: batch (BatchNorm after its second convolution, the DCGAN paper's "
        "choice), spectral (every weight divided by its largest singular value, Miyato et al. 2018; no batch "
        "statistics, so it takes --loss wgan_gp and the default R1) or none",
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
        5.0, "R1's gamma (Mescheder et al. 2018): weight/2 * mean(|grad D(x)|^2) on real images, added to D's loss "
        "(5: the default recipe's, which keeps the MLP from collapsing to a few classes; 0: off)"
    )
    r1_every: int = _field(
        4, "lazy R1 (Karras et al. 2020): R1 on every k-th D update only, its weight times k, so the double "
        "backward pass runs 1/k as often (1: every update)"
    )
    augment: str = _field(
        "", "DiffAugment (Zhao et al. 2020): comma-separated kinds among color, translation (1/8 of the side) and "
        "cutout (half the side), applied to every image D sees, real and fake, G learning through them (empty: off)"
    )
    # --- the optimisers: two independent Adams, the seed's settings ---
    lr: float = _field(2e-4, "Adam learning rate of G and D, unless --g-lr / --d-lr set their own (the seed's 2e-4)")
    g_lr: float = _field(0.0, "G's own Adam learning rate (0: --lr); with --d-lr, the two time-scale rule of Heusel "
                         "et al. 2017")
    d_lr: float = _field(0.0, "D's own Adam learning rate (0: --lr); TTUR gives D the larger one, e.g. 4e-4 with "
                         "--g-lr 1e-4")
    lr_decay_steps: int = _field(
        0, "both learning rates fall linearly to 0 at this step, lr (T - t) / T at step t (-1: at the run's last "
        "step, --preset best's; 0: constant, the default's: a decay over 30 epochs cost FID in "
        "benchmarks/QUALITY.md). config.json records the number, so a resumed run keeps its schedule"
    )
    beta1: float = _field(0.5, "Adam beta1 of both nets (0.5: Radford et al.'s DCGAN setting; the seed's 0.9)")
    beta2: float = _field(0.999, "Adam beta2 of both nets (PyTorch's default 0.999)")
    adam_eps: float = _field(1e-8, "Adam epsilon, added to sqrt(v) as PyTorch and optax both do")
    batch_size: int = _field(64, "images per step for D's real half; G and D's fake half draw as many noise vectors")
    ema_decay: float = _field(
        0.999, "decay of an exponential moving average of G's weights, which then draws the samples and evaluations "
        "(smoother than G's last step; 0: off; typical 0.999)"
    )
    ema_rampup: bool = _field(
        True, "warm the EMA up: its decay at step t is min(--ema-decay, (1 + t) / (10 + t)) (TensorFlow's "
        "ExponentialMovingAverage rule), so G's first weights are forgotten within a short run (--no-ema-rampup: "
        "decay --ema-decay from step 0; no effect with --ema-decay 0)"
    )
    # --- the run ---
    steps: int = _field(0, "total training steps of the run, counted from step 0 (0: use --epochs)")
    epochs: float = _field(
        30.0, "total length in passes over the training set when --steps is 0 (30 epochs: 28,110 steps at batch 64, "
        "about 3.5 minutes of the default recipe on a 2-core CPU)"
    )
    seed: int = _field(0, "run seed: weights, noise and the data order all derive from it")
    dataset: str = _field(
        "mnist", "training set: mnist, fashion_mnist, kmnist (28x28 grey images), cifar10 (32x32 colour, from "
        "tensorflow-datasets only), folder:PATH (PNG/JPEG/WebP images, one subfolder per class if any) or npz:PATH "
        "(uint8 `images` (N, H, W[, C]), optional `labels`)")
    image_size: int = _field(
        0, "folder:/npz: data: side of the square images the run trains on, resized and centre-cropped (0: the "
        "first image's side, rounded to 28, 32 or 64 for --arch dcgan); config.json records the size used")
    channels: int = _field(
        0, "folder:/npz: data: 1 (grey) or 3 (RGB) (0: the first image's, grey if it is grey); config.json records "
        "the channels used")
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
        0, "steps between evaluations logged to metrics.jsonl (0: off): FID and class coverage with the dataset's "
        "classifier for mnist and fashion_mnist, KID on random-convnet features (kid_random) for any other dataset"
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
    preset: str = _field(
        "", "the --preset the run started from, recorded in config.json ('': none). A record only: the preset's "
        "values are in the other fields, where Config.from_preset puts them"
    )
    tensorboard: bool = _field(
        True, "write the logged scalars, sample grids and evaluations as TensorBoard events in RUN/tensorboard "
        "(tensorboardX, no TensorFlow needed; --no-tensorboard: off)"
    )
    wandb: str = _field("", "also log to this Weights & Biases project (needs `pip install wandb`; empty: off)")
    # --- the hardware: numerics and layout ---
    precision: str = _field(
        "float32",
        "compute dtype: float32, or bf16 (bfloat16 matmuls and activations; parameters, optimiser state "
        "and losses stay float32)",
        choices=PRECISIONS,
    )
    conv_impl: str = _field(
        "auto",
        "gan_jax, --arch dcgan: how its convolutions run: xla (lax's own with autodiff; cuDNN on GPUs), custom "
        "(kernel gradients by hand as matmuls: XLA:CPU's own are up to 100x slower) or auto (custom on CPUs, xla "
        "elsewhere); the same sums up to float rounding",
        choices=CONV_IMPLS,
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
        """(H, W, C) of the dataset's images: what G draws and D reads. folder:/npz: data's is settled when the run
        reads it (gan_common.loop.run_training), then recorded as --image-size and --channels."""
        if self.dataset in IMAGE_SHAPES:
            return IMAGE_SHAPES[self.dataset]
        if not (self.image_size and self.channels):
            raise UserError(f"--dataset {self.dataset}: the image shape is known only once the data is read")
        return self.image_size, self.image_size, self.channels

    @property
    def dcgan_stages(self) -> int:
        """--arch dcgan: the stride-2 (de)convolutions between the image and the (side / 2^n)^2 starting maps."""
        return DCGAN_STAGES[self.image_shape[0]]

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

    @classmethod
    def from_preset(cls, name: str, **fields: Any) -> Config:
        """The named preset (PRESETS) with `fields` overriding its values: the API's `--preset NAME --flag ...`."""
        if name not in PRESETS:
            raise UserError(f"--preset {name!r} is not one of {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **fields, "preset": name})

    @classmethod
    def tutorial(cls, **fields: Any) -> Config:
        """The seed tutorial's GAN (PRESETS["tutorial"]) with `fields` over it, no preset recorded: the fixed spec
        the parity tests and benchmarks build on, which does not move when the default recipe does. With
        arch="dcgan", Radford et al.'s nets (DCGAN_NETS: 64 channels, BatchNorm in D) at the seed's optimiser."""
        nets = DCGAN_NETS if fields.get("arch") == "dcgan" else {}
        return cls(**{**PRESETS["tutorial"], **nets, **fields})

    def with_run_length(self, total_steps: int) -> Config:
        """--lr-decay-steps -1 made the number it stands for, the run's `total_steps`: what config.json records,
        so a resumed or extended run keeps the schedule it started with. The step builders take only numbers."""
        if self.lr_decay_steps != -1:
            return self
        return dataclasses.replace(self, lr_decay_steps=total_steps)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str) -> Config:
        """A run's config.json, checked as the command line is (`validate`); errors name the file and field."""
        try:
            return validate(cls(**json_fields(path)))
        except UserError as e:
            raise UserError(f"run config {path}: {e}") from None


# The JSON types each field type accepts (an int is a float too; true is not an int here), and their JSON names.
_JSON_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_JSON_NAMES = {"int": "integer", "float": "number", "str": "string", "bool": "true or false"}


def json_fields(path: str) -> dict[str, Any]:
    """The Config fields a JSON file sets, type-checked (unknown keys, such as a newer version's, are skipped);
    a UserError, which the caller prefixes with the file, for an unreadable file, a file that is not one JSON
    object, or a value of the wrong type."""
    try:
        with open(path, "rb") as f:
            text = f.read()  # bytes: json.loads decodes them, and bad UTF-8 is "not JSON" like any other
    except OSError as e:
        raise UserError(f"cannot be read ({e.strerror or e})") from None
    return typed_fields(text)


def typed_fields(text: str | bytes) -> dict[str, Any]:
    """json_fields of a JSON text (config.json's, or a neutral weight file's metadata)."""
    try:
        raw = json.loads(text)
    except ValueError as e:  # not JSON, or not UTF-8
        raise UserError(f"is not JSON ({e}); expected the config a training run writes") from None
    if not isinstance(raw, dict):
        raise UserError(f"holds {json.dumps(raw)[:40]}, not a JSON object of flag values")
    values = {}
    for f in dataclasses.fields(Config):
        if f.name in raw:
            value = raw[f.name]
            if isinstance(value, bool) != (f.type == "bool") or not isinstance(value, _JSON_TYPES[f.type]):
                raise UserError(f"field {f.name!r} is {json.dumps(value)[:40]}, expected a JSON {_JSON_NAMES[f.type]}")
            values[f.name] = float(value) if f.type == "float" else value
    return values


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
     "steps_per_call", "resume", "data_dir", "tensorboard", "wandb",
     # the same sums in another order (float32 rounding), as on another device: `auto` changes with the platform
     "conv_impl"}
) | LAUNCH_FIELDS


def validate(config: Config) -> Config:
    """Reject values no run can use, with one message naming the flag and what it accepts."""
    c = config
    for f in dataclasses.fields(c):  # inf passes `> 0` and `>= 0` checks, and NaN fails every comparison quietly
        if f.type == "float" and not math.isfinite(getattr(c, f.name)):
            raise UserError(f"--{flag_name(f.name)} must be a finite number, got {getattr(c, f.name)}")
    positive_ints = ("batch_size", "latent_dim", "log_every", "sample_every", "checkpoint_every", "steps_per_call",
                     "n_critic", "g_channels", "d_channels", "r1_every")
    for name in positive_ints:
        if getattr(c, name) <= 0:
            raise UserError(f"--{flag_name(name)} must be a positive integer, got {getattr(c, name)}")
    if c.eval_every < 0 or c.eval_samples < 10:
        raise UserError(f"--eval-every must be >= 0 and --eval-samples >= 10, got {c.eval_every}, {c.eval_samples}")
    if c.eval_c2st and not c.eval_every:
        raise UserError("--eval-c2st adds to the --eval-every evaluations; give --eval-every N as well")
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
    for name in ("g_lr", "d_lr"):
        if getattr(c, name) < 0:
            raise UserError(f"--{flag_name(name)} must be >= 0 (0: --lr), got {getattr(c, name)}")
    if c.lr_decay_steps < -1:
        raise UserError(f"--lr-decay-steps must be >= -1 (-1: the run's length, 0: no decay), got {c.lr_decay_steps}")
    check_decay(c, c.steps)
    augment_policy(c.augment)
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
    _validate_data(c)
    _validate_arch(c)
    return c


def check_decay(c: Config, total_steps: int) -> None:
    """A linear decay that reaches lr 0 before the run's last step would train its last steps at lr 0."""
    if 0 < c.lr_decay_steps < total_steps and c.resume:
        raise UserError(f"--resume to {total_steps} steps: this run's learning rates reach 0 at step "
                        f"{c.lr_decay_steps} (its --lr-decay-steps), so it cannot train past it; start a new run "
                        f"from its config instead: --config {os.path.join(c.out_dir, 'config.json')} --steps "
                        f"{total_steps} --out-dir NEW")
    if 0 < c.lr_decay_steps < total_steps:
        raise UserError(f"--lr-decay-steps {c.lr_decay_steps} ends the decay before the run's {total_steps} steps: "
                        f"the last ones would train at lr 0; give --lr-decay-steps >= the run's steps, or -1 for "
                        f"the run's length (a resumed run keeps the number it started with)")


def _validate_data(c: Config) -> None:
    """--dataset is a named one or folder:PATH / npz:PATH; --image-size and --channels describe only the latter."""
    own = c.dataset.startswith(DATA_PREFIXES)
    if c.dataset not in DATASETS and not (own and c.dataset.split(":", 1)[1]):
        raise UserError(f"--dataset: invalid choice: {c.dataset!r}; expected one of {', '.join(DATASETS)}, "
                        f"folder:PATH or npz:PATH")
    if not own and (c.image_size or c.channels):
        raise UserError(f"--image-size and --channels apply only to --dataset folder:PATH or npz:PATH; --dataset "
                        f"{c.dataset} has {'x'.join(map(str, IMAGE_SHAPES[c.dataset]))} images; drop them")
    if c.image_size < 0 or c.channels not in (0, 1, 3):
        raise UserError(f"--image-size must be >= 0 (0: from the data) and --channels 1, 3 or 0 (from the data), "
                        f"got {c.image_size}, {c.channels}")


def _validate_losses(c: Config) -> None:
    """Each loss flag applies to one --loss: a value set for another loss would be silently ignored."""
    if not c.gp_weight > 0:
        raise UserError(f"--gp-weight must be > 0, got {c.gp_weight}")
    if not c.r1_weight >= 0:
        raise UserError(f"--r1-weight must be >= 0 (0: off), got {c.r1_weight}")
    if c.loss != "wgan_gp" and c.gp_weight != Config.gp_weight:
        raise UserError(f"--gp-weight applies only to --loss wgan_gp, got --loss {c.loss}; drop it or use wgan_gp")
    if c.loss == "wgan_gp" and c.r1_weight:
        raise UserError(f"--loss wgan_gp has its own gradient penalty; R1 (--r1-weight {c.r1_weight:g}, on by "
                        f"default) would add a second: pass --r1-weight 0")
    if c.loss != "gan" and c.g_loss != Config.g_loss:
        raise UserError(f"--g-loss {c.g_loss} applies only to --loss gan; --loss {c.loss} has its own G loss")


def _validate_arch(c: Config) -> None:
    """Each model flag applies to one --arch; and the DCGAN's BatchNorm rules out per-sample penalties."""
    own = {"mlp": ("g_hidden", "d_hidden"), "dcgan": ("g_channels", "d_channels", "d_norm", "conv_impl")}
    for arch, names in own.items():
        for name in names:
            if c.arch != arch and getattr(c, name) != getattr(Config, name):
                raise UserError(f"--{flag_name(name)} applies only to --arch {arch}, got --arch {c.arch}; drop it")
    if c.arch != "dcgan":
        return
    side = IMAGE_SHAPES[c.dataset][0] if c.dataset in IMAGE_SHAPES else c.image_size  # 0: not read yet
    if side and side not in DCGAN_STAGES:
        raise UserError(f"--arch dcgan builds for {', '.join(map(str, DCGAN_STAGES))}-pixel images, not {side}; "
                        f"pass --image-size {' or '.join(map(str, DCGAN_STAGES))}, or use --arch mlp")
    if c.d_batch_norm and (c.loss == "wgan_gp" or c.r1_weight):
        what = "--loss wgan_gp" if c.loss == "wgan_gp" else f"R1 (--r1-weight {c.r1_weight:g}, on by default)"
        fix = "" if c.loss == "wgan_gp" else ", or pass --r1-weight 0"
        raise UserError(f"{what} penalises each sample's input gradient, which D's BatchNorm (--d-norm batch) "
                        f"couples across the batch; use --d-norm spectral or none{fix}")


def flag_name(name: str) -> str:
    return name.replace("_", "-")


_FLAG = re.compile(r"--([a-z0-9]+(?:-[a-z0-9]+)*)")


def as_field_names(message: str, renames: dict[str, str] | None = None) -> str:
    """A UserError's message as the Python API says it: each `--flag` of a Config field becomes the field's
    name (`--lr must be > 0` -> `lr must be > 0`); `renames` maps other flags' names to the API's words
    ({"checkpoint": "path"}). The checks keep writing flags, so the CLI's messages stay as they are."""
    names = {flag_name(f.name): f.name for f in dataclasses.fields(Config)} | (renames or {})
    return _FLAG.sub(lambda m: names.get(m.group(1), m.group(0)), message)


# Named bundles of flags (--preset NAME): each a configuration benchmarks/QUALITY.md measured, so a
# user can ask for it by name. Flags typed next to --preset override its values.
MLP_RECIPE = {"arch": "mlp", "g_hidden": "256,512", "d_hidden": "512,256", "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,
              "batch_size": 64, "epochs": 30.0, "loss": "gan", "g_loss": "non_saturating", "r1_weight": 5.0,
              "r1_every": 4, "ema_decay": 0.999, "ema_rampup": True, "lr_decay_steps": 0, "augment": ""}
# Radford et al.'s DCGAN nets: 64 channels and BatchNorm in D (the defaults' D has spectral norm, for R1).
DCGAN_NETS = {"g_channels": 64, "d_channels": 64, "d_norm": "batch"}
PRESETS: dict[str, dict[str, Any]] = {
    # The seed tutorial's GAN exactly: Goodfellow et al.'s MLP, Adam 2e-4 with betas (0.9, 0.999), batch 64, the
    # non-saturating G loss, 25 epochs, nothing else. Every field the default recipe changes is set back here.
    "tutorial": {"arch": "mlp", "lr": 2e-4, "beta1": 0.9, "beta2": 0.999, "batch_size": 64, "epochs": 25.0,
                 "r1_weight": 0.0, "r1_every": 1, "ema_decay": 0.0, "ema_rampup": False, "lr_decay_steps": 0,
                 "augment": ""},
    # The MLP's own recipe (benchmarks/QUALITY.md): the seed's nets with lazy R1, Radford et al.'s beta1 and an EMA
    # of G with its warm-up, ~3.5 minutes on a 2-core CPU. Today's defaults, pinned by name.
    "mlp": MLP_RECIPE,
    # The same recipe with D twice as wide (784-1024-512-1: more diverse samples, the Fashion classes in their true
    # shares), trained 2x longer (56,220 steps) with its lrs decaying to 0 over them, about 13 minutes on a 2-core
    # CPU (benchmarks/QUALITY.md).
    "best": {**MLP_RECIPE, "d_hidden": "1024,512", "epochs": 60.0, "lr_decay_steps": -1},
    # Radford et al.'s DCGAN as benchmarks/QUALITY_DCGAN.md measured it: 64 channels, beta1 0.5, no EMA, no decay.
    "dcgan": {"arch": "dcgan", **DCGAN_NETS, "lr": 2e-4, "beta1": 0.5, "batch_size": 64, "epochs": 25.0,
              "r1_weight": 0.0, "r1_every": 1, "ema_decay": 0.0, "ema_rampup": False, "lr_decay_steps": 0,
              "augment": ""},
}


# One line per preset for --help (docs/usage.md lists every value).
PRESET_SUMMARIES = {
    "tutorial": "the seed tutorial's GAN exactly (MLP, Adam 2e-4, betas 0.9/0.999, batch 64, 25 epochs, no more)",
    "mlp": "the MLP's measured recipe, today's defaults pinned by name (lazy R1, beta1 0.5, EMA; 30 epochs)",
    "best": "the same recipe with D 2x wider, 60 epochs, lrs decaying linearly to 0 (~13 min on 2 CPU cores)",
    "dcgan": "Radford et al.'s DCGAN (64 channels, BatchNorm, beta1 0.5), no R1/EMA/decay, 25 epochs",
}


def resume_config(saved: Config, current: Config, given: set[str]) -> Config:
    """The config of a resumed run: the saved one, with the overrides a resume may make."""
    given = set(given) - {"preset"}  # how the run started is a record: the saved one stays
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


def parameter_count(config: Config) -> int:
    """Trainable numbers in G and D together, as both backends build them (gan_torch.models, gan_jax.models)."""
    height, width, channels = config.image_shape
    pixels = height * width * channels
    label = LABEL_EMBED_DIM if config.conditional else 0
    tables = 2 * NUM_CLASSES * LABEL_EMBED_DIM if config.conditional else 0  # G's and D's label embeddings
    if config.arch == "mlp":
        g = (config.latent_dim + label, *config.g_hidden_sizes, pixels)
        d = (pixels + label, *config.d_hidden_sizes, 1)
        return sum((a + 1) * b for widths in (g, d) for a, b in zip(widths, widths[1:], strict=False)) + tables
    n, start, gw, dw = _dcgan_widths(config)
    features = start * dw[-1]  # D's flattened (H/2^n, W/2^n, 2^(n-1) dc) maps
    g = (config.latent_dim + label) * start * gw[0] + 2 * gw[0]  # fc (no bias), bn0
    g += sum(16 * a * b for a, b in zip(gw, gw[1:], strict=False)) + 2 * sum(gw[1:-1]) + channels  # deconvs, bns, bias
    d = 16 * sum(a * b for a, b in zip(dw, dw[1:], strict=False)) + dw[1] + features + 1  # convs, conv1's bias, fc
    d += sum(dw[2:]) * (2 if config.d_batch_norm else 1)  # bn2.. scales and biases, or conv2..'s biases
    if config.conditional:  # D's table is the projection (10, features), not a label embedding
        tables += NUM_CLASSES * features - NUM_CLASSES * LABEL_EMBED_DIM
    return g + d + tables


def _dcgan_widths(config: Config) -> tuple[int, int, list[int], list[int]]:
    """The DCGAN's stages n, starting positions (H/2^n)(W/2^n), and channels along G ([2^(n-1) gc, ..., gc, C])
    and D ([C, dc, ..., 2^(n-1) dc]), as gan_torch.models and gan_jax.models build them."""
    height, width, channels = config.image_shape
    n = config.dcgan_stages
    gw = [config.g_channels * 2 ** (n - 1 - i) for i in range(n)] + [channels]
    dw = [channels] + [config.d_channels * 2**i for i in range(n)]
    return n, (height >> n) * (width >> n), gw, dw


def memory_estimate(config: Config) -> int:
    """Bytes a run needs at least, float32: parameters four times over (weights, gradients, Adam's two moments;
    a fifth with --ema-decay), and each layer's activations for a step's images, kept for the backward pass
    along with their gradients. A floor, not a forecast: it catches a width or batch no machine could hold."""
    height, width, channels = config.image_shape
    pixels = height * width * channels
    if config.arch == "mlp":
        g = config.latent_dim + sum(config.g_hidden_sizes) + pixels
        d = pixels + sum(config.d_hidden_sizes) + 1
    else:  # each layer's maps: side doubling as channels halve (G), the reverse (D)
        n, start, gw, dw = _dcgan_widths(config)
        g = config.latent_dim + sum(start * 4**i * w for i, w in enumerate(gw))
        d = sum(start * 4 ** (n - i) * w for i, w in enumerate(dw)) + 1
    per_image = g + 2 * d  # G's layers, and D's on a real and a fake image
    copies = 5 if config.ema_decay else 4
    return 4 * (copies * parameter_count(config) + 2 * config.images_per_step * per_image)


def physical_memory() -> int | None:
    """This machine's RAM in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        return None


def check_memory(config: Config, available: int | None = None) -> None:
    """Refuse, before anything is allocated, a run that cannot fit in `available` bytes (default: this machine's
    physical memory), rather than let it die later with an out-of-memory traceback."""
    available = physical_memory() if available is None else available
    need = memory_estimate(config)
    if available is not None and need > available:
        sizes = "--g-hidden, --d-hidden" if config.arch == "mlp" else "--g-channels, --d-channels"
        raise UserError(f"this run needs at least {need / 2**30:,.1f} GiB (the nets' weights, gradients and Adam "
                        f"states, and a batch's activations), more than this machine's {available / 2**30:,.1f} GiB; "
                        f"reduce {sizes}, --latent-dim or --batch-size")


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
