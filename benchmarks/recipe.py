"""The evidence behind the default recipe and the presets (benchmarks/QUALITY.md, issue 16).

Every run is the train CLI as a user types it (`python -m gan_jax.train` plus the row's flags), timed whole
from outside (Python start-up and compilation included), then scored by `python -m gan_jax.evaluate` on
10,000 samples against the test set. Runs already finished in --out are reused, so the table grows a row at
a time.

    # timed rows: one run at a time on a quiet machine, every core for it
    python -m benchmarks.recipe --rows default,tutorial,mlp --seeds 0,1,2 --out runs/recipe
    # ablations (quality by steps): two single-threaded runs side by side; their wall times are not results
    python -m benchmarks.recipe --rows decay,no_r1,no_ema,beta1_0.9,no_decay --workers 2 --out runs/recipe
    # the tables and the FID-against-wall-clock plot, from what --out holds
    python -m benchmarks.recipe --report --out runs/recipe --json benchmarks/results/recipe.json \
        --plot benchmarks/results/recipe_fid.png
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from matplotlib.figure import Figure

from benchmarks.machine import load_avg
from gan_common.outputs import read_metrics

# --preset best as it was before its D was widened (its rows in QUALITY.md are named best_107).
BEST_107 = ["--preset", "best", "--d-hidden", "512,256", "--epochs", "107"]
# name: (train module, the flags after it, what the row is). The ablations undo one lever of the default each.
ROWS: dict[str, tuple[str, list[str], str]] = {
    "default": ("gan_jax", [], "`python -m gan_jax.train`, no flags"),
    "tutorial": ("gan_jax", ["--preset", "tutorial"], "the seed tutorial's GAN, 25 epochs"),
    "tutorial_budget": ("gan_jax", ["--preset", "tutorial", "--epochs", "0"], "the seed tutorial's GAN for the "
                        "default's wall clock (--epochs set by --budget-epochs)"),
    "mlp": ("gan_jax", ["--preset", "mlp"], "the tutorial's MLP with its own best recipe"),
    "best": ("gan_jax", ["--preset", "best"], "the best recipe"),
    "best_fashion": ("gan_jax", ["--preset", "best", "--dataset", "fashion_mnist"], "the best recipe on Fashion"),
    "best_torch": ("gan_torch", ["--preset", "best"], "the best recipe, trained by gan_torch"),
    "default_torch": ("gan_torch", [], "the default recipe, trained by gan_torch"),
    # best until its D was widened: the seed's D (784-512-256-1) trained 107 epochs. Its Fashion rows missed the
    # class KL target, which the wider D meets.
    "best_107": ("gan_jax", BEST_107, "best with the seed's D, 107 epochs"),
    "best_107_fashion": ("gan_jax", [*BEST_107, "--dataset", "fashion_mnist"], "best_107 on Fashion"),
    "best_107_torch": ("gan_torch", BEST_107, "best_107, trained by gan_torch"),
    # Ablations. They ran on the recipe with its lrs decaying to 0 over the run (`decay`, the default until that
    # row lost to `no_decay`), each undoing one lever of it; `no_decay` is today's default.
    "decay": ("gan_jax", ["--lr-decay-steps", "-1"], "the learning rates decay linearly to 0 over the run"),
    "no_r1": ("gan_jax", ["--lr-decay-steps", "-1", "--r1-weight", "0"], "decay, without the R1 penalty"),
    "no_ema": ("gan_jax", ["--lr-decay-steps", "-1", "--ema-decay", "0"], "decay, without the EMA of G"),
    "beta1_0.9": ("gan_jax", ["--lr-decay-steps", "-1", "--beta1", "0.9"], "decay, with Adam beta1 0.9 (the seed's)"),
    "no_decay": ("gan_jax", [], "constant learning rates: today's default, run side by side with the ablations"),
    # The EMA's own ablation at the default's constant learning rates (no_ema above undid it on the decay base).
    "no_decay_no_ema": ("gan_jax", ["--ema-decay", "0"], "today's default without the EMA of G"),
    "best_107_no_decay": ("gan_jax", [*BEST_107, "--lr-decay-steps", "0"], "best_107 at constant learning rates"),
    "best_107_no_decay_fashion": ("gan_jax", [*BEST_107, "--lr-decay-steps", "0", "--dataset", "fashion_mnist"],
                                  "best_107 at constant learning rates, on Fashion"),
    "best_107_beta2_fashion": ("gan_jax", [*BEST_107, "--beta2", "0.99", "--dataset", "fashion_mnist"],
                               "best_107 with Adam beta2 0.99, on Fashion"),
    # Levers the issue lists that the default lacks, each added alone to today's default (constant lrs).
    "hinge": ("gan_jax", ["--loss", "hinge"], "the default with the hinge loss (SNGAN's) instead of the log-loss"),
    "ttur": ("gan_jax", ["--d-lr", "4e-4", "--g-lr", "1e-4"], "the default with TTUR: D at 4e-4, G at 1e-4"),
    "augment": ("gan_jax", ["--augment", "translation,cutout"], "the default with DiffAugment translation,cutout"),
    "augment_translation": ("gan_jax", ["--augment", "translation"], "the default with DiffAugment translation only"),
    "beta2_0.99": ("gan_jax", ["--beta2", "0.99"], "the default with Adam beta2 0.99"),
    "default_beta2": ("gan_jax", ["--beta2", "0.99"], "beta2_0.99 timed alone: the candidate default"),
    "batch_128": ("gan_jax", ["--batch-size", "128"], "the default at batch 128 (same 30 epochs, half the steps)"),
    # Fashion's class tilt under best_107 (its G over-draws shirts, under-draws pullovers), screened at the default's
    # length, one seed each (quality only). The wider D won and went into best.
    "fashion_default": ("gan_jax", ["--dataset", "fashion_mnist"], "the default on Fashion"),
    "fashion_r1_1": ("gan_jax", ["--dataset", "fashion_mnist", "--r1-weight", "1"], "the default on Fashion, R1 1"),
    "fashion_d_wide": ("gan_jax", ["--dataset", "fashion_mnist", "--d-hidden", "1024,512"],
                       "the default on Fashion, D 784-1024-512-1"),
    "fashion_g_wide": ("gan_jax", ["--dataset", "fashion_mnist", "--g-hidden", "512,1024"],
                       "the default on Fashion, G 100-512-1024-784"),
}
SHOWN = ("fid", "classes_covered", "class_kl", "precision", "recall", "c2st_accuracy", "train_wall_s")


def _slug(name: str, seed: int) -> str:
    return f"{name}_s{seed}"


def train_argv(name: str, args, seed: int, out: str) -> list[str]:
    module, flags, _ = ROWS[name]
    flags = list(flags)
    if name in args.budget_epochs:  # rows timed against the default: their length comes from this command line
        flags[flags.index("--epochs") + 1] = str(args.budget_epochs[name])
    return [sys.executable, "-m", f"{module}.train", *flags, "--seed", str(seed), "--out-dir", out,
            "--eval-every", str(args.eval_every), "--eval-samples", "2000", "--no-tensorboard"]


def run_one(name: str, seed: int, args, slots: queue.Queue) -> dict:
    """Train one row's seed (unless done) on a free core `slot`, score its final G, and return the row."""
    slot = slots.get()
    try:
        return _run_one(name, seed, args, slot)
    finally:
        slots.put(slot)


def _run_one(name: str, seed: int, args, slot: int) -> dict:
    out = os.path.join(args.out, _slug(name, seed))
    done = os.path.join(out, "recipe_row.json")
    if os.path.exists(done):
        return json.load(open(done))
    env = dict(os.environ)
    at_once = args.workers + args.beside  # runs on the machine at once
    if at_once > 1:  # each run on a core of its own, single-threaded: their sum of work is what is compared
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
        env["OMP_NUM_THREADS"] = "1"
    shutil.rmtree(out, ignore_errors=True)  # an unfinished earlier attempt
    load = load_avg()
    t = time.perf_counter()
    cmd = train_argv(name, args, seed, out)
    if at_once > 1 and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str((args.first_core + slot) % os.cpu_count()), *cmd]
    with open(out + ".log", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    score = os.path.join(out, "evaluate.json")
    evaluate = [sys.executable, "-m", "gan_jax.evaluate", "--checkpoint", out, "--num", str(args.num_samples),
                "--json", score, *([] if args.c2st else ["--no-c2st"])]
    subprocess.run(evaluate, check=True, env=env, stdout=subprocess.DEVNULL)
    metrics = json.load(open(score))
    fid_key = next(k for k in metrics if k.startswith("fid_"))
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    curve = [(r["step"], r["elapsed_s"], r[fid_key]) for r in rows if fid_key in r]
    row = {"name": name, "seed": seed, "argv": cmd, "workers": at_once, "load_before": load,
           "train_wall_s": wall, "steps": rows[-1]["step"], "fid": metrics[fid_key], "fid_key": fid_key,
           **{k: v for k, v in metrics.items() if k != fid_key}, "curve": curve}
    json.dump(row, open(done, "w"), indent=1)
    print(f"{name} seed {seed}: " + ", ".join(f"{k} {row[k]:.4g}" for k in SHOWN if k in row), flush=True)
    return row


def collect(out: str) -> list[dict]:
    rows = []
    for entry in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        path = os.path.join(out, entry, "recipe_row.json")
        if os.path.exists(path):
            rows.append(json.load(open(path)))
    return rows


def markdown(rows: list[dict]) -> str:
    """Seed-by-seed rows, then mean ± std per row name."""
    lines = ["| row | seed | steps | FID | classes | class KL | precision / recall | C2ST | wall s | runs at once |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c2st = f"{r['c2st_accuracy']:.3f}" if "c2st_accuracy" in r else "—"
        lines.append(f"| {r['name']} | {r['seed']} | {r['steps']} | {r['fid']:.1f} | {r['classes_covered']} | "
                     f"{r['class_kl']:.3f} | {r['precision']:.2f} / {r['recall']:.2f} | {c2st} | "
                     f"{r['train_wall_s']:.0f} | {r['workers']} |")
    lines += ["", "| row | seeds | FID mean ± std (worst) | class KL (worst) | precision | recall (worst) |",
              "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        fid = np.array([r["fid"] for r in group])
        kl = np.array([r["class_kl"] for r in group])
        rec = np.array([r["recall"] for r in group])
        prec = np.array([r["precision"] for r in group])
        sd = fid.std(ddof=1) if len(fid) > 1 else 0.0
        lines.append(f"| {name} | {len(group)} | {fid.mean():.1f} ± {sd:.1f} ({fid.max():.1f}) | {kl.mean():.3f} "
                     f"({kl.max():.3f}) | {prec.mean():.2f} | {rec.mean():.2f} ({rec.min():.2f}) |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], names: list[str], path: str) -> None:
    """FID (2,000 samples, --eval-every) against the train command's wall clock, one line per seed."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    colours = dict(zip(names, ("C0", "C1", "C2", "C3", "C4", "C5", "C6"), strict=False))
    labels = {"default": "default (= --preset mlp)", "best": "best (D 1024-512, 60 epochs)", "best_torch":
              "best, gan_torch", "best_107": "best_107 (the seed's D, 107 epochs)", "best_107_torch":
              "best_107, gan_torch", "default_torch": "default, gan_torch",
              "tutorial_budget": "tutorial, more than the default's time"}
    for r in rows:
        if r["name"] not in colours or r["workers"] != 1:
            continue
        steps, elapsed, fid = zip(*r["curve"], strict=True)
        ax.plot(elapsed, fid, color=colours[r["name"]], marker=".", alpha=0.8,
                label=labels.get(r["name"], r["name"])
                if r["seed"] == min(x["seed"] for x in rows if x["name"] == r["name"]) else None)
    ax.set_yscale("log")
    ax.set_xlabel("wall-clock seconds of the train command (compile included)")
    ax.set_ylabel("FID (2,000 samples, --eval-every)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def time_to(curve: list, target: float) -> float | None:
    """The train loop's elapsed seconds (compilation included) at the first --eval-every FID <= target."""
    return next((elapsed for _, elapsed, fid in curve if fid <= target), None)


def ttq_markdown(rows: list[dict], target: float) -> str:
    """Time to quality: per row and seed, when its --eval-every FID (2,000 samples) first reached `target`."""
    lines = [f"| row | seed | loop s to FID <= {target:g} | steps then | final FID (10k) | wall s | runs at once |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = time_to(r["curve"], target)
        step = next((s for s, _, fid in r["curve"] if fid <= target), None)
        lines.append(f"| {r['name']} | {r['seed']} | {'not reached' if t is None else f'{t:.0f}'} | "
                     f"{'—' if step is None else step} | {r['fid']:.1f} | {r['train_wall_s']:.0f} | {r['workers']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recipe", description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="default", help="comma-separated names of ROWS: " + ", ".join(ROWS))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds")
    p.add_argument("--workers", type=int, default=1, help="runs at once, each pinned to one core, single-threaded "
                   "(> 1: quality by steps only; the wall times are then not results)")
    p.add_argument("--beside", type=int, default=0, help="runs of another invocation on the machine at the same "
                   "time: this one's then run single-threaded and pinned too, and count as quality only")
    p.add_argument("--first-core", type=int, default=0, help="the core of this invocation's first pinned run (with "
                   "--beside: cores of its own)")
    p.add_argument("--out", default="runs/recipe", help="folder of the runs")
    p.add_argument("--eval-every", type=int, default=4000, help="steps between the FID points of the curve")
    p.add_argument("--num-samples", type=int, default=10000, help="samples scored per final generator")
    p.add_argument("--c2st", action="store_true", help="also score the classifier two-sample test (seconds)")
    p.add_argument("--budget-epochs", default="tutorial_budget=50",
                   help="NAME=EPOCHS of the rows whose length is set to match the default's wall clock")
    p.add_argument("--report", action="store_true", help="print the tables of what --out holds and write the plot")
    p.add_argument("--json", default="", help="--report: also write every row here")
    p.add_argument("--plot", default="", help="--report: FID against wall clock (PNG) of the timed rows")
    p.add_argument("--plot-rows", default="default,best,best_torch,best_107,best_107_torch,tutorial_budget",
                   help="--report: the plot's rows")
    p.add_argument("--target", type=float, default=20.0, help="--report: the FID whose time to reach is tabled")
    args = p.parse_args(argv)
    unknown = [n for n in args.rows.split(",") if n not in ROWS]
    if unknown:
        p.error(f"--rows: unknown {', '.join(unknown)}; expected some of {', '.join(ROWS)}")
    args.budget_epochs = {k: float(v) for k, v in (kv.split("=") for kv in args.budget_epochs.split(","))}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        rows = collect(args.out)
        print(markdown(rows))
        print(ttq_markdown([r for r in rows if r["workers"] == 1], args.target))
        if args.json:
            json.dump(rows, open(args.json, "w"), indent=1)
        if args.plot:
            plot(rows, args.plot_rows.split(","), args.plot)
        return 0
    names = args.rows.split(",")
    os.makedirs(args.out, exist_ok=True)
    jobs = [(n, int(s)) for n in names for s in args.seeds.split(",")]
    slots: queue.Queue = queue.Queue()
    for slot in range(args.workers):
        slots.put(slot)
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_one, n, s, args, slots) for n, s in jobs]
        for f in futures:
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
