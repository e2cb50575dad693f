"""Sample-quality table: train the seed GAN with each backend and setting over several seeds,
score 10,000 samples of each final generator, and write mean ± std of every metric.

    python -m benchmarks.quality --epochs 10 --seeds 0,1,2 --out runs/quality --markdown benchmarks/QUALITY.md
    python -m benchmarks.quality --table dcgan --epochs 1 --out runs/quality_dcgan \
        --markdown benchmarks/QUALITY_DCGAN.md

--table dcgan: the DCGAN with each loss of DCGAN_LOSSES, on MNIST and Fashion-MNIST, in both
backends; every run keeps a generator EMA (which never feeds back into training), and its final
generator is scored twice, with and without the EMA. --train-only trains (or reuses) the runs and stops.

Each run is a real `train_and_evaluate` of its backend (with --eval-every for the FID curve);
the final generators are scored by the one JAX evaluator through the neutral weight file, so
both backends are measured by the same ruler. Runs already finished in --out are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np
from matplotlib.figure import Figure

from gan_common.config import Config
from gan_common.evaluation import fid_key
from gan_common.outputs import read_metrics
from gan_common.sampling import sample_noise
from gan_jax import backend as jax_backend

SETTINGS = {
    # name: (backend, overrides of the seed spec)
    "jax, seed spec (beta1 0.9, non-saturating)": ("gan_jax", {}),
    "torch, seed spec (beta1 0.9, non-saturating)": ("gan_torch", {}),
    "jax, beta1 0.5": ("gan_jax", {"beta1": 0.5}),
    "jax, minimax G loss": ("gan_jax", {"g_loss": "minimax"}),
}
# The DCGAN table: Radford et al.'s Adam (beta1 0.5) and, for WGAN-GP, Gulrajani et al.'s settings
# (n_critic 5, lr 1e-4, beta2 0.9, no BatchNorm in D). Every run keeps an EMA of G (decay 0.995: a
# ~200-step memory, short enough for runs of ~1k steps, whose start weighs 0.995^937 = 1% after one epoch).
DCGAN_BASE = {"arch": "dcgan", "beta1": 0.5, "ema_decay": 0.995}
DCGAN_LOSSES = {
    "non-saturating": {"loss": "gan"},
    "hinge": {"loss": "hinge"},
    "WGAN-GP": {"loss": "wgan_gp", "d_norm": "none", "n_critic": 5, "lr": 1e-4, "beta2": 0.9},
}
DCGAN_DATASETS = ("mnist", "fashion_mnist")
BACKENDS = ("gan_jax", "gan_torch")
SHOWN = ("fid_mnist", "kid", "classifier_score", "classes_covered", "class_kl", "precision", "recall")


def _train(backend: str, config: Config) -> float:
    """Train one run; return its wall time in seconds (0 if it was already complete)."""
    done = os.path.join(config.out_dir, "wall_s.json")
    if os.path.exists(done):
        return json.load(open(done))["wall_s"]
    if backend == "gan_jax":
        train_and_evaluate = jax_backend.train_and_evaluate
    else:  # torch only when a torch run is asked for: the JAX settings run without it
        from gan_torch.backend import train_and_evaluate
    if os.path.exists(config.out_dir):
        shutil.rmtree(config.out_dir)  # an unfinished earlier attempt
    t = time.perf_counter()
    train_and_evaluate(config)
    wall = time.perf_counter() - t
    json.dump({"wall_s": wall}, open(done, "w"))
    return wall


def _score(run_dir: str, num: int, ema: bool = True) -> dict:
    """The metrics of `num` samples of the run's final G (its EMA, or with ema=False its own weights),
    cached in the run folder."""
    cached = os.path.join(run_dir, f"score_{num}{'_ema' if ema else ''}.json")
    if os.path.exists(cached):
        return json.load(open(cached))
    generate, config = jax_backend.load_generator(run_dir, ema)
    images = generate(sample_noise(num, config.latent_dim, seed=12345))
    row = {k: float(v) for k, v in jax_backend.evaluator(config.dataset).evaluate_images(images).items()}
    json.dump(row, open(cached, "w"))
    return row


def _dcgan_runs(args, seeds: list[int]):
    """(dataset, loss name, backend, seed, config) of every DCGAN run, the two backends' runs adjacent
    so that whatever else loads the machine meets both alike."""
    for dataset in args.datasets.split(","):
        for loss, overrides in DCGAN_LOSSES.items():
            for seed in seeds:
                for backend in BACKENDS:
                    slug = f"{dataset}_{overrides['loss']}_{backend}_s{seed}"
                    yield dataset, loss, backend, seed, dataclasses.replace(
                        Config.tutorial(), dataset=dataset, epochs=args.epochs, seed=seed,
                        out_dir=os.path.join(args.out, slug), log_every=100, sample_every=10**9,
                        checkpoint_every=10**9, **DCGAN_BASE, **overrides)


def _dcgan_main(args, seeds: list[int]) -> int:
    rows = []
    for dataset, loss, backend, seed, config in _dcgan_runs(args, seeds):
        wall = _train(backend, config)
        steps = read_metrics(os.path.join(config.out_dir, "metrics.jsonl"))[-1]["step"]
        print(f"{dataset} {loss} {backend} seed {seed}: {steps} steps in {wall:.0f} s", flush=True)
        if args.train_only:
            continue
        for ema in (False, True):
            row = _score(config.out_dir, args.num_samples, ema)
            rows.append({"dataset": dataset, "loss": loss, "backend": backend, "seed": seed, "ema": ema,
                         "steps": steps, "train_wall_s": wall, **row})
    if args.train_only:
        return 0
    json.dump(rows, open(os.path.join(args.out, "quality.json"), "w"), indent=1)
    table = _dcgan_markdown(rows, args, seeds)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=10.0, help="training length of every run")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds")
    p.add_argument("--settings", default=",".join(str(i) for i in range(len(SETTINGS))),
                   help="indices into SETTINGS: " + "; ".join(f"{i}: {k}" for i, k in enumerate(SETTINGS)))
    p.add_argument("--num-samples", type=int, default=10000, help="samples scored per final generator")
    p.add_argument("--eval-every", type=int, default=1000, help="steps between FID points of the curve")
    p.add_argument("--out", default="runs/quality", help="folder of the runs")
    p.add_argument("--markdown", default="", help="write the table and plot reference to this Markdown file")
    p.add_argument("--plot", default="benchmarks/results/quality_fid.png",
                   help="FID-MNIST against steps and wall clock (PNG)")
    p.add_argument("--table", choices=("mlp", "dcgan"), default="mlp",
                   help="mlp: the seed MLP's SETTINGS; dcgan: DCGAN_LOSSES x --datasets x both backends, "
                        "EMA on and off")
    p.add_argument("--datasets", default=",".join(DCGAN_DATASETS), help="--table dcgan: comma-separated datasets")
    p.add_argument("--train-only", action="store_true", help="--table dcgan: train (or reuse) the runs, score nothing")
    p.add_argument("--conditions", default="", help="--table dcgan: how the runs were launched (CPU pinning, other "
                   "load), printed under the header: the wall times mean little without it")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.table == "dcgan":
        return _dcgan_main(args, seeds)
    names = [list(SETTINGS)[int(i)] for i in args.settings.split(",")]

    results: dict[str, list[dict]] = {}
    curves: dict[str, list[list[dict]]] = {}
    for name in names:
        backend, overrides = SETTINGS[name]
        for seed in seeds:
            slug = f"{backend}_{'_'.join(f'{k}{v}' for k, v in overrides.items()) or 'seed_spec'}_s{seed}"
            config = dataclasses.replace(
                Config.tutorial(), epochs=args.epochs, seed=seed, out_dir=os.path.join(args.out, slug),
                eval_every=args.eval_every, log_every=args.eval_every, sample_every=args.eval_every * 5,
                checkpoint_every=10**9, **overrides)
            wall = _train(backend, config)
            row = _score(config.out_dir, args.num_samples)
            row["train_wall_s"] = wall
            results.setdefault(name, []).append(row)
            curves.setdefault(name, []).append(read_metrics(os.path.join(config.out_dir, "metrics.jsonl")))
            print(f"{name} seed {seed}: " + ", ".join(f"{k}={row[k]:.3g}" for k in (*SHOWN, "train_wall_s")),
                  flush=True)

    table = _markdown(results, args, seeds)
    print(table)
    _plot(curves, args.plot)
    if args.markdown:
        link = os.path.relpath(os.path.abspath(args.plot), os.path.dirname(os.path.abspath(args.markdown)))
        with open(args.markdown, "w") as f:
            f.write(table + f"\n![FID-MNIST against steps and wall clock]({link})\n")
    json.dump(results, open(os.path.join(args.out, "quality.json"), "w"), indent=1)
    return 0


def _versions() -> str:
    """'jax X, torch Y' from the installed distributions (importing torch only to name it would load it)."""
    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"jax {of('jax')}, torch {of('torch')}"


def _markdown(results: dict[str, list[dict]], args, seeds) -> str:
    steps = round(args.epochs * (60000 // 64))
    lines = [
        "# Sample quality of the seed MLP GAN",
        "",
        f"Measured by `python -m benchmarks.quality --epochs {args.epochs:g} --seeds {args.seeds}` on "
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, CPU only), {_versions()}. "
        f"Each run: {args.epochs:g} epochs = {steps} steps at batch 64; metrics of "
        f"{args.num_samples} samples of the final generator against the 10k MNIST test set, mean ± std over seeds "
        f"{', '.join(map(str, seeds))}. Train wall time includes the --eval-every evaluations "
        f"(every {args.eval_every} steps, 2,000 samples).",
        "",
        "| setting | " + " | ".join(SHOWN) + " | train wall s |",
        "|---|" + "---|" * (len(SHOWN) + 1),
    ]
    for name, rows in results.items():
        cells = []
        for key in (*SHOWN, "train_wall_s"):
            v = np.array([r[key] for r in rows], float)
            cells.append(f"{v.mean():.3g} ± {v.std(ddof=1) if len(v) > 1 else 0:.2g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Real data (10k train vs 10k test, docs/evaluation.md): fid_mnist 1.96, classifier_score 9.66, "
              "classes_covered 10, precision 0.853, recall 0.862.", ""]
    return "\n".join(lines)


DCGAN_SHOWN = ("kid", "classes_covered", "class_kl", "precision", "recall")


def _mean_std(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3g} ± {v.std(ddof=1) if len(v) > 1 else 0:.2g}"


def best_dcgan_setting(rows: list[dict]) -> tuple[str, bool]:
    """(loss, ema) with the lowest mean rank of its mean FID over the datasets, both backends' runs pooled."""
    settings = sorted({(r["loss"], r["ema"]) for r in rows})
    ranks = {s: 0.0 for s in settings}
    for dataset in sorted({r["dataset"] for r in rows}):
        fid = {s: np.mean([r[fid_key(dataset)] for r in rows if (r["loss"], r["ema"]) == s and r["dataset"] == dataset])
               for s in settings}
        for rank, s in enumerate(sorted(settings, key=fid.get)):
            ranks[s] += rank
    return min(settings, key=ranks.get)


def _dcgan_markdown(rows: list[dict], args, seeds) -> str:
    lines = [
        "# Sample quality of the DCGAN: losses, generator EMA, both backends",
        "",
        f"Measured by `python -m benchmarks.quality --table dcgan --epochs {args.epochs:g} --seeds {args.seeds}` on "
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, CPU only), {_versions()}. "
        f"Every run: `--arch dcgan` (64 channels), batch 64, "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in DCGAN_BASE.items() if k != "arch")
        + f", {args.epochs:g} epoch(s) of the training set (each real image seen once per epoch by D; WGAN-GP's "
        f"n_critic 5 thus makes a fifth as many G steps). Each run's final G is scored with and without its EMA "
        f"(the EMA never feeds back into training, so both rows come from the same runs): "
        f"{args.num_samples} samples against the dataset's 10k test set under its reference classifier "
        f"(docs/evaluation.md), mean ± std over seeds {', '.join(map(str, seeds))}.",
        "",
        *([args.conditions, ""] if args.conditions else []),
        "Losses: " + "; ".join(f"{name}: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items())
                                for name, flags in DCGAN_LOSSES.items()) + ".",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        fid = fid_key(dataset)
        lines += [f"## {dataset}", "",
                  f"| loss | EMA | backend | G steps | {fid} | " + " | ".join(DCGAN_SHOWN) + " | train wall s |",
                  "|---|---|---|---|" + "---|" * (len(DCGAN_SHOWN) + 2)]
        for loss in DCGAN_LOSSES:
            for ema in (False, True):
                for backend in BACKENDS:
                    key = (dataset, loss, ema, backend)
                    group = [r for r in rows if (r["dataset"], r["loss"], r["ema"], r["backend"]) == key]
                    if not group:
                        continue
                    cells = [_mean_std([r[k] for r in group]) for k in (fid, *DCGAN_SHOWN, "train_wall_s")]
                    lines.append(f"| {loss} | {'yes' if ema else 'no'} | {backend.removeprefix('gan_')} | "
                                 f"{group[0]['steps']} | " + " | ".join(cells) + " |")
        lines.append("")
    loss, ema = best_dcgan_setting(rows)
    lines += [f"Best setting by mean rank of mean FID over the datasets: **{loss}, EMA {'on' if ema else 'off'}**.", ""]
    return "\n".join(lines)


def _plot(curves: dict[str, list[list[dict]]], path: str) -> None:
    fig = Figure(figsize=(12, 4.5))  # no pyplot: no GUI backend, no global figure state
    a1, a2 = fig.subplots(1, 2)
    for i, (name, runs) in enumerate(curves.items()):
        for j, rows in enumerate(runs):
            pts = [r for r in rows if "fid_mnist" in r]
            kw = dict(color=f"C{i}", alpha=0.8, label=name if j == 0 else None)
            a1.plot([r["step"] for r in pts], [r["fid_mnist"] for r in pts], **kw)
            a2.plot([r["elapsed_s"] for r in pts], [r["fid_mnist"] for r in pts], **kw)
    for ax, xl in ((a1, "step"), (a2, "wall clock, s (incl. evaluations)")):
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("FID-MNIST (2,000 samples)")
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
